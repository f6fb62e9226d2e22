"""MessageSplitter in amaranth.sim against the host MoldUDP64 codec and the documented rules.

Every run checks, for every packet: the header record, every message's bytes, length, sequence
number and truncation flag, the packet status, the one-cycle latency from the input beat holding
a message's last byte to the output beat holding it, and that nothing is left unread.
"""

import random
import string
from dataclasses import dataclass, field

import pytest
from amaranth.sim import Simulator
from tick2quote.hdl.layouts import mold_header_offsets
from tick2quote.hdl.splitter import MessageSplitter
from tick2quote.host.protocol import itch, moldudp64
from tick2quote.host.protocol.errors import DecodeError
from tick2quote.sim.streams import (
    beats_bytes,
    packet_beats,
    pause_pattern,
    stream_get,
    stream_put,
)

HEADER_SIZE = moldudp64.HEADER.size
CLOCK_PERIOD = 1e-8


# -- reference: the rules documented in hdl/splitter.py ------------------------------------------


@dataclass
class Expected:
    header: tuple | None  # (session, sequence, count)
    messages: list = field(default_factory=list)  # (bytes, sequence, declared length, truncated)
    status: dict = field(default_factory=dict)
    ends: list = field(default_factory=list)  # packet byte offset of each message's last byte


def expected_split(packet: bytes) -> Expected:
    """What the splitter must output for one packet."""
    status = dict(messages=0, count_mismatch=0, truncated=0, zero_length=0, short=0)
    if len(packet) < HEADER_SIZE:
        status["short"] = 1
        return Expected(None, status=status)
    hdr = moldudp64.HEADER.decode(packet)
    exp = Expected((hdr.session, hdr.sequence, hdr.count), status=status)
    pos = HEADER_SIZE
    while pos < len(packet):
        if pos + 2 > len(packet):
            status["truncated"] = 1
            break
        length = int.from_bytes(packet[pos : pos + 2], "big")
        if length == 0:
            status["zero_length"] = 1
            break
        body = packet[pos + 2 : pos + 2 + length]
        if not body:
            status["truncated"] = 1
            break
        cut = len(body) < length
        sequence = (hdr.sequence + len(exp.messages)) % (1 << 64)
        exp.messages.append((body, sequence, length, int(cut)))
        exp.ends.append(pos + 2 + len(body) - 1)
        if cut:
            status["truncated"] = 1
            break
        pos += 2 + length
    status["messages"] = len(exp.messages)
    announced = 0 if hdr.count in (moldudp64.HEARTBEAT, moldudp64.END_OF_SESSION) else hdr.count
    status["count_mismatch"] = int(len(exp.messages) != announced)
    return exp


def check_reference_against_codec(packet: bytes, exp: Expected) -> None:
    """The rules agree with the host codec: same messages when it accepts the packet, and a
    flagged status exactly when it refuses it (a zero-length block it accepts is flagged)."""
    flagged = any(exp.status[k] for k in ("count_mismatch", "truncated", "zero_length", "short"))
    try:
        decoded = moldudp64.decode(packet)
    except DecodeError:
        assert flagged
        return
    if exp.status["zero_length"]:
        assert b"" in decoded.messages
        return
    assert not flagged
    assert [m[0] for m in exp.messages] == decoded.messages
    assert exp.header == (decoded.session, decoded.sequence, decoded.count)


# -- packets ---------------------------------------------------------------------------------------


def random_itch(rng: random.Random) -> bytes:
    """A real ITCH message of a random type with random field values."""
    code = rng.choice(sorted(itch.FORMATS))
    values = {}
    for f in itch.FORMATS[code].fields[1:]:
        if f.kind == "alpha":
            values[f.name] = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(1, f.size)))
        elif f.kind == "char":
            values[f.name] = rng.choice(string.ascii_uppercase)
        elif f.kind == "bytes":
            values[f.name] = rng.randbytes(f.size)
        else:
            values[f.name] = rng.getrandbits(8 * f.size)
    return itch.encode_message(itch.make(code, **values))


