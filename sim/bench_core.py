"""Figures of the whole core: tick-to-quote latency in cycles and the sustained message rate.

Runs tests/cocotb/tb_core.py on Verilator with a generated session (every order checked against
the reference models on the way, except in the overload runs) and prints:

- **unloaded** tick-to-quote: one message per frame, the device idle between frames, so each
  sample is the pipeline's own latency (cycles from the frame beat holding the message's last
  byte taken on ``rx`` to the order frame's first beat valid on ``tx``);
- **loaded** tick-to-quote: 1 to 8 messages per frame, frames paced at a fixed number of idle
  cycles per message, so orders queue behind each other (and behind top-of-book frames on the
  one transmit port);
- **overload**: frames back to back with less pacing; how many messages per cycle the core
  takes before its buffers overflow (each overflow marks the book stale, so nothing wrong is
  quoted, but the core stops quoting until recovered).

With ``--synth``, also an out-of-context ECP5-85 -8 build of the core alone at the given
capacity (Yosys + nextpnr from YoWASP): post-route Fmax, resources and the critical path.

Usage: ``python -m tick2quote.sim.bench_core [--messages N] [--clock-mhz F] [--synth]
[--synth-json PATH] [--symbols S --sets N --ways W --depth D]``; ``--synth-json`` writes the
build's figures in the form ``t2q bench --synth-json`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from ..hdl.core import Core
from ..hdl.coremap import CoreConfig
from ..host.latency import LatencyRecorder
from ..sim.models.pricing import QuoteParams
from .corescenario import small_config
from .harness import run_cocotb

#: Quote busily (most book changes move a quote) so that the figures have many samples.
BUSY = QuoteParams(spread_bps=40, band_bps=2000, quote_size=100, skew_num=3, skew_shift=4)


def _core(**params) -> Core:
    params["peers"] = tuple(params["peers"])
    params["default"] = QuoteParams(**params["default"])
    return Core(CoreConfig(**params))


def core_params(cfg: CoreConfig) -> dict:
    """``cfg`` as the JSON-ready build parameters of the cocotb harness."""
    values = dataclasses.asdict(cfg)
    values["default"] = dataclasses.asdict(cfg.default)
    return values


def run(messages: int, *, pace: int, per_packet: int, check: bool, seed: int = 7) -> dict:
    """One Verilator run of the core testbench; its figures (see tb_core._figures)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "core.json"
        run_cocotb(
            _core,
            toplevel="core",
            test_module="tb_core",
            simulator="verilator",
            params=core_params(small_config(default=BUSY)),
            test_params={
                "seed": seed,
                "messages": messages,
                "feed_symbols": 12,
                "idle": "none",
                "backpressure": "none",
                "kill": False,
                "fills": 0,
                "pace": pace,
                "per_packet": per_packet,
                "check": check,
            },
            extra_env={"T2Q_CORE_BENCH": str(out)},
        )
        return json.loads(out.read_text())


def _line(name: str, samples: list[int], clock_mhz: float) -> str:
    rec = LatencyRecorder(name, "cycles", highest=1 << 20)
    rec.record_all(samples)
    s = rec.summary()
    if not s.count:
        return f"{name}: no samples"
    ns = 1000.0 / clock_mhz
    return (
        f"{name}: min {s.min} / p50 {s.p50} / p99 {s.p99} / max {s.max} cycles "
        f"(n={s.count}); at {clock_mhz:g} MHz min {s.min * ns:.1f} ns, p50 {s.p50 * ns:.1f} ns"
    )


def synthesis_figures(report, cfg: CoreConfig) -> dict:
    """An out-of-context build's figures as JSON-ready data (what ``t2q bench --synth-json``
    reads): ``fmax_mhz``, ``target_mhz``, ``usage`` (cell -> [used, available]),
    ``critical_nets`` and the capacities built (``config``)."""
    capacities = ("symbols", "order_sets", "order_ways", "ladder_depth", "ref_window")
    return {
        "name": report.name,
        "device": "LFE5UM5G-85F -8 (out of context)",
        "fmax_mhz": report.fmax_mhz,
        "target_mhz": report.target_mhz,
        "usage": {cell: list(pair) for cell, pair in report.usage.items()},
        "critical_nets": report.critical_nets[:12],
        "config": {name: getattr(cfg, name) for name in capacities},
    }


def print_synthesis(args) -> None:
    """Out-of-context ECP5-85 -8 build of the core alone (see :mod:`tick2quote.boards.ooc`);
    with ``args.synth_json`` the figures are also written there as JSON."""
    from ..boards.build import PLACE_AND_ROUTE
    from ..boards.ooc import synthesize

    cfg = CoreConfig(symbols=args.symbols, order_sets=args.sets, order_ways=args.ways,
                     ladder_depth=args.depth)  # fmt: skip
    report = synthesize(Core(cfg), "core", freq_mhz=args.clock_mhz, nextpnr_args=PLACE_AND_ROUTE)
    if getattr(args, "synth_json", None):
        Path(args.synth_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.synth_json).write_text(json.dumps(synthesis_figures(report, cfg), indent=2))
    orders = args.sets * args.ways
    print(
        f"core alone on ECP5-85 -8 ({args.symbols} symbols, {orders} orders, ladder depth "
        f"{args.depth}): post-route Fmax {report.fmax_mhz} MHz (target {args.clock_mhz:g})"
    )
    for cell, (used, total) in sorted(report.usage.items()):
        print(f"  {cell:<14} {used:>6} / {total}")
    if report.critical_nets:
        print("  critical path nets: " + " -> ".join(report.critical_nets[:12]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--clock-mhz", type=float, default=156.25)
    parser.add_argument("--synth", action="store_true", help="also build the core for ECP5")
    parser.add_argument("--synth-only", action="store_true", help="only the ECP5 build")
    parser.add_argument("--synth-json", help="also write the ECP5 build's figures here (JSON)")
    parser.add_argument("--symbols", type=int, default=1024)
    parser.add_argument("--sets", type=int, default=4096)
    parser.add_argument("--ways", type=int, default=4)
    parser.add_argument("--depth", type=int, default=8)
    args = parser.parse_args(argv)
    if args.synth or args.synth_only:
        print_synthesis(args)
    if args.synth_only:
        return
    unloaded = run(args.messages, pace=120, per_packet=1, check=True)
    print(_line("tick-to-quote, unloaded", unloaded["latencies"], args.clock_mhz))
    loaded = run(args.messages, pace=25, per_packet=8, check=True)
    print(_line("tick-to-quote, loaded (8 msg/frame, 25 idle cycles/msg)", loaded["latencies"],
                args.clock_mhz))  # fmt: skip
    for pace in (0, 5, 10, 15, 20):
        r = run(args.messages, pace=pace, per_packet=8, check=False)
        c = r["counters"]
        print(
            f"overload, {pace:>2} idle cycles/msg: {r['messages'] / r['cycles']:.3f} msg/cycle "
            f"offered, feed buffer overflows {c['feed_overflow']}, stale marks "
            f"{c['core_stale_marks']}, orders {r['orders']} (model without overload "
            f"{r['model_orders']})"
        )


if __name__ == "__main__":
    main()
