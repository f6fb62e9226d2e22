"""``t2q soak``: fuzzed and mutated frames through the whole core RTL (the device twin) against
the reference models, then the host driver against misbehaving devices; a closing table of
frames tried, faults injected and violations found (glue over :mod:`tick2quote.sim.soak` and
:mod:`.soak`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .soak import FaultResult, SoakReport

__all__ = ["soak", "report_json", "report_tables"]


def _total(report: SoakReport) -> int:
    """Violations found, each counted once (a ``counter:NAME`` entry details a
    ``counter_mismatch``, an ``unaccounted:``/``overflow:`` entry stands alone)."""
    return sum(v for k, v in report.violations.items() if not k.startswith("counter:"))


def report_json(report: SoakReport, faults: list[FaultResult]) -> dict:
    """The soak's figures as a JSON-ready dict."""
    return {
        "frames_tried": report.tried,
        "frames": dict(report.frames),
        "faults_injected": dict(sorted(report.injected.items())),
        "host_faults": {**dict(report.host_faults), **{f.kind: f.outcome for f in faults}},
        "host_faults_ok": all(f.ok for f in faults),
        "checks": dict(report.checks),
        "violations": dict(report.violations),
        "violations_total": _total(report),
        "reproducers": report.reproducers,
        "twin": dict(report.twin),
        "seconds": round(report.seconds, 1),
    }


def report_tables(report: SoakReport, faults: list[FaultResult]) -> list:
    """The closing tables (rich): what was tried, the faults, the checks and the violations."""
    from rich.table import Table

    tried = Table(title="Soak: frames tried through the core RTL (device twin)")
    tried.add_column("channel")
    tried.add_column("datagrams", justify="right")
    for channel, count in sorted(report.frames.items()):
        tried.add_row(channel, f"{count:,}")
    tried.add_row("[b]total", f"[b]{report.tried:,}")

    injected = Table(title="Faults injected")
    injected.add_column("kind")
    injected.add_column("count", justify="right")
    for kind, count in sorted(report.injected.items()):
        if kind != "clean":
            injected.add_row(kind, f"{count:,}")
    for kind, count in sorted(report.host_faults.items()):
        injected.add_row(f"host: {kind}", f"{count:,}")
    for fault in faults:
        verdict = "ok" if fault.ok else "[red]FAILED"
        injected.add_row(
            f"host: {fault.kind}", f"{verdict}: {fault.outcome}, {fault.seconds:.2f} s"
        )

    checks = Table(title="Checks and violations")
    checks.add_column("what")
    checks.add_column("count", justify="right")
    for name, count in sorted(report.checks.items()):
        checks.add_row(name, f"{count:,}")
    total = _total(report) + sum(not f.ok for f in faults)
    for name, count in sorted(report.violations.items()):
        checks.add_row(f"[red]violation: {name}", f"[red]{count:,}")
    checks.add_row("[b]violations found", f"[b]{total:,}")
    return [tried, injected, checks]


@click.command()
@click.option("--frames", default=20_000, show_default=True, help="Datagrams to send in all.")
@click.option("--seed", default=1, show_default=True, help="Random seed (reproducible).")
@click.option("--batch", default=400, show_default=True, help="Feed datagrams between checks.")
@click.option(
    "--epoch", default=10_000, show_default=True, help="Frames per twin process (then killed)."
)
@click.option("--ifg", default=48, show_default=True, help="Idle cycles between frames in.")
@click.option("--out", "out_dir", default="build/soak", show_default=True,
              type=click.Path(file_okay=False), help="Where reproducers are written.")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the figures.")
@click.option("--record", is_flag=True, help="Write every epoch's datagrams to --out too.")
@click.option("--first-epoch", default=0, show_default=True, help="Number of the first epoch.")
@click.option("--stop-at-first", is_flag=True, help="End the run at the first violation.")
@click.option("--host-faults/--no-host-faults", default=True, show_default=True,
              help="Also drive the host driver against misbehaving devices.")  # fmt: skip
def soak(
    frames,
    seed,
    batch,
    epoch,
    ifg,
    out_dir,
    json_path,
    record,
    first_epoch,
    stop_at_first,
    host_faults,
):
    """Fuzz the whole core RTL (the device twin) against the reference models."""
    from rich.console import Console
    from rich.progress import Progress

    from ..sim.soak import SoakConfig, SoakRunner
    from .soak import host_faults as run_host_faults

    console = Console(stderr=True)
    config = SoakConfig(frames=frames, batch=batch, epoch=epoch, ifg=ifg, seed=seed,
                        out_dir=Path(out_dir), record=record, first_epoch=first_epoch,
                        stop_at_first=stop_at_first)  # fmt: skip
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("soak", total=frames)
        runner = SoakRunner(config, on_progress=lambda n: progress.update(task, completed=n))
        report = runner.run()
    faults = []
    if host_faults:
        from ..sim.twin import twin_config
        from .modeldevice import model_description

        faults = run_host_faults(model_description(twin_config()), token=0x5EED)
    out = Console()
    for table in report_tables(report, faults):
        out.print(table)
    for path in report.reproducers:
        out.print(f"reproducer: {path}")
    data = report_json(report, faults)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(data, indent=2) + "\n")
    if data["violations_total"] or not data["host_faults_ok"]:
        raise SystemExit(1)
