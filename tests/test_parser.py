"""ItchParser (gateware) against the parser reference model, in amaranth.sim.

Every ITCH 5.0 type with random field bytes, unknown types of random lengths, wrong lengths and
truncated messages, crossed with idle input cycles and output back-pressure. Each event must
equal the model's, be valid exactly one cycle after its last beat was accepted, and carry that
cycle as its stamp; the input must never stall while the output is ready.
"""

import gc
import os

os.environ.setdefault("ITCH_NO_CPP", "1")

import random

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator
from itch.messages import messages as ITCHFEED
from tick2quote.hdl import events, parser
from tick2quote.host.protocol import itch
from tick2quote.sim.models.parser import ITCH_KINDS, BookEvent, EventKind, ParserModel
from tick2quote.sim.streams import PAUSE_PATTERNS, packet_beats, pause_pattern, stream_put

# Event field -> the codec's field name, per ITCH type (everything the parser takes).
CODEC_NAMES = {
    "order_ref": {"U": "original_order_ref"},
    "new_ref": {"U": "new_order_ref"},
    "shares": {"E": "executed_shares", "C": "executed_shares", "X": "cancelled_shares"},
    "price": {"C": "execution_price"},
    "code": {"A": "side", "F": "side", "P": "side", "C": "printable", "S": "event_code",
             "H": "trading_state"},
}  # fmt: skip


def codec_name(field: str, itch_type: str) -> str:
    return CODEC_NAMES.get(field, {}).get(itch_type, field)


def test_offsets_match_the_codec_declarations():
    assert parser.LOCATE_OFFSET == itch.FORMATS["A"].offsets["locate"]
    for itch_type, (kind, fields) in parser.ITCH_FIELDS.items():
        fmt = itch.FORMATS[itch_type]
        assert parser.ITCH_SIZES[itch_type] == fmt.size
        assert ITCH_KINDS[itch_type].value == kind.value
        for field, offset in fields.items():
            name = codec_name(field, itch_type)
            assert fmt.offsets[name] == offset, (itch_type, field)
            assert fmt.field(name).size * 8 == events.EVENT_FIELDS[field], (itch_type, field)
    assert set(parser.ITCH_FIELDS) == set(ITCH_KINDS)


def test_event_kinds_match_the_model():
    assert {k.name: k.value for k in events.EventKind} == {k.name: k.value for k in EventKind}
    fields = list(events.BookEvent.members)
    assert fields == list(BookEvent._fields)


def itchfeed_event(body: bytes, sequence: int, stamp: int) -> BookEvent:
    """The event built from itchfeed's decode of ``body`` (independent of our codecs)."""
    msg = ITCHFEED[body[:1]](body)
    fields = vars(msg)
    code = b""
    for name in ("buy_sell_indicator", "printable", "event_code", "trading_state"):
        code = fields.get(name, code)
    shares = [fields[n] for n in ("shares", "executed_shares", "cancelled_shares") if n in fields]
    prices = [fields[n] for n in ("price", "execution_price") if n in fields]
    return BookEvent(
        kind=ITCH_KINDS[body[:1].decode()],
        locate=msg.stock_locate,
        order_ref=fields.get("order_reference_number", 0),
        new_ref=fields.get("new_order_reference_number", 0),
        side=int("buy_sell_indicator" in fields and code == b"S"),
        shares=shares[0] if shares else 0,
        price=prices[0] if prices else 0,
        stock=int.from_bytes(fields.get("stock", bytes(8)), "little"),
        code=code[0] if code else 0,
        sequence=sequence,
        stamp=stamp,
    )


def test_model_agrees_with_itchfeed():
    rng = random.Random(7)
    model = ParserModel()
    for itch_type in parser.ITCH_FIELDS:
        for _ in range(100):
            body = bytearray(rng.randbytes(itch.SIZES[itch_type]))
            body[0] = ord(itch_type)
            if itch_type in "AFP" and rng.random() < 0.8:
                body[19] = ord(rng.choice("BS"))
            sequence, stamp = rng.randrange(1 << 64), rng.randrange(1 << 32)
            got = model.message(bytes(body), sequence, stamp)
            assert got == itchfeed_event(bytes(body), sequence, stamp)


# A component refused in its constructor is never elaborated: that is the point.
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("width", [0, 65, "32", None])
def test_counter_width_is_checked(width):
    with pytest.raises(ValueError, match=r"counter_width must be an integer in 1 \.\. 64, not"):
        parser.ItchParser(counter_width=width)
    gc.collect()  # the refused instance warns when collected: collect it under the filter


