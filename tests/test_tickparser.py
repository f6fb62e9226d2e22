"""TickParser (gateware) against the parser reference model, in amaranth.sim.

Valid records of every type and invalid ones of every cause (bad framing, symbol, type, side,
price, volume), crossed with idle input cycles and output back-pressure. Each event must equal
the model's and be valid exactly one cycle after the record's last beat was accepted.
"""

import gc
import random

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator
from tick2quote.hdl import events, tickparser
from tick2quote.host.protocol import tick
from tick2quote.sim.models.parser import TICK_KINDS, BookEvent, EventKind, ParserModel
from tick2quote.sim.streams import PAUSE_PATTERNS, packet_beats, pause_pattern, stream_put

MAX_PRICE = 500_000_000  # not the default, so the parameter is exercised


def test_offsets_match_the_codec_declaration():
    assert tickparser.TICK_RECORD_SIZE == tick.TICK.size
    assert tickparser.MAX_SYMBOLS == tick.MAX_SYMBOLS
    for name, (offset, size) in tickparser.TICK_FIELDS.items():
        assert tick.TICK.offsets[name] == offset, name
        assert tick.TICK.field(name).size == size, name
    assert {code: kind.value for code, kind in tickparser.TICK_KINDS.items()} == {
        code: kind.value for code, kind in TICK_KINDS.items()
    }


# A component refused in its constructor is never elaborated: that is the point.
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_price": 1}, r"max_price must be an integer in 2 \.\. 2\*\*32, not 1"),
        ({"max_price": (1 << 32) + 1}, r"max_price must be an integer in 2 \.\. 2\*\*32, not"),
        ({"max_price": 1e9}, r"max_price must be an integer in 2 \.\. 2\*\*32, not 1000000000\.0"),
        ({"counter_width": 0}, r"counter_width must be an integer in 1 \.\. 64, not 0"),
    ],
)
def test_parameters_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tickparser.TickParser(**kwargs)
    gc.collect()  # the refused instance warns when collected: collect it under the filter


@pytest.mark.parametrize("max_price", [0, 1, (1 << 32) + 1, 1e9])
def test_model_max_price_is_checked(max_price):
    with pytest.raises(ValueError, match=r"max_price must be an integer in 2 \.\. 2\*\*32"):
        ParserModel(max_price=max_price)


def random_record(rng: random.Random, cause: str | None) -> bytes:
    """One record, valid (``cause`` None) or broken by ``cause``."""
    values = {
        "symbol_id": rng.choice([0, tick.MAX_SYMBOLS - 1, rng.randrange(tick.MAX_SYMBOLS)]),
        "message_type": rng.randint(1, 4),
        "side": rng.randint(0, 1),
        "price": rng.choice([1, MAX_PRICE - 1, rng.randrange(1, MAX_PRICE)]),
        "volume": rng.choice([0, (1 << 32) - 1, rng.randrange(1 << 32)]),
        "timestamp": rng.randrange(1 << 64),
        "sequence": rng.randrange(1 << 64),
        "reserved": rng.choice([0, rng.randrange(1 << 32)]),
    }
    # Earlier causes stay valid; later ones are sometimes broken too (the first one counts).
    later = rng.random() < 0.3
    if cause == "bad_symbol":
        values["symbol_id"] = rng.choice([tick.MAX_SYMBOLS, rng.randrange(4096, 1 << 16)])
        if later:
            values["side"] = rng.randint(2, 255)
    elif cause == "bad_type":
        values["message_type"] = rng.choice([0, 5, rng.randint(5, 255)])
        if later:
            values["price"] = 0
    elif cause == "bad_side":
        values["side"] = rng.randint(2, 255)
        if later:
            values["volume"] = 1 << 40
    elif cause == "bad_price":
        values["price"] = rng.choice([0, MAX_PRICE, rng.randrange(MAX_PRICE, 1 << 64)])
        if later:
            values["volume"] = rng.randrange(1 << 32, 1 << 64)
    elif cause == "bad_volume":
        values["volume"] = rng.choice([1 << 32, rng.randrange(1 << 32, 1 << 64)])
    data = tick.encode(tick.TICK.record(**values))
    if cause == "framing":
        data = rng.choice([data[: rng.randint(1, 39)], data + rng.randbytes(rng.randint(1, 20))])
    return data


