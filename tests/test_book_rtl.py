"""OrderBook (gateware) against BookModel with the same geometry, in amaranth.sim.

Streams are ITCH records (generated sessions and hand-made hard cases), turned into BookEvents
by the parser model; the model gets the records themselves. After every event the gateware's
update records and all its counters must equal the model's.
"""

from __future__ import annotations

import gc
import itertools
import warnings

import pytest
from amaranth.hdl import ClockDomain, Module, UnusedElaboratable
from amaranth.sim import Simulator
from tick2quote.hdl.book import COUNTERS, OrderBook, counter_layout, top_of_book_layout
from tick2quote.hdl.events import BookEvent
from tick2quote.host.protocol import itch
from tick2quote.sim.feed import FeedConfig, generate
from tick2quote.sim.models.book import BookModel
from tick2quote.sim.models.ordertable import fold_hash
from tick2quote.sim.models.parser import ParserModel
from tick2quote.sim.streams import pack, pause_pattern, unpack

GEOMETRY = {"symbols": 16, "sets": 64, "ways": 4, "depth": 4}


def events_of(records, first_sequence: int = 0) -> list[int]:
    """Event words for the gateware; each event's ``sequence`` is its index in the stream."""
    parser = ParserModel()
    words = []
    for k, rec in enumerate(records, start=first_sequence):
        event = parser.message(rec, sequence=k, stamp=k & 0xFFFF_FFFF)
        assert event is not None, rec
        words.append(pack(BookEvent, event._asdict()))
    return words


def model_run(records, model: BookModel, first_sequence: int = 0):
    """The model's expected update records and counter snapshots, one per record."""
    updates, snapshots = [], []
    for k, rec in enumerate(records, start=first_sequence):
        top = model.apply(rec, sequence=k)
        if top is not None:
            b = top.bbo
            updates.append((top.locate, b.bid_px, b.bid_sz, b.ask_px, b.ask_sz, int(b.stale), k))
        snapshots.append({n: model.counters[n] for n in COUNTERS if n != "events"})
    assert model.counters["levels_full"] == 0
    return updates, snapshots


class Run:
    """Drives a stream of event words through an OrderBook and records what comes out."""

    def __init__(self, dut: OrderBook, *, source="none", sink="none", seed=0):
        self.dut = dut
        self.source = pause_pattern(source, seed)
        self.sink = pause_pattern(sink, seed + 1)
        self.accepted: list[int] = []  # cycle each event was accepted
        self.updates: list[tuple[int, tuple]] = []  # (cycle first valid, record)
        self.snapshots: list[dict] = []  # counters after each finished event
        self.cycle = 0
        self._events = 0
        self._valid_since = None

    async def wait_clear(self, ctx):
        """Wait for the reset-time sweep to end (counters start again from 0)."""
        self._events = 0
        while ctx.get(self.dut.clearing):
            await ctx.tick()

    async def stream(self, ctx, words):
        """Send ``words``; return when every event has finished and ``o`` is drained."""
        dut, pending, quiet = self.dut, list(words), 0
        sent = 0
        target = self._events + len(pending)
        offered = False
        while sent < len(pending) or self._events < target or quiet < 4:
            if not offered and sent < len(pending) and not next(self.source):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.as_value(), pending[sent])
                offered = True
            ready = not next(self.sink)
            ctx.set(dut.o.ready, ready)
            sample = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.as_value(), dut.counters.as_value()
            )
            _, _, i_ready, o_valid, o_word, counters = sample
            if offered and i_ready:
                self.accepted.append(self.cycle)
                sent += 1
                offered = False
                ctx.set(dut.i.valid, 0)
            if o_valid and self._valid_since is None:
                self._valid_since = self.cycle
            if o_valid and ready:
                self.updates.append((self._valid_since, self._record(o_word)))
                self._valid_since = None
            values = unpack(counter_layout, counters)
            if values["events"] != self._events:
                assert values["events"] == self._events + 1
                self._events += 1
                del values["events"]
                self.snapshots.append(values)
            quiet = quiet + 1 if not o_valid and self._events == target else 0
            self.cycle += 1
        ctx.set(dut.o.ready, 0)

    @staticmethod
    def _record(word: int) -> tuple:
        f = unpack(top_of_book_layout, word)
        keys = ("locate", "bid_px", "bid_sz", "ask_px", "ask_sz", "stale", "sequence")
        return tuple(f[k] for k in keys)


