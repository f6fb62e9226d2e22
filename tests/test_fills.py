"""FillParser (gateware) in amaranth.sim, against a reference parser built on the host codecs.

Frames are built with scapy around SoupBinTCP datagrams made with the project's OUCH encoder:
Order Executed messages (with and without appendages, prices out of range), other OUCH
messages, heartbeats and debug packets of every short length, zero lengths, wrong appendage
lengths, datagrams cut anywhere, frames for another address or port, bad checksums, 802.1Q tags
and IPv4 options (so the payload starts at lane 2 and 6). The reference
(:func:`expected`) runs the ingress model's frame filter and then splits each payload with
:func:`tick2quote.host.protocol.ouch.decode`; fills and every counter must match.
"""

import random
from collections import Counter

import pytest
from amaranth.sim import Simulator
from scapy.all import IP, UDP, Dot1Q, Ether, IPOption_NOP
from tick2quote.hdl.fills import EXECUTED_FIELDS, FILL_COUNTERS, FillParser, fill_counters_layout
from tick2quote.hdl.orders import fill_layout
from tick2quote.host.protocol import ouch
from tick2quote.host.protocol.errors import DecodeError
from tick2quote.sim.models.ingress import IngressConfig, filter_frame
from tick2quote.sim.streams import packet_beats, pause_pattern, unpack

ADDRESS, PORT = "10.20.30.40", 15001
ADDRESS_INT = 0x0A141E28


# ----------------------------------------------------------------------------- stimulus
def executed(rng: random.Random, *, price=None, appendage=b"") -> bytes:
    record = ouch.make(
        "from_exchange", "E", timestamp=rng.randrange(1 << 64),
        user_ref_num=rng.randrange(1 << 32), quantity=rng.randrange(1 << 32),
        price=rng.randrange(1 << 32) if price is None else price, liquidity_flag="A",
        match_number=rng.randrange(1 << 64),
    )  # fmt: skip
    return ouch.encode(record, appendage)


def random_packet(rng: random.Random) -> bytes:
    """One SoupBinTCP packet of a random kind (mostly fills)."""
    roll = rng.random()
    if roll < 0.45:
        appendage = rng.randbytes(rng.choice([0, 0, 0, 3, 9]))
        return ouch.encode_soup("S", executed(rng, appendage=appendage))
    if roll < 0.52:
        price = rng.choice([-1, -(1 << 40), 1 << 32, (1 << 63) - 1, rng.randrange(-(1 << 63), 0)])
        return ouch.encode_soup("S", executed(rng, price=price))
    if roll < 0.58:  # an Order Executed whose appendage length disagrees, or cut short
        body = bytearray(executed(rng, appendage=rng.randbytes(rng.randint(0, 4))))
        if rng.random() < 0.5:
            body[35] ^= 1 << rng.randrange(3)
        else:
            body = body[: rng.randint(1, 35)]
        return ouch.encode_soup("S", bytes(body))
    if roll < 0.66:
        record = ouch.make("from_exchange", "C", user_ref_num=rng.randrange(1 << 32),
                           quantity=5, reason="U")  # fmt: skip
        return ouch.encode_soup("S", ouch.encode(record))
    if roll < 0.72:
        record = ouch.make("from_exchange", "A", user_ref_num=7, side="B", symbol="AAPL")
        return ouch.encode_soup("S", ouch.encode(record))
    if roll < 0.85:  # heartbeats, end of session, debug text of every short length
        kind = rng.choice("HZ+")
        text = rng.randbytes(rng.randint(0, 9)) if kind == "+" else b""
        return ouch.encode_soup(kind, text)
    if roll < 0.90:  # an 'S' with 0 or 1 payload bytes
        return ouch.encode_soup("S", rng.choice([b"", b"E", b"X"]))
    return ouch.encode_soup(rng.choice("AJLU+"), rng.randbytes(rng.randint(0, 60)))


