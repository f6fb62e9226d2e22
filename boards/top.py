"""The generic ECP5 board top: PLL, RGMII, 1 GbE MAC, clock/width crossing, LEDs, the core.

A board module subclasses :class:`Ecp5BoardTop`, names its platform and Ethernet port, and maps
the LED roles (``link``, ``rx``, ``tx``, ``kill``) onto its LEDs. The core is the full trading
core, :class:`~tick2quote.hdl.core.Core`, built from the board's :class:`~.capacity.Capacity`
and the device's :class:`~.capacity.DeviceIdentity` (``core_factory(config)`` may name another
component with the same ports:

- ``rx: In(stream.Signature(beat_layout))``: frames from the MAC, never back-pressured;
- ``tx: Out(stream.Signature(beat_layout))``: frames to send;
- ``kill: Out(1)``: the kill switch state;

all in its ``sync`` domain, which the top clocks at ``core_clock``). The core's tick-record
DMA input is left idle: on these boards tick records arrive over UDP. Extra board constraints
are read from ``constraints/<board>/*.lpf`` and appended to the generated preferences file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from tick2quote.hdl.core import Core
from tick2quote.hdl.coremap import CoreConfig

from .build import PLACE_AND_ROUTE
from .capacity import Capacity, DeviceIdentity, board_config
from .ethernet import GmiiEthernet
from .pll import Ecp5Pll, solve_ecp5_pll
from .rgmii import RgmiiInterface

__all__ = [
    "CONSTRAINTS_ROOT",
    "DEFAULT_CORE_CLOCK",
    "ECP5_CORE_CLOCK",
    "Ecp5BoardTop",
    "constraint_files",
]

#: Where board constraint files live (``constraints/<board>/``).
CONSTRAINTS_ROOT = Path(__file__).resolve().parent.parent / "constraints"
#: The core clock the design targets: the 10 GbE XGMII word rate (the KCU105 runs at it).
DEFAULT_CORE_CLOCK = 156.25e6
#: The core clock of an ECP5 board build unless one is given: one 64-bit beat per cycle at
#: 50 MHz carries 3.2 Gb/s, over three times what the boards' 1 GbE port brings. The whole core
#: reaches 56 to 67 MHz post-route in the ECP5 board tops, 66.9 MHz out of context: far from
#: 156.25 MHz on the LFE5UM5G-85F -8 (see the README).
ECP5_CORE_CLOCK = 50e6
_LED_STRETCH_BITS = 22  # about 84 ms at 50 MHz


def constraint_files(board: str, suffix: str) -> list[Path]:
    """The board's extra constraint files with ``suffix``, sorted by name."""
    return sorted((CONSTRAINTS_ROOT / board).glob(f"*{suffix}"))


