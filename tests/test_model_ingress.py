"""The reference ingress model: frames built by scapy and by our codecs, every drop cause,
MoldUDP64 sequencing (gaps, duplicates, overlaps, heartbeats, end of session, session change),
A/B arbitration under any interleaving, and the real Nasdaq captures."""

from __future__ import annotations

import glob
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, UDP, Dot1Q, Ether, IPOption_NOP, IPv6, Raw, rdpcap
from tick2quote.host.protocol import itch, moldudp64
from tick2quote.host.protocol.ethernet import UdpFrame, decode_udp_frame, encode_udp_frame
from tick2quote.sim.models.ingress import (
    FILTER_CAUSES,
    PACKET_OUTCOMES,
    IngressConfig,
    IngressMessage,
    IngressModel,
    filter_frame,
)

SESSION = b"000012345A"
OTHER_SESSION = b"000012345B"
GROUP, PORT = "233.54.12.111", 26477
GROUP_BYTES = bytes([233, 54, 12, 111])


def message(n: int) -> bytes:
    """A distinct, well-formed ITCH message (an Add Order whose reference is ``n``)."""
    return itch.encode_message(
        itch.make("A", locate=1 + n % 3, order_ref=n, side="B", shares=n, stock="T", price=100)
    )


def payload(seq: int, messages: list[bytes], session: bytes = SESSION, count=None) -> bytes:
    return moldudp64.encode(moldudp64.Packet(session, seq, messages, count))


def scapy_frame(data: bytes, *, vlan: int | None = 141, dst=GROUP, dport=PORT, **ip) -> bytes:
    """An Ethernet frame built by scapy, independently of our codecs."""
    eth = Ether(dst="01:00:5e:36:0c:6f", src="00:11:22:33:44:55")
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    return bytes(eth / IP(src="10.1.2.3", dst=dst, **ip) / UDP(sport=4000, dport=dport) / data)


def our_frame(data: bytes, options: bytes = b"") -> bytes:
    return encode_udp_frame(
        UdpFrame(
            dst_mac=bytes(6),
            src_mac=bytes(6),
            src_ip=bytes(4),
            dst_ip=GROUP_BYTES,
            src_port=4000,
            dst_port=PORT,
            payload=data,
            ip_options=options,
        )  # fmt: skip
    )


def delivered(model: IngressModel, packets) -> list[tuple[int, bytes]]:
    out = []
    for p in packets:
        out += [(m.sequence, m.data) for m in model.packet(p)]
    return out


# --------------------------------------------------------------------------- frames
@pytest.mark.parametrize(
    "build",
    [
        lambda p: scapy_frame(p),
        lambda p: scapy_frame(p, vlan=None),
        lambda p: scapy_frame(p, options=[IPOption_NOP()] * 4),
        lambda p: our_frame(p),
        lambda p: our_frame(p, options=b"\x01" * 8),
    ],
    ids=["scapy-vlan", "scapy-untagged", "scapy-ip-options", "ours", "ours-ip-options"],
)
def test_frames_deliver_their_messages(build):
    model = IngressModel(
        IngressConfig(dst_ips=frozenset({GROUP_BYTES}), dst_ports=frozenset({PORT}))
    )
    msgs = [message(n) for n in range(1, 4)]
    out = model.frame(build(payload(1, msgs)))
    assert out == [IngressMessage(seq, m) for seq, m in zip((1, 2, 3), msgs)]
    assert model.counters["frames"] == 1 and model.counters["messages"] == 3
    assert model.expected == 4 and not model.stale and model.counters["accepted"] == 1


DROPS = {
    "not_ipv4": [
        lambda p: bytes(Ether() / IPv6(dst="ff02::1") / UDP(dport=PORT) / p),
        lambda p: bytes(Ether(type=0x0806) / Raw(bytes(28))),
        # IP version 5 in an IPv4 EtherType
        lambda p: (lambda f: f[:18] + bytes([0x55]) + f[19:])(scapy_frame(p)),
    ],
    "not_udp": [lambda p: bytes(Ether() / IP(dst=GROUP) / TCP(dport=PORT) / p)],
    "fragment": [
        lambda p: scapy_frame(p, flags="MF"),
        lambda p: scapy_frame(p, frag=3),
    ],
    "bad_checksum": [
        lambda p: scapy_frame(p, chksum=0x1234),
        lambda p: scapy_frame(p, chksum=0),
    ],
    "wrong_dst_ip": [lambda p: scapy_frame(p, dst="233.54.12.112")],
    "wrong_dst_port": [lambda p: scapy_frame(p, dport=PORT + 1)],
    "truncated": [
        lambda p: scapy_frame(p)[:10],
        lambda p: scapy_frame(p)[:16],  # inside the 802.1Q tag
        lambda p: scapy_frame(p)[:30],
        lambda p: scapy_frame(p, options=[IPOption_NOP()] * 8)[:40],
        lambda p: scapy_frame(p)[:44],  # inside the UDP header
    ],
    "bad_length": [
        lambda p: bytes(Ether() / IP(dst=GROUP) / UDP(dport=PORT, len=9) / p),
        lambda p: bytes(Ether() / IP(dst=GROUP, len=12) / UDP(dport=PORT) / p),
        lambda p: bytes(Ether() / IP(dst=GROUP, ihl=4) / UDP(dport=PORT) / p),
        # a datagram longer than the frame whose UDP length disagrees: the lengths are
        # checked before the end of the frame is known
        lambda p: bytes(Ether() / IP(dst=GROUP, len=500) / UDP(dport=PORT) / p),
    ],
    "short_payload": [
        lambda p: scapy_frame(p[:15]),  # MoldUDP64 header cut short
        lambda p: scapy_frame(b""),
    ],
}
CASES = [(cause, i) for cause, builders in DROPS.items() for i in range(len(builders))]


