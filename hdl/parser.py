"""Cut-through ITCH 5.0 message parser: one realigned message stream in, :data:`BookEvent` out.

Every field of a message sits at a constant byte offset from the message start, and the input
stream carries byte ``8*k + l`` of a message in lane ``l`` of its beat ``k``. So each byte of
the event is captured from one fixed ``(beat, lane)`` per message type, selected by the type
byte latched in beat 0: a handful of 2:1 muxes per event byte, no shifter. The event register
loads in the cycle the message's last beat is accepted, so the event is valid on ``o`` exactly
one cycle later.

The offsets are declared once, in :data:`ITCH_FIELDS`; the tests check them against the codec
declarations in :mod:`tick2quote.host.protocol.itch`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .events import EVENT_FIELDS, BookEvent, EventKind
from .layouts import message_layout

__all__ = ["ITCH_FIELDS", "ITCH_SIZES", "LOCATE_OFFSET", "ItchParser", "itch_counters_layout"]

#: Stock Locate, in the common header of every message.
LOCATE_OFFSET = 1

_ADD_LIKE = {"order_ref": 11, "code": 19, "shares": 20, "stock": 24, "price": 32}

#: ITCH type -> (event kind, {event field: offset of its first byte in the message}).
ITCH_FIELDS: dict[str, tuple[EventKind, dict[str, int]]] = {
    "A": (EventKind.ADD, _ADD_LIKE),
    "F": (EventKind.ADD, _ADD_LIKE),
    "E": (EventKind.EXECUTE, {"order_ref": 11, "shares": 19}),
    "C": (EventKind.EXECUTE_PRICE, {"order_ref": 11, "shares": 19, "code": 31, "price": 32}),
    "X": (EventKind.CANCEL, {"order_ref": 11, "shares": 19}),
    "D": (EventKind.DELETE, {"order_ref": 11}),
    "U": (EventKind.REPLACE, {"order_ref": 11, "new_ref": 19, "shares": 27, "price": 31}),
    "S": (EventKind.SYSTEM, {"code": 11}),
    "R": (EventKind.DIRECTORY, {"stock": 11}),
    "H": (EventKind.TRADING, {"stock": 11, "code": 19}),
    "P": (EventKind.TRADE, _ADD_LIKE),
}

#: Published size (bytes, without the length prefix) of every type in :data:`ITCH_FIELDS`.
ITCH_SIZES: dict[str, int] = {
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35,
    "S": 12, "R": 39, "H": 25, "P": 44,
}  # fmt: skip

# Fields whose first wire byte is their lowest byte (raw text); the rest are big-endian.
_WIRE_ORDER_FIELDS = frozenset({"stock"})
_SIDE_KINDS = (EventKind.ADD, EventKind.TRADE)

_OUTCOMES = ("skipped", "bad_length", "truncated")
_EMITTED_KINDS = [kind for kind in EventKind if kind is not EventKind.NONE]


def itch_counters_layout(width: int) -> data.StructLayout:
    """One ``width``-bit counter per event kind (``add`` ... ``trade``) and per drop cause."""
    names = [kind.name.lower() for kind in _EMITTED_KINDS] + list(_OUTCOMES)
    return data.StructLayout({name: width for name in names})


def _byte_sources() -> dict[tuple[str, int], dict[int, list[str]]]:
    """(event field, byte index in the field) -> {message offset: [ITCH types]}."""
    sources: dict[tuple[str, int], dict[int, list[str]]] = {}
    for itch_type, (_kind, fields) in ITCH_FIELDS.items():
        for name, start in fields.items():
            size = EVENT_FIELDS[name] // 8
            for j in range(size):
                # Wire byte j of a big-endian field is its byte (size - 1 - j).
                index = j if name in _WIRE_ORDER_FIELDS else size - 1 - j
                per_offset = sources.setdefault((name, index), {})
                per_offset.setdefault(start + j, []).append(itch_type)
    return sources


class ItchParser(wiring.Component):
    """Turns ITCH 5.0 messages into :data:`~.events.BookEvent`\\ s, cut-through.

    Parameters
    ----------
    counter_width:
        Width of each counter in :attr:`counters` (they wrap).

    Attributes
    ----------
    i : In(stream.Signature(message beat))
        One message at a time, its type byte in lane 0 of its ``first`` beat; ``length`` and
        ``sequence`` are read on the ``first`` beat, ``truncated`` on any beat.
    o : Out(stream.Signature(BookEvent))
        One event per A F E C X D U S R H P message of its published size that was not
        truncated; valid exactly one cycle after the message's last beat is accepted.
    cycle : In(32)
        Free-running cycle counter; its value in the cycle the last beat is accepted becomes
        the event's ``stamp``.
    counters : Out(:func:`itch_counters_layout`)
        Messages per event kind, plus ``skipped`` (every other type, known or not),
        ``bad_length`` (a book type whose length is not its published size, or length 0)
        and ``truncated``; each message counts once, one cycle after its event is emitted.

    ``i.ready`` is low only while an event is waiting on ``o``; with ``o.ready`` high the parser
    takes one beat every cycle, messages back to back.
    """

    def __init__(self, counter_width: int = 32):
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
            raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
        self.counter_width = counter_width
        super().__init__(
            {
                "i": In(stream.Signature(message_layout)),
                "o": Out(stream.Signature(BookEvent)),
                "cycle": In(32),
                "counters": Out(itch_counters_layout(counter_width)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        beat_in = self.i.payload
        types = list(ITCH_FIELDS)

        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(~self.o.valid | self.o.ready),
            accept.eq(self.i.valid & self.i.ready),
        ]

        # Beat index within the message (saturating: no field lies past beat 6).
        beat_reg = Signal(range(8))
        beat = Signal(range(8))
        m.d.comb += beat.eq(Mux(beat_in.first, 0, beat_reg))
        with m.If(accept):
            m.d.sync += beat_reg.eq(Mux(beat == 7, 7, beat + 1))

        # Beat 0: decode the type byte and check the length, once per message.
        type_byte = beat_in.data[0:8]
        is_type_now = Signal(len(types))
        length_ok_now = Signal()
        m.d.comb += [is_type_now[n].eq(type_byte == ord(t)) for n, t in enumerate(types)]
        m.d.comb += length_ok_now.eq(
            _any(is_type_now[n] & (beat_in.length == ITCH_SIZES[t]) for n, t in enumerate(types))
        )
        kind_now = Signal(EventKind)
        m.d.comb += kind_now.eq(
            _any(Mux(is_type_now[n], ITCH_FIELDS[t][0].value, 0) for n, t in enumerate(types))
        )

        is_type_reg = Signal(len(types))
        known_reg = Signal()
        length_ok_reg = Signal()
        empty_reg = Signal()
        kind_reg = Signal(EventKind)
        truncated_reg = Signal()
        with m.If(accept & beat_in.first):
            m.d.sync += [
                is_type_reg.eq(is_type_now),
                known_reg.eq(is_type_now.any()),
                length_ok_reg.eq(length_ok_now),
                empty_reg.eq(beat_in.length == 0),
                kind_reg.eq(kind_now),
            ]
        known = Mux(beat_in.first, is_type_now.any(), known_reg)
        length_ok = Mux(beat_in.first, length_ok_now, length_ok_reg)
        empty = Mux(beat_in.first, beat_in.length == 0, empty_reg)
        kind = Signal(EventKind)
        m.d.comb += kind.eq(Mux(beat_in.first, kind_now, kind_reg))
        truncated = Signal()
        m.d.comb += truncated.eq(beat_in.truncated | (~beat_in.first & truncated_reg))
        with m.If(accept):
            m.d.sync += truncated_reg.eq(truncated)

        # Field capture: the accumulated event with this beat's bytes merged in. Every signal
        # here is assigned whole (no part-selects in processes: Icarus 11 loops on those once
        # ``always @*`` becomes ``always_comb``).
        acc = Signal(BookEvent)
        nxt = Signal(BookEvent)
        lanes = [beat_in.data[8 * lane : 8 * lane + 8] for lane in range(8)]
        at_start = {
            "locate": _lanes(beat_in.data, LOCATE_OFFSET + 1, LOCATE_OFFSET),  # big-endian
            "sequence": beat_in.sequence,
        }
        sources = _byte_sources()
        captured = {}
        for name, field in BookEvent:
            old = acc.as_value()[field.offset : field.offset + field.width]
            merged = []
            for index in range(0, field.width, 8):
                byte = old[index : index + 8]
                for offset, owners in sources.get((name, index // 8), {}).items():
                    hit = _any(is_type_reg[types.index(t)] for t in owners)
                    byte = Mux(hit & (beat == offset // 8), lanes[offset % 8], byte)
                merged.append(byte)
            later = Cat(*merged)[: field.width]
            captured[name] = Mux(beat_in.first, at_start.get(name, 0), later)
        m.d.comb += nxt.eq(Cat(*(_fit(captured[name], f.width) for name, f in BookEvent)))
        with m.If(accept):
            m.d.sync += acc.eq(nxt)

        # Output register, loaded with the last beat.
        emit = Signal()
        m.d.comb += emit.eq(known & length_ok & ~truncated)
        event = Signal(BookEvent)
        finished = {
            **{name: getattr(nxt, name) for name, _ in BookEvent},
            "kind": kind,
            # The side byte (offset 19) never arrives in an event's last beat.
            "side": (acc.code == ord("S")) & _any(kind == k for k in _SIDE_KINDS),
            "stamp": self.cycle,
        }
        m.d.comb += event.eq(Cat(*(_fit(finished[name], f.width) for name, f in BookEvent)))
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(accept & beat_in.last):
            m.d.sync += self.o.valid.eq(emit)
            with m.If(emit):
                m.d.sync += self.o.payload.eq(event)

        # Counters, one cycle behind the outcome; each a signal of its own, assigned whole.
        outcome = {name: Signal(name=f"{name}_seen") for name in _OUTCOMES}
        counted_kind = Signal(EventKind)
        event_done = Signal()
        m.d.sync += [flag.eq(0) for flag in outcome.values()] + [event_done.eq(0)]
        with m.If(accept & beat_in.last):
            with m.If(truncated):
                m.d.sync += outcome["truncated"].eq(1)
            with m.Elif(~known & ~empty):
                m.d.sync += outcome["skipped"].eq(1)
            with m.Elif(~emit):
                m.d.sync += outcome["bad_length"].eq(1)
            with m.Else():
                m.d.sync += [event_done.eq(1), counted_kind.eq(kind)]
        increments = {
            kind.name.lower(): event_done & (counted_kind == kind) for kind in _EMITTED_KINDS
        }
        increments.update(outcome)
        counters = []
        for name, _ in self.counters.shape():
            counter = Signal(self.counter_width, name=f"{name}_count")
            with m.If(increments[name]):
                m.d.sync += counter.eq(counter + 1)
            counters.append(counter)
        m.d.comb += self.counters.eq(Cat(*counters))
        return m


def _lanes(word, *lanes):
    """The bytes of ``word`` in the given lanes, the first lane as the lowest byte."""
    return Cat(*(word[8 * lane : 8 * lane + 8] for lane in lanes))


def _fit(value, width: int):
    """``value`` zero-extended (or cut) to exactly ``width`` bits, for packing with ``Cat``."""
    return Cat(value, Const(0, width))[:width]


def _any(terms):
    """OR of ``terms`` (an empty set is 0)."""
    result = Const(0)
    for term in terms:
        result = result | term
    return result
