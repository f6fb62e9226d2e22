"""cocotb testbench of the whole Core (run by tests/test_core_cocotb.py on Icarus and Verilator).

A generated ITCH session goes in as MoldUDP64 frames, with a control write that lifts the kill
switch, a batch of OUCH fills for live orders and a kill / unkill (``sim.corescenario.plan``),
the input beats spread by an idle pattern and ``tx`` back-pressured by another. Afterwards the
testbench reads every counter through the control protocol. Then the reference model replays
the scenario with each message stamped by the cycle the device took its last byte, and:

- every order frame's OUCH message must equal the model's order byte for byte (ClOrdID stamp
  included), in the same order;
- every top-of-book record sent must equal the model's update for the same message, and sent
  plus dropped must equal the model's updates;
- the quoter's counters must equal the model's, and the book's those the model keeps;
- the latency registers must hold exactly the samples first-beat cycle - stamp of the orders.

With ``T2Q_CORE_BENCH`` set, the tick-to-quote latency of each order (cycles from the beat
holding the message's last byte to the order frame's first beat), the cycles of the run and the
counters are written there as JSON (``check: false`` then skips the comparisons, for runs that
overload the core on purpose).
"""

import dataclasses
import json
import os
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from tick2quote.hdl.core import Core
from tick2quote.hdl.coremap import CoreConfig
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.quoterstate import COUNTERS as QUOTER_COUNTERS
from tick2quote.host.protocol import ethernet, ouch, tick, tobfeed
from tick2quote.sim.cocotb_streams import TB, pack, unpack
from tick2quote.sim.corescenario import (
    CONTROL_SRC_PORT,
    control_frame,
    decode_tx,
    expected,
    new_model,
    ouch_message,
    plan,
    read_frame,
    tick_frame,
)
from tick2quote.sim.feed import FeedConfig, generate
from tick2quote.sim.feedwriter import to_ticks
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.models.pricing import QuoteParams
from tick2quote.sim.streams import beats_bytes, packet_beats, pause_pattern

PARAMS = params_from_env()
BOOK_COUNTERS_KEPT = ("bad_locate", "unknown_ref", "overfill", "duplicate_ref", "table_full",
                      "levels_evicted", "best_unknown", "untracked")  # fmt: skip


def _config() -> CoreConfig:
    fields = {f.name for f in dataclasses.fields(CoreConfig)}
    values = {k: v for k, v in PARAMS.items() if k in fields}
    values["peers"] = tuple(values.get("peers", ()))
    values["default"] = QuoteParams(**values["default"])
    return CoreConfig(**values)


