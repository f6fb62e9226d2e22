"""The core with a PCIe DMA path: tick records in, orders and top-of-book records out.

:class:`PcieCore` is what a board top with an UltraScale PCIe hard IP instantiates instead of a
bare :class:`~.core.Core`. It has two clock domains, both driven through its ports (so they
are local to it): ``sync``, the core's (``clk``, ``rst``: the MAC's clock), and ``pcie``, the
hard IP's (``pcie_clk``, ``pcie_rst``: its ``user_clk`` and ``user_reset``)::

              pcie domain                     |  sync domain (core)
    cq/cc --> PcieDma: BAR0, frame window ----|-- AsyncFIFO --> FrameMux --> core.rx
                                              |   rx (MAC) ---^
    rc/rq <-> PcieDma: H2C ring --------------|-- AsyncFIFO --> core.ticks
              PcieDma: C2H ring <-------------|-- AsyncFIFOs <-- TxTap <-- core.tx --> tx (MAC)
              counters, kill  <---------------|-- synchronisers

The core's transmit stream still goes to the MAC, unchanged and never held up by the DMA
path: the tap only watches it. Frames from the frame window share the core's receive path
with the MAC, a whole frame at a time, the MAC's first; while one is sent, ``rx.ready`` is low
and the board's receive buffer holds the MAC's frames (at most one window frame, up to 2 KB,
of delay).

Configuration that crosses from the ``pcie`` domain to the core (the tap's port registers)
goes through two-flop synchronisers: change it only while no frames are being sent. Counters
cross the other way Gray-coded.
"""

from amaranth.hdl import Cat, ClockDomain, DomainRenamer, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from .core import Core
from .coremap import CoreConfig
from .framemux import FrameMux
from .layouts import beat_layout
from .pciec2h import MAX_PAYLOAD, TxTap, tap_header_layout
from .pciedma import PcieDma
from .pcietlp import USER_WIDTHS, axis_signature

__all__ = ["REPLY_PORT", "PcieCore"]

#: Default UDP port the host's PCIe driver sends control requests from (``reply_port``).
REPLY_PORT = 45000
_WORDS_DEPTH = 32
_RECORD_WORDS = MAX_PAYLOAD // 8


def _gray_crossing(m: Module, value, o_domain: str, name: str) -> Signal:
    """``value`` (a counter of the ``sync`` domain stepping by at most 1 a cycle), readable in
    ``o_domain``: Gray-coded in a register, synchronised bit by bit, decoded."""
    width = len(value)
    gray = Signal(width, name=f"{name}_gray")
    m.d.sync += gray.eq(value ^ (value >> 1))
    synced = Signal(width, name=f"{name}_synced")
    m.submodules[f"{name}_sync"] = FFSynchronizer(gray, synced, o_domain=o_domain)
    bits = [synced[width - 1]]
    for k in reversed(range(width - 1)):
        bits.insert(0, bits[0] ^ synced[k])
    out = Signal(width, name=name)
    m.d.comb += out.eq(Cat(*bits))
    return out


def _fifo_stream(m: Module, fifo: AsyncFIFO, source, sink) -> None:
    """Connect stream ``source`` to ``fifo``'s write side and its read side to ``sink``
    (either may be ``None`` when wired by hand)."""
    if source is not None:
        m.d.comb += [
            fifo.w_en.eq(source.valid),
            fifo.w_data.eq(source.payload),
            source.ready.eq(fifo.w_rdy),
        ]
    if sink is not None:
        m.d.comb += [
            sink.valid.eq(fifo.r_rdy),
            sink.payload.eq(fifo.r_data),
            fifo.r_en.eq(sink.ready),
        ]


