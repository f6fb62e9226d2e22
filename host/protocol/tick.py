"""The fixed 40-byte little-endian tick record that the host streams over a raw link."""

from __future__ import annotations

from collections.abc import Iterator

from .errors import FieldValueError, TruncatedError
from .fields import Format, uint

__all__ = [
    "TICK",
    "ADD",
    "CANCEL",
    "MODIFY",
    "TRADE",
    "BID",
    "ASK",
    "MAX_SYMBOLS",
    "DEFAULT_MAX_PRICE",
    "validate",
    "decode",
    "encode",
    "iter_records",
]

TICK = Format(
    "TickRecord",
    [
        uint("symbol_id", 2),
        uint("message_type", 1),
        uint("side", 1),
        uint("price", 8),
        uint("volume", 8),
        uint("timestamp", 8),
        uint("sequence", 8),
        uint("reserved", 4),
    ],
    byteorder="little",
)

ADD, CANCEL, MODIFY, TRADE = 1, 2, 3, 4
BID, ASK = 0, 1
MAX_SYMBOLS = 4096
#: $100,000 in 1/10 000 dollar units: the original design's price ceiling.
DEFAULT_MAX_PRICE = 1_000_000_000


def validate(record, offset: int = 0, max_price: int = DEFAULT_MAX_PRICE) -> None:
    """Raise :class:`FieldValueError` (naming the field's offset) unless the record is valid."""
    if record.symbol_id >= MAX_SYMBOLS:
        raise FieldValueError(f"symbol_id {record.symbol_id} >= {MAX_SYMBOLS}", offset)
    if not ADD <= record.message_type <= TRADE:
        raise FieldValueError(f"message_type {record.message_type} not in 1..4", offset + 2)
    if record.side not in (BID, ASK):
        raise FieldValueError(f"side {record.side} is neither 0 nor 1", offset + 3)
    if not 0 < record.price < max_price:
        raise FieldValueError(f"price {record.price} not in (0, {max_price})", offset + 4)


def decode(data: bytes | memoryview, offset: int = 0, *, max_price: int = DEFAULT_MAX_PRICE):
    """Decode and validate one record at ``offset``."""
    record = TICK.decode(data, offset)
    validate(record, offset, max_price)
    return record


def encode(record) -> bytes:
    """Encode one record (no validation: tests need invalid records too)."""
    return TICK.encode(record)


def iter_records(data: bytes | memoryview, *, max_price: int = DEFAULT_MAX_PRICE) -> Iterator:
    """Decode a buffer of back-to-back records; a partial trailing record is an error."""
    if len(data) % TICK.size:
        raise TruncatedError(
            f"{len(data)} bytes is not a whole number of {TICK.size}-byte records",
            len(data) - len(data) % TICK.size,
        )
    for offset in range(0, len(data), TICK.size):
        yield decode(data, offset, max_price=max_price)
