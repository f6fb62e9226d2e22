"""RGMII pins <-> GMII signals, with the platform's DDR I/O buffers (``amaranth.lib.io``).

RGMII carries a GMII byte in one clock period on four wires, low nibble on the rising edge and
high nibble on the falling edge; the control wire carries ``DV`` on the rising edge and
``DV xor ER`` on the falling edge. Receive runs on the PHY's ``rx_clk`` (the ``eth_rx`` domain,
driven here); transmit data leaves on our 125 MHz ``eth_tx`` clock and ``tx_clk`` is sent from
the ``eth_tx90`` clock, the same clock delayed by about 2 ns, so the PHY samples in the middle
of the data eye. The PHY must therefore not add its own transmit delay; its receive delay
(RGMII-ID receive) is expected on, as on the boards' PHYs by default. 1000 Mb/s only.
"""

from amaranth.hdl import Cat, ClockSignal, Const, Module
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RgmiiInterface", "rgmii_subsignal"]


def rgmii_subsignal(pins, name: str):
    """The subsignal ``name`` of an ``eth_rgmii`` resource (``tx_ctl`` is ``tx_ctrl`` on some
    boards)."""
    for candidate in (name, name.replace("_ctl", "_ctrl")):
        if hasattr(pins, candidate):
            return getattr(pins, candidate)
    raise AttributeError(f"RGMII resource has no {name!r} subsignal")


class RgmiiInterface(wiring.Component):
    """DDR I/O glue between an ``eth_rgmii`` resource requested with ``dir="-"`` and GMII.

    Attributes
    ----------
    rx_dv, rx_er, rxd : Out
        GMII receive, registered once in ``eth_rx`` (the domain whose clock this drives).
    tx_en, tx_er, txd : In
        GMII transmit, sampled on ``eth_tx``.
    phy_reset : In(1)
        Holds the PHY in reset while high (when the resource has a reset pin).
    """

    rx_dv: Out(1)
    rx_er: Out(1)
    rxd: Out(8)
    tx_en: In(1)
    tx_er: In(1)
    txd: In(8)
    phy_reset: In(1)

    def __init__(self, pins, *, rx_domain="eth_rx", tx_domain="eth_tx", tx_clk_domain="eth_tx90"):
        self.pins = pins
        self.rx_domain, self.tx_domain, self.tx_clk_domain = rx_domain, tx_domain, tx_clk_domain
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        pins = self.pins

        m.submodules.rx_clk = rx_clk = io.Buffer("i", pins.rx_clk)
        m.d.comb += ClockSignal(self.rx_domain).eq(rx_clk.i)
        m.submodules.rx_ctl = rx_ctl = io.DDRBuffer(
            "i", rgmii_subsignal(pins, "rx_ctl"), i_domain=self.rx_domain
        )
        m.submodules.rx_data = rx_data = io.DDRBuffer("i", pins.rx_data, i_domain=self.rx_domain)
        m.d[self.rx_domain] += [
            self.rx_dv.eq(rx_ctl.i[0]),
            self.rx_er.eq(rx_ctl.i[0] ^ rx_ctl.i[1]),
            self.rxd.eq(Cat(rx_data.i[0], rx_data.i[1])),
        ]

        m.submodules.tx_ctl = tx_ctl = io.DDRBuffer(
            "o", rgmii_subsignal(pins, "tx_ctl"), o_domain=self.tx_domain
        )
        m.submodules.tx_data = tx_data = io.DDRBuffer("o", pins.tx_data, o_domain=self.tx_domain)
        m.d.comb += [
            tx_ctl.o[0].eq(self.tx_en),
            tx_ctl.o[1].eq(self.tx_en ^ self.tx_er),
            tx_data.o[0].eq(self.txd[:4]),
            tx_data.o[1].eq(self.txd[4:]),
        ]
        m.submodules.tx_clk = tx_clk = io.DDRBuffer("o", pins.tx_clk, o_domain=self.tx_clk_domain)
        m.d.comb += [tx_clk.o[0].eq(Const(1)), tx_clk.o[1].eq(Const(0))]

        if hasattr(pins, "rst"):
            m.submodules.phy_rst = phy_rst = io.Buffer("o", pins.rst)
            m.d.comb += phy_rst.o.eq(self.phy_reset)
        return m
