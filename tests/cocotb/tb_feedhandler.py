"""cocotb testbench of the gateware feed handler (``FeedHandler``), on Icarus and Verilator.

Frames built by scapy around MoldUDP64 packets (a synthetic session, full 1518-byte frames,
malformed and awkward traffic) and the real Nasdaq captures, crossed with idle cycles between
beats and frames, an 802.1Q tag or not and IPv4 options (the payload starts at lane 2 or 6, and
messages end on every lane). Every event must equal ``ParserModel(IngressModel(frames))``
(:func:`tick2quote.sim.feedcheck.expect`), carry the cycle its last byte's frame beat was taken
as its stamp, and be valid 2 cycles after that beat (when the output is not back-pressured);
every counter and every ``stale`` pulse must match, and nothing may be left unread.

The fuzz test drives random and mutated frames (see :func:`fuzz_frames`) and checks the same.

The bench runs in one coroutine that sets the inputs every cycle, waits for ``ReadOnly`` and
samples what the coming clock edge will see, so both simulators see the same handshakes.
"""

import itertools
import random
import time

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from tick2quote.hdl.events import BookEvent as EVENT_LAYOUT
from tick2quote.hdl.feedhandler import feed_counters_layout
from tick2quote.hdl.layouts import beat_layout, ip_entry_layout, port_entry_layout
from tick2quote.host.protocol import ethernet, moldudp64
from tick2quote.sim import feedcheck
from tick2quote.sim.cocotb_streams import TB, pack, unpack
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.models.ingress import IngressConfig
from tick2quote.sim.models.parser import BookEvent, EventKind
from tick2quote.sim.streams import pause_pattern

COUNTERS = feed_counters_layout(32)
GROUP_BYTES = bytes([233, 54, 12, 111])
TABLES = IngressConfig(dst_ips=frozenset({GROUP_BYTES}), dst_ports=frozenset({feedcheck.PORT}))


_BEAT = {name: fld.offset for name, fld in beat_layout}


def frame_beats(frame: bytes) -> list[int]:
    """The frame as ``beat_layout`` integers (the field shifts are taken from the layout once:
    packing field by field costs more than the simulation of a beat)."""
    out = []
    size = len(frame)
    for pos in range(0, size, 8):
        chunk = frame[pos : pos + 8]
        out.append(
            int.from_bytes(chunk, "little") << _BEAT["data"]
            | ((1 << len(chunk)) - 1) << _BEAT["keep"]
            | (pos == 0) << _BEAT["first"]
            | (pos + 8 >= size) << _BEAT["last"]
        )
    return out


def to_event(word: int) -> BookEvent:
    values = unpack(EVENT_LAYOUT, word)
    values["kind"] = EventKind(values["kind"])
    return BookEvent(**values)


def nested(word: int) -> dict:
    flat = unpack(COUNTERS, word)
    out = {"overflow": flat["overflow"]}
    for group in ("filter", "mold"):
        out[group] = unpack(COUNTERS.members[group], flat[group])
    return out


