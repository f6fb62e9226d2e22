"""The 1 GbE Ethernet block of a board top: GMII on one side, the core's frame streams on the other.

:class:`GmiiEthernet` is :class:`~.mac.MacRx` and :class:`~.widthconv.RxCrossing` on the receive
side and :class:`~.widthconv.TxCrossing` and :class:`~.mac.MacTx` on the transmit side, each half
in its own clock domain (RGMII receives on the PHY's clock and transmits on ours). Tests run it
with all three domains the same.
"""

from amaranth.hdl import DomainRenamer, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from tick2quote.hdl.layouts import beat_layout

from .mac import MIN_IFG_BYTES, MacRx, MacTx, rx_counters_layout
from .widthconv import RxCrossing, TxCrossing

__all__ = ["GmiiEthernet"]


class GmiiEthernet(wiring.Component):
    """1 GbE MAC with the width and clock crossings into the 64-bit core stream.

    Parameters
    ----------
    rx_domain, tx_domain, core_domain:
        Clock domains of the GMII receive signals, the GMII transmit signals and the core
        streams.
    rx_buffer_depth, tx_depth:
        Beats of receive frame buffer and of transmit crossing (each holds one frame whole).
    ifg:
        Transmit inter-frame gap in byte times.

    Attributes
    ----------
    rx_dv, rx_er, rxd : In
        GMII receive (``rx_domain``).
    tx_en, tx_er, txd : Out
        GMII transmit (``tx_domain``).
    rx : Out(stream.Signature(beat_layout))
        Good received frames without FCS (``core_domain``); bad ones never appear.
    tx : In(stream.Signature(beat_layout))
        Frames to send, without FCS (``core_domain``).
    rx_counters : Out(:func:`~.mac.rx_counters_layout`)
        Receive outcomes (``rx_domain``).
    rx_overflows, tx_frames, tx_underruns : Out(32)
        Good frames lost for lack of buffer (``rx_domain``), frames sent and frames cut short
        (``tx_domain``).
    """

    def __init__(self, *, rx_domain: str = "eth_rx", tx_domain: str = "eth_tx",
                 core_domain: str = "sync", rx_buffer_depth: int = 256, tx_depth: int = 256,
                 ifg: int = MIN_IFG_BYTES):  # fmt: skip
        self.rx_domain, self.tx_domain, self.core_domain = rx_domain, tx_domain, core_domain
        self.ifg = ifg
        self._rx_crossing = RxCrossing(
            mac_domain=rx_domain, core_domain=core_domain, buffer_depth=rx_buffer_depth
        )
        self._tx_crossing = TxCrossing(mac_domain=tx_domain, core_domain=core_domain,
                                       depth=tx_depth)  # fmt: skip
        self._mac_tx = MacTx(ifg=ifg)  # checks ifg now
        super().__init__(
            {
                "rx_dv": In(1),
                "rx_er": In(1),
                "rxd": In(8),
                "tx_en": Out(1),
                "tx_er": Out(1),
                "txd": Out(8),
                "rx": Out(stream.Signature(beat_layout)),
                "tx": In(stream.Signature(beat_layout)),
                "rx_counters": Out(rx_counters_layout(32)),
                "rx_overflows": Out(32),
                "tx_frames": Out(32),
                "tx_underruns": Out(32),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.mac_rx = mac_rx = DomainRenamer(self.rx_domain)(MacRx())
        m.submodules.rx_crossing = rx_crossing = self._rx_crossing
        m.submodules.tx_crossing = tx_crossing = self._tx_crossing
        m.submodules.mac_tx = mac_tx = DomainRenamer(self.tx_domain)(self._mac_tx)

        m.d.comb += [
            mac_rx.rx_dv.eq(self.rx_dv),
            mac_rx.rx_er.eq(self.rx_er),
            mac_rx.rxd.eq(self.rxd),
            self.tx_en.eq(mac_tx.tx_en),
            self.tx_er.eq(mac_tx.tx_er),
            self.txd.eq(mac_tx.txd),
            self.rx_counters.eq(mac_rx.counters),
            self.rx_overflows.eq(rx_crossing.overflows),
            self.tx_frames.eq(mac_tx.frames),
            self.tx_underruns.eq(mac_tx.underruns),
        ]
        wiring.connect(m, mac_rx.o, rx_crossing.i)
        wiring.connect(m, rx_crossing.o, wiring.flipped(self.rx))
        wiring.connect(m, wiring.flipped(self.tx), tx_crossing.i)
        wiring.connect(m, tx_crossing.o, mac_tx.i)
        return m
