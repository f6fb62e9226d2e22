"""What ``t2q monitor`` shows: readings of a device, the figures and alerts derived from them,
the Prometheus text exposition and the terminal dashboard.

Everything here is pure (no sockets, no clock, no terminal): a :class:`Reading` is taken by
:func:`take_reading`, two consecutive readings give :class:`Figures` (:func:`figures`), and
:func:`alerts`, :func:`prometheus_text` and :func:`dashboard` are functions of those.

Where each figure comes from
----------------------------
Latency
    The device's own registers (:meth:`~.device.Device.latency`): cycles from the last byte of
    the triggering message in to the first byte of the order out, converted to ns at the
    device's ``clock_hz``. ``avg`` and ``p99`` are since the statistics were last cleared; p99
    is the upper edge of its power-of-two bucket (an upper bound). ``interval avg`` is the
    mean of the samples taken between the two readings (sum and count deltas).
Orders by type, fills, messages, drops, overload
    Device counters (deltas between readings, 32-bit counters wrapping): ``egress_enter`` /
    ``_replace`` / ``_cancel``, ``quoter_fills``, ``feed_mold_messages`` + tick events. Drops
    are the counters of data lost (:func:`drop_counters`); overload those that move when the
    device cannot keep up (:func:`overload_counters`).
PnL, positions, active symbols
    The device does not publish the prices of its fills, so these come from the traffic the
    monitor sees: the twin's tap (:mod:`.protocol.tap`, every frame into and out of the core),
    read by a :class:`Ledger`. PnL is the cash of every fill plus the position at the mark (the
    last mid of the top-of-book feed when seen, else the last fill price). Without a tap (a
    board) they are ``None`` and shown as ``n/a``; fill counts still come from the device.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from .device import Device, OrderDecoder, OrderMessage, Top, decode_top, to_ns
from .latency import LatencySummary
from .protocol import ethernet, itch, ouch, tap
from .protocol.errors import DecodeError
from .transport import Datagram

__all__ = [
    "Thresholds",
    "LedgerView",
    "Ledger",
    "Reading",
    "Figures",
    "Alert",
    "ALERTS",
    "drop_counters",
    "overload_counters",
    "take_reading",
    "figures",
    "alerts",
    "prometheus_text",
    "dashboard",
]

_WRAP = 1 << 32
_ORDER_KINDS = ("enter", "replace", "cancel")
_DROP_SUFFIXES = ("_overflow", "_dropped", "_truncated", "_bad_checksum", "_malformed")
_OVERLOAD = ("tob_dropped", "book_table_full", "busy")
#: Alert names, in the order they are checked.
ALERTS = ("high_latency", "large_loss", "large_position", "overload", "drops")


def drop_counters(names) -> list[str]:
    """The counters of data lost on the way in or out: buffer overflows, frames dropped or cut
    short, bad checksums, malformed packets, and the messages of MoldUDP64 gaps."""
    return sorted(n for n in names if n.endswith(_DROP_SUFFIXES) or n == "feed_mold_gap_messages")


def overload_counters(names) -> list[str]:
    """The counters that move when the device cannot keep up: buffer overflows, top-of-book
    updates dropped, a full order table, control requests refused as busy."""
    return sorted(n for n in names if n.endswith("_overflow") or n in _OVERLOAD)


@dataclass(frozen=True)
class Thresholds:
    """When an alert fires. ``None`` disables one.

    ``p99_ns``: p99 tick-to-quote above it; ``max_loss``: PnL below minus this (dollars);
    ``max_position``: any symbol's absolute position above it (shares); ``max_message_rate``:
    messages/s above it is an overload, as is any overload counter moving; ``max_drops``: more
    drops than this between two readings.
    """

    p99_ns: float | None = 5_000.0
    max_loss: float | None = 10_000.0
    max_position: int | None = 5_000
    max_message_rate: float | None = None
    max_drops: int | None = 0


@dataclass(frozen=True)
class LedgerView:
    """A :class:`Ledger` at one moment: PnL in dollars, positions by symbol key, fills seen,
    fills naming an order never seen, and symbols with live orders."""

    pnl: float
    positions: Mapping
    fills: int
    unknown_fills: int
    active: int


class Ledger:
    """Positions, cash and PnL from the order traffic the monitor sees.

    Feed it the device's orders (:meth:`on_order`), the exchange's fills (:meth:`on_fill`) and
    top-of-book records (:meth:`on_top`, for the marks), or every datagram of the twin's tap
    (:meth:`on_tap`), which holds all three. ``ports`` are the device's ``order_port``,
    ``tob_port`` and ``feed_port`` (register values) that sort tapped frames. A symbol is keyed
    by its Stock Locate when known (see :class:`~.device.OrderDecoder`), else by its symbol
    text. Prices are ``Price(4)`` units; PnL is in dollars.
    """

    def __init__(self, order_port: int = 0, tob_port: int = 0, feed_port: int = 0):
        self.decoder = OrderDecoder()
        self.kinds = {
            (tap.OUT, order_port): "orders",
            (tap.IN, order_port): "fills",
            (tap.OUT, tob_port): "tob",
            (tap.IN, feed_port): "feed",
        }
        self.skipped = 0
        self._owner: dict[int, tuple] = {}  # UserRefNum -> (key, sign)
        self._open: dict[int, int] = {}  # live UserRefNum -> open quantity
        self.positions: Counter = Counter()
        self.cash: Counter = Counter()
        self.marks: dict = {}
        self._mids: dict = {}
        self.fills = self.unknown_fills = 0

    def on_order(self, order: OrderMessage) -> None:
        """One order the device sent."""
        if order.type == "X":
            self._open.pop(order.user_ref, None)
            return
        if order.type == "U":
            self._open.pop(order.orig_user_ref, None)
        key = order.locate if order.locate is not None else order.symbol
        self._owner[order.user_ref] = (key, 1 if order.side == "B" else -1)
        self._open[order.user_ref] = order.qty

    def on_fill(self, user_ref: int, quantity: int, price: int) -> None:
        """One Order Executed from the exchange."""
        owner = self._owner.get(user_ref)
        if owner is None:
            self.unknown_fills += 1
            return
        key, sign = owner
        self.fills += 1
        self.positions[key] += sign * quantity
        self.cash[key] -= sign * quantity * price
        self.marks[key] = self._mids.get(key, price)
        if user_ref in self._open:
            self._open[user_ref] -= quantity
            if self._open[user_ref] <= 0:
                del self._open[user_ref]

    def on_top(self, top: Top) -> None:
        """A top-of-book record: the symbol's mid becomes its mark (when both sides are set)."""
        self.decoder.note_top(top)
        if not top.stale and top.bid_px and top.ask_px:
            self._mids[top.locate] = (top.bid_px + top.ask_px) // 2
            if top.locate in self.marks:
                self.marks[top.locate] = self._mids[top.locate]

    def on_tap(self, datagram: bytes) -> None:
        """One tap datagram: orders out of the order port, Order Executed messages into it,
        top-of-book records out to the top-of-book port, and Stock Directory messages of the
        feed (so orders are keyed by locate). Anything else, or that does not decode, is
        skipped."""
        try:
            record = tap.decode(datagram)
            udp = ethernet.decode_udp_frame(record.frame)
            port = udp.src_port if record.direction == tap.OUT else udp.dst_port
            wire = Datagram(self.kinds.get((record.direction, port), ""), udp.payload, 0, "tap")
            if wire.channel == "orders":
                self.on_order(self.decoder.decode(wire))
            elif wire.channel == "fills":
                for packet in ouch.iter_soup(udp.payload):
                    if packet.packet_type == "S" and packet.payload[:1] == b"E":
                        fill, _ = ouch.decode(packet.payload, "from_exchange")
                        self.on_fill(fill.user_ref_num, fill.quantity, fill.price)
            elif wire.channel == "tob":
                self.on_top(decode_top(wire))
            elif wire.channel == "feed":
                for pos, length in itch.iter_blocks(udp.payload, 20):
                    if udp.payload[pos : pos + 1] == b"R" and length == itch.SIZES["R"]:
                        msg = itch.decode_message(udp.payload, pos, length)
                        self.decoder.directory[msg.stock] = msg.locate
        except DecodeError:
            self.skipped += 1

    def view(self) -> LedgerView:
        """PnL, positions and counts now."""
        pnl = sum(self.cash[k] + self.positions[k] * self.marks.get(k, 0) for k in self.cash)
        active = len({self._owner[ref][0] for ref in self._open})
        positions = {k: v for k, v in self.positions.items() if v}
        return LedgerView(pnl / 10_000, positions, self.fills, self.unknown_fills, active)


