"""The gateware feed handler: Ethernet frames in, :data:`~.events.BookEvent`\\ s out.

``FrameFilter -> MoldParser (with its Sequencer) -> event buffer``, cut-through:

- :class:`~.framefilter.FrameFilter` checks the Ethernet / 802.1Q / IPv4 / UDP headers and passes
  the UDP payload on unaligned, one register stage later;
- :class:`~.moldparser.MoldParser` follows the MoldUDP64 message blocks, decides which messages
  are new and builds each event from the bytes of the beat holding the message's last byte, one
  register stage later;
- the event leaves on :attr:`FeedHandler.o` in that same cycle when the output is free, else
  waits in a 16-event buffer (in order). The frame input is never back-pressured: when the
  buffer is full the event is dropped, counted in ``overflow``, and ``stale`` pulses (a lost
  event makes the book untrustworthy).

Parse latency: an event is valid on ``o`` **2 cycles after the frame beat holding the message's
last byte is taken on** ``i`` (when the output is not back-pressured), and its ``stamp`` is the
``cycle`` input's value in the cycle that beat was taken.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .events import BookEvent
from .framefilter import FrameFilter, filter_counters_layout
from .layouts import beat_layout, ip_entry_layout, port_entry_layout, session_config_layout
from .moldparser import MoldParser, mold_counters_layout

__all__ = ["FeedHandler", "feed_counters_layout"]


def feed_counters_layout(width: int) -> data.StructLayout:
    """``filter`` (:data:`~.framefilter.FILTER_COUNTERS`), ``mold``
    (:data:`~.moldparser.MOLD_COUNTERS`) and ``overflow``, each counter ``width`` bits."""
    return data.StructLayout(
        {
            "filter": filter_counters_layout(width),
            "mold": mold_counters_layout(width),
            "overflow": width,
        }
    )


class FeedHandler(wiring.Component):
    """Frames of a MoldUDP64 / ITCH 5.0 feed in, book events out.

    Parameters
    ----------
    groups, ports:
        Entries of the destination address and port tables.
    depth:
        Events the output buffer holds while ``o`` is back-pressured (2 .. 256).
    counter_width:
        Width of every counter (they wrap).

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
        Ethernet frames (FCS stripped), delimited by ``last``; ``i.ready`` is always 1.
    o : Out(stream.Signature(BookEvent))
        The events, in sequence order.
    cycle : In(32)
        The free-running cycle counter the events are stamped with.
    allow_zero_checksum, groups, ports :
        Frame filter configuration (see :class:`~.framefilter.FrameFilter`).
    session : In(session_config_layout)
        The expected MoldUDP64 session, when enabled (else the first one seen is followed).
    stale : Out(1)
        One-cycle pulse when the book can no longer be trusted: a sequence gap, a late join, a
        session change, or an event lost to a full buffer.
    counters : Out(feed_counters_layout(counter_width))
    """

    def __init__(self, *, groups: int = 4, ports: int = 4, depth: int = 16,
                 counter_width: int = 32):  # fmt: skip
        if not isinstance(depth, int) or not 2 <= depth <= 256:
            raise ValueError(f"depth must be an integer in 2 .. 256, not {depth!r}")
        self.depth = depth
        self._filter = FrameFilter(groups=groups, ports=ports, counter_width=counter_width)
        self._parser = MoldParser(counter_width=counter_width)
        self.counter_width = counter_width
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)),
                "o": Out(stream.Signature(BookEvent)),
                "cycle": In(32),
                "allow_zero_checksum": In(1),
                "groups": In(data.ArrayLayout(ip_entry_layout, groups)),
                "ports": In(data.ArrayLayout(port_entry_layout, ports)),
                "session": In(session_config_layout),
                "stale": Out(1),
                "counters": Out(feed_counters_layout(counter_width)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.filter = ff = self._filter
        m.submodules.parser = mp = self._parser
        m.submodules.buffer = buf = fifo.SyncFIFO(width=len(self.o.payload.as_value()),
                                                  depth=self.depth)  # fmt: skip
        wiring.connect(m, wiring.flipped(self.i), ff.i)
        wiring.connect(m, ff.o, mp.i)
        # The parser stamps with the cycle its input beat was on the filter's input.
        previous_cycle = Signal(32)
        m.d.sync += previous_cycle.eq(self.cycle)
        m.d.comb += [
            mp.cycle.eq(previous_cycle),
            ff.allow_zero_checksum.eq(self.allow_zero_checksum),
            ff.groups.eq(self.groups),
            ff.ports.eq(self.ports),
            mp.session.eq(self.session),
        ]

        # Output: the buffer's head, or the new event straight through when it is empty.
        event = mp.o.payload.as_value()
        push = Signal()
        overflow = Signal()
        m.d.comb += [
            self.o.valid.eq(buf.r_rdy | mp.o.valid),
            self.o.payload.eq(Mux(buf.r_rdy, buf.r_data, event)),
            buf.r_en.eq(self.o.ready),
            push.eq(mp.o.valid & (buf.r_rdy | ~self.o.ready)),
            buf.w_en.eq(push & buf.w_rdy),
            buf.w_data.eq(event),
            overflow.eq(push & ~buf.w_rdy),
            self.stale.eq(mp.stale | overflow),
        ]
        overflows = Signal(self.counter_width)
        with m.If(overflow):
            m.d.sync += overflows.eq(overflows + 1)
        m.d.comb += self.counters.eq(Cat(ff.counters, mp.counters, overflows))
        return m