def simulate(dut, bench):
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def testbench(ctx):
        await bench(ctx, cd)

    sim.add_testbench(testbench)
    sim.run()


def check_stream(records, *, source="none", sink="none", seed=0, tracked=None, **geometry):
    geometry = {**GEOMETRY, **geometry}
    dut = OrderBook(**geometry)
    run = Run(dut, source=source, sink=sink, seed=seed)
    model = BookModel(
        max_symbols=geometry["symbols"],
        tracked=tracked,
        sets=geometry["sets"],
        ways=geometry["ways"],
        depth=geometry["depth"],
    )

    async def bench(ctx, cd):
        await run.wait_clear(ctx)
        if tracked is not None:
            for loc in range(geometry["symbols"]):
                ctx.set(dut.mask_write, 1)
                ctx.set(dut.mask_locate, loc)
                ctx.set(dut.mask_tracked, loc in tracked)
                await ctx.tick()
            ctx.set(dut.mask_write, 0)
        await run.stream(ctx, events_of(records))

    simulate(dut, bench)
    updates, snapshots = model_run(records, model)
    assert_same(run, updates, snapshots)
    return run, model


def assert_same(run, updates, snapshots):
    for k, (got, want) in enumerate(zip(run.snapshots, snapshots, strict=True)):
        assert got == want, f"counters after event {k}"
    got_updates = [rec for _, rec in run.updates]
    for got, want in zip(got_updates, updates):
        assert got == want
    assert len(got_updates) == len(updates)


# --------------------------------------------------------------------------- hand-made streams
def add(loc, ref, side, shares, price):
    return itch.make("A", locate=loc, order_ref=ref, side=side, shares=shares, stock="T",
                     price=price)  # fmt: skip


def execute(loc, ref, shares):
    return itch.make("E", locate=loc, order_ref=ref, executed_shares=shares)


def execute_price(loc, ref, shares):
    return itch.make("C", locate=loc, order_ref=ref, executed_shares=shares, printable="Y",
                     execution_price=1)  # fmt: skip


def cancel(loc, ref, shares):
    return itch.make("X", locate=loc, order_ref=ref, cancelled_shares=shares)


def delete(loc, ref):
    return itch.make("D", locate=loc, order_ref=ref)


def replace(loc, old, new, shares, price):
    return itch.make("U", locate=loc, original_ref=old, new_ref=new, shares=shares,
                     price=price)  # fmt: skip


def colliding_refs(target_set: int, count: int, sets: int = 64) -> list[int]:
    """``count`` distinct references that all hash to ``target_set``."""
    refs = []
    for high in itertools.count(1):
        ref = (high << 16) | ((high ^ target_set) & 0xFFFF)
        assert fold_hash(ref, sets) == target_set
        refs.append(ref)
        if len(refs) == count:
            return refs


