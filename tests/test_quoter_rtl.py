"""Quoter (gateware) against QuoterModel in amaranth.sim, with a small geometry.

Random streams of top-of-book records, trading states, fills, control writes and reads and kill
pulses go in with idle cycles on every input and back-pressure on ``o``; the model is replayed
over the events in the order the gateware took them (``sim.bench_quoter.replay``). Every order,
every counter and every read answer must equal the model's, and the orders must pass the
independent "must never happen" check.
"""

from __future__ import annotations

import gc
import random

import pytest
from amaranth.sim import Simulator
from tick2quote.hdl.book import top_of_book_layout
from tick2quote.hdl.orders import fill_layout, order_layout
from tick2quote.hdl.pricing import magic
from tick2quote.hdl.quoter import Quoter
from tick2quote.hdl.quoterstate import COUNTERS, counter_layout, ctl_layout, trading_layout
from tick2quote.sim.bench_quoter import AFTER, check_invariants, replay, scenario
from tick2quote.sim.streams import pause_pattern

STREAMS = {
    "tob": top_of_book_layout,
    "trading": trading_layout,
    "fill": fill_layout,
    "ctl": ctl_layout,
}


def pack(layout, values) -> int:
    word = 0
    for name, fld in layout:
        word |= (int(values.get(name, 0)) & ((1 << fld.width) - 1)) << fld.offset
    return word


def unpack(layout, word: int) -> dict:
    return {name: (word >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


# ---------------------------------------------------------------------------- parameters


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"symbols": 3}, r"symbols must be a power of two in 2 \.\. 65536, not 3"),
        ({"symbols": 1}, r"symbols must be a power of two in 2 \.\. 65536, not 1"),
        ({"ref_window": 1000}, r"ref_window must be a power of two in 2 \.\. 1048576, not 1000"),
        ({"first_user_ref_num": 0}, r"first_user_ref_num must be in 1 \.\. 4294967295, not 0"),
        ({"adder_arity": 4}, r"adder_arity must be 2 or 3, not 4"),
        ({"default": 5}, r"default must be a QuoteParams, not 5"),
    ],
)
def test_parameters_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Quoter(**kwargs)
    gc.collect()


# ---------------------------------------------------------------------------- constant division


#: (odd divisor, largest dividend) of every constant division in hdl.pricing
DIVISIONS = [
    (625, (2**32 - 1) * (2**16 - 1) >> 5),
    (625, (2 * (2**32 - 1) * (2**16 - 1)) >> 4),
    (25, (2**38) >> 2),
]


