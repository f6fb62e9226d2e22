"""Exact round trips of every codec: decode(encode(x)) == x and encode(decode(b)) == b.

The byte strings on the ``b`` side are built here with ``struct`` or scapy from the published
layouts, so a codec that is consistent with itself but not with the wire fails.
"""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from tick2quote.host.protocol import ethernet, itch, moldudp64, ouch, tick
from tick2quote.host.protocol.fields import Format

EXAMPLES = settings(max_examples=150, deadline=None)

ASCII_TEXT = st.characters(min_codepoint=0x00, max_codepoint=0x7F)


def field_values(fmt: Format, fixed: dict):
    """Record values for every field of ``fmt`` (``fixed`` ones as given)."""
    strategies = {}
    for f in fmt.fields:
        if f.name in fixed:
            strategies[f.name] = st.just(fixed[f.name])
        elif f.kind == "uint":
            strategies[f.name] = st.integers(0, (1 << (8 * f.size)) - 1)
        elif f.kind == "int":
            half = 1 << (8 * f.size - 1)
            strategies[f.name] = st.integers(-half, half - 1)
        elif f.kind == "char":
            strategies[f.name] = ASCII_TEXT
        elif f.kind == "alpha":
            # Decoding trims trailing spaces, so a value that round-trips has none.
            strategies[f.name] = st.text(ASCII_TEXT, max_size=f.size).map(lambda s: s.rstrip(" "))
        else:
            strategies[f.name] = st.binary(min_size=f.size, max_size=f.size)
    return st.fixed_dictionaries(strategies).map(lambda v: fmt.record(**v))


def wire_bytes(fmt: Format, fixed: dict):
    """Raw bytes for ``fmt``: any bytes in number fields, ASCII in text ones."""
    parts = []
    for f in fmt.fields:
        if f.name in fixed:
            parts.append(st.just(fixed[f.name]))
        elif f.kind in ("alpha", "char"):
            parts.append(st.binary(min_size=f.size, max_size=f.size).map(_to_ascii))
        else:
            parts.append(st.binary(min_size=f.size, max_size=f.size))
    return st.tuples(*parts).map(b"".join)


def _to_ascii(data: bytes) -> bytes:
    return bytes(b & 0x7F for b in data)


# --- ITCH ---------------------------------------------------------------------------------------

ITCH_CODES = sorted(itch.FORMATS)


@st.composite
def itch_records(draw, codes=ITCH_CODES):
    code = draw(st.sampled_from(codes))
    return draw(field_values(itch.FORMATS[code], {"type": code}))


@st.composite
def itch_bytes(draw):
    code = draw(st.sampled_from(ITCH_CODES))
    return draw(wire_bytes(itch.FORMATS[code], {"type": code.encode()}))


@EXAMPLES
@given(itch_records())
def test_itch_record_round_trip(record):
    data = itch.encode_message(record)
    assert len(data) == itch.SIZES[record.type]
    assert data[:1] == record.type.encode()
    assert itch.decode_message(data) == record


@EXAMPLES
@given(itch_bytes())
def test_itch_bytes_round_trip(data):
    assert itch.encode_message(itch.decode_message(data)) == data


@EXAMPLES
@given(st.lists(itch_records(), max_size=8), st.binary(max_size=6))
def test_itch_blocks_round_trip(records, lead):
    blocks = itch.encode_blocks(records)
    bodies = [itch.encode_message(m) for m in records]
    expected = b"".join(struct.pack(">H", len(body)) + body for body in bodies)
    assert blocks == expected
    assert itch.decode_blocks(lead + blocks, len(lead)) == records
    assert list(itch.iter_blocks(blocks)) == [
        (sum(2 + itch.SIZES[r.type] for r in records[:i]) + 2, itch.SIZES[r.type])
        for i, r in enumerate(records)
    ]


# --- MoldUDP64 ----------------------------------------------------------------------------------

SESSIONS = st.binary(min_size=10, max_size=10)
SEQUENCES = st.integers(0, (1 << 64) - 1)


@EXAMPLES
@given(SESSIONS, SEQUENCES, st.lists(st.binary(max_size=60), min_size=1, max_size=6))
def test_mold_packet_round_trip(session, sequence, messages):
    packet = moldudp64.Packet(session, sequence, messages)
    wire = struct.pack(">10sQH", session, sequence, len(messages)) + b"".join(
        struct.pack(">H", len(m)) + m for m in messages
    )
    assert moldudp64.encode(packet) == wire
    assert moldudp64.decode(wire) == packet
    assert moldudp64.encode(moldudp64.decode(wire)) == wire
    assert packet.next_sequence == sequence + len(messages)


