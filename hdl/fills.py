"""Fill parser: OUCH 5.0 Order Executed messages from the order-entry port, as fills.

:class:`FillParser` takes Ethernet frames, keeps the UDP datagrams addressed to the device's IP
address and order-entry port (a :class:`~tick2quote.hdl.framefilter.FrameFilter`), splits each
payload into SoupBinTCP packets (``Length (2) | Packet Type (1) | payload``, several per
datagram) and emits one :data:`~tick2quote.hdl.orders.fill_layout` record per sequenced ('S')
packet carrying an OUCH 5.0 Order Executed ('E') message (UserRefNum at message offset 9,
Quantity at 13, Price at 17, Appendage Length at 34; 36 bytes plus the appendage).

Every packet counts once in :attr:`FillParser.counters`:

``fills``
    an 'S' packet with an 'E' message of a consistent length (``1 + 36 + Appendage Length``)
    and a price in ``0 .. 2**32 - 1``: emitted on ``o``.
``bad_price``
    as above, but the signed 64-bit price is negative or does not fit 32 bits: refused.
``malformed``
    an 'S'/'E' packet whose length disagrees with its layout, or a packet of length 0 (which
    also ends the parsing of its datagram: nothing after it can be framed).
``skipped``
    any other packet (other SoupBinTCP types, other OUCH messages), skipped by its length.
``truncated``
    a packet cut short by the end of the datagram (or of the frame).

``overflow`` counts fills lost because the output FIFO (4 entries) was full. Datagrams the
frame filter drops count nothing here (the filter's own counters say why, in
``counters.filter``); so does a datagram under 20 bytes, which the filter always drops.

How the datagram is split, 8 bytes a cycle, in four registered steps (none of them a walk
from one header to the next on the loop from beat to beat):

1. a :class:`~tick2quote.hdl.soupscan.HeaderScan` tests every lane of the beat as a header
   (lanes 0 to 7, and -1 when the previous beat ended with a length's first byte);
2. it walks the beat's headers from every lane the first could start at (a packet is at least
   3 bytes long, so at most 3 headers start in one beat) and registers each walk's outcome;
3. the state carried from beat to beat (where the next beat's first header starts, one-hot;
   the packet *in progress*, reaching past its beat, and its bytes still to come) picks the
   walk from its start. The packet in progress has its fields captured, each byte from the lane
   where it arrives: one-hot over the lane it started at and the beat count since;
4. in the beat holding its last byte, its type bytes and Appendage Length are registered, and
   it is judged the cycle after: its fill goes into the FIFO, its outcome into the counts.

Counts are committed when the datagram ends (only then is the filter's ``drop`` known for any
datagram). A fill is valid on ``o`` 7 cycles after the cycle in which the frame beat holding
its last byte is taken.

The input is never back-pressured (``i.ready`` is 1); ``o`` is a stream with a FIFO in front.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .framefilter import FrameFilter, filter_counters_layout
from .layouts import BEAT_BYTES, beat_layout
from .orders import fill_layout
from .soupscan import START_LANES, HeaderScan, walk_layout

__all__ = ["FILL_COUNTERS", "FillParser", "fill_counters_layout", "EXECUTED_FIELDS"]

#: Packet outcome counters (see the module documentation), then ``overflow``.
FILL_COUNTERS = ("fills", "bad_price", "malformed", "skipped", "truncated", "overflow")

#: OUCH 5.0 Order Executed, as ``(name, size)`` in wire order (names of
#: :mod:`tick2quote.host.protocol.ouch`; checked in the tests).
EXECUTED_FIELDS = (
    ("type", 1), ("timestamp", 8), ("user_ref_num", 4), ("quantity", 4), ("price", 8),
    ("liquidity_flag", 1), ("match_number", 8), ("appendage_length", 2),
)  # fmt: skip

_SOUP_HEADER = 3  # length 2, packet type 1


def _offsets() -> dict[str, tuple[int, int]]:
    """``{field: (offset from the SoupBinTCP packet start, size)}`` of the Order Executed."""
    out, pos = {}, _SOUP_HEADER
    for name, size in EXECUTED_FIELDS:
        out[name] = (pos, size)
        pos += size
    return out


_FIELD = _offsets()
_EXECUTED_SIZE = sum(size for _, size in EXECUTED_FIELDS)  # 36
_CAPTURED = ("user_ref_num", "quantity", "price", "appendage_length")
#: Beats after a packet's first in which a captured byte can arrive (its last at offset 38,
#: from start lane 7 at most).
_BEATS_KEPT = (max(pos + size for pos, size in _FIELD.values()) - 1 + BEAT_BYTES - 1) // BEAT_BYTES


def fill_counters_layout(width: int = 32) -> data.StructLayout:
    """The frame filter's counters and one ``width``-bit counter per :data:`FILL_COUNTERS`."""
    return data.StructLayout(
        {"filter": filter_counters_layout(width), **{name: width for name in FILL_COUNTERS}}
    )


