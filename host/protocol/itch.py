"""NASDAQ TotalView-ITCH 5.0: one :class:`~.fields.Format` per message type.

Every message starts with the common header ``type, locate, tracking, timestamp`` (11 bytes);
the body follows. Prices are ``uint32`` with four implied decimals and are kept as integers in
those units. Timestamps are nanoseconds since midnight (6 bytes).

Stream forms handled here:

- a sequence of message blocks, each ``length (2, big-endian) | message`` (the body of a
  MoldUDP64 packet, and the NASDAQ day-file form);
- single messages, where a type with no known layout is an :class:`UnknownTypeError` (there is
  no length to skip it by), and a known type whose length disagrees with its layout is a
  :class:`LengthError`.

In a length-prefixed stream, a type that has no layout (including types added to the spec
later) is returned as an :class:`UnknownMessage` and skipped by its length.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .errors import LengthError, TruncatedError, UnknownTypeError
from .fields import Field, Format, alpha, char, uint

__all__ = [
    "HEADER",
    "FORMATS",
    "SIZES",
    "BOOK_TYPES",
    "UnknownMessage",
    "decode_message",
    "encode_message",
    "iter_blocks",
    "decode_blocks",
    "encode_blocks",
    "make",
]

HEADER: tuple[Field, ...] = (
    char("type"),
    uint("locate", 2),
    uint("tracking", 2),
    uint("timestamp", 6),
)

_BODIES: dict[str, tuple[str, list[Field]]] = {
    "S": ("SystemEvent", [char("event_code")]),
    "R": (
        "StockDirectory",
        [
            alpha("stock", 8),
            char("market_category"),
            char("financial_status"),
            uint("round_lot_size", 4),
            char("round_lots_only"),
            char("issue_classification"),
            alpha("issue_sub_type", 2),
            char("authenticity"),
            char("short_sale_threshold"),
            char("ipo_flag"),
            char("luld_tier"),
            char("etp_flag"),
            uint("etp_leverage", 4),
            char("inverse"),
        ],
    ),
    "H": (
        "StockTradingAction",
        [
            alpha("stock", 8),
            char("trading_state"),
            char("reserved"),
            alpha("reason", 4),
        ],
    ),
    "Y": ("RegShoRestriction", [alpha("stock", 8), char("reg_sho_action")]),
    "L": (
        "MarketParticipantPosition",
        [
            alpha("mpid", 4),
            alpha("stock", 8),
            char("primary_market_maker"),
            char("market_maker_mode"),
            char("market_participant_state"),
        ],
    ),
    "V": ("MwcbDeclineLevel", [uint("level1", 8), uint("level2", 8), uint("level3", 8)]),
    "W": ("MwcbStatus", [char("breached_level")]),
    "K": (
        "IpoQuotingPeriodUpdate",
        [
            alpha("stock", 8),
            uint("ipo_quotation_release_time", 4),
            char("ipo_quotation_release_qualifier"),
            uint("ipo_price", 4),
        ],
    ),
    "J": (
        "LuldAuctionCollar",
        [
            alpha("stock", 8),
            uint("auction_collar_reference_price", 4),
            uint("upper_auction_collar_price", 4),
            uint("lower_auction_collar_price", 4),
            uint("auction_collar_extension", 4),
        ],
    ),
    "h": (
        "OperationalHalt",
        [alpha("stock", 8), char("market_code"), char("operational_halt_action")],
    ),
    "O": (
        "DirectListingCapitalRaise",
        [
            alpha("stock", 8),
            char("open_eligibility_status"),
            uint("minimum_allowable_price", 4),
            uint("maximum_allowable_price", 4),
            uint("near_execution_price", 4),
            uint("near_execution_time", 8),
            uint("lower_price_range_collar", 4),
            uint("upper_price_range_collar", 4),
        ],
    ),
    "A": (
        "AddOrder",
        [
            uint("order_ref", 8),
            char("side"),
            uint("shares", 4),
            alpha("stock", 8),
            uint("price", 4),
        ],
    ),
    "F": (
        "AddOrderMpid",
        [
            uint("order_ref", 8),
            char("side"),
            uint("shares", 4),
            alpha("stock", 8),
            uint("price", 4),
            alpha("attribution", 4),
        ],
    ),
    "E": (
        "OrderExecuted",
        [
            uint("order_ref", 8),
            uint("executed_shares", 4),
            uint("match_number", 8),
        ],
    ),
    "C": (
        "OrderExecutedWithPrice",
        [
            uint("order_ref", 8),
            uint("executed_shares", 4),
            uint("match_number", 8),
            char("printable"),
            uint("execution_price", 4),
        ],
    ),
    "X": ("OrderCancel", [uint("order_ref", 8), uint("cancelled_shares", 4)]),
    "D": ("OrderDelete", [uint("order_ref", 8)]),
    "U": (
        "OrderReplace",
        [
            uint("original_ref", 8),
            uint("new_ref", 8),
            uint("shares", 4),
            uint("price", 4),
        ],
    ),
    "P": (
        "Trade",
        [
            uint("order_ref", 8),
            char("side"),
            uint("shares", 4),
            alpha("stock", 8),
            uint("price", 4),
            uint("match_number", 8),
        ],
    ),
    "Q": (
        "CrossTrade",
        [
            uint("shares", 8),
            alpha("stock", 8),
            uint("cross_price", 4),
            uint("match_number", 8),
            char("cross_type"),
        ],
    ),
    "B": ("BrokenTrade", [uint("match_number", 8)]),
    "I": (
        "Noii",
        [
            uint("paired_shares", 8),
            uint("imbalance_shares", 8),
            char("imbalance_direction"),
            alpha("stock", 8),
            uint("far_price", 4),
            uint("near_price", 4),
            uint("current_reference_price", 4),
            char("cross_type"),
            char("price_variation_indicator"),
        ],
    ),
    "N": ("RetailPriceImprovement", [alpha("stock", 8), char("interest_flag")]),
}

#: One format per ITCH 5.0 message type, keyed by the type character.
FORMATS: dict[str, Format] = {
    code: Format(name, [*HEADER, *body]) for code, (name, body) in _BODIES.items()
}
#: Message size (without the length prefix) per type.
SIZES: dict[str, int] = {code: fmt.size for code, fmt in FORMATS.items()}
#: Types that change the order book.
BOOK_TYPES = frozenset("AFECXDU")

_BY_BYTE = {ord(code): fmt for code, fmt in FORMATS.items()}


class UnknownMessage(NamedTuple):
    """A message of a type with no layout, kept whole so it can be counted and re-encoded."""

    type: str
    data: bytes


def decode_message(data: bytes | memoryview, offset: int = 0, length: int | None = None):
    """Decode the single message at ``offset`` of ``length`` bytes (default: to the end).

    A known type whose length differs from its layout raises :class:`LengthError`; an unknown
    type raises :class:`UnknownTypeError` (use :func:`iter_blocks` to skip unknown types).
    """
    end = len(data) if length is None else offset + length
    if end > len(data):
        raise TruncatedError(f"message of {length} bytes, {len(data) - offset} remain", len(data))
    if end <= offset:
        raise TruncatedError("empty message", offset)
    fmt = _BY_BYTE.get(data[offset])
    if fmt is None:
        raise UnknownTypeError(f"unknown ITCH message type {chr(data[offset])!r}", offset)
    if end - offset != fmt.size:
        raise LengthError(
            f"ITCH {chr(data[offset])!r} is {fmt.size} bytes, length says {end - offset}", offset
        )
    return fmt.decode(data, offset)


def encode_message(msg) -> bytes:
    """Encode one message record (or :class:`UnknownMessage`) without its length prefix."""
    if isinstance(msg, UnknownMessage):
        return msg.data
    return FORMATS[msg.type].encode(msg)


def make(type: str, **values):
    """A message record of ``type``; fields not given are blank (see ``Format.make``)."""
    return FORMATS[type].make(type=type, **values)


def iter_blocks(
    data: bytes | memoryview, offset: int = 0, end: int | None = None
) -> Iterator[tuple[int, int]]:
    """Yield ``(message_offset, message_length)`` for each length-prefixed block in a buffer.

    Raises :class:`TruncatedError` when a length prefix or a message runs past ``end``.
    """
    end = len(data) if end is None else end
    pos = offset
    while pos < end:
        if pos + 2 > end:
            raise TruncatedError("length prefix cut short", pos)
        length = (data[pos] << 8) | data[pos + 1]
        if pos + 2 + length > end:
            raise TruncatedError(f"message of {length} bytes runs past the end", pos)
        yield pos + 2, length
        pos += 2 + length


def decode_blocks(data: bytes | memoryview, offset: int = 0, end: int | None = None) -> list:
    """Decode every length-prefixed message; unknown types become :class:`UnknownMessage`."""
    out = []
    for pos, length in iter_blocks(data, offset, end):
        fmt = _BY_BYTE.get(data[pos]) if length else None
        if fmt is None:
            if length == 0:
                raise LengthError("zero-length message", pos - 2)
            out.append(UnknownMessage(chr(data[pos]), bytes(data[pos : pos + length])))
        elif length != fmt.size:
            raise LengthError(
                f"ITCH {chr(data[pos])!r} is {fmt.size} bytes, length says {length}", pos - 2
            )
        else:
            out.append(fmt.decode(data, pos))
    return out


def encode_blocks(messages) -> bytes:
    """Encode messages as length-prefixed blocks (the MoldUDP64 body and day-file form)."""
    parts = []
    for msg in messages:
        body = encode_message(msg)
        parts.append(len(body).to_bytes(2, "big"))
        parts.append(body)
    return b"".join(parts)