class PcieCore(wiring.Component):
    """A :class:`~.core.Core` and a :class:`~.pciedma.PcieDma` (see the module documentation).

    Parameters
    ----------
    config:
        The core's :class:`~.coremap.CoreConfig`; the C2H ring copies the frames leaving from
        its ``order_port`` and ``tob_port``.
    reply_port:
        The UDP port the host sends control requests from through the frame window; their
        responses are copied to the C2H ring.
    tags:
        H2C read requests outstanding at most.

    Attributes
    ----------
    rx : In(stream.Signature(beat_layout))
        Frames from the MAC; ``ready`` is low while a frame from the window is being sent.
    tx : Out(stream.Signature(beat_layout))
        Every frame the core sends, for the MAC.
    kill : Out(1)
        The kill switch.
    cycle : Out(32)
        The core's cycle counter.
    cq, rc : In(axis_signature(...))
        From the hard IP (``m_axis_cq``, ``m_axis_rc``).
    cc, rq : Out(axis_signature(...))
        To the hard IP (``s_axis_cc``, ``s_axis_rq``).
    max_read_req : In(3)
        The hard IP's ``cfg_max_read_req``.
    clk, rst : In(1)
        The core's clock and reset (its ``sync`` domain, local to this component).
    pcie_clk, pcie_rst : In(1)
        The hard IP's ``user_clk`` and ``user_reset`` (the ``pcie`` domain).
    """

    def __init__(self, config: CoreConfig | None = None, *, reply_port: int = REPLY_PORT,
                 tags: int = 4):  # fmt: skip
        self.config = config or CoreConfig()
        self.core = Core(self.config)
        self.dma = PcieDma(
            order_port=self.config.order_port,
            tob_port=self.config.tob_port,
            reply_port=reply_port,
            tags=tags,
        )
        super().__init__(
            {
                "rx": In(stream.Signature(beat_layout)),
                "tx": Out(stream.Signature(beat_layout)),
                "kill": Out(1),
                "cycle": Out(32),
                "cq": In(axis_signature(USER_WIDTHS["cq"])),
                "cc": Out(axis_signature(USER_WIDTHS["cc"])),
                "rq": Out(axis_signature(USER_WIDTHS["rq"])),
                "rc": In(axis_signature(USER_WIDTHS["rc"])),
                "max_read_req": In(3),
                "clk": In(1),
                "rst": In(1),
                "pcie_clk": In(1),
                "pcie_rst": In(1),
            }
        )

    def describe(self) -> dict:
        """The core's register map (as :meth:`~.core.Core.describe`)."""
        return self.core.describe()

    def elaborate(self, platform) -> Module:
        m = Module()
        for name in ("sync", "pcie"):
            prefix = "" if name == "sync" else "pcie_"
            domain = ClockDomain(name, local=True)
            m.domains += domain
            m.d.comb += [
                domain.clk.eq(getattr(self, f"{prefix}clk")),
                domain.rst.eq(getattr(self, f"{prefix}rst")),
            ]
        core, dma = self.core, self.dma
        m.submodules.core = core
        m.submodules.dma = DomainRenamer("pcie")(dma)
        for name in ("cq", "rc"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(dma, name))
        for name in ("cc", "rq"):
            wiring.connect(m, getattr(dma, name), wiring.flipped(getattr(self, name)))
        m.d.comb += [
            dma.max_read_req.eq(self.max_read_req),
            self.kill.eq(core.kill),
            self.cycle.eq(core.cycle),
        ]
        m.submodules.kill_sync = FFSynchronizer(core.kill, dma.kill, o_domain="pcie")

        # ---------------------------------------------------------------- host to core
        m.submodules.tick_fifo = ticks = AsyncFIFO(
            width=beat_layout.size, depth=16, w_domain="pcie", r_domain="sync"
        )
        _fifo_stream(m, ticks, dma.ticks, core.ticks)
        m.submodules.frame_fifo = frames = AsyncFIFO(
            width=beat_layout.size, depth=16, w_domain="pcie", r_domain="sync"
        )
        m.submodules.rx_mux = rx_mux = FrameMux(2)
        wiring.connect(m, wiring.flipped(self.rx), rx_mux.i[0])
        _fifo_stream(m, frames, dma.frames, rx_mux.i[1])
        wiring.connect(m, rx_mux.o, core.rx)

        # ---------------------------------------------------------------- core to host
        wiring.connect(m, core.tx, wiring.flipped(self.tx))
        m.submodules.tap = tap = TxTap()
        m.submodules.word_fifo = words = AsyncFIFO(
            width=64, depth=_WORDS_DEPTH, w_domain="sync", r_domain="pcie"
        )
        m.submodules.header_fifo = headers = AsyncFIFO(
            width=tap_header_layout.size, depth=4, w_domain="sync", r_domain="pcie"
        )
        m.d.comb += [
            tap.beat.eq(core.tx.payload),
            tap.take.eq(core.tx.valid & core.tx.ready),
            tap.cycle.eq(core.cycle),
            tap.room.eq((words.w_level <= _WORDS_DEPTH - _RECORD_WORDS) & (headers.w_level < 3)),
            words.w_en.eq(tap.words.valid),
            words.w_data.eq(tap.words.payload),
            tap.words.ready.eq(words.w_rdy),
            headers.w_en.eq(tap.headers.valid),
            headers.w_data.eq(tap.headers.payload),
            tap.headers.ready.eq(headers.w_rdy),
            dma.words_level.eq(words.r_level),
        ]
        _fifo_stream(m, words, None, dma.words)
        _fifo_stream(m, headers, None, dma.headers)
        for name in ("order_port", "tob_port", "reply_port"):
            m.submodules[f"{name}_sync"] = FFSynchronizer(
                getattr(dma, name), getattr(tap, name), o_domain="sync", init=dma.ports[name]
            )
        for name in ("overflow", "too_long"):
            value = _gray_crossing(m, getattr(tap.counters, name), "pcie", f"tap_{name}")
            m.d.comb += getattr(dma.tap_counters, name).eq(value)
        return m
