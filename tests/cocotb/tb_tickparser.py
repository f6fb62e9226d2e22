"""cocotb testbench for TickParser (run by tests/test_tickparser_cocotb.py on both simulators).

Tick records are built here with ``struct`` (not the project's encoder) and cut into 8-byte
beats here too: valid records of every type with boundary values, and invalid ones of every
cause (symbol 4096 and above, type 0 / 5 / 255, side 2 / 255, price 0, ``max_price`` and above,
volume ``2**32`` and above, several causes at once, and framing errors: records cut to 4 beats,
grown to 6, or ending in a partial beat). Each run is crossed with an input idle pattern and an
output back-pressure pattern. Every event must equal ``ParserModel.tick`` (every field, in
order, stamped with the cycle its record's last beat was taken) and be valid exactly one cycle
after that beat; the input may only stall while the output is back-pressured; every counter
must equal the model's; nothing may be left unread.

One coroutine sets the inputs every cycle, waits for ``ReadOnly`` and samples what the coming
clock edge will see, so both simulators see the same handshakes.
"""

import random
import struct

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from tick2quote.hdl.events import BookEvent as EVENT_LAYOUT
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.tickparser import tick_counters_layout
from tick2quote.sim.cocotb_streams import TB, pack, unpack
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.models.parser import BookEvent, EventKind, ParserModel
from tick2quote.sim.streams import pause_pattern

MAX_PRICE = params_from_env()["max_price"]
COUNTERS = tick_counters_layout(32)
RECORD = struct.Struct("<HBBQQQQI")  # symbol, type, side, price, volume, time, sequence, spare
BEAT = 8
U32, U64 = 1 << 32, 1 << 64
#: (input idle pattern, output back-pressure pattern)
PATTERNS = [("none", "none"), ("random_25", "none"), ("none", "random_60"), ("bursty", "alternate")]


def record(rng: random.Random, **broken) -> bytes:
    """A random valid 40-byte record, with the fields in ``broken`` overridden."""
    values = {
        "symbol": rng.choice([0, 4095, rng.randrange(4096)]),
        "type": rng.randint(1, 4),
        "side": rng.randint(0, 1),
        "price": rng.choice([1, MAX_PRICE - 1, rng.randrange(1, MAX_PRICE)]),
        "volume": rng.choice([0, U32 - 1, rng.randrange(U32)]),
        "time": rng.randrange(U64),
        "sequence": rng.choice([0, U64 - 1, rng.randrange(U64)]),
        "spare": rng.randrange(U32),
    }
    values.update(broken)
    return RECORD.pack(*values.values())


def invalid_records(rng: random.Random) -> list[bytes]:
    """One record per invalid case (each cause alone, several at once, and bad framing)."""
    out = [
        record(rng, symbol=4096),
        record(rng, symbol=0xFFFF),
        record(rng, type=0),
        record(rng, type=5),
        record(rng, type=255),
        record(rng, side=2),
        record(rng, side=255),
        record(rng, price=0),
        record(rng, price=MAX_PRICE),
        record(rng, price=U32 + 1),  # wraps to a valid price in 32 bits
        record(rng, price=U64 - 1),
        record(rng, volume=U32),
        record(rng, volume=U64 - 1),
        record(rng, symbol=5000, type=0, side=3, price=0, volume=U32),
        record(rng, type=9, price=MAX_PRICE),
        record(rng, side=7, volume=U32 + 5),
        record(rng, price=0, volume=U32),
    ]
    good = record(rng)
    out += [
        good[:32],  # cut to 4 beats
        good + rng.randbytes(8),  # grown to 6 beats
        good[:36],  # 5 beats, the last one partial
        good + rng.randbytes(3),  # 6 beats, the last one partial
        good[:8],
        good * 2,
        record(rng, symbol=4096)[:32],  # framing comes first
    ]
    return out


def beats(data: bytes) -> list[int]:
    """The packed input beats of one record: 8 bytes a beat, ``last`` on the final one."""
    out = []
    for pos in range(0, len(data), BEAT):
        chunk = data[pos : pos + BEAT]
        fields = {
            "data": int.from_bytes(chunk, "little"),
            "keep": (1 << len(chunk)) - 1,
            "first": int(pos == 0),
            "last": int(pos + BEAT >= len(data)),
        }
        out.append(pack(beat_layout, fields))
    return out