@pytest.mark.parametrize("cause, variant", CASES)
def test_every_drop_cause_is_counted(cause, variant):
    model = IngressModel(
        IngressConfig(dst_ips=frozenset({GROUP_BYTES}), dst_ports=frozenset({PORT}))
    )
    good = payload(1, [message(1), message(2)])
    assert model.frame(DROPS[cause][variant](good)) == []
    assert model.counters[cause] == 1 and model.counters["frames"] == 1
    assert sum(model.counters[c] for c in FILTER_CAUSES) == 1
    assert model.expected is None and model.counters["packets"] == 0
    # the model keeps working: the same packet, well framed, is then delivered whole
    assert len(model.frame(scapy_frame(good))) == 2
    assert model.counters["accepted"] == 1


def test_filter_agrees_with_the_codec_on_good_frames():
    """Where the host codec accepts a frame, the filter passes the same payload."""
    for build in (
        lambda p: scapy_frame(p),
        lambda p: scapy_frame(p, vlan=None, options=[IPOption_NOP()] * 12),
        lambda p: our_frame(p, options=b"\x01" * 40),
    ):
        frame = build(payload(3, [message(5)]))
        result = filter_frame(frame, IngressConfig())
        assert result.cause == "accepted" and not result.truncated
        assert result.payload == decode_udp_frame(frame).payload


def test_frame_cut_inside_the_payload_delivers_its_complete_messages():
    msgs = [message(n) for n in range(1, 5)]
    frame = scapy_frame(payload(1, msgs))
    cut = frame[: len(frame) - len(msgs[-1]) - 1]  # inside the last message
    model = IngressModel()
    assert model.frame(cut) == [IngressMessage(n, msgs[n - 1]) for n in (1, 2, 3)]
    c = model.counters
    assert c["truncated"] == 1 and c["accepted"] == 0 and c["packet_truncated"] == 1
    assert model.expected == 4 and not model.stale
    # the next packet starts after the lost message: a gap, the book goes stale
    assert delivered(model, [payload(5, [message(5)])]) == [(5, message(5))]
    assert c["gaps"] == 1 and c["gap_messages"] == 1 and model.stale


@pytest.mark.parametrize(
    "mangle, fault, sequences",
    [
        (lambda p: p[:-3], "overrun", [1]),  # the last block runs past the payload
        (lambda p: p[:18] + b"\x00\x09" + p[20:], "count_mismatch", [1, 2]),
        (lambda p: p[:18] + b"\x00\x01" + p[20:], "count_mismatch", [1]),
        (lambda p: p[:18] + b"\x00\x00" + p[20:], "count_mismatch", []),  # heartbeat + blocks
        (lambda p: p + b"\x00\x00" + bytes(5), "short_block", [1, 2]),
        (lambda p: p[:20] + b"\x00\x03abc" + p[20:], "short_block", []),
    ],
    ids=["overrun", "count-high", "count-low", "heartbeat-with-blocks", "zero", "short"],
)
def test_packet_faults_deliver_what_came_before(mangle, fault, sequences):
    msgs = [message(1), message(2)]
    model = IngressModel()
    out = model.frame(scapy_frame(mangle(payload(1, msgs))))
    assert out == [IngressMessage(n, msgs[n - 1]) for n in sequences]
    c = model.counters
    assert c["accepted"] == 1 and c["packets"] == 1 and c[fault] == 1
    assert sum(c[f] for f in PACKET_OUTCOMES) == 1
    assert c["messages"] == len(sequences)


def test_zero_checksum_accepted_only_when_allowed():
    frame = scapy_frame(payload(1, [message(1)]), chksum=0)
    assert IngressModel().frame(frame) == []
    assert IngressModel(IngressConfig(allow_zero_checksum=True)).frame(frame) == [
        IngressMessage(1, message(1))
    ]