class Run:
    """Drives the steps into ``rx`` and collects ``tx``, one cycle at a time."""

    def __init__(self, dut, idle: str, backpressure: str, seed: int):
        self.dut = dut
        self.pause_in = pause_pattern(idle, seed)
        self.pause_out = pause_pattern(backpressure, seed + 1)
        self.frames: list[tuple[int, bytes]] = []
        self._beats: list = []
        self._first = None
        self.tick_taken = False

    async def cycle(self, beat=None, tick_beat=None) -> int:
        """One clock cycle: present ``beat`` (or nothing) on rx and ``tick_beat`` on ticks;
        returns the cycle counter (and sets :attr:`tick_taken`)."""
        dut = self.dut
        dut.rx__valid.value = int(beat is not None)
        if beat is not None:
            dut.rx__payload.value = pack(beat_layout, beat)
        dut.ticks__valid.value = int(tick_beat is not None)
        if tick_beat is not None:
            dut.ticks__payload.value = pack(beat_layout, tick_beat)
        ready = not next(self.pause_out)
        dut.tx__ready.value = int(ready)
        await ReadOnly()
        now = dut.cycle.value.to_unsigned()
        self.tick_taken = tick_beat is not None and bool(dut.ticks__ready.value)
        if dut.tx__valid.value and ready:
            fields = unpack(beat_layout, dut.tx__payload.value.to_unsigned())
            if not self._beats:
                self._first = now
            self._beats.append((fields["data"], fields["keep"]))
            if fields["last"]:
                self.frames.append((self._first, beats_bytes(self._beats)))
                self._beats = []
        await RisingEdge(dut.clk)
        return now

    async def frame(self, frame: bytes) -> list[int]:
        """Send a frame, idling between beats as the pattern says; the cycle of each beat."""
        cycles = []
        for beat in packet_beats(frame):
            while next(self.pause_in):
                await self.cycle()
            cycles.append(await self.cycle(beat))
        return cycles

    async def dma_records(self, records: bytes) -> None:
        """Send tick records on the ``ticks`` port (the DMA path), 5 beats each."""
        for at in range(0, len(records), 40):
            beats = packet_beats(records[at : at + 40])
            for beat in beats:
                while next(self.pause_in):
                    await self.cycle()
                await self.cycle(tick_beat=beat)
                while not self.tick_taken:
                    await self.cycle(tick_beat=beat)

    async def request(self, frame: bytes, limit: int = 2000) -> list[int]:
        """Send a control request and wait for its response frame (as a host does)."""
        seen = len(self.frames)
        cycles = await self.frame(frame)
        for _ in range(limit):
            if any(_is_response(f) for _, f in self.frames[seen:]):
                return cycles
            await self.cycle()
        raise AssertionError(f"no response to a control request within {limit} cycles")

    async def idle(self, cycles: int) -> None:
        for _ in range(cycles):
            await self.cycle()

    async def drain(self, quiet: int = 200) -> None:
        count = 0
        while count < quiet:
            before = len(self.frames) + len(self._beats)
            await self.cycle()
            count = 0 if len(self.frames) + len(self._beats) != before else count + 1


async def read_registers(run: Run, cfg, description: dict, names: list[str]) -> dict[str, int]:
    """Read registers by name through the control protocol (blocks of consecutive ones)."""
    registers = description["registers"]
    wanted = sorted(registers[name]["address"] for name in names)
    values: dict[int, int] = {}
    request_id = 1000
    while wanted:
        start = wanted[0]
        count = 1
        while count < description["max_read"] and start + count in wanted:
            count += 1
        before = len(run.frames)
        await run.frame(read_frame(cfg, start, count, request_id))
        await run.drain(60)
        (response,) = [r for r in decode_tx(cfg, run.frames[before:]).responses]
        assert response.request_id == request_id and response.status == 0, response
        for k, value in enumerate(response.values):
            values[start + k] = value
        wanted = wanted[count:]
        request_id += 1
    by_address = {reg["address"]: name for name, reg in registers.items()}
    return {by_address[a]: v for a, v in values.items()}


MODE = PARAMS.get("mode", "itch")


async def _start(dut, cfg) -> Run:
    dut.rx__valid.value = 0
    dut.rx__payload.value = 0
    dut.ticks__valid.value = 0
    dut.ticks__payload.value = 0
    dut.tx__ready.value = 1
    tb = TB(dut)
    await tb.reset()
    run = Run(dut, PARAMS["idle"], PARAMS["backpressure"], PARAMS["seed"])
    await run.idle(2 * max(cfg.order_sets, cfg.symbols, cfg.ref_window) + 50)  # reset sweeps
    return run