def hard_cases() -> list:
    s = []
    # deep book: more levels than depth on both sides, then the best levels emptied
    for k in range(10):
        s.append(add(1, 100 + k, "B", 10 + k, 5000 - 10 * k))
        s.append(add(1, 200 + k, "S", 20 + k, 6000 + 10 * k))
    s += [add(1, 300, "B", 7, 5000), add(1, 301, "B", 5, 4955)]  # join a level; untracked
    s += [add(1, 111, "B", 2, 4970)]  # a second order on the worst tracked level
    s += [add(1, 110, "B", 3, 4995), add(1, 210, "S", 4, 5999)]  # evict the worst level
    s += [execute(1, 100, 4), execute(1, 100, 6), execute_price(1, 300, 7)]  # best emptied
    s += [delete(1, 101), cancel(1, 102, 3), delete(1, 102), delete(1, 103), delete(1, 110)]
    s += [add(1, 302, "B", 1, 4000), delete(1, 302)]  # adds while the best is unknown
    s += [delete(1, ref) for ref in range(104, 110)] + [delete(1, 301)]  # untracked drain
    s += [add(1, 304, "B", 1, 1000), delete(1, 111)]  # still unknown until the last one goes
    s += [add(1, 303, "B", 9, 4990)]  # a known best again
    # replaces moving price off and onto the top, same reference, over the depth
    s += [replace(1, 200, 400, 50, 6100), replace(1, 400, 400, 60, 5990)]
    s += [replace(1, 201, 401, 5, 5001), replace(1, 401, 402, 0, 5002)]  # refused add (0 shares)
    # many orders at one price
    s += [add(2, 500 + k, "S", k + 1, 7000) for k in range(30)]
    s += [execute(2, 500 + k, k + 1) for k in range(0, 30, 3)]
    # hash collisions and a full set; replace into a full set
    refs = colliding_refs(17, 6)
    s += [add(3, ref, "B", 10, 100 + k) for k, ref in enumerate(refs)]
    s += [delete(3, refs[0]), add(3, refs[5], "S", 3, 900), replace(3, refs[1], refs[4], 4, 99)]
    s += [replace(3, refs[2], refs[2], 8, 101)]  # same reference, full set
    # refusals and oddities
    s += [add(4, 600, "B", 10, 100), add(4, 600, "B", 10, 100)]  # duplicate
    s += [add(4, 601, "Z", 10, 100), add(4, 602, "B", 0, 100), add(4, 603, "S", 5, 0)]
    s += [execute(4, 999, 1), delete(5, 600), cancel(4, 600, 11), delete(4, 600)]  # overfill
    s += [add(16, 700, "B", 1, 1), delete(40, 1), itch.make("H", locate=99, stock="X")]
    s += [itch.make("H", locate=4, stock="X", trading_state="H"), itch.make("S", event_code="O")]
    s += [itch.make("R", locate=4, stock="X"), itch.make("R", locate=300, stock="X")]
    s += [itch.make("P", locate=4, order_ref=1, side="B", shares=1, stock="X", price=1)]
    s += [add(15, 800, "B", 1, 1), add(15, 801, "S", 1, 2), replace(15, 800, 802, 1, 3)]
    return s


# --------------------------------------------------------------------------- tests
HARD_CASE_COUNTERS = (
    "table_full",
    "levels_evicted",
    "best_unknown",
    "overfill",
    "duplicate_ref",
    "bad_add",
    "bad_side",
    "unknown_ref",
    "locate_mismatch",
    "bad_locate",
)


def test_hard_cases_match_model_after_every_event():
    run, model = check_stream(hard_cases())
    for name in HARD_CASE_COUNTERS:
        assert model.counters[name] > 0, name


@pytest.mark.parametrize(
    "source, sink", [("none", "none"), ("random_25", "random_60"), ("bursty", "alternate")]
)
def test_generated_session_matches_model(source, sink):
    records = generate(FeedConfig(seed=5, symbols=10, messages=3000))
    run, model = check_stream(records, source=source, sink=sink, seed=3)
    assert model.counters["table_full"] and model.counters["levels_evicted"]


def test_untracked_locates_through_the_mask():
    records = generate(FeedConfig(seed=11, symbols=6, messages=600))
    check_stream(records, tracked=frozenset({1, 2, 4, 6}))


def test_subscription_changes_between_events():
    records = generate(FeedConfig(seed=12, symbols=6, messages=600))
    half = len(records) // 2
    dut = OrderBook(**GEOMETRY)
    run = Run(dut)

    async def write_mask(ctx, locate, tracked):
        ctx.set(dut.mask_write, 1)
        ctx.set(dut.mask_locate, locate)
        ctx.set(dut.mask_tracked, tracked)
        await ctx.tick()
        ctx.set(dut.mask_write, 0)

    async def bench(ctx, cd):
        await run.wait_clear(ctx)
        await write_mask(ctx, 3, 0)
        await run.stream(ctx, events_of(records[:half]))
        await write_mask(ctx, 3, 1)
        await write_mask(ctx, 5, 0)
        await run.stream(ctx, events_of(records[half:], half))

    simulate(dut, bench)
    model = BookModel(max_symbols=16, sets=64, ways=4, depth=4, tracked=lambda loc: loc != 3)
    updates, snapshots = model_run(records[:half], model)
    model.subscribe(3, True)
    model.subscribe(5, False)
    more, more_snapshots = model_run(records[half:], model, half)
    assert_same(run, updates + more, snapshots + more_snapshots)
    assert model.counters["untracked"] > 0


