"""Bad input raises the right typed error naming the right byte offset.

Frames are built with scapy (which computes its own IPv4 checksums), and the expected offsets
are the published ones from the wire-format tables, typed here rather than read from the codecs.
"""

import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import checksum, rdpcap
from tick2quote.host.capture import read_frames, read_messages
from tick2quote.host.protocol import (
    ChecksumError,
    FieldValueError,
    LengthError,
    TruncatedError,
    UnknownTypeError,
    ethernet,
    itch,
    moldudp64,
    ouch,
    tick,
)
from tick2quote.host.protocol.ethernet import NotUdpError


def _omi_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "shared" / "data" / "omi"
    return here if here.is_dir() else Path("/work/shared/data/omi")


OMI = _omi_dir()
ITCH_CAPTURES = sorted(OMI.glob("*Itch*.pcap"))
OUCH_CAPTURES = sorted(OMI.glob("*Ouch*.pcap"))

ITCH_MESSAGES = [
    itch.make("A", locate=7, order_ref=1, side="B", shares=100, stock="AAPL", price=1_500_000),
    itch.make("E", locate=7, order_ref=1, executed_shares=40, match_number=9),
    itch.make("S", event_code="O"),
    itch.make("U", locate=7, original_ref=1, new_ref=2, shares=60, price=1_500_100),
]
MOLD = struct.pack(">10sQH", b"SESSION001", 1000, len(ITCH_MESSAGES)) + itch.encode_blocks(
    ITCH_MESSAGES
)


def build_frame(vlan: bool, options: bool, payload: bytes = MOLD, **ip_fields) -> bytes:
    """An Ethernet/[802.1Q]/IPv4/UDP frame built by scapy."""
    eth = Ether(dst="01:00:5e:36:0c:6f", src="02:00:00:00:00:01")
    if vlan:
        eth = eth / Dot1Q(vlan=141)
    ip = IP(src="10.0.0.1", dst="233.54.12.111", flags=0, **ip_fields)
    if options:
        ip.options = [IPOption_Router_Alert(), IPOption_Router_Alert()]
    return bytes(eth / ip / UDP(sport=1234, dport=26477, chksum=0) / Raw(payload))


def ip_start(vlan: bool) -> int:
    return 18 if vlan else 14


FRAME_SHAPES = [(False, False), (True, False), (True, True), (False, True)]
SHAPE_IDS = ["plain", "vlan", "vlan+options", "options"]


# --- truncation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("vlan", "options"), FRAME_SHAPES, ids=SHAPE_IDS)
def test_frame_cut_at_every_point_is_truncated_at_the_cut(vlan, options):
    frame = build_frame(vlan, options)
    assert len(frame) > 60  # no Ethernet padding: every byte belongs to the datagram
    full = ethernet.decode_udp_frame(frame)
    assert full.payload == MOLD
    for cut in range(len(frame)):
        with pytest.raises(TruncatedError) as err:
            ethernet.decode_udp_frame(frame[:cut])
        assert err.value.offset == cut, cut


@pytest.mark.parametrize("path", ITCH_CAPTURES[:1] + ITCH_CAPTURES[-1:], ids=lambda p: p.name)
def test_real_frame_cut_at_every_point_is_truncated_at_the_cut(path):
    frame = next(read_frames(path))[1]
    ethernet.decode_udp_frame(frame, allow_zero_checksum=True)
    for cut in range(len(frame)):
        with pytest.raises(TruncatedError) as err:
            ethernet.decode_udp_frame(frame[:cut], allow_zero_checksum=True)
        assert err.value.offset == cut


def test_padding_after_the_datagram_is_not_payload():
    frame = build_frame(False, False, payload=b"tiny")
    padded = frame + bytes(60 - len(frame))
    assert ethernet.decode_udp_frame(padded).payload == b"tiny"


def test_mold_packet_cut_at_every_point():
    block_starts = []
    pos = 20
    for msg in ITCH_MESSAGES:
        block_starts.append(pos)
        pos += 2 + itch.SIZES[msg.type]
    assert pos == len(MOLD)
    for cut in range(len(MOLD)):
        if cut < 20:
            expected_type, expected_offset = TruncatedError, cut
        elif cut in block_starts:
            # Whole blocks, but fewer than the header counts.
            expected_type, expected_offset = LengthError, 18
        else:
            expected_type = TruncatedError
            expected_offset = max(s for s in block_starts if s < cut)
        with pytest.raises(expected_type) as err:
            moldudp64.decode(MOLD[:cut])
        assert type(err.value) is expected_type, cut
        assert err.value.offset == expected_offset, cut


