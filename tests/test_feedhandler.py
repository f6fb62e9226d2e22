"""FeedHandler (gateware) against the reference models, in amaranth.sim.

Frames built by scapy carrying a synthetic session, awkward and malformed traffic, and the
real Nasdaq captures; each run checks every event against
``ParserModel(IngressModel(frames))``, its stamp (the cycle the frame beat holding the message's
last byte was taken), its latency (valid 2 cycles after that beat), every counter and every
``stale`` pulse. Also: the ITCH offset tables against the codec declarations, the output buffer
under back-pressure and its overflow.
"""

import gc
import os

os.environ.setdefault("ITCH_NO_CPP", "1")

import itertools
import random

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator
from tick2quote.hdl import events, itchfields
from tick2quote.hdl.feedhandler import FeedHandler
from tick2quote.host.protocol import itch
from tick2quote.sim import feedcheck
from tick2quote.sim.models.ingress import IngressConfig
from tick2quote.sim.models.parser import ITCH_KINDS, BookEvent, EventKind
from tick2quote.sim.streams import packet_beats, pause_pattern

# Event field -> the codec's field name, per ITCH type (everything the parser takes).
CODEC_NAMES = {
    "order_ref": {"U": "original_ref"},
    "new_ref": {"U": "new_ref"},
    "shares": {"E": "executed_shares", "C": "executed_shares", "X": "cancelled_shares"},
    "price": {"C": "execution_price"},
    "code": {"A": "side", "F": "side", "P": "side", "C": "printable", "S": "event_code",
             "H": "trading_state"},
}  # fmt: skip


def test_offsets_match_the_codec_declarations():
    assert itchfields.LOCATE_OFFSET == itch.FORMATS["A"].offsets["locate"]
    for itch_type, (kind, fields) in itchfields.ITCH_FIELDS.items():
        fmt = itch.FORMATS[itch_type]
        assert itchfields.ITCH_SIZES[itch_type] == fmt.size
        assert ITCH_KINDS[itch_type].value == kind.value
        for field, offset in fields.items():
            name = CODEC_NAMES.get(field, {}).get(itch_type, field)
            assert fmt.offsets[name] == offset, (itch_type, field)
            assert fmt.field(name).size * 8 == events.EVENT_FIELDS[field], (itch_type, field)
    assert set(itchfields.ITCH_FIELDS) == set(ITCH_KINDS)


def test_event_kinds_match_the_model():
    assert {k.name: k.value for k in events.EventKind} == {k.name: k.value for k in EventKind}
    assert list(events.BookEvent.members) == list(BookEvent._fields)


def unpack_event(word: int) -> BookEvent:
    values = {}
    for name, field in events.BookEvent:
        values[name] = (word >> field.offset) & ((1 << field.width) - 1)
    values["kind"] = EventKind(values["kind"])
    return BookEvent(**values)


class Bench(Elaboratable):
    """The feed handler with a free-running cycle counter on its ``cycle`` input."""

    def __init__(self, **kwargs):
        self.dut = FeedHandler(**kwargs)
        self.counter = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.sync += self.counter.eq(self.counter + 1)
        m.d.comb += self.dut.cycle.eq(self.counter)
        return m


def read_counters(ctx, view) -> dict:
    return {
        "filter": {n: ctx.get(getattr(view.filter, n)) for n in view.filter.shape().members},
        "mold": {n: ctx.get(getattr(view.mold, n)) for n in view.mold.shape().members},
        "overflow": ctx.get(view.overflow),
    }