def datagram(rng: random.Random) -> bytes:
    packets = b"".join(random_packet(rng) for _ in range(rng.randint(1, 5)))
    roll = rng.random()
    if roll < 0.06:
        packets += b"\x00\x00" + rng.randbytes(rng.randint(0, 12))  # a length of 0
    elif roll < 0.16:
        packets = packets[: rng.randint(1, len(packets))]  # the last packet cut short
    return packets


def frame(payload: bytes, rng: random.Random, *, dst=ADDRESS, dport=PORT, **ip) -> bytes:
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
    if rng.random() < 0.3:
        eth = eth / Dot1Q(vlan=12)
    options = rng.choice([0, 0, 0, 1, 4, 7])
    opts = {"options": [IPOption_NOP()] * (4 * options)} if options else {}
    return bytes(eth / IP(src="10.0.0.9", dst=dst, **opts, **ip) / UDP(sport=15000, dport=dport)
                 / payload)  # fmt: skip


def fill_frames(seed: int, count: int) -> list[bytes]:
    """Mostly good fill datagrams, with a share of frames the filter drops or cuts."""
    rng = random.Random(seed)
    frames = []
    for _ in range(count):
        payload = datagram(rng)
        roll = rng.random()
        if roll < 0.04:
            frames.append(frame(payload, rng, dport=PORT + 1))
        elif roll < 0.08:
            frames.append(frame(payload, rng, dst="10.20.30.41"))
        elif roll < 0.11:
            frames.append(frame(payload, rng, chksum=0x1234))
        elif roll < 0.16:
            f = frame(payload, rng)
            frames.append(f[: rng.randint(40, len(f))])  # the frame itself cut short
        else:
            frames.append(frame(payload, rng))
    frames.append(frame(ouch.encode_soup("H"), rng))  # under 20 bytes: the filter drops it
    return frames


# ----------------------------------------------------------------------------- reference
def split(payload: bytes) -> tuple[list[tuple[int, int, int]], Counter]:
    """Fills and packet outcomes of one datagram payload."""
    fills, counts, pos = [], Counter(), 0
    while pos < len(payload):
        if pos + 2 > len(payload):
            counts["truncated"] += 1
            break
        length = int.from_bytes(payload[pos : pos + 2], "big")
        if length == 0:
            counts["malformed"] += 1
            break
        if pos + 2 + length > len(payload):
            counts["truncated"] += 1
            break
        kind, body = chr(payload[pos + 2]), payload[pos + 3 : pos + 2 + length]
        if kind == "S" and body[:1] == b"E":
            try:
                record, _ = ouch.decode(body, "from_exchange")
            except DecodeError:
                counts["malformed"] += 1
            else:
                if 0 <= record.price < 1 << 32:
                    fills.append((record.user_ref_num, record.quantity, record.price))
                    counts["fills"] += 1
                else:
                    counts["bad_price"] += 1
        else:
            counts["skipped"] += 1
        pos += 2 + length
    return fills, counts


def expected(frames: list[bytes]) -> tuple[list[tuple[int, int, int]], Counter]:
    config = IngressConfig(
        dst_ips=frozenset({bytes(int(x) for x in ADDRESS.split("."))}),
        dst_ports=frozenset({PORT}),
    )
    fills, counts = [], Counter()
    for f in frames:
        result = filter_frame(f, config)
        if result.payload is None:
            continue
        got, outcome = split(result.payload)
        fills += got
        if len(result.payload) >= 20:  # shorter ones never pass the gateware filter
            counts += outcome
    return fills, counts


