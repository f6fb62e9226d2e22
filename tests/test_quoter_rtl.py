"""Quoter (gateware) against QuoterModel in amaranth.sim, with a small geometry.

The arithmetic first: the per-symbol terms (:mod:`tick2quote.hdl.pricing_terms`) against their
Python definition, and the quote datapath (:mod:`tick2quote.hdl.pricing_quote`) against the
model's ``price`` on random books and on books built to sit on every rounding boundary. Then
random streams of top-of-book records, trading states, fills, control writes and reads and kill
pulses go in with idle cycles on every input, back-pressure on ``o`` and lookahead hints (none,
the book's, or noise); the model is replayed over the events in the order the gateware took them
(``sim.bench_quoter.replay``). Every order, every counter and every read answer must equal the
model's, and the orders must pass the independent "must never happen" check. Last, the
documented latency of every ``tob`` on an idle stream and under full load.
"""

import gc
import random

import pytest
from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from tick2quote.hdl.book import top_of_book_layout
from tick2quote.hdl.orders import fill_layout, order_layout
from tick2quote.hdl.pricing import magic, scaled
from tick2quote.hdl.pricing_quote import DEPTH, quote_datapath
from tick2quote.hdl.pricing_terms import S_MAX, terms_datapath, terms_layout, terms_word
from tick2quote.hdl.quoter import Quoter
from tick2quote.hdl.quoterstate import (
    COUNTERS,
    account_layout,
    counter_layout,
    ctl_layout,
    params_layout,
    params_word,
    trading_layout,
)
from tick2quote.sim.bench_quoter import AFTER, check_invariants, random_params, replay, scenario
from tick2quote.sim.models.pricing import price
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


