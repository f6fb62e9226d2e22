"""Our ITCH 5.0 and frame codecs agree with independent decoders: itchfeed and scapy.

Real Nasdaq captures (Open Markets Initiative's sample pcaps) are split into MoldUDP64 blocks
here with scapy and ``struct``, each block is decoded by itchfeed, and every field is compared
with what ``read_messages`` produced. Randomly generated messages of all 23 types are then
encoded by us and decoded by itchfeed, and itchfeed's own packing is compared with ours.
"""

import os

os.environ.setdefault("ITCH_NO_CPP", "1")

import random
import struct
from pathlib import Path

import pytest
from itch.messages import create_message
from itch.messages import messages as ITCHFEED
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap
from tick2quote.host.capture import read_frames, read_messages
from tick2quote.host.protocol import ethernet, itch


def _omi_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "shared" / "data" / "omi"
    return here if here.is_dir() else Path("/work/shared/data/omi")


OMI = _omi_dir()
ITCH_CAPTURES = sorted(OMI.glob("*Itch*.pcap"))

#: Our header field names -> itchfeed attribute names.
HEADER_NAMES = {"locate": "stock_locate", "tracking": "tracking_number", "timestamp": "timestamp"}

#: Per type: our body field names -> itchfeed attribute names (typed from itchfeed's classes).
BODY_NAMES = {
    "S": {"event_code": "event_code"},
    "R": {
        "stock": "stock",
        "market_category": "market_category",
        "financial_status": "financial_status_indicator",
        "round_lot_size": "round_lot_size",
        "round_lots_only": "round_lots_only",
        "issue_classification": "issue_classification",
        "issue_sub_type": "issue_sub_type",
        "authenticity": "authenticity",
        "short_sale_threshold": "short_sale_threshold_indicator",
        "ipo_flag": "ipo_flag",
        "luld_tier": "luld_ref",
        "etp_flag": "etp_flag",
        "etp_leverage": "etp_leverage_factor",
        "inverse": "inverse_indicator",
    },
    "H": {
        "stock": "stock",
        "trading_state": "trading_state",
        "reserved": "reserved",
        "reason": "reason",
    },
    "Y": {"stock": "stock", "reg_sho_action": "reg_sho_action"},
    "L": {
        "mpid": "mpid",
        "stock": "stock",
        "primary_market_maker": "primary_market_maker",
        "market_maker_mode": "market_maker_mode",
        "market_participant_state": "market_participant_state",
    },
    "V": {"level1": "level1_price", "level2": "level2_price", "level3": "level3_price"},
    "W": {"breached_level": "breached_level"},
    "K": {
        "stock": "stock",
        "ipo_quotation_release_time": "ipo_release_time",
        "ipo_quotation_release_qualifier": "ipo_release_qualifier",
        "ipo_price": "ipo_price",
    },
    "J": {
        "stock": "stock",
        "auction_collar_reference_price": "auction_collar_reference_price",
        "upper_auction_collar_price": "upper_auction_collar_price",
        "lower_auction_collar_price": "lower_auction_collar_price",
        "auction_collar_extension": "auction_collar_extention",
    },
    "h": {
        "stock": "stock",
        "market_code": "market_code",
        "operational_halt_action": "operational_halt_action",
    },
    "O": {
        "stock": "stock",
        "open_eligibility_status": "open_eligibility_status",
        "minimum_allowable_price": "minimum_allowable_price",
        "maximum_allowable_price": "maximum_allowable_price",
        "near_execution_price": "near_execution_price",
        "near_execution_time": "near_execution_time",
        "lower_price_range_collar": "lower_price_range_collar",
        "upper_price_range_collar": "upper_price_range_collar",
    },
    "A": {
        "order_ref": "order_reference_number",
        "side": "buy_sell_indicator",
        "shares": "shares",
        "stock": "stock",
        "price": "price",
    },
    "F": {
        "order_ref": "order_reference_number",
        "side": "buy_sell_indicator",
        "shares": "shares",
        "stock": "stock",
        "price": "price",
        "attribution": "attribution",
    },
    "E": {
        "order_ref": "order_reference_number",
        "executed_shares": "executed_shares",
        "match_number": "match_number",
    },
    "C": {
        "order_ref": "order_reference_number",
        "executed_shares": "executed_shares",
        "match_number": "match_number",
        "printable": "printable",
        "execution_price": "execution_price",
    },
    "X": {"order_ref": "order_reference_number", "cancelled_shares": "cancelled_shares"},
    "D": {"order_ref": "order_reference_number"},
    "U": {
        "original_ref": "order_reference_number",
        "new_ref": "new_order_reference_number",
        "shares": "shares",
        "price": "price",
    },
    "P": {
        "order_ref": "order_reference_number",
        "side": "buy_sell_indicator",
        "shares": "shares",
        "stock": "stock",
        "price": "price",
        "match_number": "match_number",
    },
    "Q": {
        "shares": "shares",
        "stock": "stock",
        "cross_price": "cross_price",
        "match_number": "match_number",
        "cross_type": "cross_type",
    },
    "B": {"match_number": "match_number"},
    "I": {
        "paired_shares": "paired_shares",
        "imbalance_shares": "imbalance_shares",
        "imbalance_direction": "imbalance_direction",
        "stock": "stock",
        "far_price": "far_price",
        "near_price": "near_price",
        "current_reference_price": "current_reference_price",
        "cross_type": "cross_type",
        "price_variation_indicator": "variation_indicator",
    },
    "N": {"stock": "stock", "interest_flag": "interest_flag"},
}


