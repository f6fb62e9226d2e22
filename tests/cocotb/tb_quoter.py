"""cocotb testbench for Quoter (run by tests/test_quoter_cocotb.py on Icarus and Verilator).

The same random streams as the amaranth.sim test (``sim.bench_quoter.scenario``): top of book,
trading states, fills, control writes and reads, kill pulses; every input with its own idle
pattern, ``o`` with back-pressure, and lookahead hints ("none", "book": each tob's locate two
cycles before the tob, or "noise": random locates). One coroutine drives and samples every port
each cycle and logs the events in the order the gateware took them; the model is then replayed
over that log and every order, read answer and counter must equal the model's, the orders must
pass the "must never happen" check, and nothing may be left unread.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge
from tick2quote.hdl.book import top_of_book_layout
from tick2quote.hdl.orders import fill_layout, order_layout
from tick2quote.hdl.quoterstate import COUNTERS, counter_layout, ctl_layout, trading_layout
from tick2quote.sim.bench_quoter import AFTER, check_invariants, replay, scenario
from tick2quote.sim.cocotb_streams import pack, unpack
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.streams import pause_pattern

PARAMS = params_from_env()
SESSION = json.loads(os.environ.get("T2Q_QUOTER_SESSION", "{}"))
STREAMS = {
    "tob": top_of_book_layout,
    "trading": trading_layout,
    "fill": fill_layout,
    "ctl": ctl_layout,
}


def _fields(payload):
    return {k: v for k, v in payload.items() if k != AFTER}


@cocotb.test()
async def streams_match_model(dut):
    symbols, window = PARAMS["symbols"], PARAMS["ref_window"]
    stim = scenario(SESSION["seed"], symbols, SESSION["events"], kill_every=2500)
    words = {n: [pack(STREAMS[n], _fields(p)) for p in getattr(stim, n)] for n in STREAMS}
    cocotb.start_soon(Clock(dut.clk, 6.4, unit="ns").start())
    for name in STREAMS:
        getattr(dut, f"{name}__valid").value = 0
        getattr(dut, f"{name}__payload").value = 0
    dut.o__ready.value = 0
    dut.ctl_data__ready.value = 1
    dut.kill.value = 0
    dut.lookahead.value = 0
    dut.cycle.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    while dut.clearing.value:
        await RisingEdge(dut.clk)

    seed = SESSION["seed"]
    idle = {n: pause_pattern(SESSION["source"], seed + k) for k, n in enumerate(STREAMS)}
    pressure = pause_pattern(SESSION["sink"], seed + 9)
    ports = {
        n: (getattr(dut, f"{n}__valid"), getattr(dut, f"{n}__ready"), getattr(dut, f"{n}__payload"))
        for n in STREAMS
    }
    sent = dict.fromkeys(STREAMS, 0)
    driving = dict.fromkeys(STREAMS, False)
    kills = list(stim.kill)
    hint, rng = SESSION.get("hint", "none"), random.Random(seed)
    log, got, answers = [], [], []
    cycle, quiet, o_ready, announced = 0, 0, False, None
    while quiet < 80:
        dut.cycle.value = cycle
        while kills and kills[0][0] == cycle:
            dut.kill.value = kills.pop(0)[1]
        look = (1, rng.randrange(2 * symbols)) if hint == "noise" and rng.random() < 0.5 else (0, 0)
        for name, (valid, _, payload) in ports.items():
            items = getattr(stim, name)
            if driving[name] or sent[name] >= len(items):
                continue
            if items[sent[name]].get(AFTER, 0) > sent["tob"]:
                continue
            if name == "tob" and hint == "book":
                if announced is None:
                    announced, look = cycle, (1, items[sent[name]]["locate"])
                if cycle < announced + 2:
                    continue
            if not next(idle[name]):
                payload.value = words[name][sent[name]]
                valid.value = 1
                driving[name] = True
        dut.lookahead.value = look[0] | look[1] << 1
        o_ready = not next(pressure)
        dut.o__ready.value = int(o_ready)
        # sample mid-cycle: exactly what the next rising edge sees, in either simulator
        await FallingEdge(dut.clk)
        readies = {name: bool(ready.value) for name, (_, ready, _) in ports.items()}
        o_valid = bool(dut.o__valid.value)
        if o_valid and o_ready and not dut.o__payload.value.is_resolvable:
            raise AssertionError(f"X in order payload {dut.o__payload.value} at cycle {cycle}")
        o_word = dut.o__payload.value.to_unsigned() if o_valid and o_ready else None
        d_word = dut.ctl_data__payload.value.to_unsigned() if dut.ctl_data__valid.value else None
        await RisingEdge(dut.clk)
        busy = False
        for name, (valid, _, _) in ports.items():
            if driving[name] and readies[name]:
                log.append((cycle, name, getattr(stim, name)[sent[name]]))
                sent[name] += 1
                driving[name] = False
                valid.value = 0
                if name == "tob":
                    announced = None
            busy |= driving[name] or sent[name] < len(words[name])
        if o_word is not None:
            got.append(unpack(order_layout, o_word))
        if d_word is not None:
            answers.append(d_word)
        quiet = 0 if busy or o_valid or kills else quiet + 1
        cycle += 1
    orders, want_counters, want_answers, contexts = replay(log, stim.kill, symbols, window)
    want = [{k: v for k, v in o.items() if k != "event"} for o in orders]
    for k, (a, b) in enumerate(zip(got, want)):
        assert a == b, f"order {k}: gateware {a} != model {b}"
    assert len(got) == len(want), (len(got), len(want))
    assert answers == want_answers
    counters = unpack(counter_layout, dut.counters.value.to_unsigned())
    assert counters == {n: want_counters[n] for n in COUNTERS}, counters
    check_invariants(orders, contexts)
    assert not dut.o__valid.value, "an order the model did not expect"
    dut._log.info("%d events, %d orders, %d cycles: %s", len(log), len(got), cycle, counters)
