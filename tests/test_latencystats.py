"""LatencyStats (gateware) in amaranth.sim, read back through ``from_device_registers``.

Random samples (zeros, powers of two and their neighbours, values past the last bucket, with
idle cycles between them) go into the gateware; its registers must hold the exact count, min,
max and sum, each bucket the count of the samples in it by the host's bucket convention
(``pow2_bucket_edges``), and :func:`tick2quote.host.latency.from_device_registers` must accept
them (so they are consistent) and report the exact count, min and max. ``clear`` zeroes all.
"""

import gc
import random

import pytest
from amaranth.sim import Simulator
from tick2quote.hdl.latencystats import LatencyStats
from tick2quote.host.latency import from_device_registers, pow2_bucket_edges


def host_bucket(value: int, buckets: int) -> int:
    """The bucket the host convention puts ``value`` in (independent of the gateware's)."""
    for k in range(buckets - 1):
        lower, upper = pow2_bucket_edges(k)
        if lower <= value <= upper:
            return k
    return buckets - 1


def samples(rng: random.Random, count: int) -> list[int]:
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            out.append(0)
        elif roll < 0.4:
            out.append(max(0, (1 << rng.randrange(32)) + rng.choice([-1, 0, 1])) & 0xFFFF_FFFF)
        else:
            out.append(rng.randrange(1 << rng.randrange(1, 33)))
    return out


def run(values: list[int], buckets: int, clear_at: int | None = None):
    dut = LatencyStats(buckets=buckets)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        rng = random.Random(buckets)
        for n, value in enumerate(values):
            ctx.set(dut.clear, n == clear_at)
            ctx.set(dut.sample.valid, 1)
            ctx.set(dut.sample.value, value)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.sample.valid, 0)
            for _ in range(rng.choice([0, 0, 1, 3])):
                await ctx.tick()
        await ctx.tick().repeat(3)
        out["registers"] = {
            "min": ctx.get(dut.min),
            "max": ctx.get(dut.max),
            "sum": ctx.get(dut.sum),
            "count": ctx.get(dut.count),
            "histogram": [ctx.get(dut.histogram[k]) for k in range(buckets)],
        }

    sim.add_testbench(bench)
    sim.run()
    return out["registers"]


@pytest.mark.parametrize("buckets", [32, 8, 33])
def test_registers_against_host(buckets):
    values = samples(random.Random(buckets), 400)
    registers = run(values, buckets)
    assert registers["count"] == len(values)
    assert registers["min"] == min(values) and registers["max"] == max(values)
    assert registers["sum"] == sum(values)
    want = [0] * buckets
    for value in values:
        want[host_bucket(value, buckets)] += 1
    assert registers["histogram"] == want
    summary = from_device_registers(
        registers["min"], registers["max"], registers["sum"], registers["count"],
        registers["histogram"],
    )  # fmt: skip
    assert (summary.count, summary.min, summary.max) == (len(values), min(values), max(values))
    assert summary.mean == sum(values) / len(values)


def test_clear():
    values = samples(random.Random(1), 60)
    registers = run(values, 32, clear_at=40)
    kept = values[40:]  # the sample offered with the clear pulse is discarded
    assert registers["count"] == len(kept) - 1
    rest = kept[1:]
    assert (registers["min"], registers["max"], registers["sum"]) == (min(rest), max(rest),
                                                                      sum(rest))  # fmt: skip


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameters_checked():
    with pytest.raises(ValueError, match=r"buckets must be an integer in 2 \.\. 33, not 1"):
        LatencyStats(buckets=1)
    with pytest.raises(ValueError, match=r"count_width must be an integer in 1 \.\. 64, not 0"):
        LatencyStats(count_width=0)
    gc.collect()