def assert_agrees(ours, theirs):
    """Every field of our record equals the matching itchfeed attribute."""
    names = {**HEADER_NAMES, **BODY_NAMES[ours.type]}
    assert set(names) == set(ours._fields) - {"type"}
    assert set(names.values()) == set(vars(theirs)) - {"message_type"}
    assert theirs.message_type == ours.type.encode()
    for our_name, their_name in names.items():
        mine, other = getattr(ours, our_name), getattr(theirs, their_name)
        if isinstance(other, bytes):
            assert isinstance(mine, str), our_name
            # A one-byte field is a char (kept as is); wider ones are space-padded text.
            expected = other.decode("ascii") if len(other) == 1 else other.decode().rstrip(" ")
            assert mine == expected, our_name
        else:
            assert type(mine) is int and type(other) is int, our_name
            assert mine == other, our_name


def mold_blocks(udp_payload: bytes):
    """Split a MoldUDP64 packet with ``struct``: (session, sequence, [message bodies])."""
    session, sequence, count = struct.unpack_from(">10sQH", udp_payload)
    bodies, pos = [], 20
    while pos < len(udp_payload):
        (length,) = struct.unpack_from(">H", udp_payload, pos)
        bodies.append(udp_payload[pos + 2 : pos + 2 + length])
        pos += 2 + length
    assert pos == len(udp_payload) and len(bodies) == count
    return session, sequence, bodies


def test_omi_itch_captures_are_present():
    assert len(ITCH_CAPTURES) >= 20


@pytest.mark.parametrize("path", ITCH_CAPTURES, ids=lambda p: p.name.split("_", 1)[1])
def test_capture_messages_agree_with_itchfeed(path):
    ours = list(read_messages(path))
    file_bytes = path.read_bytes()
    expected = []
    for frame_index, pkt in enumerate(rdpcap(str(path))):
        _session, sequence, bodies = mold_blocks(pkt[UDP][Raw].load)
        expected += [(frame_index, sequence + i, body) for i, body in enumerate(bodies)]
    assert len(ours) == len(expected) > 0
    for got, (frame_index, sequence, body) in zip(ours, expected):
        assert got.kind == "itch"
        assert (got.frame, got.sequence) == (frame_index, sequence)
        assert_agrees(got.message, ITCHFEED[body[:1]](body))
        assert itch.encode_message(got.message) == body
        # The offset names the block's length prefix in the file.
        prefix = file_bytes[got.offset : got.offset + 2]
        assert prefix == len(body).to_bytes(2, "big")
        assert file_bytes[got.offset + 2 : got.offset + 2 + len(body)] == body


