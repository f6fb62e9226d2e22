"""Stream payload layouts shared by the gateware blocks.

Every wide datapath in the core moves 8 bytes a beat. Byte lane ``i`` of a beat is
``data[8*i : 8*i + 8]`` and is the ``i``-th byte in wire order; ``keep`` has a 1 for each valid
lane, contiguous from lane 0, and only the last beat of a packet may be partial.

Multi-byte header fields that the gateware decodes (MoldUDP64 sequence number, message count) are
big-endian on the wire and are presented here as plain integers. Text fields (the session) are
kept in wire order: wire byte ``k`` of the field sits at bits ``[8*k : 8*k + 8]``.
"""

from amaranth.lib import data

__all__ = [
    "BEAT_BYTES",
    "beat_layout",
    "message_layout",
    "MOLD_HEADER_FIELDS",
    "MOLD_HEADER_SIZE",
    "mold_header_offsets",
    "mold_header_layout",
    "packet_status_layout",
]

#: Bytes per beat of the core datapath.
BEAT_BYTES = 8

#: One beat of a byte stream (a frame, a UDP payload, a MoldUDP64 packet).
beat_layout = data.StructLayout({"data": 8 * BEAT_BYTES, "keep": BEAT_BYTES, "first": 1, "last": 1})

#: One beat of a split-out message (ITCH type byte at lane 0 of the first beat).
#:
#: ``length`` is the message length from its 2-byte prefix and ``sequence`` its MoldUDP64
#: sequence number (header sequence + index in the packet); both are valid on every beat.
#: ``truncated`` is set on the last beat of a message that its packet ended before completing.
message_layout = data.StructLayout(
    {
        "data": 8 * BEAT_BYTES,
        "keep": BEAT_BYTES,
        "first": 1,
        "last": 1,
        "length": 16,
        "sequence": 64,
        "truncated": 1,
    }
)

#: MoldUDP64 downstream header fields as ``(name, size in bytes)``, in wire order.
MOLD_HEADER_FIELDS: tuple[tuple[str, int], ...] = (("session", 10), ("sequence", 8), ("count", 2))
#: Size of the MoldUDP64 header in bytes.
MOLD_HEADER_SIZE = sum(size for _, size in MOLD_HEADER_FIELDS)


def mold_header_offsets() -> dict[str, tuple[int, int]]:
    """``{name: (byte offset, size)}`` of each MoldUDP64 header field."""
    offsets, pos = {}, 0
    for name, size in MOLD_HEADER_FIELDS:
        offsets[name] = (pos, size)
        pos += size
    return offsets


#: One MoldUDP64 packet header: ``session`` in wire order, ``sequence`` and ``count`` as integers.
mold_header_layout = data.StructLayout({name: 8 * size for name, size in MOLD_HEADER_FIELDS})

#: What became of one packet, reported when its last beat has been taken.
#:
#: - ``messages``: messages sent on the message stream for this packet (a truncated one included).
#: - ``count_mismatch``: ``messages`` differs from the header count (0 for a heartbeat or an
#:   end-of-session packet, whose counts 0 and 0xFFFF announce no messages).
#: - ``truncated``: the packet ended inside a length prefix or inside a message.
#: - ``zero_length``: a length prefix of 0 was found; the rest of the packet was discarded.
#: - ``short``: the packet ended before its header was complete (no header record was sent).
packet_status_layout = data.StructLayout(
    {
        "messages": 16,
        "count_mismatch": 1,
        "truncated": 1,
        "zero_length": 1,
        "short": 1,
    }
)