@EXAMPLES
@given(SESSIONS, SEQUENCES, st.sampled_from([0, 0xFFFF]))
def test_mold_heartbeat_and_end_of_session_round_trip(session, sequence, count):
    wire = struct.pack(">10sQH", session, sequence, count)
    packet = moldudp64.decode(wire)
    assert packet == moldudp64.Packet(session, sequence, [], count)
    assert packet.is_heartbeat == (count == 0)
    assert packet.is_end_of_session == (count == 0xFFFF)
    assert packet.next_sequence == sequence
    assert moldudp64.encode(packet) == wire


def test_rerequest_layout():
    assert moldudp64.rerequest(b"SESSION001", 1234, 7) == struct.pack(
        ">10sQH", b"SESSION001", 1234, 7
    )


# --- Ethernet / VLAN / IPv4 / UDP ---------------------------------------------------------------

MACS = st.binary(min_size=6, max_size=6)
IPS = st.binary(min_size=4, max_size=4)
PORTS = st.integers(0, 0xFFFF)
#: Router Alert and four No-Operation options: 4-byte options scapy rebuilds byte for byte.
ROUTER_ALERT, FOUR_NOPS = b"\x94\x04\x00\x00", b"\x01\x01\x01\x01"
IP_OPTIONS = st.lists(st.sampled_from([ROUTER_ALERT, FOUR_NOPS]), max_size=10).map(b"".join)


@st.composite
def udp_frames(draw):
    return ethernet.UdpFrame(
        dst_mac=draw(MACS),
        src_mac=draw(MACS),
        src_ip=draw(IPS),
        dst_ip=draw(IPS),
        src_port=draw(PORTS),
        dst_port=draw(PORTS),
        payload=draw(st.binary(max_size=300)),
        vlan_tci=draw(st.none() | st.integers(0, 0xFFFF)),
        ip_options=draw(IP_OPTIONS),
        ttl=draw(st.integers(0, 255)),
        ident=draw(st.integers(0, 0xFFFF)),
    )