def random_message(rng: random.Random, short_share: float = 0.2) -> bytes:
    """Mostly real ITCH messages; some of an unknown type and random length, 1-5 bytes too."""
    roll = rng.random()
    if roll < short_share / 2:
        return b"z" + rng.randbytes(rng.randint(0, 4))
    if roll < short_share:
        return b"~" + rng.randbytes(rng.randint(5, 60))
    return random_itch(rng)


def random_packet(rng: random.Random, short_share: float = 0.2) -> bytes:
    session = rng.randbytes(10)
    sequence = rng.choice([1, rng.getrandbits(32), (1 << 64) - 3])
    kind = rng.random()
    if kind < 0.05:
        return moldudp64.encode(moldudp64.Packet(session, sequence, [], moldudp64.HEARTBEAT))
    if kind < 0.08:
        return moldudp64.encode(moldudp64.Packet(session, sequence, [], moldudp64.END_OF_SESSION))
    messages = [random_message(rng, short_share) for _ in range(rng.randint(1, 60))]
    return moldudp64.encode(moldudp64.Packet(session, sequence, messages))


def packet_of(messages: list[bytes], *, count: int | None = None, sequence: int = 1000) -> bytes:
    return moldudp64.encode(moldudp64.Packet(b"SESSION001", sequence, messages, count))


# -- simulation ------------------------------------------------------------------------------------


@dataclass
class Run:
    headers: list
    messages: list  # (bytes, sequence, length, truncated)
    statuses: list
    latencies: list  # per message: output last beat first valid - input beat accepted, cycles
    stall_cycles: int  # cycles with i.valid and not i.ready
    cycles: int


