"""Tick-record parser: 40-byte little-endian records (5 beats) in, :data:`BookEvent` out.

The record is the host streaming format of the wire-format notes: ``symbol_id (2) |
message_type (1) | side (1) | price (8) | volume (8) | timestamp (8) | sequence (8) |
reserved (4)``. Each field byte is captured from its fixed ``(beat, lane)``; every check needs
only fields complete after the third beat, so they are registered early, and the event
register loads with the fifth beat: the event is valid one cycle after the record's last beat.

The offsets are declared once, in :data:`TICK_FIELDS`; the tests check them against the codec
declaration in :mod:`tick2quote.host.protocol.tick`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .events import BookEvent, EventKind
from .layouts import BEAT_BYTES, beat_layout

__all__ = ["TICK_FIELDS", "TICK_RECORD_SIZE", "TICK_KINDS", "TickParser", "tick_counters_layout"]

#: Field -> (byte offset, size in bytes) of the fields the parser reads.
TICK_FIELDS: dict[str, tuple[int, int]] = {
    "symbol_id": (0, 2),
    "message_type": (2, 1),
    "side": (3, 1),
    "price": (4, 8),
    "volume": (12, 8),
    "sequence": (28, 8),
}
#: Size of one record in bytes.
TICK_RECORD_SIZE = 40
#: ``message_type`` -> event kind (add, cancel, modify, trade).
TICK_KINDS: dict[int, EventKind] = {
    1: EventKind.ADD,
    2: EventKind.CANCEL,
    3: EventKind.REPLACE,
    4: EventKind.TRADE,
}
#: Symbols ``0 .. MAX_SYMBOLS - 1`` are valid.
MAX_SYMBOLS = 4096

_RECORD_BEATS = TICK_RECORD_SIZE // BEAT_BYTES
# Drop causes, in the order they are checked (a record counts under the first that applies).
_CAUSES = ("framing", "bad_symbol", "bad_type", "bad_side", "bad_price", "bad_volume")
_FIELDS_LAYOUT = data.StructLayout({name: 8 * size for name, (_, size) in TICK_FIELDS.items()})


def tick_counters_layout(width: int) -> data.StructLayout:
    """One ``width``-bit counter per event kind and per drop cause (see :class:`TickParser`)."""
    names = [kind.name.lower() for kind in TICK_KINDS.values()] + list(_CAUSES)
    return data.StructLayout({name: width for name in names})


class TickParser(wiring.Component):
    """Turns 40-byte tick records into :data:`~.events.BookEvent`\\ s.

    Parameters
    ----------
    max_price:
        A record is valid only with ``0 < price < max_price`` (2 .. 2**32, so that the price
        fits the event).
    counter_width:
        Width of each counter in :attr:`counters` (they wrap).

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
        Records, delimited by ``last`` (``first`` is not used): a well-framed record is 5 full
        beats, ``last`` on the fifth.
    o : Out(stream.Signature(BookEvent))
        One event per valid record, valid exactly one cycle after its last beat is accepted:
        ``locate = symbol_id``, ``order_ref = sequence = `` the record's sequence, ``side``,
        ``code`` (``'B'`` / ``'S'``), ``shares = volume``, ``price``; a modify (``REPLACE``)
        keeps its reference, so ``new_ref = order_ref``.
    cycle : In(32)
        Free-running cycle counter, copied to ``stamp``.
    counters : Out(:func:`tick_counters_layout`)
        Events per kind (``add``, ``cancel``, ``replace``, ``trade``) and dropped records by
        first cause: ``framing`` (not 5 full beats), ``bad_symbol`` (``>= 4096``),
        ``bad_type`` (not 1..4), ``bad_side`` (not 0/1), ``bad_price``, ``bad_volume``
        (``>= 2**32``). Each record counts once, one cycle after its event is emitted.
    """

    def __init__(self, max_price: int = 1_000_000_000, counter_width: int = 32):
        if not isinstance(max_price, int) or not 1 < max_price <= 1 << 32:
            raise ValueError(f"max_price must be an integer in 2 .. 2**32, not {max_price!r}")
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
            raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
        self.max_price = max_price
        self.counter_width = counter_width
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)),
                "o": Out(stream.Signature(BookEvent)),
                "cycle": In(32),
                "counters": Out(tick_counters_layout(counter_width)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        beat_in = self.i.payload

        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(~self.o.valid | self.o.ready),
            accept.eq(self.i.valid & self.i.ready),
        ]

        # Beat position within the record; _RECORD_BEATS means "too long".
        pos = Signal(range(_RECORD_BEATS + 1))
        short_beat = Signal()  # a beat of this record had fewer than 8 bytes
        short_now = Signal()
        m.d.comb += short_now.eq(short_beat | (beat_in.keep != (1 << BEAT_BYTES) - 1))
        with m.If(accept):
            with m.If(beat_in.last):
                m.d.sync += [pos.eq(0), short_beat.eq(0)]
            with m.Else():
                m.d.sync += [
                    pos.eq(Mux(pos == _RECORD_BEATS, pos, pos + 1)),
                    short_beat.eq(short_now),
                ]

        # Field capture by byte position (little-endian: wire byte j is field byte j). Every
        # signal here is assigned whole (no part-selects in processes: Icarus 11 loops on those
        # once ``always @*`` becomes ``always_comb``).
        acc = Signal(_FIELDS_LAYOUT)
        nxt = Signal(_FIELDS_LAYOUT)
        captured = []
        for name, (start, size) in TICK_FIELDS.items():
            old = getattr(acc, name)
            merged = []
            for j in range(size):
                offset = start + j
                lane = offset % BEAT_BYTES
                merged.append(
                    Mux(
                        pos == offset // BEAT_BYTES,
                        beat_in.data[8 * lane : 8 * lane + 8],
                        old[8 * j : 8 * j + 8],
                    )
                )
            captured.append(Cat(*merged))
        m.d.comb += nxt.eq(Cat(*captured))
        with m.If(accept):
            m.d.sync += acc.eq(nxt)

        # Checks: every checked field is complete after beat 2, so they are computed from the
        # captured fields and registered with each beat; the last beat reads the registers.
        checks = {
            "bad_symbol": acc.symbol_id >= MAX_SYMBOLS,
            "bad_type": (acc.message_type == 0) | (acc.message_type > len(TICK_KINDS)),
            "bad_side": acc.side > 1,
            "bad_price": (acc.price == 0) | (acc.price >= self.max_price),
            "bad_volume": acc.volume[32:] != 0,
        }
        causes = {"framing": Signal(name="framing")}
        m.d.comb += causes["framing"].eq((pos != _RECORD_BEATS - 1) | short_now)
        for name, check in checks.items():
            causes[name] = Signal(name=name)
            with m.If(accept):
                m.d.sync += causes[name].eq(check)
        valid_record = Signal()
        m.d.comb += valid_record.eq(~Cat(*causes.values()).any())
        kind = Signal(EventKind)
        m.d.comb += kind.eq(
            _any(Mux(acc.message_type == code, k.value, 0) for code, k in TICK_KINDS.items())
        )

        event = Signal(BookEvent)
        fields = {
            "kind": kind,
            "locate": acc.symbol_id,
            "order_ref": nxt.sequence,
            "new_ref": Mux(kind == EventKind.REPLACE, nxt.sequence, 0),
            "side": acc.side[0],
            "shares": acc.volume[:32],
            "price": acc.price[:32],
            "code": Mux(acc.side[0], ord("S"), ord("B")),
            "sequence": nxt.sequence,
            "stamp": self.cycle,
        }
        m.d.comb += event.eq(Cat(*(_fit(fields.get(name, 0), f.width) for name, f in BookEvent)))
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(accept & beat_in.last):
            m.d.sync += self.o.valid.eq(valid_record)
            with m.If(valid_record):
                m.d.sync += self.o.payload.eq(event)

        # Counters, one cycle behind the outcome: the first cause that applies, or the kind.
        done = accept & beat_in.last
        increments = {}
        for code, event_kind in TICK_KINDS.items():
            increments[event_kind.name.lower()] = done & valid_record & (acc.message_type == code)
        for n, name in enumerate(_CAUSES):
            first_cause = causes[name]
            for prior in _CAUSES[:n]:
                first_cause = first_cause & ~causes[prior]
            increments[name] = done & first_cause
        counters = []
        for name, _ in self.counters.shape():
            seen = Signal(name=f"{name}_seen")
            counter = Signal(self.counter_width, name=f"{name}_count")
            m.d.sync += seen.eq(increments[name])
            with m.If(seen):
                m.d.sync += counter.eq(counter + 1)
            counters.append(counter)
        m.d.comb += self.counters.eq(Cat(*counters))
        return m


def _fit(value, width: int):
    """``value`` zero-extended (or cut) to exactly ``width`` bits, for packing with ``Cat``."""
    return Cat(value, Const(0, width))[:width]


def _any(terms):
    """OR of ``terms`` (an empty set is 0)."""
    result = Const(0)
    for term in terms:
        result = result | term
    return result
