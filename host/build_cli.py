"""``t2q build``: build a board's bitstream (or vendor project) and print what it gave."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["build"]

_BOARDS = ("ecpix5", "butterstick", "colorlight", "kcu105")


def _fraction(pair) -> str:
    if pair is None:
        return "-"
    used, total = pair
    return f"{used} / {total} ({100 * used / total:.0f}%)" if total else str(used)


@click.command()
@click.option("--board", required=True, type=click.Choice(_BOARDS), help="Board to build for.")
@click.option("--capacity", default=None, metavar="SYMBOLSxORDERS[xWAYS][,depth=N][,refs=N]",
              help="Core capacity, e.g. 256x8192 or 4x64x2,depth=4,refs=64; default: the "
                   "board's.")  # fmt: skip
@click.option("--ip", default=None, help="The device's IPv4 address (default 192.168.1.2).")
@click.option("--peer", "peers", multiple=True, required=True,
              help="Host IPv4 allowed on the control port (repeat; no other one).")  # fmt: skip
@click.option("--token", default=None,
              help="Session token (0x hex); default: drawn once, kept in DIR/token.")  # fmt: skip
@click.option("--core-clock", type=float, default=None,
              help="Requested core clock in MHz; default: the board's (ECP5 boards 50, "
                   "KCU105 156.25).")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="nextpnr placement seed (ECP5 boards; default: nextpnr's own).")  # fmt: skip
@click.option("--build-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build directory (default: build/boards/<board>).")  # fmt: skip
@click.option("--program", is_flag=True, help="Load the bitstream with openFPGALoader.")
def build(board, capacity, ip, peers, token, core_clock, seed, build_dir, program):
    """Synthesise, place and route a board top; print Fmax per clock and utilisation.

    For the KCU105 (no Vivado here) the complete Vivado project is written instead.
    """
    from ..boards import build as board_build
    from ..boards.capacity import DeviceIdentity

    try:
        identity = DeviceIdentity(
            peers=tuple(peers), token=None if token is None else int(token, 0),
            **({"ip": ip} if ip else {}),
        )  # fmt: skip
        report = board_build.run_build(
            board, capacity=capacity, build_dir=build_dir, identity=identity,
            core_clock=None if core_clock is None else core_clock * 1e6, seed=seed,
        )  # fmt: skip
    except board_build.BuildError as exc:
        partial = getattr(exc, "report", None)
        if partial is not None:
            _print_report(partial)
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _print_report(report)
    if program:
        if report.bitstream is None:
            raise click.UsageError(f"{board}: nothing to program (vendor project only)")
        board_build.program(report)
        click.echo("programmed")


def _print_report(report) -> None:
    click.echo(f"board {report.board} ({report.device}), capacity {report.capacity}, "
               f"{report.wall_seconds:.1f} s")  # fmt: skip
    if report.project is not None:
        click.echo(f"Vivado not run: project written to {report.project.parent} "
                   f"(run `vivado -mode batch -source {report.project.name}` there)")  # fmt: skip
        return
    for timing in report.clocks.values():
        verdict = "PASS" if timing.passed else "FAIL"
        click.echo(f"  Fmax {timing.clock}: {timing.fmax_mhz:.2f} MHz "
                   f"(constraint {timing.target_mhz:.2f} MHz, {verdict})")  # fmt: skip
    click.echo(f"  LUTs {_fraction(report.luts)}, FFs {_fraction(report.flip_flops)}, "
               f"block RAM {_fraction(report.block_ram)}, DSP {_fraction(report.dsp)}")  # fmt: skip
    if report.bitstream is not None:
        click.echo(f"  bitstream {report.bitstream}")
        click.echo(f"  session   {report.build_dir / 'token'} (reach it with "
                   f"`t2q run -t udp://IP:PORT --twin-build {report.build_dir}`)")  # fmt: skip