@pytest.mark.parametrize("path", ITCH_CAPTURES, ids=lambda p: p.name.split("_", 1)[1])
def test_capture_frames_agree_with_scapy(path):
    frames = list(read_frames(path))
    packets = rdpcap(str(path))
    assert len(frames) == len(packets) > 0
    for (ts, frame, _offset), pkt in zip(frames, packets):
        assert frame == bytes(pkt)
        assert abs(ts - float(pkt.time)) < 1e-6
        ip = pkt[IP]
        # The anonymised set has a zeroed IPv4 checksum; the live one must verify.
        zero_checksum = ip.chksum == 0
        got = ethernet.decode_udp_frame(frame, allow_zero_checksum=zero_checksum)
        assert got.dst_mac == bytes.fromhex(pkt[Ether].dst.replace(":", ""))
        assert got.src_mac == bytes.fromhex(pkt[Ether].src.replace(":", ""))
        if Dot1Q in pkt:
            tag = pkt[Dot1Q]
            assert got.vlan_tci == (tag.prio << 13) | (tag.dei << 12) | tag.vlan
            assert got.vlan_tci & 0xFFF == tag.vlan
        else:
            assert got.vlan_tci is None
        assert got.src_ip == bytes(map(int, ip.src.split(".")))
        assert got.dst_ip == bytes(map(int, ip.dst.split(".")))
        assert (got.ttl, got.ident) == (ip.ttl, ip.id)
        assert got.ip_options == b"".join(bytes(o) for o in ip.options)
        assert (got.src_port, got.dst_port) == (pkt[UDP].sport, pkt[UDP].dport)
        assert got.payload == pkt[UDP][Raw].load
        assert frame[got.payload_offset : got.payload_offset + len(got.payload)] == got.payload
        if not zero_checksum:
            rebuilt = IP(bytes(ip))
            del rebuilt.chksum
            assert IP(bytes(rebuilt)).chksum == ip.chksum


# --- random messages of every type -------------------------------------------------------------

MESSAGES_PER_TYPE = 400
_TEXT = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-=+*"


def random_message(rng: random.Random, code: str):
    """A random record of ``code``; integer fields favour their extremes now and then."""
    values = {}
    for field in itch.FORMATS[code].fields[1:]:
        if field.kind == "uint":
            top = (1 << (8 * field.size)) - 1
            values[field.name] = rng.choice([0, 1, top, rng.randint(0, top), rng.randint(0, top)])
        elif field.kind == "char":
            values[field.name] = chr(rng.randint(0x20, 0x7E))
        else:
            text = "".join(rng.choice(_TEXT) for _ in range(rng.randint(0, field.size)))
            values[field.name] = text.rstrip(" ")
    return itch.make(code, **values)


@pytest.mark.parametrize("code", sorted(itch.FORMATS))
def test_random_messages_agree_with_itchfeed(code):
    rng = random.Random(f"itchfeed-{code}")
    cls = ITCHFEED[code.encode()]
    names = {**HEADER_NAMES, **BODY_NAMES[code]}
    for _ in range(MESSAGES_PER_TYPE):
        ours = random_message(rng, code)
        data = itch.encode_message(ours)
        assert len(data) == cls.message_size
        theirs = cls(data)
        assert_agrees(ours, theirs)
        assert theirs.to_bytes() == data
        # itchfeed packing a message built from our values, not from our bytes.
        kwargs = {}
        for our_name, their_name in names.items():
            value = getattr(ours, our_name)
            if isinstance(value, str):
                width = len(getattr(theirs, their_name))
                value = value.encode("ascii").ljust(width, b" ")
            kwargs[their_name] = value
        assert create_message(code.encode(), **kwargs).to_bytes() == data
        assert itch.decode_message(data) == ours
