"""The device twin's tap: one datagram per frame into or out of the simulated core.

A twin started with a tap port (``t2q twin --tap PORT``) sends a copy of every Ethernet frame
that enters the core's ``rx`` stream and of every frame that leaves its ``tx`` stream, as one UDP
datagram to ``127.0.0.1:PORT``:

====== ========= ==== ===============================================================
offset field     size meaning
====== ========= ==== ===============================================================
0      direction 1    0 into the core (``rx``), 1 out of it (``tx``)
1      cycle     8    the simulated cycle at which the frame's first beat was taken,
                      unsigned big-endian (cycle 0 is the first clock edge after reset)
9      frame     n    the Ethernet frame as the core saw or made it, without FCS
====== ========= ==== ===============================================================

A tap datagram leaves when the frame's last beat has passed, so datagrams are in order of the
frames' *ends*; sort by ``cycle`` for the order of their starts. Both directions count the same
clock, so ``out.cycle - in.cycle`` is the core's latency in cycles from the first beat in to the
first beat out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FieldValueError
from .fields import Format, uint

__all__ = ["TAP_HEADER", "IN", "OUT", "TapRecord", "encode", "decode"]

TAP_HEADER = Format("TapHeader", [uint("direction", 1), uint("cycle", 8)])
#: Directions: a frame into the core, a frame out of it.
IN, OUT = 0, 1


@dataclass(frozen=True)
class TapRecord:
    """One tapped frame: ``direction`` (:data:`IN` or :data:`OUT`), its first beat's
    ``cycle`` and the Ethernet ``frame`` bytes."""

    direction: int
    cycle: int
    frame: bytes


def encode(record: TapRecord) -> bytes:
    """The tap datagram of ``record``."""
    return TAP_HEADER.encode(direction=record.direction, cycle=record.cycle) + record.frame


def decode(datagram: bytes | memoryview) -> TapRecord:
    """Decode one tap datagram; raises :class:`~.errors.TruncatedError` for one shorter than its
    header and :class:`~.errors.FieldValueError` for a direction other than 0 or 1."""
    header = TAP_HEADER.decode(datagram)
    if header.direction not in (IN, OUT):
        raise FieldValueError(f"tap direction {header.direction} is neither 0 nor 1", 0)
    return TapRecord(header.direction, header.cycle, bytes(datagram[TAP_HEADER.size :]))
