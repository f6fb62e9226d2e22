"""MoldUDP64 downstream packets: a 20-byte header and length-prefixed message blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import itch
from .errors import LengthError
from .fields import Format, raw, uint

__all__ = ["HEADER", "HEARTBEAT", "END_OF_SESSION", "Packet", "decode", "encode", "rerequest"]

#: The MoldUDP64 downstream header; message blocks follow it.
HEADER = Format("MoldHeader", [raw("session", 10), uint("sequence", 8), uint("count", 2)])
#: Message count of a heartbeat packet.
HEARTBEAT = 0
#: Message count of the end-of-session packet.
END_OF_SESSION = 0xFFFF


@dataclass
class Packet:
    """One MoldUDP64 packet: session, sequence number of its first message, and the messages.

    ``messages`` holds the raw message bytes (without length prefixes). ``count`` is the header's
    message count; for an ordinary packet it equals ``len(messages)``, for a heartbeat it is 0 and
    for end of session 0xFFFF (both with no messages).
    """

    session: bytes
    sequence: int
    messages: list[bytes] = field(default_factory=list)
    count: int | None = None

    def __post_init__(self):
        if len(self.session) != 10:
            raise ValueError(f"session must be 10 bytes, not {self.session!r}")
        if self.count is None:
            self.count = len(self.messages)

    @property
    def is_heartbeat(self) -> bool:
        return self.count == HEARTBEAT

    @property
    def is_end_of_session(self) -> bool:
        return self.count == END_OF_SESSION

    @property
    def next_sequence(self) -> int:
        """The sequence number expected after this packet (``sequence + count``)."""
        return self.sequence + (0 if self.is_end_of_session else self.count)


def decode(data: bytes | memoryview, offset: int = 0, end: int | None = None) -> Packet:
    """Decode a MoldUDP64 packet; the block count must match the header's message count."""
    end = len(data) if end is None else end
    hdr = HEADER.decode(data[:end], offset)
    blocks = list(itch.iter_blocks(data, offset + HEADER.size, end))
    if hdr.count in (HEARTBEAT, END_OF_SESSION):
        if blocks:
            raise LengthError(f"packet with count {hdr.count} carries messages", offset + 18)
    elif len(blocks) != hdr.count:
        raise LengthError(
            f"header counts {hdr.count} messages, packet holds {len(blocks)}", offset + 18
        )
    messages = [bytes(data[pos : pos + length]) for pos, length in blocks]
    return Packet(bytes(hdr.session), hdr.sequence, messages, hdr.count)


def encode(packet: Packet) -> bytes:
    """Encode a packet: header, then each message with its 2-byte length."""
    body = b"".join(len(m).to_bytes(2, "big") + m for m in packet.messages)
    return (
        HEADER.encode(session=packet.session, sequence=packet.sequence, count=packet.count) + body
    )


def rerequest(session: bytes, sequence: int, count: int) -> bytes:
    """A retransmission request: session, first wanted sequence number, message count."""
    return HEADER.encode(session=session, sequence=sequence, count=count)