@dataclass(frozen=True)
class Reading:
    """One poll of a device: when (seconds, any monotonic clock), its counters, its latency
    summary in cycles, its clock, and optionally the ledger and the number of subscribed
    symbols."""

    time: float
    counters: Mapping[str, int]
    latency: LatencySummary
    clock_hz: int
    ledger: LedgerView | None = None
    subscribed: int | None = None


def take_reading(
    device: Device, now: float, ledger: Ledger | None = None, subscribed: int | None = None
) -> Reading:
    """Read counters, latency and clock from ``device``."""
    counters = device.read_counters()
    latency = device.latency()
    clock_hz = device.read("clock_hz")
    view = ledger.view() if ledger is not None else None
    return Reading(now, counters, latency, clock_hz, view, subscribed)


@dataclass(frozen=True)
class Figures:
    """What the dashboard and the Prometheus endpoint show (see the module documentation).

    Latencies in ns (``None`` with no sample); rates per second over the last interval (0 for
    the first reading); ``drops`` / ``overload``: the counters of each kind that moved in the
    interval, with their increments.
    """

    latency_avg_ns: float | None
    latency_p99_ns: float | None
    latency_max_ns: float | None
    interval_avg_ns: float | None
    samples: int
    orders: Mapping[str, int]
    order_rates: Mapping[str, float]
    fills: int
    fill_rate: float
    message_rate: float
    drops_total: int
    drops: Mapping[str, int]
    overload: Mapping[str, int]
    pnl: float | None = None
    max_position: int | None = None
    active_symbols: int | None = None
    subscribed: int | None = None
    counters: Mapping[str, int] = field(default_factory=dict)