def test_tick_buffer_with_a_partial_record():
    record = tick.TICK.record(1, tick.ADD, tick.BID, 100, 1, 2, 3, 0)
    data = tick.encode(record) * 3
    for cut in range(1, 40):
        with pytest.raises(TruncatedError) as err:
            list(tick.iter_records(data[: 80 + cut]))
        assert err.value.offset == 80


# --- ITCH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(itch.FORMATS))
def test_wrong_length_for_a_known_type(code):
    body = itch.encode_message(itch.make(code))
    for bad in (body[:1], body[:-1], body + b"\x00", body + bytes(20)):
        with pytest.raises(LengthError) as err:
            itch.decode_message(b"pad" + bad, 3)
        assert err.value.offset == 3
    # In a stream, the error names the block's length prefix.
    stream = itch.encode_blocks(ITCH_MESSAGES[:2])
    bad_block = struct.pack(">H", len(body) - 1) + body[:-1]
    with pytest.raises(LengthError) as err:
        itch.decode_blocks(stream + bad_block + stream)
    assert err.value.offset == len(stream)


def test_empty_or_overlong_message_is_truncated():
    with pytest.raises(TruncatedError) as err:
        itch.decode_message(b"xyz", 3)
    assert err.value.offset == 3
    body = itch.encode_message(ITCH_MESSAGES[0])
    with pytest.raises(TruncatedError) as err:
        itch.decode_message(body, 0, len(body) + 5)
    assert err.value.offset == len(body)


def test_zero_length_block_in_a_stream():
    stream = itch.encode_blocks(ITCH_MESSAGES[:1])
    with pytest.raises(LengthError) as err:
        itch.decode_blocks(stream + b"\x00\x00")
    assert err.value.offset == len(stream)


UNKNOWN_TYPES = [b for b in range(256) if chr(b) not in itch.FORMATS]


def test_unknown_type_is_an_error_alone_and_skipped_in_a_stream():
    assert len(UNKNOWN_TYPES) == 256 - 23
    for code in UNKNOWN_TYPES:
        body = bytes([code]) + bytes(range(1, 20))
        with pytest.raises(UnknownTypeError) as err:
            itch.decode_message(b"ab" + body, 2)
        assert err.value.offset == 2
        stream = itch.encode_blocks(
            [ITCH_MESSAGES[0], itch.UnknownMessage(chr(code), body), ITCH_MESSAGES[1]]
        )
        decoded = itch.decode_blocks(stream)
        assert decoded == [ITCH_MESSAGES[0], itch.UnknownMessage(chr(code), body), ITCH_MESSAGES[1]]
        assert itch.encode_blocks(decoded) == stream


def test_cut_day_stream_names_the_cut_block():
    stream = itch.encode_blocks(ITCH_MESSAGES)
    second = 2 + itch.SIZES[ITCH_MESSAGES[0].type]
    for cut in range(second + 1, second + 2 + itch.SIZES[ITCH_MESSAGES[1].type]):
        with pytest.raises(TruncatedError) as err:
            itch.decode_blocks(stream[:cut])
        assert err.value.offset == second


# --- IPv4 checksum and not-UDP frames -----------------------------------------------------------


@pytest.mark.parametrize(("vlan", "options"), FRAME_SHAPES, ids=SHAPE_IDS)
def test_bad_ipv4_checksum_names_the_checksum_field(vlan, options):
    frame = bytearray(build_frame(vlan, options))
    checksum_at = ip_start(vlan) + 10
    good = ethernet.decode_udp_frame(bytes(frame))
    # A flipped checksum bit, a changed TTL, and a changed option byte.
    corrupt = [checksum_at, checksum_at + 1, ip_start(vlan) + 8]
    if options:
        corrupt.append(ip_start(vlan) + 21)
    for at in corrupt:
        bad = frame.copy()
        bad[at] ^= 0x10
        with pytest.raises(ChecksumError) as err:
            ethernet.decode_udp_frame(bytes(bad))
        assert err.value.offset == checksum_at
    # A zero checksum is "not filled in" only when the caller allows it.
    zeroed = frame.copy()
    zeroed[checksum_at : checksum_at + 2] = b"\0\0"
    with pytest.raises(ChecksumError) as err:
        ethernet.decode_udp_frame(bytes(zeroed))
    assert err.value.offset == checksum_at
    assert ethernet.decode_udp_frame(bytes(zeroed), allow_zero_checksum=True) == good


