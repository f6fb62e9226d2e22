"""cocotb testbench for OrderBook (run by tests/test_book_cocotb.py on Icarus and Verilator).

One generated ITCH session (``sim.feed``) goes through the parser model into BookEvents for the
gateware, and as records into ``BookModel`` with the same geometry. The session is cut into
segments, each with its own input idle and output back-pressure pattern; between segments the
testbench pulses ``mark_stale_all`` or ``recover_all`` (and tells the model). Every update
record must equal the model's, in order; at the end all counters must equal the model's and
nothing may be left unread. With no pauses, the update latency must be exactly 5 cycles (8 for
REPLACE) and the input must take one event per 3 cycles (6 for REPLACE).

Per-cycle Python work is kept small: one coroutine drives and samples both streams, payloads are
packed before the run and the expected records are computed up front.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from tick2quote.hdl.book import COUNTERS, counter_layout, top_of_book_layout
from tick2quote.hdl.events import BookEvent
from tick2quote.sim.cocotb_streams import pack, unpack
from tick2quote.sim.feed import FeedConfig, generate
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.models.book import BookModel
from tick2quote.sim.models.parser import ParserModel
from tick2quote.sim.streams import pause_pattern

GEOMETRY = params_from_env()
SESSION = json.loads(os.environ.get("T2Q_BOOK_SESSION", "{}"))
#: (input idle pattern, output back-pressure pattern, action after the segment)
SEGMENTS = (
    ("none", "none", None),
    ("random_25", "random_60", "mark_stale_all"),
    ("bursty", "alternate", "recover_all"),
    ("none", "every_fourth", None),
    ("every_fourth", "none", None),
)
RECORD_KEYS = ("locate", "bid_px", "bid_sz", "ask_px", "ask_sz", "stale", "sequence")


class BookBench:
    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        cocotb.start_soon(Clock(dut.clk, 6.4, unit="ns").start())
        for name in ("i__valid", "o__ready", "mark_stale_all", "recover_all", "recover"):
            getattr(dut, name).value = 0
        for name in ("mask_write", "i__payload", "state_locate", "recover_locate"):
            getattr(dut, name).value = 0

    async def reset(self):
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        while self.dut.clearing.value:
            await RisingEdge(self.dut.clk)

    async def pulse(self, name):
        getattr(self.dut, name).value = 1
        await RisingEdge(self.dut.clk)
        getattr(self.dut, name).value = 0
        await RisingEdge(self.dut.clk)

    async def run(self, words, expected, kinds, source, sink, seed, base):
        """Send ``words`` (events ``base``, ``base + 1``, ...); check each update against
        ``expected`` in order; return when every event has been taken and every expected update
        has arrived."""
        dut = self.dut
        clk, i_valid, i_ready = dut.clk, dut.i__valid, dut.i__ready
        i_payload, o_valid, o_ready = dut.i__payload, dut.o__valid, dut.o__ready
        o_payload = dut.o__payload
        idle, pressure = pause_pattern(source, seed), pause_pattern(sink, seed + 1)
        timed = source == "none" and sink == "none"
        sent, got, driving, ready = 0, 0, False, False
        accepted, first_valid = [], None
        limit = 8 * len(words) + 100
        for _ in range(limit):
            await RisingEdge(clk)
            self.cycle += 1
            if driving and i_ready.value:
                accepted.append(self.cycle)
                sent += 1
                driving = False
            if o_valid.value:
                if first_valid is None:
                    first_valid = self.cycle
                if ready:
                    rec = unpack(top_of_book_layout, o_payload.value.to_unsigned())
                    assert got < len(expected), f"unexpected update {rec}"
                    want = expected[got]
                    assert tuple(rec[k] for k in RECORD_KEYS) == want, (rec, want)
                    if timed:
                        seq = want[-1]
                        latency = first_valid - accepted[seq - base]
                        assert latency == (8 if kinds[seq - base] == "U" else 5), seq
                    got += 1
                    first_valid = None
            if not driving and sent < len(words) and not next(idle):
                i_payload.value = words[sent]
                i_valid.value = 1
                driving = True
            elif not driving:
                i_valid.value = 0
            new_ready = not next(pressure)
            if new_ready != ready:
                o_ready.value = int(new_ready)
                ready = new_ready
            if sent == len(words) and got == len(expected) and not driving:
                break
        else:
            raise AssertionError(f"stuck: {sent}/{len(words)} sent, {got}/{len(expected)} out")
        if timed:
            spans = [b - a for a, b in zip(accepted, accepted[1:])]
            assert spans == [6 if k == "U" else 3 for k in kinds[:-1]], "throughput"
        o_ready.value = 0
        ready = False
        for _ in range(6):  # nothing more may come out
            await RisingEdge(clk)
            assert not o_valid.value, "an update the model did not expect"


@cocotb.test()
async def session_matches_model(dut):
    geometry = GEOMETRY
    config = FeedConfig(
        seed=SESSION["seed"], symbols=SESSION["feed_symbols"], messages=SESSION["messages"]
    )
    records = generate(config)
    model = BookModel(
        max_symbols=geometry["symbols"],
        sets=geometry["sets"],
        ways=geometry["ways"],
        depth=geometry["depth"],
    )
    parser = ParserModel()
    bench = BookBench(dut)
    await bench.reset()
    step = -(-len(records) // len(SEGMENTS))
    for number, (source, sink, action) in enumerate(SEGMENTS):
        start = number * step
        part = records[start : start + step]
        words, expected = [], []
        for seq, rec in enumerate(part, start=start):
            event = parser.message(rec, sequence=seq, stamp=seq & 0xFFFF_FFFF)
            words.append(pack(BookEvent, event._asdict()))
            top = model.apply(rec, sequence=seq)
            if top is not None:
                b = top.bbo
                expected.append(
                    (top.locate, b.bid_px, b.bid_sz, b.ask_px, b.ask_sz, int(b.stale), seq)
                )
        kinds = [r.type for r in part]
        await bench.run(words, expected, kinds, source, sink, SESSION["seed"], start)
        if action == "mark_stale_all":
            await bench.pulse(action)
            model.mark_stale()
        elif action == "recover_all":
            await bench.pulse(action)
            model.recover()
    counters = unpack(counter_layout, dut.counters.value.to_unsigned())
    assert counters["events"] == len(records)
    want = {name: model.counters[name] for name in COUNTERS if name != "events"}
    del counters["events"]
    assert counters == want, (counters, want)
    assert model.counters["levels_full"] == 0
    dut._log.info("%d events, %d cycles; model counters %s", len(records), bench.cycle, want)