def _delta(now: Mapping[str, int], before: Mapping[str, int] | None, name: str) -> int:
    if before is None:
        return 0
    return (now.get(name, 0) - before.get(name, 0)) % _WRAP


def _messages(counters: Mapping[str, int]) -> int:
    ticks = ("tick_add", "tick_cancel", "tick_replace", "tick_trade")
    return counters.get("feed_mold_messages", 0) + sum(counters.get(n, 0) for n in ticks)


def figures(current: Reading, previous: Reading | None = None) -> Figures:
    """The figures of ``current``, with rates over the interval since ``previous``."""
    c, p = current.counters, previous.counters if previous else None
    dt = current.time - previous.time if previous else 0.0

    def rate(value: float) -> float:
        return value / dt if dt > 0 else 0.0

    lat = to_ns(current.latency, current.clock_hz) if current.clock_hz else current.latency
    interval_avg = None
    if previous is not None and current.clock_hz:
        n = current.latency.count - previous.latency.count
        total = round((current.latency.mean or 0) * current.latency.count)
        total -= round((previous.latency.mean or 0) * previous.latency.count)
        interval_avg = total / n * 1e9 / current.clock_hz if n > 0 else None
    drops = {n: d for n in drop_counters(c) if (d := _delta(c, p, n))}
    overload = {n: d for n in overload_counters(c) if (d := _delta(c, p, n))}
    message_delta = (_messages(c) - _messages(p)) % _WRAP if p is not None else 0
    ledger = current.ledger
    positions = ledger.positions.values() if ledger else ()
    return Figures(
        latency_avg_ns=lat.mean,
        latency_p99_ns=lat.p99,
        latency_max_ns=lat.max,
        interval_avg_ns=interval_avg,
        samples=current.latency.count,
        orders={k: c.get(f"egress_{k}", 0) for k in _ORDER_KINDS},
        order_rates={k: rate(_delta(c, p, f"egress_{k}")) for k in _ORDER_KINDS},
        fills=c.get("quoter_fills", 0),
        fill_rate=rate(_delta(c, p, "quoter_fills")),
        message_rate=rate(message_delta),
        drops_total=sum(c.get(n, 0) for n in drop_counters(c)),
        drops=drops,
        overload=overload,
        pnl=ledger.pnl if ledger else None,
        max_position=max((abs(v) for v in positions), default=0) if ledger else None,
        active_symbols=ledger.active if ledger else None,
        subscribed=current.subscribed,
        counters=dict(c),
    )


