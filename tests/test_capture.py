"""Feed files: pcap, ITCH day files and tick files written and read back, cut files, detection."""

import os

os.environ.setdefault("ITCH_NO_CPP", "1")

import random
import struct
from pathlib import Path

import dpkt
import pytest
from itch.parser import MessageParser
from scapy.utils import rdpcap
from tick2quote.host.capture import (
    FeedMessage,
    detect_format,
    read_frames,
    read_itch_file,
    read_messages,
    read_tick_file,
    write_frames,
    write_itch_file,
    write_tick_file,
)
from tick2quote.host.protocol import (
    ChecksumError,
    DecodeError,
    FieldValueError,
    TruncatedError,
    ethernet,
    itch,
    moldudp64,
    tick,
)


def _omi_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "shared" / "data" / "omi"
    return here if here.is_dir() else Path("/work/shared/data/omi")


OMI = _omi_dir()
CAPTURES = sorted(OMI.glob("*.pcap"))


def random_stream(seed: int, count: int) -> list:
    """Book messages of a few symbols (no end-of-messages event, which stops itchfeed)."""
    rng = random.Random(seed)
    out = [itch.make("S", timestamp=1, event_code="O")]
    for i in range(count):
        kind = rng.choice("AFEXDUCP")
        common = dict(locate=rng.randint(1, 9), tracking=i & 0xFFFF, timestamp=2 + i)
        ref = rng.randint(1, 1 << 40)
        if kind in "AFP":
            extra = {"attribution": "GSCO"} if kind == "F" else {}
            if kind == "P":
                extra["match_number"] = i
            out.append(
                itch.make(
                    kind,
                    **common,
                    order_ref=ref,
                    side=rng.choice("BS"),
                    shares=rng.randint(1, 10_000),
                    stock=rng.choice(["AAPL", "T", "BAC-Q", "GOOGL"]),
                    price=rng.randint(1, 10_000_000),
                    **extra,
                )
            )
        elif kind == "E":
            out.append(itch.make("E", **common, order_ref=ref, executed_shares=5, match_number=i))
        elif kind == "C":
            out.append(
                itch.make(
                    "C",
                    **common,
                    order_ref=ref,
                    executed_shares=5,
                    match_number=i,
                    printable=rng.choice("YN"),
                    execution_price=rng.randint(1, 1 << 31),
                )
            )
        elif kind == "X":
            out.append(itch.make("X", **common, order_ref=ref, cancelled_shares=7))
        elif kind == "D":
            out.append(itch.make("D", **common, order_ref=ref))
        else:
            out.append(
                itch.make("U", **common, original_ref=ref, new_ref=ref + 1, shares=3, price=9)
            )
    return out


def udp_frame(payload: bytes, vlan: int | None = None) -> bytes:
    return ethernet.encode_udp_frame(
        ethernet.UdpFrame(
            dst_mac=bytes.fromhex("01005e360c6f"),
            src_mac=bytes.fromhex("020000000001"),
            src_ip=bytes([10, 0, 0, 1]),
            dst_ip=bytes([233, 54, 12, 111]),
            src_port=1234,
            dst_port=26477,
            payload=payload,
            vlan_tci=vlan,
        )
    )


# --- pcap ---------------------------------------------------------------------------------------


def test_pcap_round_trip_and_scapy_reads_the_same(tmp_path):
    rng = random.Random(7)
    frames = [
        (
            1_700_000_000 + i * 0.25 + rng.randint(0, 999) * 1e-6,
            rng.randbytes(rng.randint(60, 1514)),
        )
        for i in range(50)
    ]
    path = tmp_path / "frames.pcap"
    write_frames(path, frames)
    got = list(read_frames(path))
    assert [f for _, f, _ in got] == [f for _, f in frames]
    for (ts, _, _), (want, _) in zip(got, frames):
        assert abs(ts - want) < 1e-6
    # The file offsets point at each frame's bytes.
    data = path.read_bytes()
    for _, frame, offset in got:
        assert data[offset : offset + len(frame)] == frame
        assert struct.unpack_from("<I", data, offset - 8)[0] == len(frame)
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [f for _, f in frames]
    for p, (want, _) in zip(packets, frames):
        assert abs(float(p.time) - want) < 1e-6


