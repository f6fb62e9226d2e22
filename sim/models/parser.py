"""Reference model of the message parsers: ITCH 5.0 messages and tick records to book events.

The model is the exact behaviour the gateware :mod:`tick2quote.hdl.moldparser` (``MoldParser``) and
:mod:`tick2quote.hdl.tickparser` (``TickParser``) are checked against. It decodes with the
project's codecs (:mod:`~tick2quote.host.protocol.itch`, :mod:`~tick2quote.host.protocol.tick`),
not with the gateware's own offset tables, so a wrong offset in either shows up as a mismatch.

ITCH messages, classified in this order (each message counts in exactly one counter):

1. cut short by the packet (``truncated``) -> counted ``truncated``, no event;
2. zero length -> ``bad_length``;
3. a type other than A F E C X D U S R H P (including unknown ones) -> ``skipped``;
4. a length other than the type's published size -> ``bad_length``;
5. otherwise one :class:`BookEvent`, counted under its kind's name (``"add"``, ...).

Tick records (40 bytes, little-endian), classified in this order:

1. not exactly 40 bytes -> ``framing``;
2. ``symbol_id >= 4096`` -> ``bad_symbol``; ``message_type`` not 1..4 -> ``bad_type``; side not
   0/1 -> ``bad_side``; not ``0 < price < max_price`` -> ``bad_price``; ``volume >= 2**32`` ->
   ``bad_volume``;
3. otherwise one event with ``locate = symbol_id``, ``order_ref = sequence = record sequence``,
   ``side``, ``code = 'B'/'S'``, ``shares = volume``, ``price``; a modify also sets
   ``new_ref = order_ref`` (the reference is kept).
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import NamedTuple

from tick2quote.host.protocol import itch, tick
from tick2quote.host.protocol.errors import FieldValueError

__all__ = ["EventKind", "BookEvent", "ParserModel", "ITCH_KINDS", "TICK_KINDS"]


class EventKind(enum.IntEnum):
    """Event kinds; the values are those of the gateware ``EventKind``."""

    NONE = 0
    ADD = 1
    EXECUTE = 2
    EXECUTE_PRICE = 3
    CANCEL = 4
    DELETE = 5
    REPLACE = 6
    SYSTEM = 7
    DIRECTORY = 8
    TRADING = 9
    TRADE = 10

    @property
    def counter(self) -> str:
        """The name of this kind's counter (``"add"``, ``"execute_price"``, ...)."""
        return self.name.lower()


class BookEvent(NamedTuple):
    """One decoded event; the fields and their meaning are those of the gateware layout."""

    kind: EventKind
    locate: int = 0
    order_ref: int = 0
    new_ref: int = 0
    side: int = 0
    shares: int = 0
    price: int = 0
    stock: int = 0
    code: int = 0
    sequence: int = 0
    stamp: int = 0

    @property
    def stock_bytes(self) -> bytes:
        """The 8 raw bytes of ``stock``, in wire order."""
        return self.stock.to_bytes(8, "little")


#: ITCH message type -> event kind, for every type that produces an event.
ITCH_KINDS: dict[str, EventKind] = {
    "A": EventKind.ADD,
    "F": EventKind.ADD,
    "E": EventKind.EXECUTE,
    "C": EventKind.EXECUTE_PRICE,
    "X": EventKind.CANCEL,
    "D": EventKind.DELETE,
    "U": EventKind.REPLACE,
    "S": EventKind.SYSTEM,
    "R": EventKind.DIRECTORY,
    "H": EventKind.TRADING,
    "P": EventKind.TRADE,
}

#: Tick record message_type -> event kind.
TICK_KINDS: dict[int, EventKind] = {
    tick.ADD: EventKind.ADD,
    tick.CANCEL: EventKind.CANCEL,
    tick.MODIFY: EventKind.REPLACE,
    tick.TRADE: EventKind.TRADE,
}

# FieldValueError offsets raised by tick.validate -> cause counter.
_TICK_CAUSES = {
    tick.TICK.offsets["symbol_id"]: "bad_symbol",
    tick.TICK.offsets["message_type"]: "bad_type",
    tick.TICK.offsets["side"]: "bad_side",
    tick.TICK.offsets["price"]: "bad_price",
}
_SIDE_CODES = (ord("B"), ord("S"))


def _byte(data: bytes, fmt, name: str) -> int:
    """The raw byte of the one-byte field ``name`` (char fields decode lossily otherwise)."""
    return data[fmt.offsets[name]]