def test_latency_is_five_cycles_and_one_event_per_three_cycles():
    records = generate(FeedConfig(seed=3, symbols=8, messages=600))
    run, _ = check_stream(records)
    kinds = [r.type for r in records]
    by_sequence = {rec[-1]: first for first, rec in run.updates}
    # a U makes two passes; every other event one pass of three cycles
    spans = [b - a for a, b in zip(run.accepted, run.accepted[1:])]
    for k, span in enumerate(spans):
        assert span == (6 if kinds[k] == "U" else 3), (k, kinds[k])
    for seq, first in by_sequence.items():
        assert first - run.accepted[seq] == (8 if kinds[seq] == "U" else 5), seq


def test_clear_sweep_after_reset_with_garbage_in_memory():
    first = generate(FeedConfig(seed=21, symbols=8, messages=400))
    second = generate(FeedConfig(seed=22, symbols=8, messages=400))
    dut = OrderBook(**GEOMETRY, garbage_seed=5)
    run = Run(dut)

    async def bench(ctx, cd):
        await run.wait_clear(ctx)
        await run.stream(ctx, events_of(first))
        ctx.set(dut.mark_stale_all, 1)
        await ctx.tick()
        ctx.set(dut.mark_stale_all, 0)
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        assert ctx.get(dut.clearing) and not ctx.get(dut.i.ready)
        await run.wait_clear(ctx)
        await run.stream(ctx, events_of(second, len(first)))

    simulate(dut, bench)
    model = BookModel(max_symbols=16, sets=64, ways=4, depth=4)
    updates, snapshots = model_run(first, model)
    fresh = BookModel(max_symbols=16, sets=64, ways=4, depth=4)
    more, more_snapshots = model_run(second, fresh, len(first))
    assert len(run.snapshots) == len(first) + len(second)
    assert_same(run, updates + more, snapshots + more_snapshots)


def test_stale_all_and_recover_match_model():
    records = generate(FeedConfig(seed=31, symbols=5, messages=300))
    half = len(records) // 2
    dut = OrderBook(**GEOMETRY)
    run = Run(dut)

    async def pulse(ctx, signal, locate=None):
        ctx.set(signal, 1)
        if locate is not None:
            ctx.set(dut.recover_locate, locate)
        await ctx.tick()
        ctx.set(signal, 0)

    async def bench(ctx, cd):
        await run.wait_clear(ctx)
        await run.stream(ctx, events_of(records[:half]))
        await pulse(ctx, dut.mark_stale_all)
        await pulse(ctx, dut.recover, 2)
        await run.stream(ctx, events_of(records[half:], half))
        await pulse(ctx, dut.recover_all)
        await run.stream(ctx, events_of(records[:40], len(records)))
        ctx.set(dut.state_locate, 3)
        await ctx.tick()
        assert ctx.get(dut.state) == ord("T")

    simulate(dut, bench)
    model = BookModel(max_symbols=16, sets=64, ways=4, depth=4)
    updates, snapshots = model_run(records[:half], model)
    model.mark_stale()
    model.recover(2)
    more, more_snapshots = model_run(records[half:], model, half)
    model.recover()
    last, last_snapshots = model_run(records[:40], model, len(records))
    assert_same(run, updates + more + last, snapshots + more_snapshots + last_snapshots)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"symbols": 1000}, "symbols must be a power of two in 2 .. 65536, not 1000"),
        ({"symbols": 1 << 17}, "symbols must be a power of two in 2 .. 65536, not 131072"),
        ({"sets": 3}, "sets must be a power of two in 2 .. 65536, not 3"),
        ({"ways": 0}, "ways must be an integer in 1 .. 16, not 0"),
        ({"depth": 65}, "depth must be an integer in 1 .. 64, not 65"),
    ],
)
def test_parameters_are_checked(kwargs, message):
    with warnings.catch_warnings():
        # the half-built component is never elaborated, and that is the point
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message):
            OrderBook(**kwargs)
        gc.collect()


def test_default_capacity():
    book = OrderBook()
    book._MustUse__silence = True  # not elaborated here: the cocotb smoke run builds it
    assert (book.symbols, book.orders, book.sets, book.ways, book.depth) == (
        1024,
        65536,
        16384,
        4,
        8,
    )