@dataclass(frozen=True)
class Alert:
    """One alert: ``name`` (one of :data:`ALERTS`), a one-line ``message``, the ``value`` seen
    and the ``threshold`` it crossed."""

    name: str
    message: str
    value: float
    threshold: float


def alerts(fig: Figures, limits: Thresholds) -> list[Alert]:
    """The alerts ``fig`` raises against ``limits``, in :data:`ALERTS` order."""
    out = []
    if limits.p99_ns is not None and (fig.latency_p99_ns or 0) > limits.p99_ns:
        msg = f"p99 tick-to-quote {fig.latency_p99_ns:.0f} ns > {limits.p99_ns:.0f} ns"
        out.append(Alert("high_latency", msg, fig.latency_p99_ns, limits.p99_ns))
    if limits.max_loss is not None and fig.pnl is not None and fig.pnl < -limits.max_loss:
        msg = f"PnL {fig.pnl:,.2f} $ below -{limits.max_loss:,.2f} $"
        out.append(Alert("large_loss", msg, fig.pnl, -limits.max_loss))
    if limits.max_position is not None and (fig.max_position or 0) > limits.max_position:
        msg = f"position of {fig.max_position:,} shares > {limits.max_position:,}"
        out.append(Alert("large_position", msg, fig.max_position, limits.max_position))
    too_fast = limits.max_message_rate is not None and fig.message_rate > limits.max_message_rate
    if fig.overload or too_fast:
        moved = ", ".join(f"{n} +{d}" for n, d in fig.overload.items())
        msg = f"{fig.message_rate:,.0f} messages/s" + (f"; {moved}" if moved else "")
        limit = limits.max_message_rate if too_fast else 0
        out.append(Alert("overload", msg, fig.message_rate if too_fast else 1, limit))
    lost = sum(fig.drops.values())
    if limits.max_drops is not None and lost > limits.max_drops:
        moved = ", ".join(f"{n} +{d}" for n, d in fig.drops.items())
        out.append(Alert("drops", f"{lost:,} lost: {moved}", lost, limits.max_drops))
    return out