@pytest.mark.parametrize("vlan", [False, True], ids=["plain", "vlan"])
def test_frames_that_are_not_ipv4_udp(vlan):
    head = Ether(dst="01:00:5e:36:0c:6f", src="02:00:00:00:00:01")
    if vlan:
        head = head / Dot1Q(vlan=141)
    ip_at = ip_start(vlan)
    cases = [
        (head / IPv6() / UDP() / Raw(b"x" * 40), ip_at - 2),  # EtherType 0x86dd
        (head / ARP(), ip_at - 2),
        (head / IP(proto=6) / TCP() / Raw(b"x" * 30), ip_at + 9),
        (head / IP(proto=1) / Raw(b"x" * 30), ip_at + 9),
        (head / IP(flags="MF") / UDP() / Raw(b"x" * 30), ip_at + 6),
        (head / IP(frag=185) / UDP() / Raw(b"x" * 30), ip_at + 6),
        (head / IP(flags="MF", frag=3) / UDP() / Raw(b"x" * 30), ip_at + 6),
    ]
    for pkt, offset in cases:
        with pytest.raises(NotUdpError) as err:
            ethernet.decode_udp_frame(bytes(pkt))
        assert err.value.offset == offset, pkt.summary()
    # Don't-fragment alone is an ordinary datagram.
    whole = bytes(head / IP(flags="DF") / UDP(chksum=0) / Raw(b"x" * 30))
    assert ethernet.decode_udp_frame(whole).payload == b"x" * 30
    # An IPv6 header behind EtherType 0x0800 is not IPv4.
    v6 = bytes(head / IPv6() / UDP() / Raw(b"x" * 40))
    relabelled = v6[: ip_at - 2] + b"\x08\x00" + v6[ip_at:]
    with pytest.raises(NotUdpError) as err:
        ethernet.decode_udp_frame(relabelled)
    assert err.value.offset == ip_at


def _with_ip_header(frame: bytes, at: int, header: bytes) -> bytes:
    """``frame`` with its IPv4 header replaced and the checksum recomputed (by scapy)."""
    header = header[:10] + b"\0\0" + header[12:]
    header = header[:10] + struct.pack(">H", checksum(header)) + header[12:]
    return frame[:at] + header + frame[at + len(header) :]


@pytest.mark.parametrize("vlan", [False, True], ids=["plain", "vlan"])
def test_inconsistent_length_fields(vlan):
    frame = build_frame(vlan, False)
    at = ip_start(vlan)
    header = bytearray(frame[at : at + 20])
    short_ihl = header.copy()
    short_ihl[0] = 0x44
    with pytest.raises(LengthError) as err:
        ethernet.decode_udp_frame(_with_ip_header(frame, at, bytes(short_ihl)))
    assert err.value.offset == at
    tiny_total = header.copy()
    tiny_total[2:4] = struct.pack(">H", 19)
    with pytest.raises(LengthError) as err:
        ethernet.decode_udp_frame(_with_ip_header(frame, at, bytes(tiny_total)))
    assert err.value.offset == at + 2
    for udp_length in (7, len(MOLD) + 7, len(MOLD) + 9):
        bad = bytearray(frame)
        bad[at + 24 : at + 26] = struct.pack(">H", udp_length)
        with pytest.raises(LengthError) as err:
            ethernet.decode_udp_frame(bytes(bad))
        assert err.value.offset == at + 20 + 4


# --- MoldUDP64 ----------------------------------------------------------------------------------


def test_mold_count_mismatch_names_the_count_field():
    blocks = itch.encode_blocks(ITCH_MESSAGES[:2])
    for count in (1, 3, 0, 0xFFFF):
        packet = struct.pack(">10sQH", b"SESSION001", 5, count) + blocks
        with pytest.raises(LengthError) as err:
            moldudp64.decode(b"lead" + packet, 4)
        assert err.value.offset == 4 + 18, count


# --- tick records -------------------------------------------------------------------------------

