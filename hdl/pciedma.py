"""The PCIe DMA block: BAR0 registers, the frame window and both DMA rings, in one clock domain.

:class:`PcieDma` faces the four AXI4-Stream interfaces of the UltraScale PCIe hard IP
(:mod:`.pcietlp`) and runs on its user clock (``sync`` here; :class:`~.pciecore.PcieCore`
renames it). Inside::

    cq --> BarCompleter --> cc          register file (BAR0, :mod:`.pciemap`)
                 |                       frame window --> FramePlayer --> frames
                 +--> register bus ------+
    rc --> TickFetcher (H2C ring) ------------------------------------> ticks
    rq <-- PacketMux <-- TickFetcher's read requests
                     <-- RecordWriter's record writes (C2H ring) <----- headers, words

The host reaches the core's control plane through the frame window: it writes a whole
Ethernet frame there (a control request, as it would send it over UDP, so the same peer and
token checks apply), then its length to ``frame_length``; the frame goes into the core's
receive path, and the response frame comes back as a C2H record (``reply_port``). The same
window carries OUCH fills and MoldUDP64 packets to the core. Tick records, the bulk input,
come over the H2C ring instead.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import pciemap
from .layouts import beat_layout
from .pciebar import BarCompleter
from .pciec2h import RecordWriter, tap_counters_layout, tap_header_layout, word_layout
from .pcieh2c import TickFetcher
from .pcietlp import (
    USER_WIDTHS,
    PacketMux,
    axis_signature,
    axis_to_stream,
    stream_to_axis,
    tlp_beat_layout,
)

__all__ = ["PcieDma"]

_ADDR_BITS = (pciemap.BAR_BYTES // 4 - 1).bit_length()
_WINDOW_WORDS = pciemap.FRAME_WINDOW_BYTES // 8


class PcieDma(wiring.Component):
    """BAR0, the frame window and the DMA engines (see the module documentation).

    Parameters
    ----------
    order_port, tob_port, reply_port:
        Reset values of the registers choosing the frames copied to the C2H ring.
    tags:
        H2C read requests outstanding at most (see :class:`~.pcieh2c.TickFetcher`).

    Attributes
    ----------
    cq, rc : In(axis_signature(...))
        Completer requests and requester completions from the hard IP.
    cc, rq : Out(axis_signature(...))
        Completer completions and requester requests to the hard IP.
    max_read_req : In(3)
        The hard IP's ``cfg_max_read_req``.
    ticks : Out(stream.Signature(beat_layout))
        Tick records for the core, five beats each.
    frames : Out(stream.Signature(beat_layout))
        Frames from the frame window, for the core's receive path.
    headers, words : In(stream.Signature(...))
        Records from :class:`~.pciec2h.TxTap` (through the clock-domain crossing).
    words_level : In(8)
        Words waiting on ``words``.
    tap_counters : In(tap_counters_layout)
        The tap's counters (already in this clock domain).
    kill : In(1)
        The core's kill switch (already in this clock domain), for ``status``.
    order_port, tob_port, reply_port : Out(16)
        The registers of the same names, for the tap.
    """

    def __init__(self, *, order_port: int, tob_port: int, reply_port: int, tags: int = 4):
        for name, port in (("order_port", order_port), ("tob_port", tob_port),
                           ("reply_port", reply_port)):  # fmt: skip
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"{name} must be an integer in 1 .. 65535, not {port!r}")
        self.ports = {"order_port": order_port, "tob_port": tob_port, "reply_port": reply_port}
        self.tags = tags
        super().__init__(
            {
                "cq": In(axis_signature(USER_WIDTHS["cq"])),
                "cc": Out(axis_signature(USER_WIDTHS["cc"])),
                "rq": Out(axis_signature(USER_WIDTHS["rq"])),
                "rc": In(axis_signature(USER_WIDTHS["rc"])),
                "max_read_req": In(3),
                "ticks": Out(stream.Signature(beat_layout)),
                "frames": Out(stream.Signature(beat_layout)),
                "headers": In(stream.Signature(tap_header_layout)),
                "words": In(stream.Signature(word_layout)),
                "words_level": In(8),
                "tap_counters": In(tap_counters_layout),
                "kill": In(1),
                "order_port": Out(16, init=order_port),
                "tob_port": Out(16, init=tob_port),
                "reply_port": Out(16, init=reply_port),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: PLR0915 - the register file, in order
        m = Module()
        m.submodules.bar = bar = BarCompleter(_ADDR_BITS)
        m.submodules.fetcher = fetcher = TickFetcher(tags=self.tags)
        m.submodules.writer = writer = RecordWriter()
        m.submodules.rq_mux = rq_mux = PacketMux(tlp_beat_layout(USER_WIDTHS["rq"]), 2)
        axis_to_stream(m, self.cq, bar.cq)
        stream_to_axis(m, bar.cc, self.cc)
        axis_to_stream(m, self.rc, fetcher.rc)
        wiring.connect(m, fetcher.rq, rq_mux.i[0])
        wiring.connect(m, writer.rq, rq_mux.i[1])
        stream_to_axis(m, rq_mux.o, self.rq)
        wiring.connect(m, fetcher.o, wiring.flipped(self.ticks))
        wiring.connect(m, wiring.flipped(self.headers), writer.headers)
        wiring.connect(m, wiring.flipped(self.words), writer.words)
        m.d.comb += [
            writer.words_level.eq(self.words_level),
            fetcher.max_read_req.eq(self.max_read_req),
        ]

        # ---------------------------------------------------------------- registers
        control = Signal(2)
        h2c_base, c2h_base, c2h_wb = Signal(64), Signal(64), Signal(64)
        h2c_size, c2h_size = Signal(5), Signal(5)
        h2c_tail, c2h_tail = Signal(32), Signal(32)
        m.d.comb += [
            fetcher.enable.eq(control[pciemap.CONTROL_BITS["h2c_enable"]]),
            fetcher.base.eq(h2c_base),
            fetcher.size_log2.eq(h2c_size),
            fetcher.tail.eq(h2c_tail),
            writer.enable.eq(control[pciemap.CONTROL_BITS["c2h_enable"]]),
            writer.base.eq(c2h_base),
            writer.size_log2.eq(c2h_size),
            writer.tail.eq(c2h_tail),
            writer.writeback.eq(c2h_wb),
        ]
        ports = {name: getattr(self, name) for name in self.ports}
        writable = {
            "control": control,
            "h2c_base_lo": h2c_base[:32],
            "h2c_base_hi": h2c_base[32:],
            "h2c_size_log2": h2c_size,
            "h2c_tail": h2c_tail,
            "c2h_base_lo": c2h_base[:32],
            "c2h_base_hi": c2h_base[32:],
            "c2h_size_log2": c2h_size,
            "c2h_tail": c2h_tail,
            "c2h_wb_lo": c2h_wb[:32],
            "c2h_wb_hi": c2h_wb[32:],
            **ports,
        }
        bus = bar.bus
        offsets = pciemap.offsets()

        def written(name: str):
            return bus.w_en & (bus.addr == offsets[name] >> 2)

        for name, target in writable.items():
            with m.If(written(name)):
                m.d.sync += target.eq(bus.w_data)

        # clear requests wait for their engine to be idle
        clear_h2c, clear_c2h = Signal(), Signal()
        with m.If(written("clear")):
            m.d.sync += [clear_h2c.eq(bus.w_data[0]), clear_c2h.eq(bus.w_data[1])]
        with m.If(clear_h2c & fetcher.idle):
            m.d.comb += fetcher.clear.eq(1)
            m.d.sync += [clear_h2c.eq(0), h2c_tail.eq(0)]
        with m.If(clear_c2h & writer.idle):
            m.d.comb += writer.clear.eq(1)
            m.d.sync += [clear_c2h.eq(0), c2h_tail.eq(0)]

        # ---------------------------------------------------------------- frame window
        m.submodules.window = window = Memory(shape=64, depth=_WINDOW_WORDS, init=[])
        wp = window.write_port(granularity=32)
        rp = window.read_port()
        base = pciemap.FRAME_WINDOW >> 2
        in_window = (bus.addr >= base) & (bus.addr < base + 2 * _WINDOW_WORDS)
        m.d.comb += [
            wp.addr.eq((bus.addr - base)[1:]),
            wp.data.eq(Cat(bus.w_data, bus.w_data)),
            wp.en.eq(Mux(bus.w_en & in_window, Mux(bus.addr[0], 0b10, 0b01), 0)),
        ]
        length = Signal(12)
        busy = Signal()
        sent_frames = Signal(32)
        with m.If(written("frame_length") & ~busy):
            value = bus.w_data
            with m.If((value != 0) & (value <= pciemap.FRAME_WINDOW_BYTES)):
                m.d.sync += [length.eq(value), busy.eq(1)]
        self._player(m, rp, length, busy, sent_frames)

        # ---------------------------------------------------------------- reads
        status = Signal(8)
        bits = pciemap.STATUS_BITS
        m.d.comb += [
            status[bits["frame_busy"]].eq(busy),
            status[bits["h2c_idle"]].eq(fetcher.idle),
            status[bits["h2c_error"]].eq(fetcher.error),
            status[bits["c2h_idle"]].eq(writer.idle),
            status[bits["kill"]].eq(self.kill),
        ]
        readable = {
            "id": Const(pciemap.BAR_ID, 32),
            "version": Const(pciemap.VERSION, 32),
            "status": status,
            "h2c_head": fetcher.head,
            "c2h_head": writer.head,
            "h2c_reads": fetcher.counters.reads,
            "h2c_records": fetcher.counters.records,
            "h2c_errors": fetcher.counters.errors,
            "c2h_records": writer.counters.records,
            "c2h_dropped": writer.counters.dropped,
            "c2h_writebacks": writer.counters.writebacks,
            "c2h_overflow": self.tap_counters.overflow,
            "c2h_too_long": self.tap_counters.too_long,
            "frames": sent_frames,
            **writable,
        }
        for name, _, access in pciemap.REGISTERS:
            assert (name in readable) == (access != "wo"), name
        with m.If(bus.r_en):
            m.d.sync += bus.r_data.eq(0)
            with m.Switch(bus.addr):
                for name, value in readable.items():
                    with m.Case(offsets[name] >> 2):
                        m.d.sync += bus.r_data.eq(value)
        return m

    def _player(self, m: Module, rp, length: Signal, busy: Signal, sent: Signal) -> None:
        """Send the frame window's first ``length`` bytes on ``frames`` while ``busy``."""
        frames = self.frames
        words = Signal(9)
        m.d.comb += words.eq((length + 7) >> 3)
        at = Signal(9)  # the next word to read
        first, last, keep = Signal(), Signal(), Signal(8)
        advance = ~frames.valid | frames.ready
        reading = busy & (at < words)
        rem = length[:3]
        m.d.comb += [
            rp.en.eq(advance),
            rp.addr.eq(at),
            frames.payload.data.eq(rp.data),
            frames.payload.keep.eq(keep),
            frames.payload.first.eq(first),
            frames.payload.last.eq(last),
        ]
        with m.If(advance):
            final = at == words - 1
            m.d.sync += [
                frames.valid.eq(reading),
                first.eq(at == 0),
                last.eq(final),
                keep.eq(Mux(final & (rem != 0), (Const(1, 9) << rem) - 1, 0xFF)),
            ]
            with m.If(reading):
                m.d.sync += at.eq(at + 1)
        with m.If(frames.valid & frames.ready & last):
            m.d.sync += [busy.eq(0), at.eq(0), sent.eq(sent + 1)]
