"""TickReceiver (gateware) in amaranth.sim: tick-record datagrams cut into records.

Frames built with the project's Ethernet codec (checked against scapy elsewhere): datagrams of
whole and partial records, padded short frames, frames for other ports and addresses, bad
checksums, IPv4 options, fragments, VLAN tags and truncated frames, crossed with idle input
and output back-pressure. Every record the receiver emits must be the next 40-byte slice of an
accepted datagram's payload, and every frame must count once under the expected cause.
"""

import random
from collections import Counter

import pytest
from amaranth.sim import Simulator
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.tickrx import TickReceiver
from tick2quote.host.protocol.ethernet import UdpFrame, encode_udp_frame
from tick2quote.sim.streams import (
    PAUSE_PATTERNS,
    beats_bytes,
    packet_beats,
    pause_pattern,
    stream_get,
    stream_put,
    unpack,
)

DEVICE_IP = bytes([10, 0, 0, 2])
TICK_PORT = 26400
RECORD = 40


def _frame(payload: bytes, **kw) -> bytes:
    fields = dict(
        dst_mac=bytes(6),
        src_mac=bytes([2, 0, 0, 0, 0, 9]),
        src_ip=bytes([10, 0, 0, 1]),
        dst_ip=DEVICE_IP,
        src_port=5000,
        dst_port=TICK_PORT,
        payload=payload,
    )
    fields.update(kw)
    return encode_udp_frame(UdpFrame(**fields))


def _case(rng: random.Random) -> tuple[bytes, str, bytes]:
    """``(frame, expected cause, payload bytes the receiver must pass on)``."""
    records = rng.randint(0, 4)
    payload = rng.randbytes(records * RECORD + rng.choice([0, 0, 0, rng.randint(1, 39)]))
    kind = rng.choice(["good"] * 6 + ["port", "ip", "csum", "options", "vlan", "frag", "cut"])
    if kind == "port":
        return _frame(payload, dst_port=TICK_PORT + 1), "ignored", b""
    if kind == "ip":
        return _frame(payload, dst_ip=bytes([10, 0, 0, 3])), "ignored", b""
    if kind == "vlan":
        return _frame(payload, vlan_tci=5), "ignored", b""
    if kind == "options":
        return _frame(payload, ip_options=bytes(4)), "malformed", b""
    frame = bytearray(_frame(payload))
    if kind == "csum":
        frame[24] ^= 0x40
        return bytes(frame), "malformed", b""
    if kind == "frag":
        frame[20] |= 0x20  # more fragments (the checksum is fixed up below)
        frame[24:26] = b"\0\0"
        total = sum(int.from_bytes(frame[i : i + 2], "big") for i in range(14, 34, 2))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        frame[24:26] = (~total & 0xFFFF).to_bytes(2, "big")
        return bytes(frame), "malformed", b""
    if kind == "cut" and len(payload) > 1:
        keep = rng.randint(0, len(payload) - 1)
        cut = bytes(frame[: 42 + keep])
        if len(cut) <= 40:  # too short to reach the UDP header: not for us at all
            return cut, "ignored", b""
        return cut, "truncated", payload[:keep]
    return bytes(frame), "accepted", payload


def _records(payload: bytes) -> list[bytes]:
    return [payload[k : k + RECORD] for k in range(0, len(payload), RECORD)]


@pytest.mark.parametrize("pattern", PAUSE_PATTERNS)
def test_records_and_counters_follow_the_datagrams(pattern):
    rng = random.Random(f"tickrx-{pattern}")
    cases = [_case(rng) for _ in range(60)]
    expected = [rec for _, _, payload in cases for rec in _records(payload)]
    causes = Counter(cause for _, cause, _ in cases)
    dut = TickReceiver(depth=512)
    got: list[bytes] = []
    fed = []

    async def feed(ctx):
        ctx.set(dut.address, int.from_bytes(DEVICE_IP, "big"))
        ctx.set(dut.port, TICK_PORT)
        idle = pause_pattern(pattern, seed=1)
        for frame, _, _ in cases:
            for beat in packet_beats(frame):
                await stream_put(ctx, dut.i, beat, idle=idle)
        fed.append(True)

    async def drain(ctx):
        pause = pause_pattern(pattern, seed=2)
        record: list[tuple[int, int]] = []
        while len(got) < len(expected):
            beat = unpack(beat_layout, (await stream_get(ctx, dut.o, pause=pause)).as_value().value)
            assert beat["first"] == (not record), "first marks a record's first beat"
            record.append((beat["data"], beat["keep"]))
            if beat["last"]:
                got.append(beats_bytes(record))
                record = []
        while not fed:
            await ctx.tick()
        for _ in range(10):
            await ctx.tick()
        counters = {name: ctx.get(getattr(dut.counters, name)) for name in causes}
        assert counters == dict(causes)
        assert ctx.get(dut.counters.frames) == len(cases)
        assert ctx.get(dut.counters.overflow) == 0
        assert not ctx.get(dut.o.valid), "nothing beyond the expected records"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    assert got == expected