@pytest.mark.parametrize("divisor, x_max", DIVISIONS)
def test_magic_division_is_exact_at_the_boundaries(divisor, x_max):
    m, k = magic(divisor, x_max)
    rng = random.Random(divisor)
    quotients = list(range(0, 2000)) + [x_max // divisor - j for j in range(2000)]
    quotients += [rng.randrange(x_max // divisor) for _ in range(20000)]
    for q in quotients:
        for x in (q * divisor - 1, q * divisor, q * divisor + divisor - 1):
            if 0 <= x <= x_max:
                assert (x * m) >> k == x // divisor, x
    assert (x_max * m) >> k == x_max // divisor


def test_magic_division_is_exact_exhaustively_on_a_small_range():
    for divisor in (3, 25, 625):
        m, k = magic(divisor, 2**18)
        assert all((x * m) >> k == x // divisor for x in range(2**18 + 1))


# ---------------------------------------------------------------------------- random streams


def run(stim, *, symbols=8, ref_window=16, source="none", sink="none", seed=0, arity=2, first=1):
    dut = Quoter(
        symbols=symbols, ref_window=ref_window, adder_arity=arity, first_user_ref_num=first
    )
    words = {name: [pack(STREAMS[name], p) for p in getattr(stim, name)] for name in STREAMS}
    log, got, answers, got_cycles = [], [], [], []
    result = {}

    async def bench(ctx):
        while ctx.get(dut.clearing):
            await ctx.tick()
        idle = {name: pause_pattern(source, seed + k) for k, name in enumerate(STREAMS)}
        pressure = pause_pattern(sink, seed + 9)
        ports = {name: getattr(dut, name) for name in STREAMS}
        sent = dict.fromkeys(STREAMS, 0)
        driving = dict.fromkeys(STREAMS, False)
        kills = list(stim.kill)
        cycle, quiet = 0, 0
        ctx.set(dut.ctl_data.ready, 1)
        while quiet < 3 * dut.latency + 20:
            ctx.set(dut.cycle, cycle)
            while kills and kills[0][0] == cycle:
                ctx.set(dut.kill, kills.pop(0)[1])
            for name, port in ports.items():
                if (
                    not driving[name]
                    and sent[name] < len(words[name])
                    and getattr(stim, name)[sent[name]].get(AFTER, 0) <= sent["tob"]
                    and not next(idle[name])
                ):
                    ctx.set(port.payload.as_value(), words[name][sent[name]])
                    ctx.set(port.valid, 1)
                    driving[name] = True
            o_ready = not next(pressure)
            ctx.set(dut.o.ready, o_ready)
            signals = [p.ready for p in ports.values()]
            signals += [dut.o.valid, dut.o.payload.as_value()]
            signals += [dut.ctl_data.valid, dut.ctl_data.payload]
            *_, o_valid, o_word, d_valid, d_word = await ctx.tick().sample(*signals)
            readies = _[2:]
            busy = False
            for (name, port), ready in zip(ports.items(), readies):
                if driving[name] and ready:
                    log.append((cycle, name, getattr(stim, name)[sent[name]]))
                    sent[name] += 1
                    driving[name] = False
                    ctx.set(port.valid, 0)
                busy |= driving[name] or sent[name] < len(words[name])
            if o_valid and o_ready:
                got.append(unpack(order_layout, o_word))
                got_cycles.append(cycle)
            if d_valid:
                answers.append(d_word)
            quiet = 0 if busy or o_valid or kills else quiet + 1
            cycle += 1
        result["counters"] = unpack(counter_layout, ctx.get(dut.counters.as_value()))

    sim = Simulator(dut)
    sim.add_clock(6.4e-9)
    sim.add_testbench(bench)
    sim.run()
    return dut, log, got, answers, result["counters"], got_cycles


def check(stim, symbols=8, ref_window=16, first=1, **kwargs):
    dut, log, got, answers, counters, _ = run(
        stim, symbols=symbols, ref_window=ref_window, first=first, **kwargs
    )
    orders, want_counters, want_answers, contexts = replay(
        log, stim.kill, symbols, ref_window, first
    )
    want = [{k: v for k, v in o.items() if k != "event"} for o in orders]
    for k, (a, b) in enumerate(zip(got, want)):
        assert a == b, f"order {k}: gateware {a} != model {b}"
    assert len(got) == len(want)
    assert answers == want_answers
    assert counters == {name: want_counters[name] for name in COUNTERS}
    check_invariants(orders, contexts)  # the gateware's orders, now known equal to these
    return dut, log, counters


@pytest.mark.parametrize(
    "seed, source, sink",
    [
        (1, "none", "none"),
        (2, "random_25", "random_60"),
        (3, "bursty", "alternate"),
        (4, "every_fourth", "none"),
    ],
)
def test_random_streams_match_the_model(seed, source, sink):
    stim = scenario(seed, 8, 220, kill_every=2500)
    _, log, counters = check(stim, source=source, sink=sink, seed=seed)
    # the streams did reach the interesting cases
    assert counters["updates"] and counters["fills"] and counters["unknown_fill"]
    assert sum(counters[f"pull_{r}"] for r in ("kill", "crossed", "empty", "halted")) > 3
    assert counters["throttled"] + counters["unchanged"] > 0


def test_latency_and_rate_without_pauses():
    stim = scenario(7, 8, 80)
    stim.fill, stim.trading, stim.ctl = [], [], []
    dut, log, got, _, _, got_cycles = run(stim)
    taken = [cycle for cycle, name, _ in log]
    assert {b - a for a, b in zip(taken, taken[1:])} == {dut.latency + 1}
    orders = replay(log, [], 8, 16)[0]
    assert [{k: v for k, v in o.items() if k != "event"} for o in orders] == got
    firsts = {}
    for order, cycle in zip(orders, got_cycles):
        firsts.setdefault(order["event"], cycle)
    assert len(firsts) > 10
    assert {cycle - taken[event] for event, cycle in firsts.items()} == {dut.latency + 1}


def test_adder_arity_three_matches_too():
    stim = scenario(11, 8, 120, kill_every=3000)
    check(stim, source="random_25", sink="random_25", seed=5, arity=3)


def test_user_ref_nums_run_out_without_blocking_pulls():
    stim = scenario(14, 8, 150, kill_every=2000)
    _, _, counters = check(stim, first=2**32 - 8, source="random_25", sink="random_25")
    assert counters["ref_exhausted"] > 0
