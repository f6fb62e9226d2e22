"""Top-of-book feed: book updates in, one UDP datagram per update out.

:class:`TopOfBookFeed` sends each :data:`~tick2quote.hdl.book.top_of_book_layout` record it
takes as one Ethernet/IPv4/UDP frame (addresses and ports from a
:data:`~tick2quote.hdl.egress.udp_config_layout`, typically a multicast group and its MAC)
whose payload is the 40-byte record of :mod:`tick2quote.host.protocol.tobfeed`
(:data:`RECORD_FIELDS`): 42 + 40 = 82 bytes, 11 beats, the last one with 2 bytes. The frame
is built by the same :class:`~tick2quote.hdl.egress.FrameSender` as the order frames: its first
beat is presented in the cycle the update is taken, the others follow back to back.

One record per frame, no batching: a frame takes 11 beats (plus one idle cycle), so this feed
follows at most one update in 12 cycles. The input is never back-pressured, so the book never
waits for it. With ``depth`` 0 an update arriving while a frame is in flight is dropped; with a
queue of ``depth`` updates (one cycle more latency), only an update finding the queue full is.
Either way the drop is counted (``counters.dropped``) and takes no frame sequence number, so
``frame_sequence`` shows network losses only, while the record's ``book_sequence`` also shows
the updates dropped here.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .book import top_of_book_layout
from .egress import FrameSender, field_bytes, udp_config_layout
from .layouts import beat_layout

__all__ = ["RECORD_FIELDS", "TopOfBookFeed", "tobfeed_counters_layout"]

#: The record as ``(name, size)`` in wire order (that of the host codec; checked in the tests).
RECORD_FIELDS = (
    ("frame_sequence", 8), ("type", 1), ("locate", 2), ("bid_px", 4), ("bid_sz", 4),
    ("ask_px", 4), ("ask_sz", 4), ("flags", 1), ("book_sequence", 8), ("stamp", 4),
)  # fmt: skip

#: Frames sent and updates dropped (a frame was in flight).
tobfeed_counters_layout = data.StructLayout({"sent": 32, "dropped": 32})


class TopOfBookFeed(wiring.Component):
    """Top-of-book updates in, UDP frames out (see the module documentation).

    Attributes
    ----------
    i : In(stream.Signature(top_of_book_layout))
        Always ready.
    o : Out(stream.Signature(beat_layout))
    config : In(udp_config_layout)
    hold : In(1)
        No frame starts while high (a port shared with more urgent frames holds it off).
    counters : Out(tobfeed_counters_layout)
    """

    def __init__(self, depth: int = 0):
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, not {depth!r}")
        self.depth = depth
        super().__init__(
            {
                "i": In(stream.Signature(top_of_book_layout)),
                "o": Out(stream.Signature(beat_layout)),
                "config": In(udp_config_layout),
                "hold": In(1),
                "counters": Out(tobfeed_counters_layout),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        held = Signal(top_of_book_layout)
        frame_sequence = Signal(64)
        sequence_held = Signal(64)
        record = field_bytes(RECORD_FIELDS, {
            "frame_sequence": sequence_held, "type": "Q", "locate": held.locate,
            "bid_px": held.bid_px, "bid_sz": held.bid_sz, "ask_px": held.ask_px,
            "ask_sz": held.ask_sz, "flags": held.stale, "book_sequence": held.sequence,
            "stamp": held.stamp,
        })  # fmt: skip
        sender = FrameSender([len(record)])
        m.d.comb += self.i.ready.eq(1)
        if self.depth:
            m.submodules.queue = queue = fifo.SyncFIFO(
                width=top_of_book_layout.size, depth=self.depth
            )
            m.d.comb += [queue.w_data.eq(self.i.payload), queue.w_en.eq(self.i.valid)]
            start, update, lost = queue.r_rdy, queue.r_data, self.i.valid & ~queue.w_rdy
        else:
            start, update = self.i.valid, self.i.payload.as_value()
        sender.build(m, self.o, self.config, start=start, variant_in=0, payloads=[record],
                     hold=self.hold)  # fmt: skip
        if self.depth:
            m.d.comb += queue.r_en.eq(sender.accept)
        else:
            lost = self.i.valid & ~sender.accept
        with m.If(sender.accept):
            m.d.sync += [
                held.eq(update),
                sequence_held.eq(frame_sequence),
                frame_sequence.eq(frame_sequence + 1),
                self.counters.sent.eq(self.counters.sent + 1),
            ]
        with m.If(lost):
            m.d.sync += self.counters.dropped.eq(self.counters.dropped + 1)
        return m