CAUSES = ["framing", "bad_symbol", "bad_type", "bad_side", "bad_price", "bad_volume"]


def unpack_event(word: int) -> BookEvent:
    values = {}
    for name, field in events.BookEvent:
        values[name] = (word >> field.offset) & ((1 << field.width) - 1)
    values["kind"] = EventKind(values["kind"])
    return BookEvent(**values)


class Bench(Elaboratable):
    """The tick parser with a free-running cycle counter on its ``cycle`` input."""

    def __init__(self):
        self.dut = tickparser.TickParser(max_price=MAX_PRICE)
        self.counter = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.sync += self.counter.eq(self.counter + 1)
        m.d.comb += self.dut.cycle.eq(self.counter)
        return m


def run_ticks(records, *, idle: str, backpressure: str, seed: int):
    bench = Bench()
    dut = bench.dut
    accepted, last_cycles, received, stalls, result = [], [], [], [], {}

    async def driver(ctx):
        pause = pause_pattern(idle, seed)
        for record in records:
            for beat in packet_beats(record):
                await stream_put(ctx, dut.i, beat, idle=pause)
                accepted.append(ctx.get(bench.counter) - 1)
            last_cycles.append(accepted[-1])

    async def monitor(ctx):
        pause = pause_pattern(backpressure, seed + 1)
        rest, pending = 0, None
        while rest < 8:
            ready = not next(pause)
            ctx.set(dut.o.ready, ready)
            _, _, valid, word, i_ready, cycle = await ctx.tick().sample(
                dut.o.valid, dut.o.payload.as_value(), dut.i.ready, bench.counter
            )
            if ready and not i_ready:
                stalls.append(cycle)
            if valid:
                pending = pending or (word, cycle)
                assert word == pending[0], "payload changed while waiting"
                if ready:
                    received.append((unpack_event(word), pending[1]))
                    pending = None
            rest = rest + 1 if len(last_cycles) == len(records) and not valid else 0
        result["counters"] = {
            name: ctx.get(getattr(dut.counters, name)) for name in dut.counters.shape().members
        }

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return accepted, last_cycles, received, stalls, result["counters"]


@pytest.mark.parametrize(
    "idle, backpressure",
    [("none", "none"), ("random_25", "none"), ("none", "random_60"), ("bursty", "alternate")],
)
def test_tick_parser_matches_model(idle, backpressure):
    seed = PAUSE_PATTERNS.index(idle) * 10 + PAUSE_PATTERNS.index(backpressure)
    rng = random.Random(seed)
    records = [random_record(rng, None) for _ in range(120)]
    records += [random_record(rng, cause) for cause in CAUSES for _ in range(15)]
    rng.shuffle(records)
    accepted, last_cycles, received, stalls, counters = run_ticks(
        records, idle=idle, backpressure=backpressure, seed=seed
    )
    model = ParserModel(max_price=MAX_PRICE)
    expected = [e for r, c in zip(records, last_cycles) if (e := model.tick(r, c)) is not None]
    assert [event for event, _ in received] == expected
    assert [cycle - event.stamp for event, cycle in received] == [1] * len(expected)
    assert stalls == [], "input stalled while the output was ready"
    if idle == "none" and backpressure == "none":
        assert accepted == list(range(accepted[0], accepted[0] + len(accepted)))
    assert counters == {name: model.counters[name] for name in counters}
    assert sum(counters.values()) == len(records)
    assert all(counters[cause] == 15 for cause in CAUSES)
    assert all(counters.values())