def test_configured_session_drops_others():
    model = IngressModel(IngressConfig(session=SESSION))
    assert model.packet(payload(1, [message(1)], session=OTHER_SESSION)) == []
    assert model.counters["wrong_session"] == 1 and model.expected is None
    assert delivered(model, [payload(1, [message(1)])]) == [(1, message(1))]


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"session": b"short"}, "session must be 10 bytes"),
        ({"dst_ips": frozenset({b"\x01\x02\x03"})}, "dst_ips must be 4-byte IPv4 addresses"),
        ({"dst_ports": frozenset({70000})}, "dst_ports must be 0 .. 65535"),
    ],
)
def test_config_is_checked(kwargs, text):
    with pytest.raises(ValueError, match=text):
        IngressConfig(**kwargs)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), cut=st.integers(0, 200), flip=st.integers(0, 1600))
def test_garbage_never_raises_and_every_frame_is_accounted_for(data, cut, flip):
    model = IngressModel()
    frame = bytearray(scapy_frame(payload(7, [message(1), message(2)])))
    frame[(flip // 8) % len(frame)] ^= 1 << (flip % 8)
    for f in (data, bytes(frame), bytes(frame[:cut]), scapy_frame(data)):
        model.frame(f)
    c = model.counters
    assert c["frames"] == 4 == sum(c[cause] for cause in FILTER_CAUSES)
    assert sum(c[f] for f in PACKET_OUTCOMES) <= c["packets"] <= c["accepted"] + c["truncated"]


# --------------------------------------------------------------------------- sequencing
def test_gap_is_counted_marks_stale_and_still_delivers():
    model = IngressModel()
    delivered(model, [payload(1, [message(1), message(2)])])
    out = delivered(model, [payload(6, [message(6)])])
    assert out == [(6, message(6))]
    assert model.stale and model.expected == 7
    assert (model.counters["gaps"], model.counters["gap_messages"]) == (1, 3)
    assert model.events[-1] == ("gap", 3, 6)
    model.recover()
    assert not model.stale


def test_duplicates_and_overlaps():
    model = IngressModel()
    first = payload(1, [message(n) for n in range(1, 4)])
    assert len(delivered(model, [first])) == 3
    assert delivered(model, [first]) == []
    assert model.counters["duplicates"] == 3 and model.counters["duplicate_packets"] == 1
    overlap = payload(2, [message(n) for n in range(2, 7)])
    assert delivered(model, [overlap]) == [(n, message(n)) for n in range(4, 7)]
    assert model.counters["duplicates"] == 5 and model.counters["overlaps"] == 1
    assert model.expected == 7 and not model.stale and model.counters["messages"] == 6


def test_heartbeats_carry_the_next_sequence_number():
    model = IngressModel()
    delivered(model, [payload(1, [message(1)]), payload(2, [], count=0)])
    assert not model.stale and model.counters["heartbeats"] == 1
    delivered(model, [payload(1, [], count=0)])  # an old heartbeat from the other line
    assert not model.stale and model.expected == 2
    delivered(model, [payload(5, [], count=0)])
    assert model.stale and model.expected == 5 and model.counters["gap_messages"] == 3


def test_end_of_session_then_a_new_session():
    model = IngressModel()
    delivered(model, [payload(1, [message(1), message(2)])])
    eos = payload(3, [], count=0xFFFF)
    assert delivered(model, [eos, eos]) == []
    assert model.ended and model.counters["end_of_session"] == 1
    assert model.counters["end_of_session_repeats"] == 1
    assert delivered(model, [payload(2, [message(2)])]) == []  # the other line's copy
    assert model.counters["duplicates"] == 1
    assert delivered(model, [payload(3, [message(3)])]) == []
    assert model.counters["after_end"] == 1 and not model.stale
    out = delivered(model, [payload(1, [message(10)], session=OTHER_SESSION)])
    assert out == [(1, message(10))]
    assert model.counters["session_changes"] == 1 and model.stale and not model.ended
    assert model.events[-1] == ("session_change", SESSION, OTHER_SESSION)


def test_end_of_session_above_expected_is_a_gap():
    model = IngressModel()
    delivered(model, [payload(1, [message(1)]), payload(4, [], count=0xFFFF)])
    assert model.counters["gap_messages"] == 2 and model.stale and model.ended


def test_session_change_restarts_tracking_and_ignores_the_old_line():
    model = IngressModel()
    delivered(model, [payload(1, [message(1), message(2)])])
    out = delivered(model, [payload(1, [message(20)], session=OTHER_SESSION)])
    assert out == [(1, message(20))] and model.expected == 2 and model.stale
    model.recover()
    # the other line's late copy of the old session must not switch back
    assert delivered(model, [payload(3, [message(3)])]) == []
    assert model.counters["old_session"] == 1 and model.session == OTHER_SESSION
    assert delivered(model, [payload(2, [message(21)], session=OTHER_SESSION)]) == [
        (2, message(21))
    ]
    assert not model.stale


def test_joining_late_is_stale_from_the_start():
    model = IngressModel()
    assert delivered(model, [payload(500, [message(1)])]) == [(500, message(1))]
    assert model.stale and model.counters["late_join"] == 1 and model.counters["gaps"] == 0
    fresh = IngressModel()
    delivered(fresh, [payload(1, [message(1)])])
    assert not fresh.stale


# --------------------------------------------------------------------------- A/B arbitration
@st.composite
def ab_feed(draw):
    """Two lines, each an in-order list of packets covering the same messages (possibly cut
    into packets differently, with heartbeats and end-of-session packets), over one or two
    sessions, and an interleaving of the two lines. Returns the messages each session should
    deliver, as ``(sequence, bytes)``, and the merged packets."""
    sessions = [(SESSION, draw(st.integers(0, 30)))]
    if draw(st.booleans()):
        sessions.append((OTHER_SESSION, draw(st.integers(1, 15))))
    expected, first = [], 1
    for _, total in sessions:
        expected.append([(n, message(first + n)) for n in range(1, total + 1)])
        first += total

    def line():
        # A/B lines are copies of one stream: each carries at least one packet of every
        # session. (A receiver whose first packet is from the newer session while the other
        # line still sends the older one cannot tell which is newer: configure the session.)
        packets = []
        for (session, total), msgs in zip(sessions, expected):
            seq = 1
            if total == 0:
                packets.append(payload(seq, [], session, count=0))
            while seq <= total:
                if draw(st.integers(0, 3)) == 0:
                    packets.append(payload(seq, [], session, count=0))
                size = draw(st.integers(1, min(6, total - seq + 1)))
                packets.append(
                    payload(seq, [m for _, m in msgs[seq - 1 : seq - 1 + size]], session)
                )
                seq += size
            if draw(st.booleans()):
                packets.append(payload(seq, [], session, count=0xFFFF))
        return packets

    a = line()
    b = a if draw(st.booleans()) else line()
    picks = draw(st.lists(st.booleans(), min_size=len(a) + len(b), max_size=len(a) + len(b)))
    merged, ia, ib = [], 0, 0
    for take_a in picks:
        if (take_a and ia < len(a)) or ib == len(b):
            merged.append(a[ia])
            ia += 1
        else:
            merged.append(b[ib])
            ib += 1
    return expected, merged


@settings(max_examples=300, deadline=None)
@given(feed=ab_feed(), framed=st.booleans())
def test_ab_merge_delivers_every_message_exactly_once(feed, framed):
    expected, merged = feed
    model = IngressModel()
    out = []
    for p in merged:
        got = model.frame(our_frame(p)) if framed else model.packet(p)
        out += [(m.sequence, m.data) for m in got]
    assert out == [item for session in expected for item in session]
    seen = {p[:10] for p in merged}
    changed = seen == {SESSION, OTHER_SESSION}
    assert model.counters["session_changes"] == changed and model.stale == changed
    assert model.counters["gaps"] == 0 and model.counters["late_join"] == 0
    assert model.counters["messages"] == len(out)


# --------------------------------------------------------------------------- real captures
CAPTURES = sorted(glob.glob("/work/shared/data/omi/*Itch*.pcap"))


def scapy_messages(packet) -> tuple[int, list[bytes]]:
    """Sequence number and message bytes of a MoldUDP64 packet, parsed here with struct."""
    data = bytes(packet[UDP].payload)
    _, sequence, count = struct.unpack_from(">10sQH", data)
    pos, out = 20, []
    for _ in range(count):
        (length,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return sequence, out


@pytest.mark.parametrize("path", CAPTURES, ids=os.path.basename)
def test_real_captures_pass_through(path):
    anonymised = ".20230822_" in path  # zeroed addresses, session, sequence and IPv4 checksum
    for packet in rdpcap(path):
        frame = bytes(packet)
        sequence, expected = scapy_messages(packet)
        # Each frame is its own sample (the anonymised ones all carry sequence 0).
        model = IngressModel(IngressConfig(allow_zero_checksum=anonymised))
        out = model.frame(frame)
        assert out == [IngressMessage(sequence + k, m) for k, m in enumerate(expected)]
        assert len(out) >= 1 and model.counters["accepted"] == 1
        for m in out:
            assert len(m.data) == itch.SIZES[chr(m.data[0])]
        if anonymised:
            assert IngressModel().frame(frame) == []
