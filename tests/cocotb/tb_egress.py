"""cocotb testbench of OrderEgress and FillParser, on Icarus and Verilator.

The ``block`` parameter picks the design under test (``egress`` or ``fills``); the tests of the
other block are skipped. Stimulus, reference and checks are those of the amaranth.sim tests
(``tests/test_egress.py``, ``tests/test_fills.py``): egress frames are compared with the host
codecs' frames, parsed by scapy (IPv4 checksum included) and by the OUCH decoder, under idle
input and back-pressure on ``o``; fills frames are built with scapy and the OUCH encoder,
garbage and truncated ones included, and the fills and counters must equal the reference's.

One coroutine drives the inputs every cycle, waits for ``ReadOnly`` and samples what the coming
clock edge will see, so both simulators see the same handshakes.
"""

import random
import sys
from pathlib import Path

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from tick2quote.hdl.egress import directory_layout, egress_counters_layout, udp_config_layout
from tick2quote.hdl.fills import fill_counters_layout
from tick2quote.hdl.latencystats import sample_layout
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.orders import fill_layout, order_layout
from tick2quote.sim.cocotb_streams import TB, pack, unpack
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.streams import pause_pattern

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import test_egress  # noqa: E402
import test_fills  # noqa: E402

BLOCK = params_from_env().get("block")


async def egress_run(dut, orders, directory, idle, backpressure, seed):
    """The cocotb twin of ``test_egress.run``."""
    dut.config.value = pack(udp_config_layout, test_egress.CONFIG)
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.directory__valid.value = 0
    dut.directory__payload.value = 0
    dut.o__ready.value = 0
    dut.cycle.value = 0
    tb = TB(dut)
    await tb.reset()
    pause_in, pause_out = pause_pattern(idle, seed), pause_pattern(backpressure, seed + 1)
    table, queue, pending_dir = {}, list(orders), list(directory)
    accepted, frames, samples, current = [], [], [], []
    cycle, quiet, offer, entry = 0, 0, None, None
    while quiet < 30:
        dut.cycle.value = cycle & 0xFFFF_FFFF
        if offer is None and queue and not next(pause_in):
            offer = queue.pop(0)
        dut.i__valid.value = int(offer is not None)
        if offer is not None:
            dut.i__payload.value = pack(order_layout, offer)
        if entry is None and pending_dir and cycle % 3 == 0:
            entry = pending_dir[0]
        dut.directory__valid.value = int(entry is not None)
        if entry is not None:
            dut.directory__payload.value = pack(directory_layout, entry)
        ready = not next(pause_out)
        dut.o__ready.value = int(ready)
        await ReadOnly()
        if entry is not None and dut.directory__ready.value:
            pending_dir.pop(0)
            if entry["locate"] < test_egress.SYMBOLS:
                table[entry["locate"]] = entry["stock"].to_bytes(8, "little")
            entry = None
        if offer is not None and dut.i__ready.value:
            accepted.append((cycle, offer, dict(table)))
            offer = None
        latency = unpack(sample_layout, dut.latency.value.to_unsigned())
        if latency["valid"]:
            samples.append(latency["value"])
        o_valid = bool(dut.o__valid.value)
        if o_valid:
            fields = unpack(beat_layout, dut.o__payload.value.to_unsigned())
            current.append((cycle, ready, fields))
            if ready and fields["last"]:
                frames.append(current)
                current = []
        quiet = 0 if (o_valid or queue or offer is not None) else quiet + 1
        await RisingEdge(dut.clk)
        cycle += 1
    assert not current, "a frame was left unfinished"
    counters = unpack(egress_counters_layout, dut.counters.value.to_unsigned())
    return frames, accepted, samples, counters


EGRESS_PATTERNS = [("none", "none"), ("random_60", "none"), ("none", "random_25"),
                   ("bursty", "alternate")]  # fmt: skip


@cocotb.test(skip=BLOCK != "egress")
@cocotb.parametrize(patterns=EGRESS_PATTERNS)
async def egress_frames(dut, patterns):
    idle, backpressure = patterns
    seed = EGRESS_PATTERNS.index(patterns) + 100
    rng = random.Random(seed)
    orders = test_egress.random_orders(rng, params_from_env().get("orders", 80))
    directory = [{"locate": rng.randrange(test_egress.SYMBOLS + 4), "stock": int.from_bytes(
        test_egress.random_symbol(rng).ljust(8, b" "), "little")} for _ in range(30)]  # fmt: skip
    frames, accepted, samples, counters = await egress_run(
        dut, orders, directory, idle, backpressure, seed
    )
    test_egress.check(orders, frames, accepted, samples, backpressure=backpressure != "none")
    assert counters["enter"] + counters["replace"] + counters["cancel"] == len(orders)
    dut._log.info("%d frames, latency samples %s", len(frames), sorted(set(samples))[:5])


async def fills_run(dut, frames, idle, backpressure, seed):
    """The cocotb twin of ``test_fills.run``."""
    dut.address.value = test_fills.ADDRESS_INT
    dut.port.value = test_fills.PORT
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    tb = TB(dut)
    await tb.reset()
    beats = [b for f in frames for b in test_fills.packet_beats(f)]
    pause_in, pause_out = pause_pattern(idle, seed), pause_pattern(backpressure, seed + 1)
    fills, position, quiet = [], 0, 0
    while quiet < 20:
        sending = position < len(beats) and not next(pause_in)
        dut.i__valid.value = int(sending)
        if sending:
            dut.i__payload.value = pack(beat_layout, beats[position])
            position += 1
        ready = not next(pause_out)
        dut.o__ready.value = int(ready)
        await ReadOnly()
        assert dut.i__ready.value == 1
        valid = bool(dut.o__valid.value)
        if valid and ready:
            got = unpack(fill_layout, dut.o__payload.value.to_unsigned())
            fills.append((got["user_ref"], got["quantity"], got["price"]))
        quiet = 0 if position < len(beats) or valid else quiet + 1
        await RisingEdge(dut.clk)
    return fills, unpack(fill_counters_layout(), dut.counters.value.to_unsigned())


FILL_PATTERNS = [("none", "none"), ("random_25", "alternate")]


@cocotb.test(skip=BLOCK != "fills")
@cocotb.parametrize(patterns=FILL_PATTERNS)
async def fills_frames(dut, patterns):
    idle, backpressure = patterns
    seed = FILL_PATTERNS.index(patterns) + 200
    frames = test_fills.fill_frames(seed, params_from_env().get("frames", 80))
    fills, counters = await fills_run(dut, frames, idle, backpressure, seed)
    counts = test_fills.check(frames, fills, counters)
    dut._log.info("%d frames, outcomes %s", len(frames), dict(counts))