GOOD_TICK = dict(
    symbol_id=4095, message_type=4, side=1, price=999_999_999, volume=1, timestamp=2, sequence=3
)
#: Field order of the published 40-byte record (reserved last).
TICK_ORDER = ("symbol_id", "message_type", "side", "price", "volume", "timestamp", "sequence")
BAD_TICKS = [
    ("symbol_id", 4096, 0),
    ("symbol_id", 0xFFFF, 0),
    ("message_type", 0, 2),
    ("message_type", 5, 2),
    ("message_type", 255, 2),
    ("side", 2, 3),
    ("side", 255, 3),
    ("price", 0, 4),
    ("price", 1_000_000_000, 4),
    ("price", (1 << 64) - 1, 4),
]


@pytest.mark.parametrize(("field", "value", "field_offset"), BAD_TICKS)
def test_invalid_tick_record_names_its_field(field, value, field_offset):
    def pack(**values):
        v = {**GOOD_TICK, **values}
        return struct.pack("<HBBQQQQI", *(v[name] for name in TICK_ORDER), 0)

    assert tick.decode(pack()).symbol_id == 4095
    data = pack() * 2 + pack(**{field: value}) + pack()
    with pytest.raises(FieldValueError) as err:
        list(tick.iter_records(data))
    assert err.value.offset == 80 + field_offset
    with pytest.raises(FieldValueError) as err:
        tick.decode(data, 80)
    assert err.value.offset == 80 + field_offset


def test_tick_price_ceiling_is_configurable():
    data = struct.pack("<HBBQQQQI", 1, 1, 0, 500, 1, 1, 1, 0)
    assert tick.decode(data, max_price=501).price == 500
    with pytest.raises(FieldValueError) as err:
        tick.decode(data, max_price=500)
    assert err.value.offset == 4


# --- OUCH ---------------------------------------------------------------------------------------

#: (direction, type, published size without appendage, published appendage-length offset)
OUCH_APPENDAGES = [
    ("to_exchange", "O", 47, 45),
    ("to_exchange", "U", 40, 38),
    ("from_exchange", "A", 64, 62),
    ("from_exchange", "U", 68, 66),
    ("from_exchange", "E", 36, 34),
]


@pytest.mark.parametrize(("direction", "code", "size", "length_at"), OUCH_APPENDAGES)
def test_ouch_appendage_length_mismatch(direction, code, size, length_at):
    appendage = b"\x05\x02LIME"
    good = ouch.encode(ouch.make(direction, code), appendage, direction)
    assert len(good) == size + len(appendage)
    assert good[length_at : length_at + 2] == struct.pack(">H", len(appendage))
    for data in (good[:-1], good + b"\x00", good[:size]):
        with pytest.raises(LengthError) as err:
            ouch.decode(b"..." + data, direction, 3)
        assert err.value.offset == 3 + length_at
    with pytest.raises(TruncatedError):
        ouch.decode(good[: size - 1], direction)


def test_ouch_fixed_size_and_unknown_types():
    cancel = ouch.encode(ouch.make("to_exchange", "X", user_ref_num=5, quantity=0))
    assert len(cancel) == 9
    with pytest.raises(LengthError) as err:
        ouch.decode(cancel + b"\x00", "to_exchange")
    assert err.value.offset == 0
    with pytest.raises(TruncatedError):
        ouch.decode(cancel[:-1], "to_exchange")
    with pytest.raises(UnknownTypeError) as err:
        ouch.decode(b"..Z" + bytes(30), "to_exchange", 2)
    assert err.value.offset == 2
    with pytest.raises(ValueError, match="direction"):
        ouch.decode(cancel, "sideways")
    with pytest.raises(ValueError, match="appendage"):
        ouch.encode(ouch.make("to_exchange", "X"), b"\x01")


def test_soup_stream_errors():
    stream = ouch.encode_soup("U", b"abc") + ouch.encode_soup("S", b"defg")
    for cut in range(7, len(stream)):
        with pytest.raises(TruncatedError) as err:
            list(ouch.iter_soup(stream[:cut]))
        assert err.value.offset == 6
    for tail in (b"\x00\x00", b"\x00\x00U"):
        with pytest.raises(LengthError) as err:
            list(ouch.iter_soup(stream + tail))
        assert err.value.offset == len(stream)
    for cut in range(1, 6):
        with pytest.raises(TruncatedError) as err:
            list(ouch.iter_soup(stream[:cut]))
        assert err.value.offset == 0


# --- OUCH captures, checked against struct unpacking at the published offsets -------------------