@cocotb.test(skip=MODE != "ticks")
async def ticks_match_itch_model(dut):
    """Tick records, over UDP and on the DMA port in turn, quote exactly as the ITCH messages
    they were made from."""
    cfg = _config()
    description = Core(cfg).describe()
    messages = generate(
        FeedConfig(
            seed=PARAMS["seed"],
            symbols=PARAMS["feed_symbols"],
            messages=PARAMS["messages"],
            halt_ratio=0.0,
        )  # fmt: skip
    )
    records = [tick.encode(r) for r in to_ticks(messages)]
    run = await _start(dut, cfg)
    await run.frame(control_frame(cfg, description, "kill_switch", 0, 1))
    await run.idle(64)
    rng = random.Random(PARAMS["seed"])
    at = 0
    while at < len(records):
        count = rng.randint(1, 8)
        batch = b"".join(records[at : at + count])
        if rng.random() < 0.5:
            await run.frame(tick_frame(cfg, batch))
        else:
            await run.dma_records(batch)
        await run.idle(PARAMS["pace"] * count)
        at += count
    await run.drain()
    tx = decode_tx(cfg, run.frames)
    counters = await read_registers(
        run,
        cfg,
        description,
        ["tob_dropped", "core_stale_marks", "book_table_full", "book_levels_evicted"],
    )
    model = new_model(cfg)
    tops, orders = [], []
    for msg in messages:
        out = model.message(msg)
        tops += out.tops
        orders += out.orders
    assert counters["core_stale_marks"] == 0, counters
    # A tick modify keeps the order's reference where ITCH U gives a new one, so the two streams
    # hash orders into different sets: they are equivalent only while no set is full.
    assert counters["book_table_full"] == model.book.counters.get("table_full", 0) == 0, (
        "the session fills an order-table set: ticks and ITCH place orders differently"
    )
    # the top-of-book feed drops updates that find it busy (counted): what it sent must be the
    # model's updates in order, with gaps
    got_tops = [(r.locate, r.bid_px, r.bid_sz, r.ask_px, r.ask_sz) for r in tx.tops]
    want_tops = iter((t.locate, t.bbo.bid_px, t.bbo.bid_sz, t.bbo.ask_px, t.bbo.ask_sz)
                     for t in tops)  # fmt: skip
    assert all(any(top == want for want in want_tops) for top in got_tops), "not a subsequence"
    assert len(tx.tops) + counters["tob_dropped"] == len(tops)
    got = [payload for _, payload in tx.orders]
    want = [ouch_message(o, b" " * 8, stamp=_stamp(g)) for o, g in zip(orders, got, strict=False)]
    assert len(got) == len(orders) and got == want
    assert orders, "the session must make the core quote"


