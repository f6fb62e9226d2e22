"""Feed files: pcap captures (through dpkt), NASDAQ length-prefixed ITCH files, tick records.

Every reader yields :class:`FeedMessage`\\ s that name where each message came from, so a bad
file is reported with the file offset of the problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dpkt

from .protocol import ethernet, itch, moldudp64, ouch, tick
from .protocol.errors import DecodeError, TruncatedError

__all__ = [
    "FeedMessage",
    "detect_format",
    "read_frames",
    "write_frames",
    "read_itch_file",
    "write_itch_file",
    "read_tick_file",
    "write_tick_file",
    "read_messages",
]

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
_PCAP_LITTLE_ENDIAN = {b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


@dataclass(frozen=True)
class FeedMessage:
    """One decoded message and where it came from.

    ``kind`` is ``"itch"``, ``"ouch"`` or ``"tick"``; ``offset`` is the byte offset in the file
    where the message starts: for ITCH (day file or MoldUDP64 in a pcap) the offset of its 2-byte
    length prefix, for OUCH that of its type byte (after the SoupBinTCP header), for a tick record
    that of the record. ``sequence`` is the MoldUDP64 sequence number when the message came in a
    MoldUDP64 packet; ``frame`` is the 0-based index of the pcap frame that carried it;
    ``appendage`` holds an OUCH message's optional-field bytes.
    """

    kind: str
    message: object
    offset: int
    sequence: int | None = None
    frame: int | None = None
    appendage: bytes = b""


def detect_format(path: str | os.PathLike) -> str:
    """``"pcap"``, ``"tick"`` (``.tick``/``.ticks`` suffix) or ``"itch"`` (anything else)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic in _PCAP_MAGICS or magic == _PCAPNG_MAGIC:
        return "pcap"
    if Path(path).suffix in (".tick", ".ticks"):
        return "tick"
    return "itch"


