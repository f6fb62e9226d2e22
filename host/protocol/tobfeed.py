"""The top-of-book feed the device multicasts: one fixed 40-byte big-endian record per UDP
datagram.

=======  ===============  ====  ==================================================
offset   field            size  meaning
=======  ===============  ====  ==================================================
0        frame_sequence   8     counts the datagrams sent, from 0: a gap is a loss
8        type             1     'Q' (a top-of-book update)
9        locate           2     ITCH Stock Locate
11       bid_px           4     best bid, ``Price(4)`` (0 with no bid)
15       bid_sz           4     shares at the best bid
19       ask_px           4     best ask, ``Price(4)`` (0 with no ask)
23       ask_sz           4     shares at the best ask
27       flags            1     bit 0: the symbol's book is stale; other bits 0
28       book_sequence    8     MoldUDP64 sequence number of the message that caused it
36       stamp            4     the device's ingress cycle stamp of that message
=======  ===============  ====  ==================================================

Updates the device could not send (its link busy with the previous datagram) are not given a
frame sequence number; the device counts them instead, and ``book_sequence`` still shows them
as jumps.
"""

from __future__ import annotations

from .errors import UnknownTypeError
from .fields import Format, char, uint

__all__ = ["RECORD", "TYPE", "FLAG_STALE", "decode", "encode", "make", "lost_between"]

#: The record, as it sits in the UDP payload.
RECORD = Format(
    "TopOfBook",
    [
        uint("frame_sequence", 8),
        char("type"),
        uint("locate", 2),
        uint("bid_px", 4),
        uint("bid_sz", 4),
        uint("ask_px", 4),
        uint("ask_sz", 4),
        uint("flags", 1),
        uint("book_sequence", 8),
        uint("stamp", 4),
    ],
)

#: The type character of a top-of-book update.
TYPE = "Q"
#: ``flags`` bit: the book of the symbol is stale (do not trust the prices).
FLAG_STALE = 0x01


def make(**values):
    """A record with ``type`` 'Q' and the given fields (the rest 0)."""
    return RECORD.make(type=TYPE, **values)


def decode(payload: bytes | memoryview):
    """Decode one datagram payload (exactly one record).

    Raises :class:`LengthError` when the payload is not :attr:`RECORD.size` bytes and
    :class:`UnknownTypeError` when the type is not 'Q'.
    """
    record = RECORD.decode(payload, exact=True)
    if record.type != TYPE:
        raise UnknownTypeError(f"top-of-book record type {record.type!r} is not {TYPE!r}", 8)
    return record


def encode(record) -> bytes:
    """Encode a record (see :func:`make`)."""
    return RECORD.encode(record)


def lost_between(previous: int | None, current: int) -> int:
    """Datagrams lost between two received frame sequence numbers (``previous`` ``None`` for
    the first one received: nothing lost). A number at or below ``previous`` (a duplicate or a
    restart of the device) counts nothing."""
    if previous is None or current <= previous:
        return 0
    return current - previous - 1