class FeedTB(TB):
    def __init__(self, dut):
        super().__init__(dut)
        dut.i__valid.value = 0
        dut.i__payload.value = 0
        dut.o__ready.value = 0
        dut.cycle.value = 0

    def configure(self, config: IngressConfig) -> None:
        hw = feedcheck.hw_config(config)
        dut = self.dut
        dut.allow_zero_checksum.value = hw["allow_zero_checksum"]
        groups = ports = 0
        for n, address in enumerate(hw["groups"]):
            groups |= pack(ip_entry_layout, {"enable": 1, "address": address}) << (33 * n)
        for n, port in enumerate(hw["ports"]):
            ports |= pack(port_entry_layout, {"enable": 1, "port": port}) << (17 * n)
        dut.groups.value = groups
        dut.ports.value = ports
        dut.session.value = (hw["session"] << 1 | 1) if "session" in hw else 0

    async def run(self, frames, idle="none", backpressure="none", seed=0, gap=0):
        """Drive ``frames``; return (taken cycle per (frame, beat), [(event, first valid
        cycle)], stale pulses, counters)."""
        dut = self.dut
        beats = []
        for n, frame in enumerate(frames):
            beats += [((n, k), b) for k, b in enumerate(frame_beats(frame))]
            beats += [None] * gap
        pause_in = pause_pattern(idle, seed)
        pause_out = pause_pattern(backpressure, seed + 1)
        taken, received = {}, []
        position, cycle, quiet, pending, stale = 0, 1, 0, None, 0
        offering = None
        # Inputs are written only when they change: every write costs simulator time.
        valid_now = ready_now = None
        while quiet < 40:
            dut.cycle.value = cycle
            if offering is None and position < len(beats) and not next(pause_in):
                offering = beats[position]
                position += 1
            if (offering is not None) != valid_now:
                valid_now = offering is not None
                dut.i__valid.value = int(valid_now)
            if offering is not None:
                dut.i__payload.value = offering[1]
            ready = not next(pause_out)
            if ready != ready_now:
                ready_now = ready
                dut.o__ready.value = int(ready)
            await ReadOnly()
            if offering is not None:
                if offering[0][1] == 0:  # checked on each frame's first beat
                    assert dut.i__ready.value == 1, "the frame input was back-pressured"
                taken[offering[0]] = cycle
                offering = None
            stale += int(dut.stale.value)
            if dut.o__valid.value:
                word = dut.o__payload.value.to_unsigned()
                pending = pending or (word, cycle)
                assert word == pending[0], "payload changed while waiting"
                if ready:
                    received.append((to_event(word), pending[1]))
                    pending = None
                quiet = 0
            else:
                quiet = quiet + 1 if position == len(beats) else 0
            await RisingEdge(dut.clk)
            cycle += 1
        return taken, received, stale, nested(dut.counters.value.to_unsigned())


def check(frames, config, taken, received, stale, counters, *, latency=True) -> int:
    expected = feedcheck.expect(frames, config)
    want = [e._replace(stamp=taken[(n, b)]) for n, b, e in expected.events]
    got = [event for event, _ in received]
    for n, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"event {n}: {g} != {w}"
    assert len(got) == len(want), (len(got), len(want))
    if latency:
        late = [(e, c) for e, c in received if c - e.stamp != 2]
        assert not late, f"{len(late)} events not valid 2 cycles after their beat: {late[:3]}"
    for group in ("filter", "mold"):
        differ = {k: (v, expected.counters[group][k]) for k, v in counters[group].items()
                  if v != expected.counters[group][k]}  # fmt: skip
        assert not differ, f"{group} counters (gateware, model): {differ}"
    assert counters == expected.counters
    assert stale == expected.stale, (stale, expected.stale)
    return len(got)


PATTERNS = [("none", "none", 0), ("random_25", "none", 0), ("none", "alternate", 3),
            ("bursty", "bursty", 1)]  # fmt: skip


@cocotb.test()
@cocotb.parametrize(patterns=PATTERNS)
async def session_and_corner_frames(dut, patterns):
    """A synthetic session (full-size frames included) and malformed traffic, mixed."""
    idle, backpressure, gap = patterns
    seed = PATTERNS.index(patterns)
    count = params_from_env().get("session_messages", 600)
    frames = feedcheck.session_frames(seed, count) + feedcheck.corner_frames(seed, 60)
    assert {1514, 1518} & {len(f) for f in frames}
    tb = FeedTB(dut)
    tb.configure(TABLES)
    await tb.reset()
    result = await tb.run(frames, idle, backpressure, seed, gap)
    events = check(frames, TABLES, *result, latency=backpressure == "none")
    dut._log.info("%d frames, %d events", len(frames), events)


@cocotb.test()
@cocotb.parametrize(renumber=[False, True], idle=["none", "random_25"])
async def real_captures(dut, renumber, idle):
    """The Nasdaq captures as they are (each frame restarts the anonymised sequence), and
    renumbered into one stream."""
    frames, allow_zero = feedcheck.capture_frames(renumber)
    config = IngressConfig(allow_zero_checksum=allow_zero)
    tb = FeedTB(dut)
    tb.configure(config)
    await tb.reset()
    result = await tb.run(frames, idle, "none", 7)
    events = check(frames, config, *result)
    assert events >= (50 if renumber else 1)


