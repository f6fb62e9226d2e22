"""Stream payload layouts shared by the gateware blocks.

Every wide datapath in the core moves 8 bytes a beat. Byte lane ``i`` of a beat is
``data[8*i : 8*i + 8]`` and is the ``i``-th byte in wire order; ``keep`` has a 1 for each valid
lane, contiguous from lane 0, and only the last beat of a packet may be partial (a payload beat,
:data:`payload_beat_layout`, may also start at any lane of its first beat).

Multi-byte header fields that the gateware decodes (MoldUDP64 sequence number, message count) are
big-endian on the wire and are presented here as plain integers. Text fields (the session) are
kept in wire order: wire byte ``k`` of the field sits at bits ``[8*k : 8*k + 8]``.
"""

from amaranth.lib import data

__all__ = [
    "BEAT_BYTES",
    "beat_layout",
    "payload_beat_layout",
    "ip_entry_layout",
    "port_entry_layout",
    "session_config_layout",
    "MOLD_HEADER_FIELDS",
    "MOLD_HEADER_SIZE",
    "mold_header_offsets",
]

#: Bytes per beat of the core datapath.
BEAT_BYTES = 8

#: One beat of a byte stream (a frame, a UDP payload, a MoldUDP64 packet).
beat_layout = data.StructLayout({"data": 8 * BEAT_BYTES, "keep": BEAT_BYTES, "first": 1, "last": 1})

#: One beat of a UDP payload as the frame filter passes it on, *not* realigned: the beats of the
#: frame, with ``keep`` set on the payload's lanes only (the payload starts at some lane of its
#: ``first`` beat and ends at some lane of its ``last`` beat; every beat between is full).
#:
#: ``drop`` says the frame failed a header check; it is final from the beat holding payload byte
#: 19 (the end of a MoldUDP64 header) on. ``truncated`` (on the ``last`` beat) says the frame
#: ended before the payload did.
payload_beat_layout = data.StructLayout(
    {
        "data": 8 * BEAT_BYTES,
        "keep": BEAT_BYTES,
        "first": 1,
        "last": 1,
        "drop": 1,
        "truncated": 1,
    }
)

#: One entry of an address filter table: ``enable`` and the IPv4 address (big-endian integer).
ip_entry_layout = data.StructLayout({"enable": 1, "address": 32})
#: One entry of a port filter table: ``enable`` and the UDP port.
port_entry_layout = data.StructLayout({"enable": 1, "port": 16})
#: The expected MoldUDP64 session: ``enable`` and the 10 bytes in wire order (byte ``k`` at
#: bits ``[8*k : 8*k + 8]``); disabled, the first session seen is adopted.
session_config_layout = data.StructLayout({"enable": 1, "session": 80})

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