def read_frames(path: str | os.PathLike) -> Iterator[tuple[float, bytes, int]]:
    """Yield ``(timestamp, frame, file_offset)`` for each frame of a pcap or pcapng file.

    ``timestamp`` is a float in seconds since the epoch. ``file_offset`` is where the frame's
    bytes start in a classic pcap file (approximate for pcapng, whose blocks vary in size). A
    classic pcap whose last record is cut short raises :class:`TruncatedError` naming the offset
    of that record's 16-byte header.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        try:
            reader = dpkt.pcapng.Reader(f) if magic == _PCAPNG_MAGIC else dpkt.pcap.Reader(f)
        except (ValueError, dpkt.dpkt.UnpackError) as exc:
            raise DecodeError(f"not a readable capture: {exc}", 0) from None
        order = "little" if magic in _PCAP_LITTLE_ENDIAN else "big"
        offset = 24 + 16  # global header, then each record's header precedes its data
        try:
            for ts, buf in reader:
                if magic != _PCAPNG_MAGIC and offset + len(buf) >= size:
                    # Only the record that reaches the end of the file can be short.
                    caplen = _caplen_at(f, offset - 16, order)
                    if len(buf) < caplen:
                        raise TruncatedError(
                            f"pcap record of {caplen} bytes holds only {len(buf)}", offset - 16
                        )
                yield float(ts), bytes(buf), offset
                offset += len(buf) + 16
        except dpkt.dpkt.NeedData as exc:
            raise TruncatedError(f"capture cut short: {exc}", offset - 16) from None


def _caplen_at(f, header_offset: int, order: str) -> int:
    """The captured length field of the pcap record header at ``header_offset``."""
    resume = f.tell()
    f.seek(header_offset + 8)
    caplen = int.from_bytes(f.read(4), order)
    f.seek(resume)
    return caplen


def write_frames(path: str | os.PathLike, frames: Iterable[bytes | tuple[float, bytes]]) -> None:
    """Write Ethernet frames (optionally with timestamps) to a pcap file."""
    with open(path, "wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        for i, item in enumerate(frames):
            ts, frame = item if isinstance(item, tuple) else (i * 1e-6, item)
            writer.writepkt(frame, ts=ts)


def read_itch_file(path: str | os.PathLike) -> Iterator[FeedMessage]:
    """Read a NASDAQ day file: back-to-back ``length (2) | message`` blocks."""
    data = Path(path).read_bytes()
    for pos, length in itch.iter_blocks(data):
        yield FeedMessage("itch", _decode_itch_block(data, pos, length), pos - 2)


def write_itch_file(path: str | os.PathLike, messages: Iterable) -> None:
    """Write ITCH message records as a length-prefixed day file."""
    with open(path, "wb") as f:
        for msg in messages:
            body = itch.encode_message(msg)
            f.write(len(body).to_bytes(2, "big") + body)


def read_tick_file(path: str | os.PathLike, *, max_price: int = tick.DEFAULT_MAX_PRICE):
    """Read back-to-back 40-byte tick records; an invalid one raises with its offset."""
    data = Path(path).read_bytes()
    for offset, record in enumerate(tick.iter_records(data, max_price=max_price)):
        yield FeedMessage("tick", record, offset * tick.TICK.size)


def write_tick_file(path: str | os.PathLike, records: Iterable) -> None:
    """Write tick records back to back."""
    with open(path, "wb") as f:
        for record in records:
            f.write(tick.encode(record))


def _decode_itch_block(data, pos: int, length: int):
    try:
        return itch.decode_message(data, pos, length)
    except DecodeError as exc:
        if isinstance(exc, itch.UnknownTypeError):
            return itch.UnknownMessage(chr(data[pos]), bytes(data[pos : pos + length]))
        raise


def _read_pcap_messages(path) -> Iterator[FeedMessage]:
    for index, (_ts, frame, offset) in enumerate(read_frames(path)):
        try:
            yield from _frame_messages(frame, offset, index)
        except DecodeError as exc:
            raise exc.shifted(offset) from None


def _frame_messages(frame: bytes, offset: int, index: int) -> Iterator[FeedMessage]:
    tcp_span = _tcp_payload_span(frame)
    if tcp_span is not None:
        # OUCH over SoupBinTCP: direction from the SoupBinTCP packet type.
        stream_start, stream_end = tcp_span
        stream = frame[stream_start:stream_end]
        for pkt in ouch.iter_soup(stream):
            direction = {"U": "to_exchange", "S": "from_exchange"}.get(pkt.packet_type)
            if direction is None or not pkt.payload:
                continue  # heartbeats, logins: no OUCH message
            base = stream_start + pkt.offset
            record, appendage = _shifted(ouch.decode, base, pkt.payload, direction)
            yield FeedMessage("ouch", record, offset + base, None, index, appendage)
        return
    udp = ethernet.decode_udp_frame(frame, allow_zero_checksum=True)
    packet = _shifted(moldudp64.decode, udp.payload_offset, udp.payload)
    pos = udp.payload_offset + moldudp64.HEADER.size
    for i, body in enumerate(packet.messages):
        msg = _shifted(_decode_itch_block, pos + 2, body, 0, len(body))
        yield FeedMessage("itch", msg, offset + pos, packet.sequence + i, index)
        pos += 2 + len(body)


def _tcp_payload_span(frame: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the TCP payload of an Ethernet/[802.1Q]/IPv4/TCP frame, else None.

    Bytes after the IP datagram (Ethernet padding, capture trailers) are not payload.
    """
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except dpkt.dpkt.UnpackError:
        return None  # let the UDP decoder name what is wrong, with its offset
    ip = eth.data
    if not (isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP)):
        return None
    ip_start = ethernet.ETHERNET.size
    while frame[ip_start - 2 : ip_start] in (b"\x81\x00", b"\x88\xa8"):
        ip_start += ethernet.VLAN_TAG.size
    start = ip_start + ip.hl * 4 + ip.data.off * 4
    return start, min(len(frame), ip_start + ip.len)


def _shifted(fn, base: int, *args):
    try:
        return fn(*args)
    except DecodeError as exc:
        raise exc.shifted(base) from None


def read_messages(path: str | os.PathLike, fmt: str | None = None) -> Iterator[FeedMessage]:
    """Every message of a pcap, ITCH or tick file, format detected unless ``fmt`` is given."""
    fmt = fmt or detect_format(path)
    if fmt == "pcap":
        return _read_pcap_messages(path)
    if fmt == "tick":
        return read_tick_file(path)
    if fmt == "itch":
        return read_itch_file(path)
    raise ValueError(f"format must be 'pcap', 'itch' or 'tick', not {fmt!r}")