def _escape(text: str, label: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if label else text


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def prometheus_text(fig: Figures, raised: list[Alert], prefix: str = "t2q") -> str:
    """The figures in the Prometheus text exposition format (version 0.0.4): one ``# HELP`` and
    ``# TYPE`` per family, then its samples; figures that are ``None`` are left out."""
    families: list[tuple[str, str, str, list[tuple[dict, float]]]] = []

    def add(name, kind, text, samples):
        samples = [(labels, v) for labels, v in samples if v is not None]
        if samples:
            families.append((f"{prefix}_{name}", kind, text, samples))

    names = {a.name for a in raised}
    one = [
        ("latency_avg_ns", "gauge", "Mean tick-to-quote since the statistics were cleared "
         "(device registers).", fig.latency_avg_ns),
        ("latency_p99_ns", "gauge", "p99 tick-to-quote, upper edge of its power-of-two "
         "bucket.", fig.latency_p99_ns),
        ("latency_max_ns", "gauge", "Largest tick-to-quote seen.", fig.latency_max_ns),
        ("latency_samples_total", "counter", "Tick-to-quote samples.", fig.samples),
        ("fills_total", "counter", "Fills the device applied (quoter_fills).", fig.fills),
        ("fill_rate", "gauge", "Fills per second over the last interval.", fig.fill_rate),
        ("message_rate", "gauge", "Market data messages per second over the last interval.",
         fig.message_rate),
        ("drops_total", "counter", "Sum of the device counters of data lost.", fig.drops_total),
        ("pnl_dollars", "gauge", "PnL from the fills the monitor saw, marked to market.",
         fig.pnl),
        ("max_abs_position", "gauge", "Largest absolute position of any symbol (shares).",
         fig.max_position),
        ("active_symbols", "gauge", "Symbols with live orders.", fig.active_symbols),
        ("subscribed_symbols", "gauge", "Symbols whose books the device tracks.", fig.subscribed),
    ]  # fmt: skip
    for name, kind, text, value in one:
        add(name, kind, text, [({}, value)])
    add("orders_total", "counter", "Orders the device sent, by kind (egress counters).",
        [({"kind": k}, v) for k, v in fig.orders.items()])  # fmt: skip
    add("alert", "gauge", "1 while the alert is raised.",
        [({"name": n}, int(n in names)) for n in ALERTS])  # fmt: skip
    add("device_counter", "counter", "Every device counter by register name (32 bits, wraps).",
        [({"name": n}, v) for n, v in sorted(fig.counters.items())])  # fmt: skip
    lines = []
    for name, kind, text, samples in families:
        lines += [f"# HELP {name} {_escape(text)}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            inner = ",".join(f'{k}="{_escape(str(v), label=True)}"' for k, v in labels.items())
            selector = f"{name}{{{inner}}}" if inner else name
            lines.append(f"{selector} {_number(value)}")
    return "\n".join(lines) + "\n"


def _ns(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ns"


def dashboard(fig: Figures, raised: list[Alert], title: str = "t2q monitor"):
    """The terminal dashboard as a :mod:`rich` renderable."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("tick-to-quote avg / p99", f"{_ns(fig.latency_avg_ns)} / {_ns(fig.latency_p99_ns)}"),
        ("interval avg / max", f"{_ns(fig.interval_avg_ns)} / {_ns(fig.latency_max_ns)}"),
        ("samples", f"{fig.samples:,}"),
        ("PnL (from tapped fills)", "n/a" if fig.pnl is None else f"{fig.pnl:,.2f} $"),
        ("fills / fill rate", f"{fig.fills:,} / {fig.fill_rate:,.1f}/s"),
        ("messages in", f"{fig.message_rate:,.0f}/s"),
        ("active symbols", "n/a" if fig.active_symbols is None else str(fig.active_symbols)),
        ("subscribed symbols", "n/a" if fig.subscribed is None else str(fig.subscribed)),
        ("max |position|", "n/a" if fig.max_position is None else f"{fig.max_position:,}"),
        ("drops (total)", f"{fig.drops_total:,}"),
    ]
    for kind in _ORDER_KINDS:
        rows.append((f"orders {kind}", f"{fig.orders[kind]:,} ({fig.order_rates[kind]:,.1f}/s)"))
    for name, value in rows:
        table.add_row(name, value)
    notes = Table(show_header=False, box=None)
    for alert in raised:
        notes.add_row(f"[bold red]ALERT {alert.name}[/]", alert.message)
    if not raised:
        notes.add_row("[green]no alerts[/]", "")
    return Group(table, notes)