# ----------------------------------------------------------------------------- gateware
def run(frames: list[bytes], idle: str, backpressure: str, seed: int):
    dut = FillParser()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        ctx.set(dut.address, ADDRESS_INT)
        ctx.set(dut.port, PORT)
        beats = [b for f in frames for b in packet_beats(f)]
        pause_in, pause_out = pause_pattern(idle, seed), pause_pattern(backpressure, seed + 1)
        fills, position, quiet = [], 0, 0
        while quiet < 20:
            sending = position < len(beats) and not next(pause_in)
            ctx.set(dut.i.valid, sending)
            if sending:
                ctx.set(dut.i.payload, beats[position])
                position += 1
            ready = not next(pause_out)
            ctx.set(dut.o.ready, ready)
            _, _, i_ready, valid, fill = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.as_value()
            )
            assert i_ready
            if valid and ready:
                got = unpack(fill_layout, fill)
                fills.append((got["user_ref"], got["quantity"], got["price"]))
            quiet = 0 if position < len(beats) or valid else quiet + 1
        out["fills"] = fills
        out["counters"] = unpack(fill_counters_layout(), ctx.get(dut.counters.as_value()))

    sim.add_testbench(bench)
    sim.run()
    return out["fills"], out["counters"]


def check(frames, fills, counters):
    want_fills, want_counts = expected(frames)
    assert fills == want_fills
    got = {name: counters[name] for name in FILL_COUNTERS}
    assert got == {name: want_counts[name] for name in FILL_COUNTERS}
    layout = fill_counters_layout().members["filter"]
    assert unpack(layout, counters["filter"])["frames"] == len(frames)
    return want_counts


@pytest.mark.parametrize("idle, backpressure", [("none", "none"), ("random_25", "alternate")])
def test_fills_against_reference(idle, backpressure):
    seed = {"none": 1, "random_25": 2}[idle]
    frames = fill_frames(seed, 70)
    fills, counters = run(frames, idle, backpressure, seed)
    counts = check(frames, fills, counters)
    # The stimulus reaches every outcome.
    assert all(counts[name] for name in FILL_COUNTERS if name != "overflow"), counts


def test_every_packet_length_and_start_lane():
    """Short packets of every length back to back, behind every start offset: header starts
    on every lane, lengths split across beats, up to three packets in one beat."""
    rng = random.Random(9)
    frames = []
    for lead in range(0, 8):
        for size in range(1, 10):
            filler = ouch.encode_soup("+", bytes(lead)) if lead else b""
            packets = [ouch.encode_soup("+", bytes(size - 1)) for _ in range(3)]
            body = filler + b"".join(packets) + ouch.encode_soup("S", executed(rng))
            frames.append(frame(body + packets[0], rng))
    fills, counters = run(frames, "none", "none", 0)
    counts = check(frames, fills, counters)
    assert counts["fills"] == len(frames)


def test_executed_layout_matches_host_codec():
    fmt = ouch.FROM_EXCHANGE["E"]
    assert tuple(EXECUTED_FIELDS) == tuple((f.name, f.size) for f in fmt.fields)


def test_a_fill_is_out_seven_cycles_after_its_last_byte():
    """The documented latency: a fill is valid on ``o`` 7 cycles after the cycle in which the
    frame beat holding its last byte is taken, whichever lane that byte is in (the fill behind
    debug packets of every length, so it ends on every lane)."""
    rng = random.Random(4)
    for lead in range(8):
        filler = ouch.encode_soup("+", bytes(lead)) if lead else b""
        packet = ouch.encode_soup("S", executed(rng))
        payload = filler + packet + ouch.encode_soup("H")
        data = bytes(Ether() / IP(src="10.0.0.9", dst=ADDRESS) / UDP(dport=PORT) / payload)
        last_beat = (data.index(packet) + len(packet) - 1) // 8
        dut = FillParser()
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        seen = {}

        async def bench(ctx, dut=dut, data=data, seen=seen):
            ctx.set(dut.address, ADDRESS_INT)
            ctx.set(dut.port, PORT)
            ctx.set(dut.o.ready, 1)
            beats = packet_beats(data)
            for cycle in range(len(beats) + 20):
                sending = cycle < len(beats)
                ctx.set(dut.i.valid, sending)
                if sending:
                    ctx.set(dut.i.payload, beats[cycle])
                if ctx.get(dut.o.valid) and "out" not in seen:
                    seen["out"] = cycle
                await ctx.tick()

        sim.add_testbench(bench)
        sim.run()
        assert seen.get("out") == last_beat + 7, (lead, last_beat, seen)