@cocotb.test(skip=MODE != "itch")
async def core_matches_model(dut):
    cfg = _config()
    description = Core(cfg).describe()
    messages = generate(
        FeedConfig(
            seed=PARAMS["seed"], symbols=PARAMS["feed_symbols"], messages=PARAMS["messages"]
        )  # fmt: skip
    )
    scenario = plan(
        cfg,
        description,
        messages,
        seed=PARAMS["seed"],
        kill=PARAMS["kill"],
        pace=PARAMS["pace"],
        per_packet=range(1, PARAMS.get("per_packet", 8) + 1),
        fills=PARAMS.get("fills", 3),
        random_params=PARAMS.get("random_params", False),
    )
    run = await _start(dut, cfg)
    beat_cycles = []
    start = dut.cycle.value.to_unsigned()
    for step in scenario.steps:
        if step.kind in ("idle", "control_params"):
            await run.idle(step.cycles)
            beat_cycles.append([])
        elif step.kind == "control":
            beat_cycles.append(await run.request(step.frame))
        else:
            beat_cycles.append(await run.frame(step.frame))
    await run.drain()
    cycles = dut.cycle.value.to_unsigned() - start
    tx = decode_tx(cfg, run.frames)
    assert not tx.other, f"unexpected frames: {tx.other[:2]}"
    controls = sum(step.kind == "control" for step in scenario.steps)
    assert len(tx.responses) == controls, f"{len(tx.responses)} responses to {controls}"
    assert all(r.status == 0 for r in tx.responses), [r for r in tx.responses if r.status]
    names = [
        n for n in description["registers"] if n.startswith(("quoter_", "book_", "tob_", "feed_"))
    ]
    names += ["latency_min", "latency_max", "latency_sum", "latency_count", "core_stale_marks"]
    counters = await read_registers(run, cfg, description, names)
    out = os.environ.get("T2Q_CORE_BENCH")
    if out:  # figures only: under overload the device is stale by design, unlike the model
        model_out, _ = expected(scenario, beat_cycles)
        with open(out, "w") as f:
            json.dump(_figures(tx, model_out, counters, cycles, len(messages)), f)
        if not PARAMS.get("check", True):
            return

    model_out, model = expected(scenario, beat_cycles)
    symbol = scenario.symbols.get
    got = [payload for _, payload in tx.orders]
    stamps = [_stamp(p) for p in got]
    want = [
        ouch_message(o, symbol(o.locate, b" " * 8), stamp=None if o.stamp >= 0 else s)
        for o, s in zip(model_out.orders, stamps + [0] * len(model_out.orders), strict=False)
    ]
    assert len(got) == len(want), (
        f"{len(got)} orders sent, the model has {len(want)}; counters {counters}, "
        f"tops {len(tx.tops)}, responses {tx.responses[:3]}"
    )
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, (
            f"order {k}: {ouch.decode(g, 'to_exchange')} != {ouch.decode(w, 'to_exchange')}"
        )

    by_sequence = {t.sequence: t for t in model_out.tops}
    for record in tx.tops:
        top = by_sequence[record.book_sequence]
        bbo = top.bbo
        assert (record.locate, record.bid_px, record.bid_sz, record.ask_px, record.ask_sz) == (
            top.locate, bbo.bid_px, bbo.bid_sz, bbo.ask_px, bbo.ask_sz), record  # fmt: skip
        assert bool(record.flags & tobfeed.FLAG_STALE) == bbo.stale, record
    assert counters["tob_sent"] == len(tx.tops)
    assert counters["tob_sent"] + counters["tob_dropped"] == len(model_out.tops)

    for name in QUOTER_COUNTERS:
        if name in model.quoter.counters or name in ("bad_locate", "bad_ctl"):
            assert counters[f"quoter_{name}"] == model.quoter.counters.get(name, 0), name
    for name in BOOK_COUNTERS_KEPT:
        assert counters[f"book_{name}"] == model.book.counters.get(name, 0), name

    latencies = [
        cycle - o.stamp
        for (cycle, _), o in zip(tx.orders, model_out.orders, strict=True)
        if o.stamp >= 0
    ]
    # every order is one latency sample; those whose stamp the model knows are checked exactly
    assert counters["latency_count"] == len(model_out.orders)
    if latencies:
        assert counters["latency_min"] <= min(latencies)
        assert counters["latency_max"] >= max(latencies)
    if len(latencies) == len(model_out.orders):
        assert (counters["latency_min"], counters["latency_max"], counters["latency_sum"]) == (
            min(latencies), max(latencies), sum(latencies))  # fmt: skip
    assert len(model_out.orders) > 0, "the scenario must make the core quote"


def _figures(tx, model_out, counters: dict, cycles: int, messages: int) -> dict:
    """Tick-to-quote samples (first order beat - the stamp of the message that caused it, for
    the orders whose stamp is the message's ingress stamp) and the run's counters."""
    samples = []
    for (cycle, payload), order in zip(tx.orders, model_out.orders, strict=False):
        stamp = _stamp(payload)
        if order.stamp >= 0 and stamp == order.stamp:
            samples.append(cycle - stamp)
    return {
        "latencies": samples,
        "orders": len(tx.orders),
        "model_orders": len(model_out.orders),
        "messages": messages,
        "cycles": cycles,
        "counters": counters,
    }


def _is_response(frame: bytes) -> bool:
    return ethernet.decode_udp_frame(frame).dst_port == CONTROL_SRC_PORT


def _stamp(payload: bytes) -> int:
    record, _ = ouch.decode(payload, "to_exchange")
    cl_ord_id = getattr(record, "cl_ord_id", None)
    return int(cl_ord_id[1:9], 16) if cl_ord_id else 0