# ---------------------------------------------------------------- fuzz
def fuzz_frames(seed: int, count: int) -> list[bytes]:
    """Random and mutated frames (built with the project's fast encoder): truncated anywhere,
    wrong lengths, garbage types, bad checksums, random bit and byte flips, random bytes,
    sequence jumps, duplicates and session changes, among good frames."""
    rng = random.Random(seed)
    base = feedcheck.corner_frames(seed, 40)
    seq, session = 1, feedcheck.SESSION
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.03:
            out.append(rng.randbytes(rng.randint(1, 120)))
            continue
        if roll < 0.10:
            out.append(rng.choice(base))
            continue
        msgs = [feedcheck._garbage_message(rng) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.02:
            session = rng.randbytes(10)
        if rng.random() < 0.05:
            seq += rng.randint(-5, 5)
        packet = moldudp64.encode(moldudp64.Packet(session, max(seq, 0), msgs))
        seq = max(seq, 0) + len(msgs)
        frame = bytearray(
            ethernet.encode_udp_frame(
                ethernet.UdpFrame(
                    dst_mac=bytes(6),
                    src_mac=bytes(6),
                    src_ip=bytes(4),
                    dst_ip=GROUP_BYTES,
                    src_port=1,
                    dst_port=feedcheck.PORT,
                    payload=packet,
                    vlan_tci=rng.choice([None, 5]),
                    ip_options=bytes(4 * rng.randint(0, 10)),
                )  # fmt: skip
            )
        )
        roll = rng.random()
        if roll < 0.15:
            del frame[rng.randint(1, len(frame) - 1) :]
        elif roll < 0.35:
            for _ in range(rng.randint(1, 3)):
                bit = rng.randrange(8 * len(frame))
                frame[bit // 8] ^= 1 << (bit % 8)
        elif roll < 0.45:
            at = rng.randrange(len(frame))
            frame[at] = rng.randrange(256)
        out.append(bytes(frame))
    return out


@cocotb.test()
async def fuzz(dut):
    """Random and mutated frames: no lock-up, every frame counted, every event the model's."""
    params = params_from_env()
    count = params.get("fuzz_frames", 0)
    if not count:
        return
    batch = params.get("fuzz_batch", 20000)
    tb = FeedTB(dut)
    tb.configure(TABLES)
    await tb.reset()
    started = time.monotonic()
    done, cycles = 0, 0
    for n in itertools.count():
        if done >= count:
            break
        frames = fuzz_frames(n, min(batch, count - done))
        # Good frames after the garbage: the handler must recover at once.
        frames += feedcheck.session_frames(n, 40, max_payload=300)
        tb.__init__(dut)
        tb.configure(TABLES)
        await tb.reset()
        result = await tb.run(frames, "random_25" if n % 2 else "none", "none", n)
        check(frames, TABLES, *result)
        done += len(frames)
        cycles += max(result[0].values())
    dut._log.info("fuzz: %d frames, %d cycles, %.0f s", done, cycles, time.monotonic() - started)


# ---------------------------------------------------------------- figures (sim/bench_parse.py)
@cocotb.test()
async def bench(dut):
    """Latency per event kind and end lane, sustained rate and simulation speed, written as
    JSON to the ``bench_out`` parameter (the test does nothing without it)."""
    import json
    from collections import defaultdict

    params = params_from_env()
    if "bench_out" not in params:
        return
    frames = feedcheck.session_frames(11, params.get("bench_messages", 20000))
    frames += feedcheck.corner_frames(11, 200)
    tb = FeedTB(dut)
    tb.configure(TABLES)
    await tb.reset()
    started = time.monotonic()
    taken, received, stale, counters = await tb.run(frames)
    wall = time.monotonic() - started
    check(frames, TABLES, taken, received, stale, counters)
    expected = feedcheck.expect(frames, TABLES)
    lanes = defaultdict(set)  # end lanes seen per kind
    for lane, (event, _) in zip(expected.end_lanes, received):
        lanes[event.kind.name].add(lane)
    latency = defaultdict(list)
    for event, cycle in received:
        latency[event.kind.name].append(cycle - event.stamp)
    first, last = min(taken.values()), max(taken.values())
    beats = len(taken)
    result = {
        "simulator": cocotb.SIM_NAME,
        "frames": len(frames),
        "beats": beats,
        "cycles": last - first + 1,
        "messages": counters["mold"]["messages"],
        "events": len(received),
        "latency": {k: [min(v), max(v), len(v)] for k, v in latency.items()},
        "end_lanes": {k: sorted(v) for k, v in lanes.items()},
        "wall_s": wall,
        "cycles_per_s": (last + 40) / wall,
    }
    with open(params["bench_out"], "w") as f:
        json.dump(result, f)