def test_pcap_without_timestamps_is_written_in_order(tmp_path):
    path = tmp_path / "plain.pcap"
    frames = [bytes([i]) * 64 for i in range(5)]
    write_frames(path, frames)
    got = list(read_frames(path))
    assert [f for _, f, _ in got] == frames
    assert [t for t, _, _ in got] == sorted(t for t, _, _ in got)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name.split("_", 1)[1])
def test_omi_capture_rewritten_reads_back_identically(path, tmp_path):
    frames = list(read_frames(path))
    copy = tmp_path / "copy.pcap"
    write_frames(copy, [(ts, frame) for ts, frame, _ in frames])
    assert [(f, o) for _, f, o in read_frames(copy)] == [(f, o) for _, f, o in frames]
    assert list(read_messages(copy)) == list(read_messages(path))


def test_itch_pcap_messages_and_sequences(tmp_path):
    messages = random_stream(3, 40)
    frames, sequence = [], 100
    for i in range(0, len(messages), 7):
        chunk = [itch.encode_message(m) for m in messages[i : i + 7]]
        packet = moldudp64.encode(moldudp64.Packet(b"SESSION001", sequence, chunk))
        frames.append(udp_frame(packet, vlan=141 if i % 2 else None))
        sequence += len(chunk)
    path = tmp_path / "feed.pcap"
    write_frames(path, frames)
    got = list(read_messages(path))
    assert [m.message for m in got] == messages
    assert [m.sequence for m in got] == list(range(100, 100 + len(messages)))
    assert [m.frame for m in got] == [i // 7 for i in range(len(messages))]
    data = path.read_bytes()
    for m in got:
        body = itch.encode_message(m.message)
        assert data[m.offset : m.offset + 2 + len(body)] == len(body).to_bytes(2, "big") + body


def test_bad_frame_in_a_pcap_names_its_file_offset(tmp_path):
    packet = moldudp64.encode(moldudp64.Packet(b"SESSION001", 1, [b"S" + bytes(11)]))
    good = udp_frame(packet)
    bad = bytearray(good)
    bad[14 + 10] ^= 0xFF  # IPv4 checksum of the second frame
    path = tmp_path / "bad.pcap"
    write_frames(path, [good, bytes(bad), good])
    frame_offsets = [o for _, _, o in read_frames(path)]
    with pytest.raises(ChecksumError) as err:
        list(read_messages(path))
    assert err.value.offset == frame_offsets[1] + 14 + 10
    # A frame too short for an Ethernet header is a typed error too.
    write_frames(path, [good, good[:10]])
    frame_offsets = [o for _, _, o in read_frames(path)]
    assert frame_offsets[1] == 24 + 16 + len(good) + 16
    with pytest.raises(TruncatedError) as err:
        list(read_messages(path))
    assert err.value.offset == frame_offsets[1] + 10


def test_cut_pcap_names_the_cut_record(tmp_path):
    frames = [bytes([i]) * (60 + i) for i in range(4)]
    path = tmp_path / "whole.pcap"
    write_frames(path, frames)
    data = path.read_bytes()
    record_starts = [24]
    for f in frames:
        record_starts.append(record_starts[-1] + 16 + len(f))
    assert record_starts[-1] == len(data)
    cut_path = tmp_path / "cut.pcap"
    for cut in range(24, len(data)):
        cut_path.write_bytes(data[:cut])
        if cut in record_starts:
            assert len(list(read_frames(cut_path))) == record_starts.index(cut)
            continue
        with pytest.raises(TruncatedError) as err:
            list(read_frames(cut_path))
        assert err.value.offset == max(s for s in record_starts if s < cut), cut


def test_unreadable_capture(tmp_path):
    path = tmp_path / "short.pcap"
    path.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
    with pytest.raises(DecodeError) as err:
        list(read_frames(path))
    assert err.value.offset == 0


# --- ITCH day files -----------------------------------------------------------------------------


def test_itch_file_round_trip_and_itchfeed_agrees(tmp_path):
    messages = random_stream(11, 300)
    path = tmp_path / "day.itch"
    write_itch_file(path, messages)
    data = path.read_bytes()
    got = list(read_itch_file(path))
    assert [m.message for m in got] == messages
    assert all(m.kind == "itch" for m in got)
    # Offsets are those of the length prefixes, as itchfeed's sizes lay them out.
    theirs = list(MessageParser().parse_stream(data))
    assert len(theirs) == len(messages)
    offsets = [0]
    for t in theirs[:-1]:
        offsets.append(offsets[-1] + 2 + t.message_size)
    assert [m.offset for m in got] == offsets
    assert [t.to_bytes() for t in theirs] == [itch.encode_message(m) for m in messages]
    assert list(read_messages(path)) == got
    assert list(read_messages(path, "itch")) == got


def test_itch_file_keeps_unknown_types(tmp_path):
    unknown = itch.UnknownMessage("z", b"z" + bytes(range(12)))
    messages = [itch.make("S", event_code="O"), unknown, itch.make("D", order_ref=5)]
    path = tmp_path / "day.itch"
    write_itch_file(path, messages)
    assert [m.message for m in read_itch_file(path)] == messages


def test_cut_itch_file_names_the_cut_block(tmp_path):
    messages = random_stream(5, 12)
    whole = tmp_path / "whole.itch"
    write_itch_file(whole, messages)
    data = whole.read_bytes()
    block_starts = [0]
    for m in messages:
        block_starts.append(block_starts[-1] + 2 + itch.SIZES[m.type])
    assert block_starts[-1] == len(data)
    cut_path = tmp_path / "cut.itch"
    for cut in range(1, len(data)):
        cut_path.write_bytes(data[:cut])
        if cut in block_starts:
            assert len(list(read_itch_file(cut_path))) == block_starts.index(cut)
            continue
        with pytest.raises(TruncatedError) as err:
            list(read_itch_file(cut_path))
        assert err.value.offset == max(s for s in block_starts if s < cut), cut


# --- tick files ---------------------------------------------------------------------------------


def random_ticks(seed: int, count: int) -> list:
    rng = random.Random(seed)
    return [
        tick.TICK.record(
            symbol_id=rng.randint(0, 4095),
            message_type=rng.randint(1, 4),
            side=rng.randint(0, 1),
            price=rng.randint(1, tick.DEFAULT_MAX_PRICE - 1),
            volume=rng.getrandbits(64),
            timestamp=rng.getrandbits(64),
            sequence=rng.getrandbits(64),
            reserved=0,
        )
        for _ in range(count)
    ]


def test_tick_file_round_trip(tmp_path):
    records = random_ticks(1, 200)
    path = tmp_path / "feed.ticks"
    write_tick_file(path, records)
    data = path.read_bytes()
    assert data == b"".join(struct.pack("<HBBQQQQI", *r) for r in records)
    got = list(read_tick_file(path))
    assert got == [FeedMessage("tick", r, 40 * i) for i, r in enumerate(records)]
    assert list(read_messages(path)) == got


def test_tick_file_with_a_bad_record(tmp_path):
    records = random_ticks(2, 5)
    records[3] = records[3]._replace(side=2)
    path = tmp_path / "bad.tick"
    write_tick_file(path, records)
    with pytest.raises(FieldValueError) as err:
        list(read_tick_file(path))
    assert err.value.offset == 3 * 40 + 3
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(TruncatedError) as err:
        list(read_tick_file(path))
    assert err.value.offset == 4 * 40


# --- format detection ---------------------------------------------------------------------------


def test_detect_format(tmp_path):
    little = tmp_path / "a.bin"
    write_frames(little, [bytes(60)])
    assert detect_format(little) == "pcap"
    for magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1"):
        other = tmp_path / f"{magic.hex()}.dat"
        other.write_bytes(magic + bytes(20))
        assert detect_format(other) == "pcap"
    ng = tmp_path / "capture.tick"  # the magic wins over the suffix
    with open(ng, "wb") as f:
        writer = dpkt.pcapng.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        writer.writepkt(bytes(64), ts=1.5)
    assert detect_format(ng) == "pcap"
    assert [f for _, f, _ in read_frames(ng)] == [bytes(64)]
    for name, expected in (
        ("x.tick", "tick"),
        ("x.ticks", "tick"),
        ("x.itch", "itch"),
        ("x", "itch"),
    ):
        p = tmp_path / name
        p.write_bytes(bytes(40))
        assert detect_format(p) == expected
    with pytest.raises(ValueError, match="format"):
        read_messages(tmp_path / "x", "csv")