def _mac(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _ip(data: bytes) -> str:
    return ".".join(str(b) for b in data)


def scapy_frame(f: ethernet.UdpFrame) -> bytes:
    """The same frame built by scapy (which fills in lengths and the IPv4 checksum)."""
    options = []
    for i in range(0, len(f.ip_options), 4):
        if f.ip_options[i : i + 4] == ROUTER_ALERT:
            options.append(IPOption_Router_Alert())
        else:
            options += [IPOption_NOP()] * 4
    eth = Ether(dst=_mac(f.dst_mac), src=_mac(f.src_mac))
    if f.vlan_tci is not None:
        eth = eth / Dot1Q(
            prio=f.vlan_tci >> 13, dei=(f.vlan_tci >> 12) & 1, vlan=f.vlan_tci & 0xFFF
        )
    ip = IP(src=_ip(f.src_ip), dst=_ip(f.dst_ip), ttl=f.ttl, id=f.ident, flags=0, options=options)
    data = bytes(eth / ip / UDP(sport=f.src_port, dport=f.dst_port, chksum=0) / Raw(f.payload))
    return data + bytes(max(0, 60 - len(data)))


@EXAMPLES
@given(udp_frames())
def test_udp_frame_round_trip_and_scapy_agrees(frame):
    wire = ethernet.encode_udp_frame(frame)
    header_len = 14 + (4 if frame.vlan_tci is not None else 0) + 20 + len(frame.ip_options) + 8
    expected = ethernet.UdpFrame(**{**vars(frame), "payload_offset": header_len})
    assert ethernet.decode_udp_frame(wire) == expected
    assert wire == scapy_frame(frame)
    # scapy recomputes the same IPv4 checksum from our header.
    ours = Ether(wire)
    rebuilt = ours[IP].copy()
    del rebuilt.chksum
    assert IP(bytes(rebuilt)).chksum == ours[IP].chksum


@EXAMPLES
@given(udp_frames())
def test_udp_frame_bytes_round_trip(frame):
    wire = scapy_frame(frame)
    assert ethernet.encode_udp_frame(ethernet.decode_udp_frame(wire)) == wire


@EXAMPLES
@given(st.binary(min_size=20, max_size=60).filter(lambda b: len(b) % 2 == 0))
def test_ipv4_checksum_verifies_to_zero(header):
    checksum = ethernet.ipv4_checksum(header[:10] + b"\0\0" + header[12:])
    filled = header[:10] + checksum.to_bytes(2, "big") + header[12:]
    # The ones'-complement sum over a header holding its checksum is 0xFFFF.
    total = sum(int.from_bytes(filled[i : i + 2], "big") for i in range(0, len(filled), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF


# --- OUCH and SoupBinTCP ------------------------------------------------------------------------

OUCH_TABLES = {"to_exchange": ouch.TO_EXCHANGE, "from_exchange": ouch.FROM_EXCHANGE}

OUCH_CASES = [("to_exchange", code) for code in "OUX"] + [
    ("from_exchange", code) for code in "AUCE"
]


@st.composite
def ouch_messages(draw):
    direction, code = draw(st.sampled_from(OUCH_CASES))
    fmt = OUCH_TABLES[direction][code]
    has_appendage = "appendage_length" in fmt.offsets
    appendage = draw(st.binary(max_size=40)) if has_appendage else b""
    fixed = {"type": code}
    if has_appendage:
        fixed["appendage_length"] = len(appendage)
    return direction, draw(field_values(fmt, fixed)), appendage


@EXAMPLES
@given(ouch_messages())
def test_ouch_record_round_trip(case):
    direction, record, appendage = case
    data = ouch.encode(record, appendage, direction)
    assert data[:1] == record.type.encode()
    assert ouch.decode(data, direction) == (record, appendage)
    # The direction can be inferred from the record class.
    assert ouch.encode(record, appendage) == data


@EXAMPLES
@given(st.data())
def test_ouch_bytes_round_trip(data):
    direction, code = data.draw(st.sampled_from(OUCH_CASES))
    fmt = OUCH_TABLES[direction][code]
    fixed = {"type": code.encode()}
    appendage = b""
    if "appendage_length" in fmt.offsets:
        appendage = data.draw(st.binary(max_size=40))
        fixed["appendage_length"] = struct.pack(">H", len(appendage))
    wire = data.draw(wire_bytes(fmt, fixed)) + appendage
    record, got_appendage = ouch.decode(wire, direction)
    assert got_appendage == appendage
    assert ouch.encode(record, got_appendage, direction) == wire


@EXAMPLES
@given(st.lists(st.tuples(st.sampled_from("UShHRAZ+"), st.binary(max_size=80)), max_size=8))
def test_soup_framing_round_trip(packets):
    stream = b"".join(ouch.encode_soup(t, p) for t, p in packets)
    assert stream == b"".join(struct.pack(">H", len(p) + 1) + t.encode() + p for t, p in packets)
    got = list(ouch.iter_soup(stream))
    assert [(p.packet_type, p.payload) for p in got] == packets
    for pkt in got:
        assert stream[pkt.offset : pkt.offset + len(pkt.payload)] == pkt.payload
        assert stream[pkt.offset - 1 : pkt.offset] == pkt.packet_type.encode()


# --- tick records -------------------------------------------------------------------------------

TICK_STRUCT = struct.Struct("<HBBQQQQI")
U64 = st.integers(0, (1 << 64) - 1)
VALID_TICKS = st.builds(
    tick.TICK.record,
    symbol_id=st.integers(0, tick.MAX_SYMBOLS - 1),
    message_type=st.integers(tick.ADD, tick.TRADE),
    side=st.sampled_from([tick.BID, tick.ASK]),
    price=st.integers(1, tick.DEFAULT_MAX_PRICE - 1),
    volume=U64,
    timestamp=U64,
    sequence=U64,
    reserved=st.integers(0, 0xFFFFFFFF),
)


@EXAMPLES
@given(VALID_TICKS)
def test_tick_record_round_trip(record):
    data = tick.encode(record)
    assert data == TICK_STRUCT.pack(*record)
    assert tick.decode(data) == record


@EXAMPLES
@given(st.lists(VALID_TICKS, max_size=10))
def test_tick_bytes_round_trip(records):
    data = b"".join(TICK_STRUCT.pack(*r) for r in records)
    decoded = list(tick.iter_records(data))
    assert decoded == records
    assert b"".join(tick.encode(r) for r in decoded) == data


def test_blank_records_encode_to_blank_fields():
    for code in itch.FORMATS:
        data = itch.encode_message(itch.make(code))
        # Type byte, then zeros in number fields and spaces in text ones.
        assert data[:1] == code.encode()
        assert set(data[1:]) <= {0, 0x20}
        assert itch.decode_message(data) == itch.make(code)
    for table in (ouch.TO_EXCHANGE, ouch.FROM_EXCHANGE):
        for code in table:
            record = table[code].make(type=code)
            assert set(ouch.encode(record)[1:]) <= {0, 0x20}


# --- values outside the wire format refuse to encode ----------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"timestamp": 1 << 48},
        {"timestamp": -1},
        {"locate": 1 << 16},
        {"shares": -1},
        {"order_ref": 1 << 64},
        {"stock": "TOOLONGXX"},
        {"side": "BS"},
        {"side": ""},
    ],
    ids=lambda bad: "-".join(f"{k}={v}" for k, v in bad.items()),
)
def test_out_of_range_values_refuse_to_encode(bad):
    with pytest.raises(ValueError):
        itch.encode_message(itch.make("A", **bad))