def test_magic_division_of_the_skew_is_exact_at_the_boundaries():
    x_max = (-(-S_MAX // 100) * 100 + S_MAX) >> 2  # the biased skew, divided by 4 first
    m, k = magic(25, x_max)
    rng = random.Random(25)
    quotients = list(range(2000)) + [x_max // 25 - j for j in range(2000)]
    quotients += [rng.randrange(x_max // 25) for _ in range(20000)]
    for q in quotients:
        for x in (q * 25 - 1, q * 25, q * 25 + 24):
            if 0 <= x <= x_max:
                assert (x * m) >> k == x // 25, x
    assert all((x * m) >> k == x // 25 for x in range(2**18))


@pytest.mark.parametrize(
    "numerator, divisor, x_max",
    [(1 << 28, 625, 2**16 - 1), (1 << 29, 625, 2**16 - 1), (1 << 26, 15625, 20000 + 3 * 15625)],
)
def test_coefficient_products_are_exact_for_every_parameter(numerator, divisor, x_max):
    mult, k = scaled(numerator, divisor, x_max)
    assert all((x * mult) >> k == x * numerator // divisor for x in range(x_max + 1))


# ---------------------------------------------------------------------------- terms


class _TermsBench(wiring.Component):
    params: In(params_layout)
    position: In(signed(32))
    terms: Out(terms_layout)

    def elaborate(self, platform):
        m = Module()
        terms, self.depth = terms_datapath(m, self.params, self.position)
        m.d.comb += self.terms.eq(terms)
        return m


def _position(rng):
    return rng.choice((0, rng.randint(-1000, 1000), rng.randint(-(2**31), 2**31 - 1), -(2**31)))


def test_terms_datapath_matches_its_definition():
    dut = _TermsBench()
    rng = random.Random(3)

    async def bench(ctx):
        for _ in range(300):
            p = random_params(rng)
            pos = _position(rng)
            ctx.set(dut.params.as_value(), params_word(p))
            ctx.set(dut.position, pos)
            await ctx.tick().repeat(dut.depth + 1)
            assert ctx.get(dut.terms.as_value()) == terms_word(p, pos), (p, pos)

    sim = Simulator(dut)  # elaborates: sets dut.depth
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ---------------------------------------------------------------------------- quote datapath

_book_layout = data.StructLayout({"bid_px": 32, "ask_px": 32, "mid": 32})


class _QuoteBench(wiring.Component):
    """Registers one book per cycle into the datapath (as the quoter's evaluation registers)."""

    params: In(params_layout)
    terms: In(terms_layout)
    position: In(signed(32))
    cash: In(signed(64))
    bid: In(32)
    ask: In(32)
    live: In(data.ArrayLayout(32, 2))
    bid_px: Out(signed(42))
    ask_px: Out(signed(42))
    flags: Out(6)

    def elaborate(self, platform):
        m = Module()
        p, t = Signal(params_layout), Signal(terms_layout)
        account, book = Signal(account_layout), Signal(_book_layout)
        live = [Signal(32), Signal(32)]
        m.d.sync += [p.eq(self.params), t.eq(self.terms), account.position.eq(self.position)]
        m.d.sync += account.cash.eq(self.cash)
        m.d.sync += [book.bid_px.eq(self.bid), book.ask_px.eq(self.ask)]
        m.d.sync += [book.mid.eq((self.bid + self.ask) >> 1), Cat(*live).eq(self.live)]
        q = quote_datapath(m, book, p, t, account, live)
        flags = (q.bid_reject, q.ask_reject, q.edge, q.loss, q.bid_same, q.ask_same)
        m.d.comb += [self.bid_px.eq(q.bid_px), self.ask_px.eq(q.ask_px), self.flags.eq(Cat(*flags))]
        return m


def _books(seed: int, count: int):
    """(params, position, cash, bid, ask): random books, and books on rounding boundaries:
    ``M * spread`` near a multiple of 20000 (or 2_000_000), ``M * band`` of 10000, ``M *
    min_edge`` of 5000, and a reservation price -+ half spread near a multiple of 100."""
    rng = random.Random(seed)
    divisors = {"spread_bps": 20000, "band_bps": 10000, "min_edge_bps": 5000}
    while count:
        p = random_params(rng)
        pos, cash = _position(rng), rng.choice((0, rng.randint(-(10**12), 10**12)))
        mode = rng.randrange(3)
        if mode == 0:
            mid = rng.choice((rng.randint(1, 1000), rng.randint(1, 10**6), rng.randint(1, 2**32)))
            width = rng.choice((1, 2, 3, 100, 200, rng.randint(1, 10000)))
            bid = max(1, mid - width // 2)
            ask = bid + width
        else:
            if mode == 1:
                field = rng.choice(list(divisors))
                div = divisors[field] * (100 if field == "spread_bps" and rng.random() < 0.5 else 1)
                value = getattr(p, field) or 1
                setattr(p, field, value)
                mid = rng.randint(1, (2**32 - 2) * value // div) * div + rng.choice((-1, 0, 1))
                mid = mid // value + rng.choice((-1, 0, 0, 1))
            else:
                p.skew_num, p.skew_shift = 1, 0
                mid = rng.randint(2, 2**32 - 2)
                half = max(p.tick, mid * p.spread_bps // 20000)
                target = mid + rng.choice((-1, 1)) * half - rng.choice((-1, 0, 1, 50, 99))
                pos = max(
                    -(2**31), min(2**31 - 1, target % 100 + 100 * rng.randint(-(10**6), 10**6))
                )
            bid = mid - rng.randint(1, max(1, min(mid - 1, 5000)))
            ask = 2 * mid - bid + rng.randint(0, 1)
        if 0 < bid < ask < 2**32:
            count -= 1
            yield p, pos, cash, bid, ask


def _expected(p, pos, cash, bid, ask):
    """The model's step-5 prices, rejects, edge reject and loss test."""
    pr = price(p, pos, bid, ask)
    mid, tick = (bid + ask) >> 1, p.tick
    half = max(tick, mid * p.spread_bps // 20000)
    r = mid - ((pos * p.skew_num) >> p.skew_shift)
    bid_px = min((r - half) // tick * tick, ask - tick)
    ask_px = max(-(-(r + half) // tick) * tick, bid + tick)
    loss = cash + pos * mid < -p.max_loss
    return bid_px, ask_px, pr.bid_band_reject, pr.ask_band_reject, pr.edge_reject, loss


@pytest.mark.parametrize("seed, count", [(1, 6000), (2, 6000)])
def test_quote_datapath_matches_the_model(seed, count):
    books = list(_books(seed, count))
    rng = random.Random(seed)
    dut = _QuoteBench()
    results, lives = [], []

    async def bench(ctx):
        for k in range(len(books) + DEPTH + 1):
            if k < len(books):
                p, pos, cash, bid, ask = books[k]
                want = _expected(*books[k])
                # a live price equal to the quote (when it can be sent) or a random one
                live = [want[s] if rng.random() < 0.5 else rng.getrandbits(32) for s in (0, 1)]
                live = [v if 0 <= v < 2**32 else 0 for v in live]
                lives.append(live)
                ctx.set(dut.params.as_value(), params_word(p))
                ctx.set(dut.terms.as_value(), terms_word(p, pos))
                ctx.set(dut.position, pos)
                ctx.set(dut.cash, cash)
                ctx.set(dut.bid, bid)
                ctx.set(dut.ask, ask)
                ctx.set(dut.live.as_value(), live[0] | live[1] << 32)
            *_, bpx, apx, flags = await ctx.tick().sample(dut.bid_px, dut.ask_px, dut.flags)
            results.append((bpx, apx, flags))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for k, book in enumerate(books):
        bid_px, ask_px, bid_rej, ask_rej, edge, loss = _expected(*book)
        got_bid, got_ask, flags = results[k + DEPTH]
        bits = [bool(flags >> j & 1) for j in range(6)]
        too_big = ask_px >= 2**32  # documented deviation: band-rejected by the gateware
        assert bits[0] == bid_rej and bits[2] == edge and bits[3] == loss, (k, book)
        assert bits[1] == (ask_rej or too_big), (k, book)
        if not bid_rej:
            assert (got_bid, bits[4]) == (bid_px, bid_px == lives[k][0]), (k, book)
        if not (ask_rej or too_big):
            assert (got_ask, bits[5]) == (ask_px, ask_px == lives[k][1]), (k, book)


# ---------------------------------------------------------------------------- random streams


def run(
    stim,
    *,
    symbols=8,
    ref_window=16,
    source="none",
    sink="none",
    seed=0,
    arity=2,
    first=1,
    hint="none",
    gap=0,
):
    """Drive ``stim`` into a Quoter; ``hint``: lookahead "none", "book" (each tob's locate
    announced two cycles before it is presented) or "noise" (random locates); ``gap``: present
    a tob only this many cycles after the last one was taken (0: whenever)."""
    dut = Quoter(
        symbols=symbols, ref_window=ref_window, adder_arity=arity, first_user_ref_num=first
    )
    words = {name: [pack(STREAMS[name], p) for p in getattr(stim, name)] for name in STREAMS}
    log, got, answers, got_cycles = [], [], [], []
    result = {}
    rng = random.Random(seed)

    async def bench(ctx):
        while ctx.get(dut.clearing):
            await ctx.tick()
        idle = {name: pause_pattern(source, seed + k) for k, name in enumerate(STREAMS)}
        pressure = pause_pattern(sink, seed + 9)
        ports = {name: getattr(dut, name) for name in STREAMS}
        sent = dict.fromkeys(STREAMS, 0)
        driving = dict.fromkeys(STREAMS, False)
        kills = list(stim.kill)
        cycle, quiet, announced, last_tob = 0, 0, None, -gap
        ctx.set(dut.ctl_data.ready, 1)
        while quiet < 3 * dut.miss_latency + 20:
            ctx.set(dut.cycle, cycle)
            while kills and kills[0][0] == cycle:
                ctx.set(dut.kill, kills.pop(0)[1])
            look = (0, 0)
            if hint == "noise" and rng.random() < 0.5:
                look = (1, rng.randrange(2 * symbols))
            for name, port in ports.items():
                items = getattr(stim, name)
                if driving[name] or sent[name] >= len(items):
                    continue
                if items[sent[name]].get(AFTER, 0) > sent["tob"]:
                    continue
                if name == "tob":
                    if cycle < last_tob + gap:
                        continue
                    if hint == "book" and announced is None:
                        announced = cycle
                        look = (1, items[sent[name]]["locate"])
                    if hint == "book" and cycle < announced + 2:
                        continue
                if not next(idle[name]):
                    ctx.set(port.payload.as_value(), words[name][sent[name]])
                    ctx.set(port.valid, 1)
                    driving[name] = True
            ctx.set(dut.lookahead.as_value(), look[0] | look[1] << 1)
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
                    if name == "tob":
                        announced, last_tob = None, cycle
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
    dut, log, got, answers, counters, got_cycles = run(
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
    return dut, log, counters, _first_order_latencies(log, orders, got_cycles)


def _first_order_latencies(log, orders, got_cycles) -> dict[int, int]:
    """For each tob that caused orders (index in ``log``): cycles from taken to its first order
    valid on ``o``."""
    firsts = {}
    for order, cycle in zip(orders, got_cycles):
        if order["event"] is not None and log[order["event"]][1] == "tob":
            firsts.setdefault(order["event"], cycle)
    return {event: cycle - log[event][0] for event, cycle in firsts.items()}


@pytest.mark.parametrize(
    "seed, source, sink, hint",
    [
        (1, "none", "none", "none"),
        (2, "random_25", "random_60", "book"),
        (3, "bursty", "alternate", "noise"),
        (4, "every_fourth", "none", "book"),
    ],
)
def test_random_streams_match_the_model(seed, source, sink, hint):
    stim = scenario(seed, 8, 220, kill_every=2500)
    _, log, counters, _ = check(stim, source=source, sink=sink, seed=seed, hint=hint)
    # the streams did reach the interesting cases
    assert counters["updates"] and counters["fills"] and counters["unknown_fill"]
    assert sum(counters[f"pull_{r}"] for r in ("kill", "crossed", "empty", "halted")) > 3
    assert counters["throttled"] + counters["unchanged"] > 0


def test_adder_arity_three_matches_too():
    stim = scenario(11, 8, 120, kill_every=3000)
    check(stim, source="random_25", sink="random_25", seed=5, arity=3, hint="noise")


def test_user_ref_nums_run_out_without_blocking_pulls():
    stim = scenario(14, 8, 150, kill_every=2000)
    _, _, counters, _ = check(stim, first=2**32 - 8, source="random_25", sink="random_25")
    assert counters["ref_exhausted"] > 0


# ---------------------------------------------------------------------------- latency


def _tobs_only(seed, events):
    stim = scenario(seed, 8, events)
    stim.fill, stim.trading, stim.ctl = [], [], []
    return stim


@pytest.mark.parametrize("hint", ["book", "none"])
def test_latency_of_every_tob_on_an_idle_stream(hint):
    dut, log, _, latencies = check(_tobs_only(7, 80), hint=hint, gap=16)
    assert len(latencies) > 10
    for event, latency in latencies.items():
        # without the hint only a tob of the symbol read last (the previous tob's) is cached
        cached = hint == "book" or (
            event and log[event - 1][2]["locate"] == log[event][2]["locate"]
        )
        assert latency == (dut.latency if cached else dut.miss_latency) + 1, event


def test_latency_and_rate_at_full_load():
    dut, log, _, latencies = check(_tobs_only(8, 80))
    taken = [cycle for cycle, _, _ in log]
    # the first tob finds the cache empty; every later one was read while it waited
    assert {b - a for a, b in zip(taken[1:], taken[2:])} == {dut.latency + 1}
    assert len(latencies) > 10
    assert {latencies[event] for event in latencies if event} == {dut.latency + 1}


def test_latency_with_back_pressure_and_idle_inputs():
    dut, log, _, latencies = check(
        _tobs_only(9, 120), source="random_25", sink="random_60", seed=9, hint="book"
    )
    assert len(latencies) > 10
    # back-pressure may delay an order, never hasten one
    assert min(latencies.values()) == dut.latency + 1