OUCH_TABLES = {"to_exchange": ouch.TO_EXCHANGE, "from_exchange": ouch.FROM_EXCHANGE}

#: Published OUCH 5.0 layouts: (struct format, field names) for each direction and type.
PUBLISHED_OUCH = {
    ("to_exchange", "O"): (
        ">cIcI8sqccccc14sH",
        "type user_ref_num side quantity symbol price time_in_force display capacity "
        "intermarket_sweep cross_type cl_ord_id appendage_length",
    ),
    ("to_exchange", "X"): (">cII", "type user_ref_num quantity"),
    ("from_exchange", "A"): (
        ">cQIcI8sqccQcccc14sH",
        "type timestamp user_ref_num side quantity symbol price time_in_force display "
        "order_reference_number capacity intermarket_sweep cross_type order_state cl_ord_id "
        "appendage_length",
    ),
    ("from_exchange", "C"): (">cQIIc", "type timestamp user_ref_num quantity reason"),
}


def independent_ouch(path: Path):
    """(direction, {field: value}, appendage, type byte offset in the frame) for each message."""
    out = []
    for pkt in rdpcap(str(path)):
        frame = bytes(pkt)
        stream = pkt[TCP][Raw].load if Raw in pkt[TCP] else b""
        stream_at = frame.index(stream) if stream else None
        pos = 0
        while pos < len(stream):
            (length,) = struct.unpack_from(">H", stream, pos)
            packet_type, payload = stream[pos + 2 : pos + 3], stream[pos + 3 : pos + 2 + length]
            direction = {b"U": "to_exchange", b"S": "from_exchange"}.get(packet_type)
            if direction and payload:
                fmt, names = PUBLISHED_OUCH[(direction, payload[:1].decode())]
                size = struct.calcsize(fmt)
                values = dict(zip(names.split(), struct.unpack_from(fmt, payload)))
                out.append((direction, values, payload[size:], stream_at + pos + 3))
            pos += 2 + length
    return out


@pytest.mark.parametrize("path", OUCH_CAPTURES, ids=lambda p: p.name.split("_", 1)[1])
def test_ouch_capture_fields_match_published_offsets(path):
    assert [struct.calcsize(f) for f, _ in PUBLISHED_OUCH.values()] == [47, 9, 64, 18]
    ours = list(read_messages(path))
    expected = independent_ouch(path)
    assert len(ours) == len(expected)
    frame_offsets = [offset for _, _, offset in read_frames(path)]
    for got, (direction, values, appendage, at) in zip(ours, expected):
        assert got.kind == "ouch"
        assert got.offset == frame_offsets[got.frame] + at
        assert got.appendage == appendage
        assert type(got.message) is OUCH_TABLES[direction][values["type"].decode()].record
        for name, value in values.items():
            mine = getattr(got.message, name)
            if isinstance(value, bytes):
                assert mine == value.decode("ascii").rstrip(" "), name
            else:
                assert mine == value, name
        if "appendage_length" in values:
            assert values["appendage_length"] == len(appendage)
        assert (
            ouch.encode(got.message, got.appendage, direction)
            == (
                path.read_bytes()[
                    got.offset : got.offset
                    + struct.calcsize(PUBLISHED_OUCH[(direction, values["type"].decode())][0])
                    + len(appendage)
                ]
            )
        )


def test_ouch_captures_hold_the_expected_messages():
    kinds = {}
    for path in OUCH_CAPTURES:
        kinds[path.name.split("_", 1)[1]] = [type(m.message).__name__ for m in read_messages(path)]
    assert kinds == {
        "CancelOrderMessage.pcap": ["CancelOrder"],
        "CanceledMessage.pcap": ["OrderCanceled"],
        "ClientHeartbeatPacket.pcap": [],
        "EnterOrderMessage.pcap": ["EnterOrder"],
        "OrderAcceptedMessage.pcap": ["OrderAccepted"],
        "ServerHeartbeatPacket.pcap": [],
    }
    # The heartbeat captures do carry one SoupBinTCP packet each, with no payload.
    for name, packet_type in (("ClientHeartbeatPacket", b"R"), ("ServerHeartbeatPacket", b"H")):
        (pkt,) = rdpcap(str(OMI / f"Nasdaq.Nsm.Ouch.v5.0_{name}.pcap"))
        assert pkt[TCP][Raw].load[:3] == b"\x00\x01" + packet_type
