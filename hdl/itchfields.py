"""Where each :data:`~.events.BookEvent` field sits in each ITCH 5.0 message, declared once.

Every field of a message lies at a constant byte offset from the message start (the type byte).
The feed handler (:mod:`.moldparser`) captures each byte it needs by that offset; the tests check
these tables against the codec declarations in :mod:`tick2quote.host.protocol.itch`.
"""

from amaranth.lib import data

from .events import EVENT_FIELDS, EventKind

__all__ = [
    "ITCH_FIELDS",
    "ITCH_SIZES",
    "LOCATE_OFFSET",
    "WIRE_ORDER_FIELDS",
    "SIDE_KINDS",
    "PARSER_OUTCOMES",
    "byte_sources",
    "itch_counters_layout",
]

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

#: Fields whose first wire byte is their lowest byte (raw text); the rest are big-endian.
WIRE_ORDER_FIELDS = frozenset({"stock"})
#: Kinds whose ``side`` comes from the side byte (kept raw in ``code``).
SIDE_KINDS = (EventKind.ADD, EventKind.TRADE)
#: Outcomes of a delivered message that produces no event.
PARSER_OUTCOMES = ("skipped", "bad_length")


def itch_counters_layout(width: int) -> data.StructLayout:
    """One ``width``-bit counter per event kind (``add`` ... ``trade``) and per other outcome."""
    names = [kind.name.lower() for kind in EventKind if kind is not EventKind.NONE]
    return data.StructLayout({name: width for name in names + list(PARSER_OUTCOMES)})


def byte_sources() -> dict[tuple[str, int], dict[int, list[str]]]:
    """(event field, byte index in the field) -> {message offset: [ITCH types]}.

    Byte index 0 is the field's least significant byte (for ``stock``: its first wire byte).
    """
    sources: dict[tuple[str, int], dict[int, list[str]]] = {}
    for itch_type, (_kind, fields) in ITCH_FIELDS.items():
        for name, start in fields.items():
            size = EVENT_FIELDS[name] // 8
            for j in range(size):
                # Wire byte j of a big-endian field is its byte (size - 1 - j).
                index = j if name in WIRE_ORDER_FIELDS else size - 1 - j
                per_offset = sources.setdefault((name, index), {})
                per_offset.setdefault(start + j, []).append(itch_type)
    return sources