# ---------------------------------------------------------------- stimulus
def random_messages(rng: random.Random, per_event_type: int = 16, per_other_type: int = 6):
    """``(bytes given, declared length, truncated)`` for every case the parser must handle."""
    cases = []
    for itch_type, size in itch.SIZES.items():
        count = per_event_type if itch_type in parser.ITCH_FIELDS else per_other_type
        for _ in range(count):
            body = bytearray(rng.randbytes(size))
            body[0] = ord(itch_type)
            if itch_type in "AFP" and rng.random() < 0.8:
                body[19] = ord(rng.choice("BS"))
            cases.append((bytes(body), size, False))
    unknown = sorted(set(range(256)) - {ord(t) for t in itch.SIZES})
    for _ in range(40):
        length = rng.randint(1, 60)
        body = bytearray(rng.randbytes(length))
        body[0] = rng.choice(unknown)
        cases.append((bytes(body), length, False))
    for _ in range(40):  # event types with a wrong length, including one-beat ones
        itch_type = rng.choice(list(parser.ITCH_FIELDS))
        size = itch.SIZES[itch_type]
        length = rng.choice([rng.randint(1, size - 1), rng.randint(size + 1, size + 12)])
        body = bytearray(rng.randbytes(length))
        body[0] = ord(itch_type)
        cases.append((bytes(body), length, False))
    for _ in range(40):  # cut short by the packet: only a prefix arrives
        itch_type = rng.choice(list(itch.SIZES))
        size = itch.SIZES[itch_type]
        body = bytearray(rng.randbytes(rng.randint(1, size)))
        body[0] = ord(itch_type)
        cases.append((bytes(body), size, True))
    cases.append((b"", 0, False))  # a zero length is never an event
    rng.shuffle(cases)
    return cases


def unpack_event(word: int) -> BookEvent:
    values = {}
    for name, field in events.BookEvent:
        values[name] = (word >> field.offset) & ((1 << field.width) - 1)
    values["kind"] = EventKind(values["kind"])
    return BookEvent(**values)


def message_beats(rng, data: bytes, length: int, sequence: int, truncated: bool) -> list[dict]:
    """Beats of one message; length and sequence are garbage after the first beat."""
    beats = packet_beats(data) if data else [{"data": 0, "keep": 0, "first": 1, "last": 1}]
    for beat in beats:
        beat["data"] |= rng.randrange(1 << 64) & ~((1 << (8 * beat["keep"].bit_length())) - 1)
        beat["length"] = length if beat["first"] else rng.randrange(1 << 16)
        beat["sequence"] = sequence if beat["first"] else rng.randrange(1 << 64)
        beat["truncated"] = int(truncated and (beat["last"] or rng.random() < 0.3))
    return beats


class Bench(Elaboratable):
    """The parser with a free-running cycle counter on its ``cycle`` input."""

    def __init__(self):
        self.dut = parser.ItchParser()
        self.counter = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.sync += self.counter.eq(self.counter + 1)
        m.d.comb += self.dut.cycle.eq(self.counter)
        return m


def run_parser(cases, *, idle: str, backpressure: str, seed: int):
    """Drive ``cases`` through the parser; return what the test needs to check."""
    rng = random.Random(seed)
    bench = Bench()
    dut = bench.dut
    sequences = [rng.randrange(1 << 64) for _ in cases]
    accepted = []  # cycle of every accepted beat
    last_cycles = []  # cycle the last beat of each message was accepted
    received = []  # (event, cycle it first became valid)
    stalls = []
    result = {}

    async def driver(ctx):
        pause = pause_pattern(idle, seed)
        for (data, length, truncated), sequence in zip(cases, sequences):
            for beat in message_beats(rng, data, length, sequence, truncated):
                await stream_put(ctx, dut.i, beat, idle=pause)
                accepted.append(ctx.get(bench.counter) - 1)
            last_cycles.append(accepted[-1])

    async def monitor(ctx):
        pause = pause_pattern(backpressure, seed + 1)
        rest = 0
        pending = None
        while rest < 8:
            ready = not next(pause)
            ctx.set(dut.o.ready, ready)
            _, _, valid, word, i_ready, cycle = await ctx.tick().sample(
                dut.o.valid, dut.o.payload.as_value(), dut.i.ready, bench.counter
            )
            if ready and not i_ready:
                stalls.append(cycle)
            if valid:
                if pending is None:
                    pending = (word, cycle)
                assert word == pending[0], "payload changed while waiting"
                if ready:
                    received.append((unpack_event(word), pending[1]))
                    pending = None
            rest = rest + 1 if len(last_cycles) == len(cases) and not valid else 0
        result["counters"] = {
            name: ctx.get(getattr(dut.counters, name)) for name in dut.counters.shape().members
        }

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return sequences, accepted, last_cycles, received, stalls, result["counters"]


@pytest.mark.parametrize(
    "idle, backpressure",
    [("none", "none"), ("random_25", "none"), ("none", "random_60"), ("bursty", "alternate")],
)
def test_parser_matches_model(idle, backpressure):
    seed = PAUSE_PATTERNS.index(idle) * 10 + PAUSE_PATTERNS.index(backpressure)
    cases = random_messages(random.Random(seed))
    sequences, accepted, last_cycles, received, stalls, counters = run_parser(
        cases, idle=idle, backpressure=backpressure, seed=seed + 1
    )
    model = ParserModel()
    expected = []
    for (data, length, truncated), sequence, stamp in zip(cases, sequences, last_cycles):
        event = model.message(data, sequence, stamp, length=length, truncated=truncated)
        if event is not None:
            expected.append(event)
    assert [event for event, _ in received] == expected
    # Parse latency: valid exactly one cycle after the last beat was accepted.
    assert [cycle - event.stamp for event, cycle in received] == [1] * len(expected)
    assert stalls == [], "input stalled while the output was ready"
    if idle == "none" and backpressure == "none":
        # One beat a cycle, messages back to back.
        assert accepted == list(range(accepted[0], accepted[0] + len(accepted)))
    assert counters == {name: model.counters[name] for name in counters}
    assert sum(counters.values()) == len(cases)
    assert {event.kind for event in expected} == set(EventKind) - {EventKind.NONE}
    assert all(counters.values())