def run(frames, hw: dict, *, idle="none", backpressure="none", seed=0, gap=0, depth=16):
    """Drive ``frames``; return (taken cycle per (frame, beat), [(event, first valid cycle)],
    stale pulses, counters)."""
    bench = Bench(depth=depth)
    dut = bench.dut
    taken = {}
    received = []
    out = {}

    async def testbench(ctx):
        ctx.set(dut.allow_zero_checksum, hw.get("allow_zero_checksum", 0))
        for n, address in enumerate(hw.get("groups", [])):
            ctx.set(dut.groups[n].enable, 1)
            ctx.set(dut.groups[n].address, address)
        for n, port in enumerate(hw.get("ports", [])):
            ctx.set(dut.ports[n].enable, 1)
            ctx.set(dut.ports[n].port, port)
        if "session" in hw:
            ctx.set(dut.session.enable, 1)
            ctx.set(dut.session.session, hw["session"])
        beats = []
        for n, frame in enumerate(frames):
            beats += [(n, k, b) for k, b in enumerate(packet_beats(frame))]
            beats += [None] * gap
        pause_in = pause_pattern(idle, seed)
        pause_out = (
            pause_pattern(backpressure, seed + 1) if isinstance(backpressure, str) else backpressure
        )
        position, quiet, pending, stale = 0, 0, None, 0
        while quiet < 40:
            offered = None
            if position < len(beats) and not next(pause_in):
                offered = beats[position]
                position += 1
            ctx.set(dut.i.valid, offered is not None)
            if offered is not None:
                ctx.set(dut.i.payload, offered[2])
            ready = not next(pause_out)
            ctx.set(dut.o.ready, ready)
            _, _, cycle, valid, word, pulse = await ctx.tick().sample(
                bench.counter, dut.o.valid, dut.o.payload.as_value(), dut.stale
            )
            if offered is not None:
                taken[offered[:2]] = cycle
            stale += pulse
            if valid:
                pending = pending or (word, cycle)
                assert word == pending[0], "payload changed while waiting"
                if ready:
                    received.append((unpack_event(word), pending[1]))
                    pending = None
            quiet = quiet + 1 if position == len(beats) and not valid else 0
        out["counters"] = read_counters(ctx, dut.counters)
        out["stale"] = stale

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return taken, received, out["stale"], out["counters"]


def check(frames, config, taken, received, stale, counters, *, latency=True):
    expected = feedcheck.expect(frames, config)
    want = [e._replace(stamp=taken[(n, b)]) for n, b, e in expected.events]
    got = [event for event, _ in received]
    assert len(got) == len(want), (len(got), len(want))
    for n, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"event {n}: {g} != {w}"
    if latency:
        assert [cycle - e.stamp for e, cycle in received] == [2] * len(got)
    for group in ("filter", "mold"):
        differ = {k: (v, expected.counters[group][k]) for k, v in counters[group].items()
                  if v != expected.counters[group][k]}  # fmt: skip
        assert not differ, f"{group} counters (gateware, model): {differ}"
    assert counters == expected.counters
    assert stale == expected.stale
    return len(got)


CONFIG = IngressConfig(
    dst_ips=frozenset({bytes([233, 54, 12, 111])}), dst_ports=frozenset({feedcheck.PORT})
)


@pytest.mark.parametrize("idle", ["none", "random_25"])
def test_session_frames(idle):
    frames = feedcheck.session_frames(3, 400)
    result = run(frames, feedcheck.hw_config(CONFIG), idle=idle, seed=5)
    assert check(frames, CONFIG, *result) > 400


@pytest.mark.parametrize("seed", [1, 2])
def test_corner_frames(seed):
    frames = feedcheck.corner_frames(seed, 90)
    result = run(frames, feedcheck.hw_config(CONFIG), idle="random_25", seed=seed)
    check(frames, CONFIG, *result)


def test_real_captures():
    config = IngressConfig(allow_zero_checksum=True)
    frames, _ = feedcheck.capture_frames(renumber=True)
    result = run(frames, feedcheck.hw_config(config))
    assert check(frames, config, *result) >= 50


def test_configured_session_and_backpressure():
    """A configured session refuses the others; a slow consumer delays events in order."""
    rng = random.Random(4)
    frames = feedcheck.session_frames(4, 150, max_payload=200)
    other = feedcheck.corner_frames(9, 20)
    mixed = frames[:5] + other + frames[5:]
    rng.shuffle(mixed[5:])
    config = IngressConfig(session=feedcheck.SESSION)
    result = run(mixed, feedcheck.hw_config(config), backpressure="alternate", seed=2)
    check(mixed, config, *result, latency=False)


def test_overflow_is_counted_and_marks_stale():
    frames = feedcheck.session_frames(6, 60)
    expected = feedcheck.expect(frames)
    depth = 4
    beats = sum(len(packet_beats(f)) for f in frames)
    blocked = itertools.chain(itertools.repeat(True, beats + 50), itertools.repeat(False))
    taken, received, stale, counters = run(frames, {}, backpressure=blocked, depth=depth)
    want = [e._replace(stamp=taken[(n, b)]) for n, b, e in expected.events]
    assert [e for e, _ in received] == want[:depth]
    assert counters["overflow"] == len(want) - depth
    assert stale == expected.stale + len(want) - depth


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_depth_is_checked():
    with pytest.raises(ValueError, match=r"depth must be an integer in 2 \.\. 256, not 1"):
        FeedHandler(depth=1)
    gc.collect()
