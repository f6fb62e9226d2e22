"""Figures of the gateware feed handler: parse latency, sustained rate, simulation speed.

Runs the ``bench`` test of tests/cocotb/tb_feedhandler.py on Icarus and Verilator: a synthetic
session (about 20 000 messages in frames of every header shape, full-size ones included) plus
malformed traffic, frames back to back at one beat per cycle, no back-pressure. Every event is
checked against the reference models on the way. Prints, per simulator:

- parse latency in cycles, frame beat holding the message's last byte taken on the feed
  handler's input -> event valid on its output (min / max and sample count per event kind; the
  messages end on every lane);
- sustained messages per cycle (messages delivered / input cycles) and events per cycle;
- simulation speed (cycles per second of wall time, Python driving every cycle).

Usage: ``python -m tick2quote.sim.bench_parse [--messages N] [--simulators icarus verilator]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tick2quote.hdl.feedhandler import FeedHandler
from tick2quote.sim.harness import SIMULATORS, run_cocotb


def measure(simulator: str, messages: int) -> dict:
    """Run the bench on ``simulator`` and return its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        run_cocotb(
            lambda **_: FeedHandler(),
            toplevel="feed_handler",
            test_module="tb_feedhandler",
            simulator=simulator,
            params={"session_messages": 600},
            test_params={"bench_out": str(out), "bench_messages": messages},
            testcase="bench",
        )
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--simulators", nargs="+", default=list(SIMULATORS))
    args = parser.parse_args(argv)
    for simulator in args.simulators:
        r = measure(simulator, args.messages)
        print(f"== {simulator}: {r['frames']} frames, {r['beats']} beats, {r['messages']} "
              f"messages, {r['events']} events")  # fmt: skip
        lows = [v[0] for v in r["latency"].values()]
        highs = [v[1] for v in r["latency"].values()]
        samples = sum(v[2] for v in r["latency"].values())
        print(f"parse latency (cycles, last byte's frame beat in -> event valid): "
              f"min {min(lows)} max {max(highs)} over {samples} events")  # fmt: skip
        for kind, (low, high, count) in sorted(r["latency"].items()):
            lanes = "".join(str(lane) for lane in r["end_lanes"][kind])
            print(f"  {kind:<14} min {low} max {high} n={count:<6} message end lanes {lanes}")
        print(
            f"sustained: {r['messages'] / r['cycles']:.3f} messages/cycle, "
            f"{r['events'] / r['cycles']:.3f} events/cycle over {r['cycles']} cycles "
            f"({r['beats'] / r['cycles']:.3f} beats/cycle in, never back-pressured)"
        )
        print(f"simulation: {r['cycles_per_s']:.0f} cycles/s ({r['wall_s']:.1f} s wall)")


if __name__ == "__main__":
    main()