def simulate(packets, *, source="none", sink="none", side="none", seed=0) -> Run:
    """Run packets through the splitter with the given pause patterns on ``i``, ``o`` and on
    the ``header``/``status`` outputs; check message framing and the latency on the way."""
    dut = MessageSplitter()
    expected = [expected_split(p) for p in packets]
    n_beats = sum((len(m[0]) + 7) // 8 for e in expected for m in e.messages)
    n_headers = sum(e.header is not None for e in expected)
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    out = {"o": [], "header": [], "status": []}
    accepts, appears, stalls = [], [], [0]
    done = []

    async def source_bench(ctx):
        idle = pause_pattern(source, seed)
        for packet in packets:
            for beat in packet_beats(packet):
                await stream_put(ctx, dut.i, beat, idle=idle)
        done.append("source")

    def sink_bench(port, count, pattern, salt):
        async def bench(ctx):
            pause = pause_pattern(pattern, seed + salt)
            for _ in range(count):
                out[port].append(await stream_get(ctx, getattr(dut, port), pause=pause))
            done.append(port)

        return bench

    async def monitor(ctx):
        cycle, taken_before, valid_before = 0, False, False
        while True:
            _, _, iv, ir, ov, orr = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready
            )
            if iv and ir:
                accepts.append(cycle)
            if iv and not ir:
                stalls[0] += 1
            if ov and (taken_before or not valid_before):
                appears.append(cycle)
            taken_before, valid_before = ov and orr, ov
            cycle += 1

    sim.add_testbench(source_bench)
    sim.add_testbench(sink_bench("o", n_beats, sink, 1))
    sim.add_testbench(sink_bench("header", n_headers, side, 2))
    sim.add_testbench(sink_bench("status", len(packets), side, 3))
    sim.add_testbench(monitor, background=True)

    async def drain(ctx):
        await ctx.tick().until(dut.i.ready)  # let the pipeline settle after the last sink
        while len(done) < 4:
            await ctx.tick()
        for _ in range(8):  # nothing more may appear
            await ctx.tick()
            for port in ("o", "header", "status"):
                assert not ctx.get(getattr(dut, port).valid), f"{port} holds an unread record"

    sim.add_testbench(drain)
    n_in = sum(len(packet_beats(p)) for p in packets)
    sim.run_until(CLOCK_PERIOD * 12 * (n_in + n_beats + 50))
    assert len(done) == 4, f"the splitter stalled: only {done} finished"

    messages, current, last_out_beats = [], [], []
    for number, beat in enumerate(out["o"]):
        current.append(beat)
        if beat.last:
            messages.append(_message_of(current))
            last_out_beats.append(number)
            current = []
    assert not current, "the message stream ended inside a message"
    # Per message: the input beat holding its last byte, and the cycle that beat was accepted.
    base, last_in_beats = 0, []
    for packet, exp in zip(packets, expected):
        last_in_beats += [base + end // 8 for end in exp.ends]
        base += len(packet_beats(packet))
    assert len(last_in_beats) == len(last_out_beats)
    latencies = [appears[o] - accepts[i] for o, i in zip(last_out_beats, last_in_beats)]
    headers = [
        (bytes(h.session.to_bytes(10, "little")), h.sequence, h.count) for h in out["header"]
    ]
    statuses = [{k: int(getattr(s, k)) for k in expected[0].status} for s in out["status"]]
    return Run(headers, messages, statuses, latencies, stalls[0], len(accepts))


def _message_of(beats) -> tuple:
    """(bytes, sequence, length, truncated) of one message's beats, checking their framing."""
    assert [b.first for b in beats] == [1] + [0] * (len(beats) - 1)
    assert all(b.keep == 0xFF for b in beats[:-1]), "only a last beat may be partial"
    assert len({(b.length, b.sequence) for b in beats}) == 1, "length/sequence vary in a message"
    assert not any(b.truncated for b in beats[:-1])
    body = beats_bytes((b.data, b.keep) for b in beats)
    return body, beats[0].sequence, beats[0].length, beats[-1].truncated


def check(packets, **patterns) -> Run:
    run = simulate(packets, **patterns)
    expected = [expected_split(p) for p in packets]
    for packet, exp in zip(packets, expected):
        check_reference_against_codec(packet, exp)
    assert run.headers == [e.header for e in expected if e.header is not None]
    assert run.messages == [m for e in expected for m in e.messages]
    assert run.statuses == [e.status for e in expected]
    # The output beat holding a message's last byte is valid the cycle after the input beat
    # holding that byte is accepted. When that input beat completes further output beats (of
    # a later message), it is held for them, and the earlier message's beat leaves before it
    # is accepted.
    last_in_beat = [flag for e in expected for flag in _last_in_beat(e)]
    want = [1 if last else "<=0" for last in last_in_beat]
    got = [lat if lat == 1 else "<=0" if lat <= 0 else lat for lat in run.latencies]
    assert got == want, "latency from last byte in to last beat out"
    return run


def _last_in_beat(exp: Expected) -> list[bool]:
    """Per message: is its final output beat the last one its input beat completes?"""
    completions = []  # (input beat, message index) per output beat
    for index, ((body, *_), end) in enumerate(zip(exp.messages, exp.ends)):
        start = end - len(body) + 1
        for k in range((len(body) + 7) // 8):
            completions.append(((start + min(8 * k + 7, len(body) - 1)) // 8, index))
    last_of_beat = {}
    for beat, index in completions:
        last_of_beat[beat] = index
    return [last_of_beat[end // 8] == index for index, end in enumerate(exp.ends)]


# -- tests -----------------------------------------------------------------------------------------

PATTERNS = [
    ("none", "none", "none"),
    ("random_25", "none", "none"),
    ("none", "random_60", "none"),
    ("bursty", "alternate", "random_25"),
]


@pytest.mark.parametrize("source,sink,side", PATTERNS)
def test_random_packets(source, sink, side):
    rng = random.Random(f"{source}{sink}{side}")
    packets = [random_packet(rng) for _ in range(6)]
    check(packets, source=source, sink=sink, side=side, seed=7)


def test_every_lane_for_prefix_and_message_end():
    # Two messages of every length 1..17 in both places: each prefix and message end falls in
    # every lane, including a prefix split across beats and one in the last two lanes.
    # A third message follows, so that what comes after each of them is exercised too.
    packets = [
        packet_of([bytes([65 + i]) * i, bytes([97 + j]) * j, b"0123456789abc"])
        for i in range(1, 18)
        for j in range(1, 18)
    ]
    check(packets, sink="every_fourth")


@pytest.mark.parametrize("source,sink", [("none", "none"), ("random_25", "random_25")])
def test_mostly_short_messages(source, sink):
    rng = random.Random(f"short{source}")
    packets = [random_packet(rng, short_share=0.8) for _ in range(6)]
    check(packets, source=source, sink=sink, seed=4)


def test_packet_cut_at_every_length():
    rng = random.Random(5)
    whole = packet_of([random_itch(rng) for _ in range(3)] + [b"zz", b"Q" * 9])
    packets = [whole[:cut] for cut in range(1, len(whole) + 1)]
    run = check(packets, source="random_25", seed=3)
    assert sum(s["short"] for s in run.statuses) == HEADER_SIZE - 1
    assert sum(s["truncated"] for s in run.statuses) > 20


def test_zero_length_message_stops_the_packet():
    rng = random.Random(9)
    good = [random_itch(rng) for _ in range(3)]
    body = b"".join(len(m).to_bytes(2, "big") + m for m in good)
    for at in range(len(good) + 1):
        prefix = b"".join(len(m).to_bytes(2, "big") + m for m in good[:at])
        packet = moldudp64.HEADER.encode(session=b"S" * 10, sequence=5, count=4) + prefix
        packet += b"\x00\x00" + body  # the rest must be dropped
        run = check([packet, packet_of(good)])
        assert run.statuses[0]["zero_length"] == 1
        assert len(run.messages) == at + len(good)


def test_count_mismatch_heartbeat_and_end_of_session():
    msgs = [itch.encode_message(itch.make("S", event_code="O"))] * 2
    packets = [
        packet_of(msgs, count=3),
        packet_of(msgs, count=2),
        packet_of(msgs, count=moldudp64.HEARTBEAT),
        packet_of([], count=moldudp64.HEARTBEAT),
        packet_of([], count=moldudp64.END_OF_SESSION),
        packet_of(msgs, count=moldudp64.END_OF_SESSION),
    ]
    run = check(packets, side="alternate")
    assert [s["count_mismatch"] for s in run.statuses] == [1, 0, 1, 0, 0, 1]


def test_sequence_numbers_wrap():
    run = check([packet_of([b"A" * 12] * 4, sequence=(1 << 64) - 2)])
    assert [m[1] for m in run.messages] == [(1 << 64) - 2, (1 << 64) - 1, 0, 1]


def predicted_stalls(packet: bytes) -> int:
    """Cycles the input must wait at full rate when every message is >= 6 bytes: one per input
    beat that completes two output beats (the output takes one beat a cycle)."""
    completed = {}
    pos = HEADER_SIZE
    while pos < len(packet):
        length = int.from_bytes(packet[pos : pos + 2], "big")
        start = pos + 2
        for k in range((length + 7) // 8):
            in_beat = (start + min(8 * k + 7, length - 1)) // 8
            completed[in_beat] = completed.get(in_beat, 0) + 1
        pos = start + length
    return sum(n - 1 for n in completed.values() if n > 1)


def test_full_rate_real_itch(record_property):
    rng = random.Random(11)
    packets = [random_packet(rng, short_share=0) for _ in range(6)]
    run = check(packets)
    expected_stalls = sum(predicted_stalls(p) for p in packets)
    assert run.stall_cycles == expected_stalls
    record_property("input_beats", run.cycles)
    record_property("stall_cycles", run.stall_cycles)
    print(f"\n{run.cycles} input beats, {run.stall_cycles} stall cycles")


def test_header_fields_follow_the_declared_offsets():
    offsets = mold_header_offsets()
    assert {
        f.name: (moldudp64.HEADER.offsets[f.name], f.size) for f in moldudp64.HEADER.fields
    } == (offsets)
