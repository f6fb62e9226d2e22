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

How the datagram is split, 8 bytes a cycle. A packet is at least 3 bytes long, so at most 3
packet headers start in one beat. Each beat, the start lane of the first header is known from a
register (the lane after the packet that was in progress, the payload's first lane, or lane
"-1" when the previous beat ended with a length's first byte); from each header's length the
next start follows (only packets of at most 7 bytes end in the beat they start in). A packet
reaching past its beat becomes the packet *in progress*: its fields are captured by their
offset from its start, each from the lane where it arrives (the lane is the offset less the
offset of the beat's lane 0), and it is classified in the beat that holds its last byte. Fills
and counts are made in that beat; counts are committed when the datagram ends (only then is the
filter's ``drop`` known for any datagram), fills leave through the FIFO one cycle later.

The input is never back-pressured (``i.ready`` is 1); ``o`` is a stream with a FIFO in front.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .framefilter import FrameFilter, filter_counters_layout
from .layouts import BEAT_BYTES, beat_layout
from .orders import fill_layout

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
        beat = flt.o.payload
        take = flt.o.valid
        lanes = [beat.data[8 * k : 8 * k + 8] for k in range(BEAT_BYTES)]

        # Lowest and highest valid lanes of the beat.
        low = Signal(3)
        high = Signal(3)
        for k in reversed(range(BEAT_BYTES)):
            with m.If(beat.keep[k]):
                m.d.comb += low.eq(k)
        for k in range(BEAT_BYTES):
            with m.If(beat.keep[k]):
                m.d.comb += high.eq(k)
        last_end = Signal(signed(6))  # one past the highest valid lane
        m.d.comb += last_end.eq(high + 1)

        # State carried between the beats of a datagram.
        carried = Signal()  # a packet is in progress
        rem = Signal(17)  # its bytes still to come
        half = Signal()  # the previous beat ended with a length's first byte ...
        half_hi = Signal(8)  # ... this one
        skip = Signal()  # a length of 0 was seen: ignore the rest of the datagram
        cur_len = Signal(16)  # the packet in progress: its length field
        cur_off = Signal(17)  # and the offset of this beat's lane 0 in it
        captured = {
            pos: Signal(8, name=f"byte{pos}")
            for pos in [2, 3]  # the SoupBinTCP packet type and the OUCH message type
            + [o + k for name in _CAPTURED for o, n in [_FIELD[name]] for k in range(n)]
        }

        def byte_at(pos: int):
            """Byte at lane ``pos`` (-1 is the byte kept from the previous beat; 0 past the
            beat)."""
            if pos < 0:
                return half_hi
            return lanes[pos] if pos < BEAT_BYTES else Const(0, 8)

        carried_now = take & ~beat.first & ~skip & carried
        carried_cut = carried_now & beat.last & (rem > last_end)
        carried_done = carried_now & (rem <= 8) & ~carried_cut
        slots_on = take & (beat.first | ~skip) & (beat.first | ~carried | (rem <= 8))
        start = Signal(signed(6), name="slot0_start")
        m.d.comb += start.eq(Mux(beat.first, low, Mux(half, -1, Mux(carried, rem[:4], 0))))

        present = Signal(name="slot0_present")
        m.d.comb += present.eq(slots_on & (start < last_end))
        shorts = {"skipped": [], "malformed": []}
        events = {"straddle": [], "zero": [], "truncated": [], "long": []}
        long_start = Signal(signed(6))
        long_end = Signal(signed(19))
        long_len = Signal(16)
        # A header's length, end and type test for every lane it could start at, side by side;
        # the slots below only choose among them (a short chain of small multiplexers, not a
        # chain of lane multiplexers and adders).
        starts = range(-1, BEAT_BYTES)
        lengths, ends, types = {}, {}, {}
        for k in starts:
            lengths[k] = Signal(16, name=f"length_at{k}")
            ends[k] = Signal(signed(19), name=f"end_at{k}")
            types[k] = Signal(name=f"executed_at{k}")
            m.d.comb += [
                lengths[k].eq(Cat(byte_at(k + 1), byte_at(k))),
                ends[k].eq(k + 2 + lengths[k]),
                types[k].eq((byte_at(k + 2) == ord("S")) & (byte_at(k + 3) == ord("E"))),
            ]

        def chosen(start, values, shape, name):
            """``values[start]`` (0 when ``start`` is no lane), as an AND-OR of one-hot picks."""
            picked = Signal(shape, name=name)
            word = Const(0, len(picked))
            for k in starts:
                word = word | (values[k] & (start == k).replicate(len(picked)))
            m.d.comb += picked.eq(word)
            return picked

        for j in range(3):
            length = chosen(start, lengths, 16, f"slot{j}_length")
            end = chosen(start, ends, signed(19), f"slot{j}_end")
            lo_ok = start + 1 < last_end
            header_cut = present & ~lo_ok
            zero = present & lo_ok & (length == 0)
            fits = end <= last_end
            complete = present & lo_ok & (length != 0) & fits
            runs_on = present & lo_ok & (length != 0) & ~fits
            executed = chosen(start, types, 1, f"slot{j}_executed") & (length >= 2)
            shorts["skipped"].append(complete & ~executed)
            shorts["malformed"].append(complete & executed)  # an 'E' is never this short
            events["straddle"].append(header_cut & ~beat.last)
            events["truncated"].append((header_cut | runs_on) & beat.last)
            events["zero"].append(zero)
            long = runs_on & ~beat.last
            events["long"].append(long)
            with m.If(long):
                m.d.comb += [long_start.eq(start), long_end.eq(end), long_len.eq(length)]
            next_start = Signal(signed(6), name=f"slot{j + 1}_start")
            next_present = Signal(name=f"slot{j + 1}_present")
            m.d.comb += [next_start.eq(end), next_present.eq(complete & (end < last_end))]
            start, present = next_start, next_present

        long_any = Cat(*events["long"]).any()
        straddle = Cat(*events["straddle"]).any()
        zero_any = Cat(*events["zero"]).any()

        # Next state.
        with m.If(take):
            with m.If(beat.last):
                m.d.sync += [carried.eq(0), half.eq(0), skip.eq(0)]
            with m.Elif(~beat.first & skip):
                pass
            with m.Else():
                continuing = carried_now & (rem > 8)
                m.d.sync += [
                    carried.eq(long_any | continuing),
                    rem.eq(Mux(long_any, long_end - 8, Mux(continuing, rem - 8, 0))),
                    half.eq(straddle),
                    half_hi.eq(lanes[BEAT_BYTES - 1]),
                    skip.eq(zero_any),
                ]
            m.d.sync += [
                cur_off.eq(Mux(long_any, 8 - long_start, cur_off + 8)),
                cur_len.eq(Mux(long_any, long_len, cur_len)),
            ]

        # Field capture for the packet in progress (or the one starting in this beat).

        def arriving(pos, origin):
            where = Signal(signed(19), name=f"lane_of_{pos}")
            m.d.comb += where.eq(pos - origin)
            return (where >= 0) & (where < BEAT_BYTES), where[:3]

        def arriving_new(pos):
            """Whether byte ``pos`` of a packet starting in this beat (at ``long_start``)
            arrives now, and its value: one-hot over the start lanes, every lane a constant."""
            here, value = Const(0, 1), Const(0, 8)
            for k in starts:
                if 0 <= pos + k < BEAT_BYTES:
                    hit = long_start == k
                    here = here | hit
                    value = value | (lanes[pos + k] & hit.replicate(8))
            return here, value

        # a packet starting in this beat places its bytes by its start lane, one carried on by
        # ``cur_off`` (no subtraction after the slot chain)
        for pos, reg in captured.items():
            here_carried, lane = arriving(pos, cur_off)
            here_new, value_new = arriving_new(pos)
            with m.If(take & Mux(long_any, here_new, here_carried)):
                m.d.sync += reg.eq(Mux(long_any, value_new, Cat(*lanes).word_select(lane, 8)))

        def field(name, origin=None):
            """The big-endian field ``name`` of the packet in progress; with ``origin``, bytes
            arriving in this beat (relative to ``origin``) are taken from their lanes."""
            pos, size = _FIELD[name]
            out = []
            for k in range(size):
                value = captured[pos + k]
                if origin is not None:
                    here, lane = arriving(pos + k, origin)
                    value = Mux(here, Cat(*lanes).word_select(lane, 8), value)
                out.append(value)
            return Cat(*reversed(out))

        # Classification of the packet in progress, in the beat of its last byte.
        # (a packet of a few bytes may end in the beat after its start: its type bytes are
        # then arriving now)
        def view(pos):
            here, lane = arriving(pos, cur_off)
            return Mux(here, Cat(*lanes).word_select(lane, 8), captured[pos])

        executed = (view(2) == ord("S")) & (view(3) == ord("E")) & (cur_len >= 2)
        appendage = field("appendage_length", cur_off)
        consistent = (cur_len >= 1 + _EXECUTED_SIZE) & (cur_len == 1 + _EXECUTED_SIZE + appendage)
        price = field("price")
        price_ok = price[32:] == 0
        outcome = {
            "fills": carried_done & executed & consistent & price_ok,
            "bad_price": carried_done & executed & consistent & ~price_ok,
            "malformed": carried_done & executed & ~consistent,
            "skipped": carried_done & ~executed,
        }
        fill = Signal(fill_layout)
        m.d.comb += [
            fill.user_ref.eq(field("user_ref_num")),
            fill.quantity.eq(field("quantity")),
            fill.price.eq(price[:32]),
        ]

        # Counts: per datagram, committed at its end unless the filter dropped it.
        beat_counts = {
            "bad_price": outcome["bad_price"],
            "malformed": Cat(outcome["malformed"], zero_any, *shorts["malformed"]),
            "skipped": Cat(outcome["skipped"], *shorts["skipped"]),
            "truncated": Cat(carried_cut, *events["truncated"]),
        }
        seen = Signal(5)  # payload bytes of the datagram, up to 20
        count_now = Signal(5)
        m.d.comb += count_now.eq(Mux(beat.first, 0, seen) + sum(beat.keep))
        with m.If(take):
            m.d.sync += seen.eq(Mux(count_now >= 20, 20, count_now))
        commit = take & beat.last & ~beat.drop & (count_now >= 20)
        counters = {name: Signal(32, name=f"{name}_count") for name in FILL_COUNTERS}
        m.d.comb += self.counters.eq(Cat(flt.counters, *counters.values()))
        for name, bits in beat_counts.items():
            now = Signal(3, name=f"{name}_now")
            pending = Signal(12, name=f"{name}_pending")
            m.d.comb += now.eq(sum(list(bits)))
            with m.If(take):
                m.d.sync += pending.eq(Mux(beat.last, 0, Mux(beat.first, 0, pending) + now))
            with m.If(commit):
                total = Mux(beat.first, 0, pending) + now
                m.d.sync += counters[name].eq(counters[name] + total)

        emit = take & outcome["fills"] & ~beat.drop
        queued = Signal()
        m.d.sync += queued.eq(emit)
        held = Signal(fill_layout)
        with m.If(emit):
            m.d.sync += held.eq(fill)
        m.d.comb += [queue.w_en.eq(queued), queue.w_data.eq(held)]
        with m.If(queued):
            with m.If(queue.w_rdy):
                m.d.sync += counters["fills"].eq(counters["fills"] + 1)
            with m.Else():
                m.d.sync += counters["overflow"].eq(counters["overflow"] + 1)
        return m
