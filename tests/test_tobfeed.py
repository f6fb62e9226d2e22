"""TopOfBookFeed (gateware) in amaranth.sim: frames decoded by scapy and the host codec.

Random top-of-book updates, spaced out (every one sent) and in bursts (the ones arriving while a
frame is in flight are dropped and counted), with back-pressure on ``o``. Every frame's headers
must parse in scapy with the IPv4 checksum scapy computes, its payload must decode with
:mod:`tick2quote.host.protocol.tobfeed` to the update taken, frame sequence numbers must count
from 0, and ``sent + dropped`` must equal the updates offered.
"""

import random

import pytest
from amaranth.sim import Simulator
from scapy.all import IP, UDP, Ether
from tick2quote.hdl.book import top_of_book_layout
from tick2quote.hdl.egress import udp_config_layout
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.tobfeed import RECORD_FIELDS, TopOfBookFeed, tobfeed_counters_layout
from tick2quote.host.protocol import tobfeed
from tick2quote.host.protocol.errors import LengthError, UnknownTypeError
from tick2quote.sim.streams import beats_bytes, pack, pause_pattern, unpack

CONFIG = {
    "dst_mac": 0x0100_5E01_0203,
    "src_mac": 0x0211_2233_4455,
    "src_ip": 0x0A01_0203,
    "dst_ip": 0xEF01_0203,
    "src_port": 30000,
    "dst_port": 30001,
    "ttl": 1,
}


def updates(rng: random.Random, count: int) -> list[dict]:
    return [
        {
            "locate": rng.randrange(1 << 16),
            "bid_px": rng.randrange(1 << 32),
            "bid_sz": rng.randrange(1 << 32),
            "ask_px": rng.randrange(1 << 32),
            "ask_sz": rng.randrange(1 << 32),
            "stale": rng.randrange(2),
            "sequence": (n << 40) | rng.randrange(1 << 40),  # unique, increasing
            "stamp": rng.randrange(1 << 32),
        }
        for n in range(count)
    ]


def run(offered: list[dict], gap: int, backpressure: str):
    dut = TopOfBookFeed()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        ctx.set(dut.config.as_value(), pack(udp_config_layout, CONFIG))
        pause = pause_pattern(backpressure, 3)
        frames, current, quiet, position, wait = [], [], 0, 0, 5
        while quiet < 20:
            sending = position < len(offered) and wait == 0
            ctx.set(dut.i.valid, sending)
            if sending:
                ctx.set(dut.i.payload.as_value(), pack(top_of_book_layout, offered[position]))
                position += 1
                wait = gap
            else:
                wait = max(0, wait - 1)
            ready = not next(pause)
            ctx.set(dut.o.ready, ready)
            _, _, i_ready, valid, beat = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.as_value()
            )
            assert i_ready
            if valid and ready:
                fields = unpack(beat_layout, beat)
                current.append((fields["data"], fields["keep"]))
                if fields["last"]:
                    frames.append(beats_bytes(current))
                    current = []
            quiet = 0 if position < len(offered) or valid else quiet + 1
        out["frames"] = frames
        out["counters"] = unpack(tobfeed_counters_layout, ctx.get(dut.counters.as_value()))

    sim.add_testbench(bench)
    sim.run()
    return out["frames"], out["counters"]


@pytest.mark.parametrize("gap, backpressure", [(12, "none"), (0, "none"), (3, "random_25")])
def test_tobfeed_frames(gap, backpressure):
    offered = updates(random.Random(gap), 60)
    frames, counters = run(offered, gap, backpressure)
    by_sequence = {u["sequence"]: u for u in offered}
    previous = None
    for n, frame in enumerate(frames):
        packet = Ether(frame)
        assert packet.dst == "01:00:5e:01:02:03" and packet[IP].dst == "239.1.2.3"
        assert packet[IP].ttl == 1 and packet[IP].id == n
        ours = packet[IP].chksum
        del packet[IP].chksum
        assert IP(bytes(packet[IP]))[IP].chksum == ours
        assert packet[UDP].dport == 30001 and packet[UDP].len == 8 + tobfeed.RECORD.size
        record = tobfeed.decode(bytes(packet[UDP].payload))
        assert record.frame_sequence == n
        assert tobfeed.lost_between(previous, record.frame_sequence) == 0
        previous = record.frame_sequence
        update = by_sequence.pop(record.book_sequence)
        assert record == tobfeed.make(
            frame_sequence=n, locate=update["locate"], bid_px=update["bid_px"],
            bid_sz=update["bid_sz"], ask_px=update["ask_px"], ask_sz=update["ask_sz"],
            flags=update["stale"] * tobfeed.FLAG_STALE, book_sequence=update["sequence"],
            stamp=update["stamp"],
        )  # fmt: skip
        assert len(frame) == 82
    sent = [tobfeed.decode(bytes(Ether(f)[UDP].payload)).book_sequence for f in frames]
    assert sent == sorted(sent)
    assert counters["sent"] == len(frames)
    assert counters["sent"] + counters["dropped"] == len(offered)
    if gap >= 12 and backpressure == "none":
        assert counters["dropped"] == 0
    if gap == 0:
        assert counters["dropped"] > 0


def test_record_layout_matches_host_codec():
    assert tuple(RECORD_FIELDS) == tuple((f.name, f.size) for f in tobfeed.RECORD.fields)


def test_host_codec_round_trip_and_errors():
    record = tobfeed.make(frame_sequence=5, locate=9, bid_px=1, flags=1, book_sequence=7)
    assert tobfeed.decode(tobfeed.encode(record)) == record
    with pytest.raises(LengthError):
        tobfeed.decode(tobfeed.encode(record) + b"\0")
    with pytest.raises(UnknownTypeError):
        tobfeed.decode(tobfeed.encode(record._replace(type="X")))
    assert tobfeed.lost_between(None, 10) == 0
    assert tobfeed.lost_between(10, 13) == 2
    assert tobfeed.lost_between(10, 10) == 0
