"""Writing an ITCH message sequence out: day file, MoldUDP64 packets, Ethernet frames, pcap, ticks.

The network defaults are those of a NASDAQ-style multicast feed: MoldUDP64 over UDP from
``10.0.0.1`` to the group ``233.54.12.111:26477``, the destination MAC derived from the group
address (``01:00:5e`` + its low 23 bits).

Tick records (:mod:`tick2quote.host.protocol.tick`) carry no second order reference and no
order reference on a trade, so the conversion keeps an order table:

==========  ==================================================================================
ITCH        tick record(s)
==========  ==================================================================================
``A F``     ADD: side, price, shares; ``sequence`` = the order reference
``X``       CANCEL: ``volume`` = the shares cancelled (the order is reduced by ``volume``)
``D``       CANCEL: ``volume`` = all the shares left (the order is gone)
``U``       MODIFY of the *original* order: new price and new total shares; the tick order id
            stays the original reference, and later messages naming the new reference are
            mapped back to it
``E C``     TRADE: the resting order's side, the execution price (``E``: the order's price),
            the shares executed, ``sequence`` = the match number; with ``reduce_on_trade``
            followed by a CANCEL of the executed shares, so a book kept from the tick records
            stays the same as one kept from the ITCH messages
``P``       TRADE: side, price and shares of the message, ``sequence`` = the match number
others      nothing
==========  ==================================================================================

``symbol_id`` is the ITCH locate, and ``timestamp`` is ``midnight_ns`` plus the ITCH timestamp.
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Iterable, Sequence

from ..host.capture import write_frames, write_itch_file, write_tick_file
from ..host.protocol import ethernet, itch, moldudp64, tick

__all__ = [
    "DEFAULT_SESSION",
    "DEFAULT_SRC",
    "DEFAULT_DST",
    "MAX_UDP_PAYLOAD",
    "to_packets",
    "to_frames",
    "to_ticks",
    "write_itch",
    "write_pcap",
    "write_ticks",
]

DEFAULT_SESSION = b"TICK2QUOTE"
DEFAULT_SRC = ("10.0.0.1", 26477)
DEFAULT_DST = ("233.54.12.111", 26477)
DEFAULT_SRC_MAC = bytes.fromhex("020000000001")
#: The largest UDP payload in a 1500-byte IP MTU (20 IP + 8 UDP bytes of headers).
MAX_UDP_PAYLOAD = 1472


def write_itch(path: str | os.PathLike, messages: Iterable) -> None:
    """Write the messages as a NASDAQ day file (``length (2) | message`` blocks)."""
    write_itch_file(path, messages)


def _group(messages: Sequence, per_packet: int | range, seed: int, max_payload: int) -> list:
    """Split the messages into packets of ``per_packet`` messages (drawn per packet from a
    range), starting a new packet early when the next message would not fit ``max_payload``."""
    if isinstance(per_packet, range):
        if not per_packet or per_packet[0] < 1:
            raise ValueError(f"per_packet range must be non-empty and >= 1, not {per_packet!r}")
    elif per_packet < 1:
        raise ValueError(f"per_packet must be >= 1, not {per_packet!r}")
    if max_payload < moldudp64.HEADER.size + 2 + max(itch.SIZES.values()):
        raise ValueError(f"max_payload {max_payload} cannot hold the largest ITCH message")
    rng = random.Random(seed)
    groups, group, size, want = [], [], moldudp64.HEADER.size, 0
    for msg in messages:
        body = itch.encode_message(msg)
        if group and (len(group) == want or size + 2 + len(body) > max_payload):
            groups.append(group)
            group, size = [], moldudp64.HEADER.size
        if not group:
            want = rng.choice(per_packet) if isinstance(per_packet, range) else per_packet
        group.append((msg, body))
        size += 2 + len(body)
    if group:
        groups.append(group)
    return groups


def _packets(groups: list, session: bytes, first_sequence: int) -> list[moldudp64.Packet]:
    packets, sequence = [], first_sequence
    for group in groups:
        packets.append(moldudp64.Packet(session, sequence, [body for _, body in group]))
        sequence += len(group)
    return packets


def to_packets(
    messages: Sequence,
    per_packet: int | range = 8,
    session: bytes = DEFAULT_SESSION,
    first_sequence: int = 1,
    *,
    seed: int = 0,
    max_payload: int = MAX_UDP_PAYLOAD,
) -> list[moldudp64.Packet]:
    """MoldUDP64 packets with consecutive sequence numbers from ``first_sequence``.

    ``per_packet`` is the number of messages per packet, or a range to draw each packet's count
    from (with ``random.Random(seed)``); a packet closes early rather than exceed
    ``max_payload`` bytes of UDP payload.
    """
    return _packets(_group(messages, per_packet, seed, max_payload), session, first_sequence)


def _multicast_mac(ip: bytes) -> bytes:
    return bytes((0x01, 0x00, 0x5E, ip[1] & 0x7F, ip[2], ip[3]))


def to_frames(
    messages: Sequence,
    per_packet: int | range = 8,
    session: bytes = DEFAULT_SESSION,
    first_sequence: int = 1,
    *,
    vlan: int | None = None,
    src: tuple[str, int] = DEFAULT_SRC,
    dst: tuple[str, int] = DEFAULT_DST,
    src_mac: bytes = DEFAULT_SRC_MAC,
    dst_mac: bytes | None = None,
    seed: int = 0,
) -> list[bytes]:
    """Ethernet frames (IPv4/UDP, optionally 802.1Q-tagged with VLAN id ``vlan``), one per
    MoldUDP64 packet of :func:`to_packets`. ``dst_mac`` defaults to the multicast MAC of
    ``dst`` (or a unicast placeholder when ``dst`` is not a multicast address)."""
    groups = _group(messages, per_packet, seed, MAX_UDP_PAYLOAD)
    stamped = _frames(groups, session, first_sequence, vlan, src, dst, src_mac, dst_mac)
    return [frame for _, frame in stamped]


def _frames(groups, session, first_sequence, vlan, src, dst, src_mac, dst_mac):
    if vlan is not None and not 0 <= vlan < 4096:
        raise ValueError(f"vlan must be in 0..4095, not {vlan!r}")
    src_ip = ipaddress.IPv4Address(src[0]).packed
    dst_addr = ipaddress.IPv4Address(dst[0])
    if dst_mac is None:
        dst_mac = (
            _multicast_mac(dst_addr.packed)
            if dst_addr.is_multicast
            else bytes.fromhex("020000000002")
        )
    out = []
    for ident, packet in enumerate(_packets(groups, session, first_sequence)):
        frame = ethernet.UdpFrame(
            dst_mac=dst_mac,
            src_mac=src_mac,
            src_ip=src_ip,
            dst_ip=dst_addr.packed,
            src_port=src[1],
            dst_port=dst[1],
            payload=moldudp64.encode(packet),
            vlan_tci=vlan,
            ttl=32,
            ident=ident & 0xFFFF,
        )
        out.append((groups[ident][0][0].timestamp, ethernet.encode_udp_frame(frame)))
    return out


def write_pcap(
    path: str | os.PathLike,
    messages: Sequence,
    *,
    per_packet: int | range = 8,
    vlan: int | None = None,
    session: bytes = DEFAULT_SESSION,
    first_sequence: int = 1,
    src: tuple[str, int] = DEFAULT_SRC,
    dst: tuple[str, int] = DEFAULT_DST,
    src_mac: bytes = DEFAULT_SRC_MAC,
    dst_mac: bytes | None = None,
    midnight: float = 0.0,
    seed: int = 0,
) -> None:
    """Write the frames of :func:`to_frames` to a pcap file.

    Each frame is stamped with ``midnight`` (seconds since the epoch) plus the ITCH timestamp of
    its first message.
    """
    groups = _group(messages, per_packet, seed, MAX_UDP_PAYLOAD)
    frames = _frames(groups, session, first_sequence, vlan, src, dst, src_mac, dst_mac)
    write_frames(path, [(midnight + ts / 1e9, frame) for ts, frame in frames])


def to_ticks(messages: Iterable, *, midnight_ns: int = 0, reduce_on_trade: bool = True) -> list:
    """Tick records for an ITCH message sequence (the mapping is in the module docstring).

    Raises :class:`ValueError` for a locate that does not fit a tick ``symbol_id``, or for a
    message naming an order that is not live.
    """
    record = tick.TICK.record
    add_type, trade_type = tick.ADD, tick.TRADE
    orders: dict[int, list] = {}  # ITCH ref -> [locate, side, price, shares, tick order id]
    out = []
    for index, msg in enumerate(messages):
        kind = msg.type
        if kind not in "AFXDUECP" or len(kind) != 1:
            continue
        if msg.locate >= tick.MAX_SYMBOLS:
            raise ValueError(f"message {index}: locate {msg.locate} >= {tick.MAX_SYMBOLS}")
        ts = midnight_ns + msg.timestamp
        if kind in "AF":
            side = tick.BID if msg.side == "B" else tick.ASK
            ref = msg.order_ref
            orders[ref] = [msg.locate, side, msg.price, msg.shares, ref]
            out.append(record(msg.locate, add_type, side, msg.price, msg.shares, ts, ref, 0))
            continue
        if kind == "P":
            side = tick.BID if msg.side == "B" else tick.ASK
            match = msg.match_number
            out.append(record(msg.locate, trade_type, side, msg.price, msg.shares, ts, match, 0))
            continue
        ref = msg.original_ref if kind == "U" else msg.order_ref
        order = orders.get(ref)
        if order is None:
            raise ValueError(f"message {index}: {kind} names order {ref}, which is not live")
        locate, side, price, shares, tick_id = order
        if kind == "U":
            del orders[ref]
            orders[msg.new_ref] = [locate, side, msg.price, msg.shares, tick_id]
            out.append(record(locate, tick.MODIFY, side, msg.price, msg.shares, ts, tick_id, 0))
            continue
        if kind == "D":
            reduce = shares
        elif kind == "X":
            reduce = msg.cancelled_shares
        else:
            reduce = msg.executed_shares
            exec_price = msg.execution_price if kind == "C" else price
            match = msg.match_number
            out.append(record(locate, trade_type, side, exec_price, reduce, ts, match, 0))
        if reduce > shares:
            raise ValueError(f"message {index}: {kind} takes {reduce} of {shares} shares")
        if kind in "DX" or reduce_on_trade:
            out.append(record(locate, tick.CANCEL, side, price, reduce, ts, tick_id, 0))
        order[3] = shares - reduce
        if not order[3]:
            del orders[ref]
    return out


def write_ticks(
    path: str | os.PathLike, messages: Iterable, *, midnight_ns: int = 0, reduce_on_trade=True
) -> None:
    """Write the tick records of :func:`to_ticks` back to back (40 bytes each)."""
    write_tick_file(
        path, to_ticks(messages, midnight_ns=midnight_ns, reduce_on_trade=reduce_on_trade)
    )
