"""OUCH 5.0 order entry messages and their SoupBinTCP framing.

Prices are signed 64-bit with four implied decimals. Messages that may carry optional
appendage fields decode to ``(record, appendage)``; ``record.appendage_length`` is checked
against the bytes present, and :func:`encode` sets it from the appendage given.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .errors import LengthError, TruncatedError, UnknownTypeError
from .fields import Format, alpha, char, sint, uint

__all__ = [
    "TO_EXCHANGE",
    "FROM_EXCHANGE",
    "SOUP_HEADER",
    "SoupPacket",
    "decode",
    "encode",
    "make",
    "iter_soup",
    "encode_soup",
]

_TIMESTAMP = uint("timestamp", 8)
_APPENDAGE = uint("appendage_length", 2)

#: Messages a client sends (SoupBinTCP 'U' packets), by type character.
TO_EXCHANGE: dict[str, Format] = {
    "O": Format(
        "EnterOrder",
        [
            char("type"),
            uint("user_ref_num", 4),
            char("side"),
            uint("quantity", 4),
            alpha("symbol", 8),
            sint("price", 8),
            char("time_in_force"),
            char("display"),
            char("capacity"),
            char("intermarket_sweep"),
            char("cross_type"),
            alpha("cl_ord_id", 14),
            _APPENDAGE,
        ],
    ),
    "U": Format(
        "ReplaceOrder",
        [
            char("type"),
            uint("orig_user_ref_num", 4),
            uint("user_ref_num", 4),
            uint("quantity", 4),
            sint("price", 8),
            char("time_in_force"),
            char("display"),
            char("intermarket_sweep"),
            alpha("cl_ord_id", 14),
            _APPENDAGE,
        ],
    ),
    "X": Format("CancelOrder", [char("type"), uint("user_ref_num", 4), uint("quantity", 4)]),
}

#: Messages the exchange sends (SoupBinTCP 'S' packets), by type character.
FROM_EXCHANGE: dict[str, Format] = {
    "A": Format(
        "OrderAccepted",
        [
            char("type"),
            _TIMESTAMP,
            uint("user_ref_num", 4),
            char("side"),
            uint("quantity", 4),
            alpha("symbol", 8),
            sint("price", 8),
            char("time_in_force"),
            char("display"),
            uint("order_reference_number", 8),
            char("capacity"),
            char("intermarket_sweep"),
            char("cross_type"),
            char("order_state"),
            alpha("cl_ord_id", 14),
            _APPENDAGE,
        ],
    ),
    "U": Format(
        "OrderReplaced",
        [
            char("type"),
            _TIMESTAMP,
            uint("orig_user_ref_num", 4),
            uint("user_ref_num", 4),
            char("side"),
            uint("quantity", 4),
            alpha("symbol", 8),
            sint("price", 8),
            char("time_in_force"),
            char("display"),
            uint("order_reference_number", 8),
            char("capacity"),
            char("intermarket_sweep"),
            char("cross_type"),
            char("order_state"),
            alpha("cl_ord_id", 14),
            _APPENDAGE,
        ],
    ),
    "C": Format(
        "OrderCanceled",
        [
            char("type"),
            _TIMESTAMP,
            uint("user_ref_num", 4),
            uint("quantity", 4),
            char("reason"),
        ],
    ),
    "E": Format(
        "OrderExecuted",
        [
            char("type"),
            _TIMESTAMP,
            uint("user_ref_num", 4),
            uint("quantity", 4),
            sint("price", 8),
            char("liquidity_flag"),
            uint("match_number", 8),
            _APPENDAGE,
        ],
    ),
}

_DIRECTIONS = {"to_exchange": TO_EXCHANGE, "from_exchange": FROM_EXCHANGE}

#: SoupBinTCP packet header: length (counts type and payload), then the packet type.
SOUP_HEADER = Format("SoupHeader", [uint("length", 2), char("packet_type")])


def _table(direction: str) -> dict[str, Format]:
    try:
        return _DIRECTIONS[direction]
    except KeyError:
        raise ValueError(
            f"direction must be one of {sorted(_DIRECTIONS)}, not {direction!r}"
        ) from None


def make(direction: str, type: str, **values):
    """An OUCH record of ``type``; fields not given are blank (see ``Format.make``)."""
    return _table(direction)[type].make(type=type, **values)


def decode(data: bytes | memoryview, direction: str, offset: int = 0, end: int | None = None):
    """Decode one OUCH message occupying ``data[offset:end]``.

    Returns ``(record, appendage_bytes)``. Unknown types raise :class:`UnknownTypeError`; a
    length that disagrees with the layout and appendage raises :class:`LengthError`.
    """
    table = _table(direction)
    end = len(data) if end is None else end
    if end <= offset:
        raise TruncatedError("empty OUCH message", offset)
    code = chr(data[offset])
    fmt = table.get(code)
    if fmt is None:
        raise UnknownTypeError(f"unknown OUCH {direction} message type {code!r}", offset)
    record = fmt.decode(data[:end], offset)
    appendage = b""
    if "appendage_length" in fmt.offsets:
        appendage = bytes(data[offset + fmt.size : end])
        if len(appendage) != record.appendage_length:
            raise LengthError(
                f"OUCH {code!r} appendage length {record.appendage_length} but "
                f"{len(appendage)} bytes follow",
                offset + fmt.offsets["appendage_length"],
            )
    elif end - offset != fmt.size:
        raise LengthError(f"OUCH {code!r} is {fmt.size} bytes, got {end - offset}", offset)
    return record, appendage


def encode(record, appendage: bytes = b"", direction: str | None = None) -> bytes:
    """Encode an OUCH record, with ``appendage_length`` set from ``appendage``."""
    fmt = _format_of(record, direction)
    if "appendage_length" in fmt.offsets:
        record = record._replace(appendage_length=len(appendage))
    elif appendage:
        raise ValueError(f"OUCH {record.type!r} carries no appendage")
    return fmt.encode(record) + appendage


def _format_of(record, direction: str | None) -> Format:
    tables = [_table(direction)] if direction else list(_DIRECTIONS.values())
    for table in tables:
        fmt = table.get(record.type)
        if fmt is not None and fmt.record is type(record):
            return fmt
    raise ValueError(f"no OUCH format for {type(record).__name__} {record.type!r}")


class SoupPacket(NamedTuple):
    """One SoupBinTCP packet: its type and payload, and the payload's offset in the stream."""

    packet_type: str
    payload: bytes
    offset: int


def iter_soup(data: bytes | memoryview, offset: int = 0) -> Iterator[SoupPacket]:
    """Split a SoupBinTCP byte stream into packets.

    A packet cut short raises :class:`TruncatedError` and a zero length :class:`LengthError`,
    both naming the offset of that packet's length field.
    """
    pos = offset
    while pos < len(data):
        if pos + 2 > len(data):
            raise TruncatedError("SoupBinTCP length cut short", pos)
        length = (data[pos] << 8) | data[pos + 1]
        if length < 1:
            raise LengthError("SoupBinTCP packet of length 0", pos)
        end = pos + 2 + length
        if end > len(data):
            raise TruncatedError(f"SoupBinTCP packet of {length} bytes runs past the end", pos)
        hdr = SOUP_HEADER.decode(data, pos)
        yield SoupPacket(hdr.packet_type, bytes(data[pos + 3 : end]), pos + 3)
        pos = end


def encode_soup(packet_type: str, payload: bytes = b"") -> bytes:
    """Frame a payload as one SoupBinTCP packet."""
    return SOUP_HEADER.encode(length=len(payload) + 1, packet_type=packet_type) + payload