class Ecp5BoardTop(Elaboratable):
    """Board top for an ECP5 board with an RGMII Gigabit Ethernet PHY.

    Parameters
    ----------
    core_factory:
        Called as ``core_factory(config)`` with the board's
        :class:`~tick2quote.hdl.coremap.CoreConfig`; the default is the full core.
    capacity:
        A :class:`~.capacity.Capacity` or its text (``"256x8192"``); None: the board's
        :attr:`default_capacity`.
    identity:
        The device's :class:`~.capacity.DeviceIdentity`; with no token, one is drawn at
        random (:attr:`config` holds it; ``t2q build`` keeps it in the build directory).
    core_clock:
        Requested core clock in Hz (None: :attr:`default_core_clock`); the PLL reaches it as
        closely as its dividers allow (:attr:`pll_plan` tells the frequency actually set,
        which the build constrains).
    """

    #: Short board name, also the folder under ``constraints/``.
    board = ""
    #: Core capacity used when none is given: the only one whose board top has routed here, once
    #: (4 symbols, 64 orders in 2-way sets, 4 price levels, 64 UserRefNums; the core clock met
    #: 65.7 MHz there; the README has the figures, and the placements that did not route). The
    #: core's logic is almost all fixed datapath: 16 x 256 with 8 levels adds 10 % LUTs and
    #: did not route.
    default_capacity = Capacity(symbols=4, orders=64, ways=2, ladder_depth=4, ref_window=64)
    #: Core clock used when none is given, in Hz.
    default_core_clock = ECP5_CORE_CLOCK
    #: ``eth_rgmii`` resource number.
    eth_port = 0

    def __init__(self, core_factory: Callable[[CoreConfig], object] = Core, *,
                 capacity: Capacity | str | None = None, identity: DeviceIdentity | None = None,
                 core_clock: float | None = None):  # fmt: skip
        self.capacity = Capacity.coerce(capacity, self.default_capacity)
        if core_clock is None:
            core_clock = self.default_core_clock
        if not isinstance(core_clock, (int, float)) or not 1e6 <= core_clock <= 400e6:
            raise ValueError(f"core_clock must be within 1 .. 400 MHz, not {core_clock!r}")
        identity = (identity or DeviceIdentity()).with_token()
        self.core_factory = core_factory
        self.core_clock = float(core_clock)
        self.config = board_config(self.capacity, identity, clock_hz=self.core_clock)
        self.core = None
        self.pll_plan = None

    # -- what a board module provides

    @classmethod
    def make_platform(cls):
        """A fresh instance of the board's Amaranth platform."""
        raise NotImplementedError

    def drive_leds(self, platform, m: Module, roles: dict[str, Signal]) -> None:
        """Show the LED ``roles`` (one-bit signals in ``sync``) on the board's LEDs."""
        raise NotImplementedError

    # -- build glue

    def build_overrides(self) -> dict[str, str]:
        """Toolchain overrides for ``platform.build``: the board's extra LPF preferences and
        the placer and router that complete the whole core (:data:`.build.PLACE_AND_ROUTE`)."""
        overrides = {"nextpnr_opts": " ".join(PLACE_AND_ROUTE)}
        text = "\n".join(path.read_text() for path in constraint_files(self.board, ".lpf"))
        return overrides | ({"add_preferences": text} if text else {})

    # -- the design

    def elaborate(self, platform) -> Module:
        m = Module()
        clock_name = platform.default_clk
        clkin_freq = platform.lookup(clock_name).clock.frequency
        self.pll_plan = plan = solve_ecp5_pll(clkin_freq, self.core_clock)

        for name in ("sync", "eth_tx", "eth_tx90", "eth_rx"):
            m.domains += ClockDomain(name)
        m.submodules.clkin = clkin = io.Buffer("i", platform.request(clock_name, dir="-"))
        m.submodules.pll = pll = Ecp5Pll(plan)
        m.d.comb += pll.clkin.eq(clkin.i)
        # nextpnr derives the output clock constraints from the PLL's FREQUENCY_PIN_* attributes.
        for domain, clock in [
            ("sync", pll.core_clk),
            ("eth_tx", pll.eth_clk),
            ("eth_tx90", pll.eth_clk_shifted),
        ]:
            m.d.comb += ClockSignal(domain).eq(clock)
        for name in ("sync", "eth_tx", "eth_tx90", "eth_rx"):
            m.submodules[f"reset_{name}"] = ResetSynchronizer(~pll.locked, domain=name)

        pins = platform.request("eth_rgmii", self.eth_port, dir="-")
        m.submodules.rgmii = rgmii = RgmiiInterface(pins)
        m.submodules.ethernet = eth = GmiiEthernet(
            rx_domain="eth_rx", tx_domain="eth_tx", core_domain="sync"
        )
        m.d.comb += [
            rgmii.phy_reset.eq(~pll.locked),
            eth.rx_dv.eq(rgmii.rx_dv),
            eth.rx_er.eq(rgmii.rx_er),
            eth.rxd.eq(rgmii.rxd),
            rgmii.tx_en.eq(eth.tx_en),
            rgmii.tx_er.eq(eth.tx_er),
            rgmii.txd.eq(eth.txd),
        ]

        m.submodules.core = core = self.core = self.core_factory(self.config)
        m.d.comb += [
            core.rx.valid.eq(eth.rx.valid),
            core.rx.payload.eq(eth.rx.payload),
            eth.rx.ready.eq(1),  # the core never back-pressures frames from the MAC
            eth.tx.valid.eq(core.tx.valid),
            eth.tx.payload.eq(core.tx.payload),
            core.tx.ready.eq(eth.tx.ready),
        ]

        self.drive_leds(platform, m, self._led_roles(m, eth, core))
        return m

    def _led_roles(self, m: Module, eth: GmiiEthernet, core) -> dict[str, Signal]:
        # link: the PHY's receive clock runs (a divided toggle from eth_rx keeps changing).
        rx_toggle = Signal()
        rx_divider = Signal(8)
        m.d.eth_rx += rx_divider.eq(rx_divider + 1)
        with m.If(rx_divider == 0):
            m.d.eth_rx += rx_toggle.eq(~rx_toggle)
        seen_toggle = Signal()
        m.submodules.link_sync = FFSynchronizer(rx_toggle, seen_toggle, o_domain="sync")
        last_toggle = Signal()
        quiet = Signal(16)
        m.d.sync += last_toggle.eq(seen_toggle)
        with m.If(seen_toggle != last_toggle):
            m.d.sync += quiet.eq(0)
        with m.Elif(~quiet.all()):
            m.d.sync += quiet.eq(quiet + 1)
        link = Signal()
        m.d.comb += link.eq(~quiet.all())

        return {
            "link": link,
            "rx": self._stretched(m, eth.rx.valid & eth.rx.payload.last, "rx"),
            "tx": self._stretched(m, eth.tx.valid & eth.tx.ready & eth.tx.payload.last, "tx"),
            "kill": core.kill,
        }

    @staticmethod
    def _stretched(m: Module, pulse, name: str) -> Signal:
        """``pulse`` held high for some 84 ms, so that an LED shows it.

        The pulse is registered first, so the stretcher is not logic shared with the stream
        it watches (a LUT placed between both would stretch that stream's paths across the die).
        """
        seen = Signal(name=f"{name}_seen")
        m.d.sync += seen.eq(pulse)
        stretch = Signal(_LED_STRETCH_BITS, name=f"{name}_stretch")
        with m.If(seen):
            m.d.sync += stretch.eq((1 << _LED_STRETCH_BITS) - 1)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        lit = Signal(name=f"{name}_led")
        m.d.comb += lit.eq(stretch != 0)
        return lit
