"""``t2q twin``: run the device twin in the foreground until Ctrl-C."""

from __future__ import annotations

import json
import time

import click

__all__ = ["twin"]


def _stats_line(stats: dict) -> str:
    return (
        f"{stats['cycles']:>14,} cycles  {stats['cycles_per_s'] / 1e6:7.2f} M cycles/s  "
        f"in {stats['frames_in']:,}  out {stats['frames_out']:,}  "
        f"queued {stats['queued']:,}  dropped {stats['dropped_total']:,}"
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--feed-port", default=0, show_default=True, help="Feed socket port (0: free).")
@click.option("--tick-port", default=0, show_default=True, help="Tick socket port (0: free).")
@click.option("--control-port", default=0, show_default=True, help="Control socket port.")
@click.option("--order-port", default=0, show_default=True, help="Order (OUCH) socket port.")
@click.option("--tap", type=int, default=None, help="Send every frame in/out to this port.")
@click.option("--symbols", type=int, default=None, help="Symbols (default: 64; --full: 1024).")
@click.option("--order-sets", type=int, default=None, help="Order table sets.")
@click.option("--order-ways", type=int, default=None, help="Order table ways.")
@click.option("--ladder-depth", type=int, default=None, help="Price levels per side.")
@click.option("--ref-window", type=int, default=None, help="UserRefNums kept for fills.")
@click.option("--full", is_flag=True, help="The core's full capacities (slower build).")
@click.option("--gateway-port", type=int, default=None, help="Where orders go (127.0.0.1).")
@click.option("--tob-port", type=int, default=None, help="Where the top-of-book feed goes.")
@click.option(
    "--tail", default=100_000, show_default=True, help="Idle cycles simulated after activity."
)
@click.option("--poll-cycles", default=256, show_default=True, help="Cycles between socket polls.")
@click.option("--ifg", default=3, show_default=True, help="Idle cycles between frames in.")
@click.option(
    "--pgo/--no-pgo",
    default=False,
    show_default=True,
    help="Optimise the build with a profile (twice the first build time, a faster twin).",
)
@click.option("--stats", "show_stats", is_flag=True, help="Print statistics every second.")
@click.option("--json", "as_json", is_flag=True, help="Print the ready and stats lines as JSON.")
def twin(
    host,
    feed_port,
    tick_port,
    control_port,
    order_port,
    tap,
    symbols,
    order_sets,
    order_ways,
    ladder_depth,
    ref_window,
    full,
    gateway_port,
    tob_port,
    tail,
    poll_cycles,
    ifg,
    pgo,
    show_stats,
    as_json,
):
    """Run the device twin: the core, Verilated, behind UDP sockets, until Ctrl-C.

    The first run builds the twin (minutes at full capacity); later runs reuse the build.
    The session token is drawn at random per build and kept in the file printed at start.
    """
    from ..sim.twin import Twin, TwinBuildError, TwinError, twin_config

    overrides = {
        k: v
        for k, v in dict(
            symbols=symbols,
            order_sets=order_sets,
            order_ways=order_ways,
            ladder_depth=ladder_depth,
            ref_window=ref_window,
            gateway_port=gateway_port,
            tob_port=tob_port,
        ).items()
        if v is not None
    }
    ports = {"feed": feed_port, "tick": tick_port, "control": control_port, "order": order_port}

    def on_stats(stats):
        click.echo(json.dumps(stats) if as_json else _stats_line(stats))

    runner = Twin(
        twin_config(full=full, **overrides),
        host=host,
        ports=ports,
        tap=tap,
        tail=tail,
        poll_cycles=poll_cycles,
        ifg=ifg,
        pgo=pgo,
        stats_interval=show_stats,
        on_stats=on_stats,
        random_token=True,
    )
    click.echo("building the twin (cached) ...", err=True)
    try:
        runner.start()
    except (TwinError, TwinBuildError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if as_json:
            click.echo(json.dumps({**runner.ready, "token_file": str(runner.token_path)}))
        else:
            cfg = runner.config
            for role, port in runner.ports.items():
                click.echo(f"{role:<8} {runner.ready['host']}:{port}")
            click.echo(f"orders   -> 127.0.0.1:{cfg.gateway_port}")
            click.echo(f"tob      -> 127.0.0.1:{cfg.tob_port}")
            if tap is not None:
                click.echo(f"tap      -> 127.0.0.1:{tap}")
            click.echo(f"token    {runner.token_path}")
            click.echo(f"build    {runner.build.directory}")
            click.echo("running; Ctrl-C stops it")
        while runner.running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        final = runner.stop()
    if final is None:
        raise click.ClickException(f"the twin died{runner.stderr_tail()}")
    click.echo(json.dumps(final) if as_json else "stopped: " + _stats_line(final))
