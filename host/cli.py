"""The ``t2q`` command line: thin glue over the host, simulation and board layers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import monitor_cli
from .bench_cli import bench
from .build_cli import build
from .protocol.errors import DecodeError
from .run_cli import run
from .soak_cli import soak
from .twin_cli import twin

__all__ = ["main"]


class _FileError(click.ClickException):
    """A one-line error naming the file and the byte offset."""

    def __init__(self, path, exc: DecodeError):
        super().__init__(f"{path}: {exc}")


@click.group()
@click.version_option(package_name="tick2quote")
def main():
    """tick2quote: FPGA tick-to-quote toolkit (ITCH 5.0 in, OUCH 5.0 out)."""


@main.command()
@click.option("--seed", default=1, show_default=True, help="Random seed (reproducible).")
@click.option("--symbols", default=200, show_default=True, help="Number of symbols.")
@click.option("--messages", default=100_000, show_default=True, help="Order-flow messages.")
@click.option("--itch", "itch_path", type=click.Path(dir_okay=False), help="Write a day file.")
@click.option("--pcap", "pcap_path", type=click.Path(dir_okay=False), help="Write a pcap.")
@click.option("--ticks", "tick_path", type=click.Path(dir_okay=False), help="Write tick records.")
@click.option("--per-packet", default=8, show_default=True, help="Messages per MoldUDP64 packet.")
@click.option("--vlan", type=int, default=None, help="802.1Q VLAN id for the pcap frames.")
def feed(seed, symbols, messages, itch_path, pcap_path, tick_path, per_packet, vlan):
    """Generate a realistic synthetic ITCH 5.0 session."""
    from ..sim import feed as feedgen

    if not (itch_path or pcap_path or tick_path):
        raise click.UsageError("give at least one of --itch, --pcap, --ticks")
    config = feedgen.FeedConfig(seed=seed, symbols=symbols, messages=messages)
    msgs = feedgen.generate(config)
    if itch_path:
        feedgen.write_itch(itch_path, msgs)
    if pcap_path:
        feedgen.write_pcap(pcap_path, msgs, per_packet=per_packet, vlan=vlan)
    if tick_path:
        feedgen.write_ticks(tick_path, msgs)
    written = ", ".join(p for p in (itch_path, pcap_path, tick_path) if p)
    click.echo(f"{len(msgs)} messages, {symbols} symbols, seed {seed} -> {written}")


def _json_value(value):
    if isinstance(value, bytes):
        return value.hex()
    return value


def message_json(item) -> dict:
    """The JSON form of a decoded message: ``type`` first, then its fields in snake_case."""
    msg = item.message
    if item.kind == "tick":
        out = {"type": "tick", **msg._asdict()}
    elif hasattr(msg, "_asdict"):
        out = {k: _json_value(v) for k, v in msg._asdict().items()}
    else:  # UnknownMessage
        out = {"type": msg.type, "length": len(msg.data), "data": msg.data.hex()}
    if item.kind == "ouch" and item.appendage:
        out["appendage"] = item.appendage.hex()
    if item.sequence is not None:
        out["sequence"] = item.sequence
    return out


def _message_line(item) -> str:
    fields = message_json(item)
    kind = fields.pop("type")
    return f"{item.offset:>10} {item.kind:<4} {kind:<4} " + " ".join(
        f"{k}={v}" for k, v in fields.items()
    )


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--format", "fmt", type=click.Choice(["pcap", "itch", "tick"]), help="Override detection."
)
def decode(path, as_json, fmt):
    """Print every message of a pcap, ITCH day file or tick-record file."""
    from .capture import read_messages

    out = sys.stdout
    try:
        for item in read_messages(path, fmt):
            if as_json:
                out.write(json.dumps(message_json(item)) + "\n")
            else:
                out.write(_message_line(item) + "\n")
    except DecodeError as exc:
        out.flush()
        raise _FileError(path, exc) from None


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--format", "fmt", type=click.Choice(["pcap", "itch"]), help="Override detection.")
def book(path, as_json, fmt):
    """Print the reference book's top of book after every book-changing message."""
    from ..sim.models.book import BookModel
    from .capture import read_messages
    from .protocol.itch import BOOK_TYPES

    model = BookModel()
    out = sys.stdout
    try:
        for index, item in enumerate(read_messages(path, fmt)):
            msg = item.message
            if item.kind != "itch":
                raise click.ClickException(f"{path}: not an ITCH feed ({item.kind} message)")
            model.apply(msg, item.sequence)
            if msg.type not in BOOK_TYPES:
                continue
            bbo = model.bbo(msg.locate)
            row = {
                "msg": index,
                "locate": msg.locate,
                "bid_px": bbo.bid_px,
                "bid_sz": bbo.bid_sz,
                "ask_px": bbo.ask_px,
                "ask_sz": bbo.ask_sz,
                "stale": bbo.stale,
            }
            if as_json:
                out.write(json.dumps(row) + "\n")
            else:
                out.write(
                    f"{index:>9} {msg.type} locate={msg.locate:<5} "
                    f"{bbo.bid_sz:>7} @ {bbo.bid_px / 1e4:<12.4f} | "
                    f"{bbo.ask_sz:>7} @ {bbo.ask_px / 1e4:<12.4f}"
                    + ("  STALE" if bbo.stale else "")
                    + "\n"
                )
    except DecodeError as exc:
        out.flush()
        raise _FileError(path, exc) from None


@main.command()
@click.option("--seed", default=7, show_default=True)
@click.option("--symbols", default=50, show_default=True)
@click.option("--messages", default=20_000, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="build/demo",
    show_default=True,
    help="Where the generated feed is written.",
)
def demo(seed, symbols, messages, out_dir):
    """Run a generated feed through the whole tick-to-quote path and show the result."""
    from ..sim.demo import run_demo

    run_demo(seed=seed, symbols=symbols, messages=messages, out_dir=Path(out_dir))


main.add_command(build)
main.add_command(monitor_cli.monitor)
main.add_command(twin)
main.add_command(run)
main.add_command(bench)
main.add_command(soak)


if __name__ == "__main__":
    main()