def to_event(word: int) -> BookEvent:
    values = unpack(EVENT_LAYOUT, word)
    values["kind"] = EventKind(values["kind"])
    return BookEvent(**values)


class TickTB(TB):
    def __init__(self, dut):
        super().__init__(dut)
        dut.i__valid.value = 0
        dut.i__payload.value = 0
        dut.o__ready.value = 0
        dut.cycle.value = 0

    async def run(self, records: list[bytes], idle: str, backpressure: str, seed: int):
        """Drive ``records``; return (cycle each beat was taken, per record, [(event, first
        valid cycle)], cycles the input stalled while the output was ready)."""
        dut = self.dut
        queue = [(n, word) for n, data in enumerate(records) for word in beats(data)]
        pause_in = pause_pattern(idle, seed)
        pause_out = pause_pattern(backpressure, seed + 1)
        taken = [[] for _ in records]
        received, stalls = [], []
        position, cycle, quiet, pending, offering = 0, 1, 0, None, None
        while quiet < 12:
            dut.cycle.value = cycle
            if offering is None and position < len(queue) and not next(pause_in):
                offering = queue[position]
                position += 1
                dut.i__payload.value = offering[1]
            dut.i__valid.value = int(offering is not None)
            ready = not next(pause_out)
            dut.o__ready.value = int(ready)
            await ReadOnly()
            if offering is not None and dut.i__ready.value:
                taken[offering[0]].append(cycle)
                offering = None
            if ready and not dut.i__ready.value:
                stalls.append(cycle)
            if dut.o__valid.value:
                word = dut.o__payload.value.to_unsigned()
                pending = pending or (word, cycle)
                assert word == pending[0], f"cycle {cycle}: payload changed while waiting"
                if ready:
                    received.append((to_event(word), pending[1]))
                    pending = None
                quiet = 0
            else:
                assert pending is None, f"cycle {cycle}: valid dropped before the event was taken"
                done = position == len(queue) and offering is None
                quiet = quiet + 1 if done else 0
            await RisingEdge(dut.clk)
            cycle += 1
        return taken, received, stalls

    def counters(self) -> dict[str, int]:
        return unpack(COUNTERS, self.dut.counters.value.to_unsigned())

    async def assert_drained(self, cycles: int = 8) -> None:
        """Nothing more comes out, whether the output is ready or not."""
        for n in range(cycles):
            self.dut.o__ready.value = n % 2
            await ReadOnly()
            assert not self.dut.o__valid.value, "an event the model did not expect"
            await RisingEdge(self.dut.clk)


@cocotb.test()
@cocotb.parametrize(patterns=PATTERNS)
async def records_match_model(dut, patterns):
    """Valid and invalid records, mixed: events, latency, stalls and counters."""
    idle, backpressure = patterns
    seed = PATTERNS.index(patterns)
    rng = random.Random(seed)
    records = [record(rng) for _ in range(300)] + invalid_records(rng) * 5
    rng.shuffle(records)
    tb = TickTB(dut)
    await tb.reset()
    taken, received, stalls = await tb.run(records, idle, backpressure, seed)

    assert all(len(t) == -(-len(r) // BEAT) for t, r in zip(taken, records))
    model = ParserModel(max_price=MAX_PRICE)
    expected = [e for r, t in zip(records, taken) if (e := model.tick(r, stamp=t[-1])) is not None]
    got = [event for event, _ in received]
    for n, (g, w) in enumerate(zip(got, expected)):
        assert g == w, f"event {n}: {g} != {w}"
    assert len(got) == len(expected), (len(got), len(expected))
    late = [(e, c) for e, c in received if c - e.stamp != 1]
    assert not late, f"{len(late)} events not valid 1 cycle after their last beat: {late[:3]}"
    assert stalls == [], f"input stalled while the output was ready: cycles {stalls[:5]}"
    if idle == "none" and backpressure == "none":
        cycles = [c for t in taken for c in t]
        assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), "one beat a cycle"

    counters = tb.counters()
    assert set(model.counters) <= set(counters), set(model.counters) - set(counters)
    assert counters == {name: model.counters[name] for name in counters}
    assert sum(counters.values()) == len(records)
    assert all(counters.values()), counters  # every kind and every cause happened
    await tb.assert_drained()
    dut._log.info("%d records, %d events; counters %s", len(records), len(got), counters)