def _stock(data: bytes, fmt) -> int:
    offset = fmt.offsets["stock"]
    return int.from_bytes(data[offset : offset + 8], "little")


class ParserModel:
    """Turns ITCH messages and tick records into :class:`BookEvent`\\ s, counting every outcome.

    Parameters
    ----------
    max_price:
        Tick records need ``0 < price < max_price``; at most ``2**32`` (the event's price width).
    """

    def __init__(self, max_price: int = tick.DEFAULT_MAX_PRICE):
        if not isinstance(max_price, int) or not 1 < max_price <= 1 << 32:
            raise ValueError(f"max_price must be an integer in 2 .. 2**32, not {max_price!r}")
        self.max_price = max_price
        self.counters: Counter = Counter()

    def message(
        self,
        msg,
        sequence: int = 0,
        stamp: int = 0,
        *,
        length: int | None = None,
        truncated: bool = False,
    ) -> BookEvent | None:
        """Parse one ITCH message: a record, an ``UnknownMessage`` or raw bytes (no prefix).

        ``length`` is the block's declared length (default: the bytes given); ``truncated`` says
        the packet ended before the message did. Returns the event, or ``None`` (counted).
        """
        data = bytes(msg) if isinstance(msg, (bytes, bytearray, memoryview)) else None
        if data is None:
            data = itch.encode_message(msg)
        declared = len(data) if length is None else length
        if truncated:
            return self._count("truncated")
        if declared != len(data):
            raise ValueError(f"{len(data)} bytes given for a message of length {declared}")
        if declared == 0:
            return self._count("bad_length")
        kind = ITCH_KINDS.get(chr(data[0]))
        if kind is None:
            return self._count("skipped")
        if declared != itch.SIZES[chr(data[0])]:
            return self._count("bad_length")
        self.counters[kind.counter] += 1
        return self._itch_event(kind, data, sequence, stamp)

    def tick(self, record: bytes, stamp: int = 0) -> BookEvent | None:
        """Parse one tick record (its raw bytes). Returns the event, or ``None`` (counted)."""
        data = bytes(record)
        if len(data) != tick.TICK.size:
            return self._count("framing")
        rec = tick.TICK.decode(data)
        try:
            tick.validate(rec, 0, self.max_price)
        except FieldValueError as exc:
            return self._count(_TICK_CAUSES[exc.offset])
        if rec.volume >= 1 << 32:
            return self._count("bad_volume")
        kind = TICK_KINDS[rec.message_type]
        self.counters[kind.counter] += 1
        return BookEvent(
            kind=kind,
            locate=rec.symbol_id,
            order_ref=rec.sequence,
            new_ref=rec.sequence if kind is EventKind.REPLACE else 0,
            side=rec.side,
            shares=rec.volume,
            price=rec.price,
            code=_SIDE_CODES[rec.side],
            sequence=rec.sequence,
            stamp=stamp,
        )

    def _count(self, outcome: str) -> None:
        self.counters[outcome] += 1
        return None

    @staticmethod
    def _itch_event(kind: EventKind, data: bytes, sequence: int, stamp: int) -> BookEvent:
        fmt = itch.FORMATS[chr(data[0])]
        rec = fmt.decode(data)
        common = {"kind": kind, "locate": rec.locate, "sequence": sequence, "stamp": stamp}
        t = rec.type
        if t in "AFP":
            side = _byte(data, fmt, "side")
            return BookEvent(
                **common,
                order_ref=rec.order_ref,
                side=int(side == ord("S")),
                shares=rec.shares,
                price=rec.price,
                stock=_stock(data, fmt),
                code=side,
            )
        if t == "E":
            return BookEvent(**common, order_ref=rec.order_ref, shares=rec.executed_shares)
        if t == "C":
            return BookEvent(
                **common,
                order_ref=rec.order_ref,
                shares=rec.executed_shares,
                price=rec.execution_price,
                code=_byte(data, fmt, "printable"),
            )
        if t == "X":
            return BookEvent(**common, order_ref=rec.order_ref, shares=rec.cancelled_shares)
        if t == "D":
            return BookEvent(**common, order_ref=rec.order_ref)
        if t == "U":
            return BookEvent(
                **common,
                order_ref=rec.original_ref,
                new_ref=rec.new_ref,
                shares=rec.shares,
                price=rec.price,
            )
        if t == "S":
            return BookEvent(**common, code=_byte(data, fmt, "event_code"))
        if t == "R":
            return BookEvent(**common, stock=_stock(data, fmt))
        # "H"
        return BookEvent(**common, stock=_stock(data, fmt), code=_byte(data, fmt, "trading_state"))
