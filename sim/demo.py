"""``t2q demo``: a generated feed through the whole tick-to-quote path, shown as tables.

The feed is written as a pcap of MoldUDP64 frames, read back frame by frame and run through the
reference model of the core (ingress, book, quoter).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..host.capture import read_frames
from .feed import FeedConfig, generate, write_pcap
from .models.core import CoreModel

__all__ = ["run_demo"]


def run_demo(
    *, seed: int, symbols: int, messages: int, out_dir: Path, console: Console | None = None
) -> CoreModel:
    """Generate, write, replay and report; returns the model for inspection."""
    console = console or Console(width=max(Console().width, 110))
    out_dir.mkdir(parents=True, exist_ok=True)
    pcap = out_dir / "feed.pcap"

    t0 = time.perf_counter()
    msgs = generate(FeedConfig(seed=seed, symbols=symbols, messages=messages))
    write_pcap(pcap, msgs, per_packet=8)
    t1 = time.perf_counter()
    console.print(
        f"[bold]feed[/]: {len(msgs):,} ITCH 5.0 messages, {symbols} symbols, seed {seed} "
        f"-> {pcap} ({t1 - t0:.2f} s)"
    )

    core = CoreModel()
    orders = []
    frames = 0
    for cycle, (_ts, frame, _offset) in enumerate(read_frames(pcap)):
        out = core.frame(frame, cycle)
        orders.extend(out.orders)
        frames += 1
    t2 = time.perf_counter()
    rate = core.counters["messages"] / max(t2 - t1, 1e-9)
    console.print(
        f"[bold]reference core[/]: {frames:,} frames, {core.counters['messages']:,} messages, "
        f"{len(orders):,} orders ({rate:,.0f} messages/s in the Python model)"
    )
    console.print(_book_table(core, orders))
    console.print(_orders_table(orders))
    console.print(_counters_table(core))
    return core


def _px(value: int) -> str:
    return f"{value / 10_000:,.2f}" if value else "-"


def _level(qty: int, price: int) -> str:
    return f"{qty:,} @ {_px(price)}" if qty else "-"


def _book_table(core: CoreModel, orders, rows: int = 12) -> Table:
    table = Table(title="Top of book and our quotes (busiest symbols)")
    for name in ("locate", "symbol", "best bid", "best ask", "our bid", "our ask", "position"):
        table.add_column(name, justify="right", no_wrap=True)
    busiest = Counter(o.locate for o in orders).most_common(rows)
    for loc, _count in busiest:
        bbo = core.book.bbo(loc)
        live = core.quoter.live(loc)
        bid = live.get("B")
        ask = live.get("S")
        table.add_row(
            str(loc),
            core.book.symbol(loc) or "?",
            _level(bbo.bid_sz, bbo.bid_px),
            _level(bbo.ask_sz, bbo.ask_px),
            _level(bid[1], bid[2]) if bid else "-",
            _level(ask[1], ask[2]) if ask else "-",
            f"{core.quoter.position(loc):,}",
        )
    return table


def _orders_table(orders, rows: int = 10) -> Table:
    table = Table(title=f"Last {min(rows, len(orders))} of {len(orders):,} OUCH 5.0 orders")
    for name in ("UserRefNum", "kind", "locate", "side", "qty", "price", "orig"):
        table.add_column(name, justify="right")
    for o in orders[-rows:]:
        table.add_row(
            str(o.user_ref_num),
            o.kind,
            str(o.locate),
            o.side,
            f"{o.quantity:,}",
            _px(o.price),
            str(o.orig_user_ref_num or "-"),
        )
    return table


def _counters_table(core: CoreModel) -> Table:
    table = Table(title="Counters")
    table.add_column("block")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for block, counters in (
        ("ingress", core.ingress.counters),
        ("book", core.book.counters),
        ("quoter", core.quoter.counters),
        ("core", core.counters),
    ):
        for name, value in sorted(counters.items()):
            table.add_row(block, name, f"{value:,}")
    return table