class FillParser(wiring.Component):
    """Ethernet frames on the order-entry port in, fills out (see the module documentation).

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
        Frames, FCS stripped; never back-pressured.
    o : Out(stream.Signature(fill_layout))
    address : In(32)
        The device's IPv4 address (big-endian integer).
    port : In(16)
        The order-entry UDP port.
    counters : Out(fill_counters_layout())
    """

    def __init__(self):
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)),
                "o": Out(stream.Signature(fill_layout)),
                "address": In(32),
                "port": In(16),
                "counters": Out(fill_counters_layout()),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.filter = flt = FrameFilter(groups=1, ports=1)
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=fill_layout.size, depth=4)
        wiring.connect(m, wiring.flipped(self.i), flt.i)
        m.d.comb += [
            flt.groups[0].enable.eq(1),
            flt.groups[0].address.eq(self.address),
            flt.ports[0].enable.eq(1),
            flt.ports[0].port.eq(self.port),
            self.o.valid.eq(queue.r_rdy),
            self.o.payload.eq(queue.r_data),
            queue.r_en.eq(self.o.ready),
        ]
        # The beat's headers walked from every start lane, one cycle ahead; here, the state
        # carried from beat to beat only picks the walk from its start.
        m.submodules.scan = scan = HeaderScan(message_type=ord("E"), message_size=_EXECUTED_SIZE)
        m.d.comb += [scan.valid.eq(flt.o.valid), scan.beat.eq(flt.o.payload)]
        beat = scan.out_beat
        take = scan.out_valid
        lanes = [beat.data[8 * k : 8 * k + 8] for k in range(BEAT_BYTES)]
        is_low, is_high = list(scan.out_low), list(scan.out_high)
        starts = START_LANES

        # State carried between the beats of a datagram.
        carried = Signal()  # a packet is in progress
        rem = Signal(17)  # its bytes still to come
        rem_at = Signal(BEAT_BYTES + 1, init=1)  # the same, one-hot when at most 8 (else 0)
        half = Signal()  # the previous beat ended with a length's first byte
        skip = Signal()  # a length of 0 was seen: ignore the rest of the datagram
        cur_len = Signal(16)  # the packet in progress: its length field
        cur_want = Signal(16)  # and the Appendage Length an Order Executed of that length has
        origin = Signal(len(starts))  # the lane it started at, one-hot over ``starts``
        beat_no = Signal(_BEATS_KEPT)  # this beat is its beat 1 + (the bit set); 0 past them
        captured = {
            pos: Signal(8, name=f"byte{pos}")
            for pos in [2, 3]  # the SoupBinTCP packet type and the OUCH message type
            + [o + k for name in _CAPTURED for o, n in [_FIELD[name]] for k in range(n)]
        }

        carried_now = take & ~beat.first & ~skip & carried
        rem_in_beat = rem_at.any()
        ends_in_beat = Cat(*(rem_at[r] & is_high[h] for r in range(BEAT_BYTES + 1)
                             for h in range(BEAT_BYTES) if r <= h + 1)).any()  # fmt: skip
        carried_cut = carried_now & beat.last & ~ends_in_beat
        carried_done = carried_now & rem_in_beat & ~carried_cut

        # the first header: at the payload's first lane in a datagram's first beat; else where
        # the previous beat left it (``start``, one-hot over ``starts``): after the byte kept
        # from the previous beat, after the packet in progress, or at lane 0; none after a
        # length of 0 or within a packet
        start = Signal(len(starts), init=1 << 1)
        first_at = {k: Signal(name=f"first_at{k}") for k in starts}
        for k in starts:
            low = is_low[k] if k >= 0 else Const(0)
            m.d.comb += first_at[k].eq(take & Mux(beat.first, low, start[k + 1]))
        walk = Signal(walk_layout)
        word = Const(0, walk_layout.size)
        for k in starts:
            word = word | (scan.walks[k + 1].as_value() & first_at[k].replicate(len(word)))
        m.d.comb += walk.eq(word)

        # Next state.
        with m.If(take):
            with m.If(beat.last):
                m.d.sync += [carried.eq(0), half.eq(0), skip.eq(0), start.eq(start.init)]
            with m.Elif(~beat.first & skip):
                pass
            with m.Else():
                continuing = carried_now & ~rem_in_beat
                rem_after = Cat(*(rem == BEAT_BYTES + r for r in range(BEAT_BYTES + 1)))
                carried_next = walk.long | continuing
                rem_at_next = Mux(walk.long, walk.rest_at, Mux(continuing, rem_after, 1))
                after = Mux(carried_next, rem_at_next[:BEAT_BYTES], 1)
                m.d.sync += [
                    carried.eq(carried_next),
                    rem.eq(Mux(walk.long, walk.rest, Mux(continuing, rem - 8, 0))),
                    rem_at.eq(rem_at_next),
                    start.eq(Mux(walk.zero, 0, Mux(walk.straddle, 1, Cat(Const(0), after)))),
                    half.eq(walk.straddle),
                    skip.eq(walk.zero),
                ]

        # The packets' fields are captured and judged one cycle later, from the beat and its
        # walk registered (off the loop above).
        def later(value, name):
            held = Signal.like(value, name=f"late_{name}")
            m.d.sync += held.eq(value)
            return held

        take, beat, walk = later(take, "take"), later(beat, "beat"), later(walk, "walk")
        carried_done, carried_cut = later(carried_done, "done"), later(carried_cut, "cut")
        lanes = [beat.data[8 * k : 8 * k + 8] for k in range(BEAT_BYTES)]
        long_at = dict(zip(starts, walk.long_at))
        with m.If(take):
            m.d.sync += [
                origin.eq(Mux(walk.long, walk.long_at, origin)),
                beat_no.eq(Mux(walk.long, 1, beat_no << 1)),
                cur_len.eq(Mux(walk.long, walk.length, cur_len)),
                cur_want.eq(Mux(walk.long, walk.want, cur_want)),
            ]

        # Field capture for the packet in progress (or the one starting in this beat).

        def arriving(pos, at_lane, beats):
            """Whether byte ``pos`` of a packet arrives in this beat, and its value: one-hot over
            the lane ``at_lane`` it started at and its beat ``beats`` (``{index: bit}``, 0 the
            beat it started in), every lane a constant."""
            here, value = Const(0, 1), Const(0, 8)
            for k in starts:
                index, lane = divmod(pos + k, BEAT_BYTES)
                if pos + k >= 0 and index in beats:
                    hit = at_lane[k] & beats[index]
                    here = here | hit
                    value = value | (lanes[lane] & hit.replicate(8))
            return here, value

        in_progress = dict(zip(starts, origin))
        later_beats = {n + 1: beat_no[n] for n in range(_BEATS_KEPT)}

        def arriving_carried(pos):
            return arriving(pos, in_progress, later_beats)

        # a packet starting in this beat places its bytes by its start lane, one carried on by
        # its start lane and beat count (no arithmetic after the slot chain)
        for pos, reg in captured.items():
            here_carried, value_carried = arriving_carried(pos)
            here_new, value_new = arriving(pos, long_at, {0: Const(1)})
            with m.If(take & Mux(walk.long, here_new, here_carried)):
                m.d.sync += reg.eq(Mux(walk.long, value_new, value_carried))

        def field(name, *, arriving_now=False):
            """The big-endian field ``name`` of the packet in progress; with ``arriving_now``,
            bytes arriving in this beat are taken from their lanes."""
            pos, size = _FIELD[name]
            out = []
            for k in range(size):
                value = captured[pos + k]
                if arriving_now:
                    here, lane_value = arriving_carried(pos + k)
                    value = Mux(here, lane_value, value)
                out.append(value)
            return Cat(*reversed(out))

        # Classification of the packet in progress, in the beat of its last byte: its bytes
        # (some may arrive in that beat: the type bytes of a packet of a few bytes, the
        # Appendage Length) are registered there and judged the cycle after.
        def view(pos):
            here, value = arriving_carried(pos)
            return Mux(here, value, captured[pos])

        judged = later(carried_done, "judged")
        packet_type, message_type = later(view(2), "packet_type"), later(view(3), "message_type")
        appendage = later(field("appendage_length", arriving_now=True), "appendage")
        want = later(cur_want, "want")
        long_enough = later(cur_len >= 2, "long_enough")
        sized = later(cur_len >= 1 + _EXECUTED_SIZE, "sized")
        price_ok = later(field("price")[32:] == 0, "price_ok")
        fill = Signal(fill_layout)  # the fields of every finished packet (all came earlier)
        with m.If(carried_done):
            m.d.sync += [
                fill.user_ref.eq(field("user_ref_num")),
                fill.quantity.eq(field("quantity")),
                fill.price.eq(field("price")[:32]),
            ]
        executed = (packet_type == ord("S")) & (message_type == ord("E")) & long_enough
        consistent = sized & (appendage == want)
        outcome = {
            "fills": judged & executed & consistent & price_ok,
            "bad_price": judged & executed & consistent & ~price_ok,
            "malformed": judged & executed & ~consistent,
            "skipped": judged & ~executed,
        }

        # Counts: per datagram, committed at its end unless the filter dropped it; tallied two
        # cycles after the beat (with its judgement), from its outcomes registered.
        seen = Signal(5)  # payload bytes of the datagram, up to 20
        count_now = Signal(5)
        m.d.comb += count_now.eq(Mux(beat.first, 0, seen) + sum(beat.keep))
        with m.If(take):
            m.d.sync += seen.eq(Mux(count_now >= 20, 20, count_now))
        commit = later(take & beat.last & ~beat.drop & (count_now >= 20), "commit")
        walk = later(walk, "judged_walk")
        take, beat = later(take, "judged_take"), later(beat, "judged_beat")
        beat_counts = {
            "bad_price": outcome["bad_price"],
            "malformed": outcome["malformed"] + walk.malformed,
            "skipped": outcome["skipped"] + walk.skipped,
            "truncated": later(carried_cut, "judged_cut") + walk.truncated,
        }
        counters = {name: Signal(32, name=f"{name}_count") for name in FILL_COUNTERS}
        m.d.comb += self.counters.eq(Cat(flt.counters, *counters.values()))
        tally, tally_first, tally_last, tally_commit = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [
            tally.eq(take),
            tally_first.eq(beat.first),
            tally_last.eq(beat.last),
            tally_commit.eq(commit),
        ]
        for name, bits in beat_counts.items():
            now = Signal(3, name=f"{name}_now")
            pending = Signal(12, name=f"{name}_pending")
            m.d.sync += now.eq(bits)
            with m.If(tally):
                m.d.sync += pending.eq(Mux(tally_last, 0, Mux(tally_first, 0, pending) + now))
            with m.If(tally_commit):
                total = Mux(tally_first, 0, pending) + now
                m.d.sync += counters[name].eq(counters[name] + total)

        emit = outcome["fills"] & ~beat.drop
        m.d.comb += [queue.w_en.eq(emit), queue.w_data.eq(fill)]
        with m.If(emit):
            with m.If(queue.w_rdy):
                m.d.sync += counters["fills"].eq(counters["fills"] + 1)
            with m.Else():
                m.d.sync += counters["overflow"].eq(counters["overflow"] + 1)
        return m
