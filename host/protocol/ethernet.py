"""Ethernet II (optional 802.1Q tag), IPv4 (options via IHL, header checksum) and UDP.

Frames here are as a MAC hands them over: FCS already checked and stripped.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ChecksumError, DecodeError, LengthError, TruncatedError
from .fields import Format, raw, uint

__all__ = [
    "ETHERNET",
    "VLAN_TAG",
    "IPV4",
    "UDP",
    "ETHERTYPE_IPV4",
    "ETHERTYPE_VLAN",
    "IPPROTO_UDP",
    "UdpFrame",
    "NotUdpError",
    "ipv4_checksum",
    "decode_udp_frame",
    "encode_udp_frame",
]

ETHERNET = Format("EthernetHeader", [raw("dst", 6), raw("src", 6), uint("ethertype", 2)])
VLAN_TAG = Format("VlanTag", [uint("tci", 2), uint("ethertype", 2)])
IPV4 = Format(
    "Ipv4Header",
    [
        uint("version_ihl", 1),
        uint("tos", 1),
        uint("total_length", 2),
        uint("ident", 2),
        uint("flags_fragment", 2),
        uint("ttl", 1),
        uint("protocol", 1),
        uint("checksum", 2),
        raw("src", 4),
        raw("dst", 4),
    ],
)
UDP = Format(
    "UdpHeader", [uint("src_port", 2), uint("dst_port", 2), uint("length", 2), uint("checksum", 2)]
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_VLAN = 0x8100
IPPROTO_UDP = 17


class NotUdpError(DecodeError):
    """A well-formed frame that is not an unfragmented IPv4/UDP datagram."""


@dataclass
class UdpFrame:
    """An Ethernet frame carrying one UDP datagram, and where its payload sits in the frame."""

    dst_mac: bytes
    src_mac: bytes
    src_ip: bytes
    dst_ip: bytes
    src_port: int
    dst_port: int
    payload: bytes
    vlan_tci: int | None = None
    ip_options: bytes = b""
    ttl: int = 64
    ident: int = 0
    payload_offset: int = 0


def ipv4_checksum(header: bytes) -> int:
    """The ones'-complement header checksum (computed with the checksum field as zero)."""
    if len(header) % 2:
        header += b"\0"
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def decode_udp_frame(frame: bytes | memoryview, *, allow_zero_checksum: bool = False) -> UdpFrame:
    """Decode an Ethernet/[802.1Q]/IPv4/UDP frame.

    ``allow_zero_checksum`` accepts an IPv4 header checksum of 0 as "not filled in": captures
    taken on a host with checksum offload, or anonymised ones, carry it. On a live wire it is
    an error like any other bad checksum, so the default refuses it.

    Raises :class:`NotUdpError` for a frame that is well-formed but not IPv4/UDP or is a
    fragment, :class:`ChecksumError` for a bad IPv4 header checksum,
    :class:`TruncatedError` (at the frame's end) for a frame cut short and :class:`LengthError`
    for inconsistent length fields. Ethernet padding after the IP datagram is ignored.
    """
    eth = ETHERNET.decode(frame)
    pos = ETHERNET.size
    ethertype, tci = eth.ethertype, None
    if ethertype == ETHERTYPE_VLAN:
        tag = VLAN_TAG.decode(frame, pos)
        ethertype, tci = tag.ethertype, tag.tci
        pos += VLAN_TAG.size
    if ethertype != ETHERTYPE_IPV4:
        raise NotUdpError(f"EtherType 0x{ethertype:04x} is not IPv4", pos - 2)
    ip_start = pos
    ip = IPV4.decode(frame, pos)
    if ip.version_ihl >> 4 != 4:
        raise NotUdpError(f"IP version {ip.version_ihl >> 4} is not 4", pos)
    header_len = (ip.version_ihl & 0xF) * 4
    if header_len < IPV4.size:
        raise LengthError(f"IHL of {header_len} bytes is below 20", pos)
    if ip_start + header_len > len(frame):
        raise TruncatedError("IPv4 options cut short", len(frame))
    if ip.total_length < header_len:
        raise LengthError(f"IPv4 total length {ip.total_length} is below its header", pos + 2)
    if ip_start + ip.total_length > len(frame):
        raise TruncatedError(
            f"IPv4 datagram of {ip.total_length} bytes runs past the frame", len(frame)
        )
    header = bytes(frame[ip_start : ip_start + header_len])
    if not (allow_zero_checksum and ip.checksum == 0) and (
        ipv4_checksum(header[:10] + b"\0\0" + header[12:]) != ip.checksum
    ):
        raise ChecksumError("bad IPv4 header checksum", pos + 10)
    if ip.flags_fragment & 0x3FFF:
        raise NotUdpError("IPv4 fragment", pos + 6)
    if ip.protocol != IPPROTO_UDP:
        raise NotUdpError(f"IP protocol {ip.protocol} is not UDP", pos + 9)
    pos = ip_start + header_len
    udp = UDP.decode(frame, pos)
    udp_end = ip_start + ip.total_length
    if udp.length < UDP.size or pos + udp.length != udp_end:
        raise LengthError(f"UDP length {udp.length} disagrees with IPv4 length", pos + 4)
    payload_offset = pos + UDP.size
    return UdpFrame(
        dst_mac=bytes(eth.dst),
        src_mac=bytes(eth.src),
        src_ip=bytes(ip.src),
        dst_ip=bytes(ip.dst),
        src_port=udp.src_port,
        dst_port=udp.dst_port,
        payload=bytes(frame[payload_offset:udp_end]),
        vlan_tci=tci,
        ip_options=header[IPV4.size :],
        ttl=ip.ttl,
        ident=ip.ident,
        payload_offset=payload_offset,
    )


def encode_udp_frame(f: UdpFrame) -> bytes:
    """Encode a frame (UDP checksum 0, DF clear); pads to the 60-byte Ethernet minimum."""
    if len(f.ip_options) % 4 or len(f.ip_options) > 40:
        raise ValueError(
            f"IPv4 options must be a multiple of 4 up to 40 bytes, not {len(f.ip_options)}"
        )
    out = bytearray()
    if f.vlan_tci is None:
        out += ETHERNET.encode(dst=f.dst_mac, src=f.src_mac, ethertype=ETHERTYPE_IPV4)
    else:
        out += ETHERNET.encode(dst=f.dst_mac, src=f.src_mac, ethertype=ETHERTYPE_VLAN)
        out += VLAN_TAG.encode(tci=f.vlan_tci, ethertype=ETHERTYPE_IPV4)
    header_len = IPV4.size + len(f.ip_options)
    udp_len = UDP.size + len(f.payload)
    fields = dict(
        version_ihl=0x40 | header_len // 4,
        tos=0,
        total_length=header_len + udp_len,
        ident=f.ident,
        flags_fragment=0,
        ttl=f.ttl,
        protocol=IPPROTO_UDP,
        checksum=0,
        src=f.src_ip,
        dst=f.dst_ip,
    )
    header = IPV4.encode(**fields) + f.ip_options
    fields["checksum"] = ipv4_checksum(header)
    out += IPV4.encode(**fields) + f.ip_options
    out += UDP.encode(src_port=f.src_port, dst_port=f.dst_port, length=udp_len, checksum=0)
    out += f.payload
    if len(out) < 60:
        out += bytes(60 - len(out))
    return bytes(out)
