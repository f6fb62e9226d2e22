"""Robustness checks of the soak: quotes that must never happen, and faults on the host side.

:class:`QuoteChecker` follows a device's order stream and judges every Enter and Replace by the
rules of "What must never happen" in the quoting design (quoting.md), against the state the
order was made in (:class:`QuoteContext`: the symbol's book, trading state, kill switch,
parameters, position and cash, as a reference model saw them): no quote while a pull condition
holds (kill switch, disabled, halted or paused, stale, an empty side, a crossed or locked book,
loss limit hit), none that crosses the book, lies outside the band, exceeds ``max_order_qty``
or would take the position beyond ``max_inventory``, none with a price <= 0, and never the
symbol's own bid at or above its own ask once an update is complete. It does not compute a
quote: it only checks the bounds, so it does not share the quoter's arithmetic.

:func:`host_faults` drives the host driver (:class:`~.device.Device` over
:class:`~.transport.UdpTransport`) against misbehaving stand-in devices on loopback: one that
answers with malformed or truncated responses or with another request's id, a slow one, a
silent one, a closed port, and one that sends malformed order and top-of-book datagrams. Each
must end in a typed error (or a count) within a bounded time, never a hang; each scenario runs
in a worker thread with a deadline, so a hang is reported instead of suffered.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..hdl.control import GUARD_COUNTERS
from .device import Device
from .protocol import ouch
from .protocol.control import RESPONSE_HEADER
from .protocol.errors import DecodeError
from .transport import DeviceTimeout, UdpTransport

__all__ = [
    "NEVER",
    "QuoteContext",
    "QuoteChecker",
    "SoakReport",
    "order_terms",
    "accounting",
    "counter_differences",
    "garbage_answers",
    "FaultResult",
    "host_faults",
]

#: The kinds of "must never happen" quotes :class:`QuoteChecker` reports.
NEVER = (
    "quoted_while_pulled",
    "stale_quoted",
    "crosses_book",
    "outside_band",
    "over_max_order_qty",
    "over_max_inventory",
    "non_positive_price",
    "crossed_own_quote",
)


@dataclass(frozen=True)
class QuoteContext:
    """What a symbol looked like when an update was decided: its ``locate``, the book's best
    ``bid_px``/``bid_sz``/``ask_px``/``ask_sz`` and ``stale`` flag, the trading ``state``
    (ITCH 'H' letter), the ``kill`` switch, the quoting ``params`` (an object with the
    :class:`~tick2quote.sim.models.pricing.QuoteParams` fields), ``position`` and ``cash``."""

    locate: int
    bid_px: int
    bid_sz: int
    ask_px: int
    ask_sz: int
    stale: bool
    state: str
    kill: bool
    params: object
    position: int
    cash: int


class QuoteChecker:
    """Judges a device's orders one by one (see the module documentation).

    Call :meth:`order` for every order in the order the device sent them (with the context of
    an Enter or Replace; Cancels need none) and :meth:`settle` when an update is complete (all
    orders of one book event sent). :attr:`checked` counts the quotes judged, :attr:`live` holds
    the live quote per symbol and side.
    """

    def __init__(self):
        self.live: dict[int, dict[str, tuple[int, int]]] = {}  # locate -> side -> (ref, price)
        self._refs: dict[int, tuple[int, str]] = {}  # live UserRefNum -> (locate, side)
        self.checked = 0

    def order(
        self,
        kind: str,
        user_ref: int,
        orig_ref: int | None,
        side: str | None,
        qty: int,
        price: int,
        ctx: QuoteContext | None,
    ) -> list[str]:
        """Record one order (``kind`` ``'O'``, ``'U'`` or ``'X'``); returns the rules it breaks."""
        if kind == "X":
            where = self._refs.pop(user_ref, None)
            if where is not None:
                self.live.get(where[0], {}).pop(where[1], None)
            return []
        if kind == "U":
            locate, side = self._refs.pop(orig_ref, (ctx.locate if ctx else None, side))
        else:
            locate = ctx.locate if ctx else None
        if locate is None or side is None:
            return []
        self._refs[user_ref] = (locate, side)
        self.live.setdefault(locate, {})[side] = (user_ref, price)
        if ctx is None:
            return []
        self.checked += 1
        return self._judge(ctx, side, qty, price)

    @staticmethod
    def _judge(ctx: QuoteContext, side: str, qty: int, price: int) -> list[str]:
        p, out = ctx.params, []
        crossed = ctx.bid_px >= ctx.ask_px
        mid = (ctx.bid_px + ctx.ask_px) // 2
        loss = not crossed and ctx.cash + ctx.position * mid < -p.max_loss
        empty = not (ctx.bid_sz and ctx.ask_sz and ctx.bid_px and ctx.ask_px)
        if ctx.kill or not p.enabled or ctx.state in ("H", "P") or empty or crossed or loss:
            out.append("quoted_while_pulled")
        if ctx.stale:
            out.append("stale_quoted")
        if side == "B" and price >= ctx.ask_px or side == "S" and price <= ctx.bid_px:
            out.append("crosses_book")
        band = mid * p.band_bps // 10000
        if not mid - band <= price <= mid + band:
            out.append("outside_band")
        if price <= 0:
            out.append("non_positive_price")
        if qty > p.max_order_qty or qty <= 0:
            out.append("over_max_order_qty")
        # a buy may not take the position above +max_inventory, a sell not below -max_inventory
        # (a position already beyond the limit, after fills, may still be reduced)
        if side == "B" and ctx.position + qty > p.max_inventory:
            out.append("over_max_inventory")
        if side == "S" and ctx.position - qty < -p.max_inventory:
            out.append("over_max_inventory")
        return out

    def settle(self, locate: int) -> list[str]:
        """Check the symbol's own quotes once an update is complete."""
        live = self.live.get(locate, {})
        if "B" in live and "S" in live and live["B"][1] >= live["S"][1]:
            return ["crossed_own_quote"]
        return []


#: Counters the twin and the models legitimately differ in: top-of-book records are dropped by
#: the device when its one transmit port is busy (compared as sent + dropped instead).
TIMED = ("tob_sent", "tob_dropped")
#: Counters that must stay 0 for a fair comparison (the feed is paced below their threshold).
OVERFLOWS = ("feed_overflow", "tickrx_overflow", "fills_overflow", "core_ctl_lost")
#: Counters of frames meant for another block: each filter of the core sees every frame, the
#: models only the frames of their own channel.
ROUTED = ("tickrx_frames", "tickrx_ignored")
ROUTED_SUFFIXES = ("_filter_frames", "_filter_wrong_dst_ip", "_filter_wrong_dst_port")
#: Per filter: the frames it saw, and the counters that share them out.
FILTERS = ("feed_filter", "fills_filter")
_CONTROL = GUARD_COUNTERS  # the control plane's own counters
_FILTER_CAUSES = ("accepted", "truncated", "not_ipv4", "bad_length", "bad_checksum", "fragment",
                  "not_udp", "wrong_dst_ip", "wrong_dst_port", "short_payload")  # fmt: skip


@dataclass
class SoakReport:
    """The figures of a soak: datagrams sent per channel (``frames``), faults injected by kind,
    host-side faults exercised, checks made, violations found by kind, and reproducer files."""

    frames: Counter = field(default_factory=Counter)
    injected: Counter = field(default_factory=Counter)
    host_faults: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)
    violations: Counter = field(default_factory=Counter)
    reproducers: list[str] = field(default_factory=list)
    twin: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def tried(self) -> int:
        """Datagrams sent to the device, every channel."""
        return sum(self.frames.values())


def order_terms(payload: bytes) -> tuple:
    """An order datagram's OUCH fields but the ClOrdID (the stamp counts the twin's cycles)."""
    try:
        (packet,) = ouch.iter_soup(payload)
        record, _ = ouch.decode(packet.payload, "to_exchange")
    except (DecodeError, ValueError):
        return ("undecodable", payload.hex())
    values = record._asdict()
    values.pop("cl_ord_id", None)
    return tuple(values.values())


def garbage_answers(sock: socket.socket) -> int:
    """Datagrams waiting on ``sock`` (answers to requests the device must have dropped)."""
    count = 0
    while True:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
            count += 1
        except (BlockingIOError, InterruptedError):
            return count


def accounting(stats: dict, sent: int, counters: dict, reads: int) -> Counter:
    """What does not add up between the datagrams ``sent`` to a twin (control requests
    included), its statistics taken just before the ``counters`` were read (in ``reads``
    requests, each one a frame too) and the core's counters: datagrams lost on the way, frames
    a filter saw but did not share out, buffers that overflowed."""
    bad: Counter = Counter()
    if stats["datagrams_in"] != sent or stats["dropped_total"]:
        bad["frames_lost_before_the_core"] += 1
    for name in FILTERS:
        share = sum(counters[f"{name}_{cause}"] for cause in _FILTER_CAUSES)
        if not 0 <= share - counters[f"{name}_frames"] <= reads:
            bad[f"unaccounted:{name}"] += 1
    if not 0 <= counters["feed_filter_frames"] - stats["frames_in"] <= reads:
        bad["unaccounted:frames_in"] += 1
    for name in OVERFLOWS:
        if counters[name]:
            bad[f"overflow:{name}"] += 1
    return bad


def counter_differences(device: dict, model: dict, tob_received: int) -> list[str]:
    """Block counters (``feed_``, ``book_``, ``quoter_`` ...) in which a device and the
    models differ, with the top-of-book records compared as received and as sent + dropped,
    leaving out what the models count per channel rather than per frame (:data:`ROUTED`)."""
    model = dict(model)
    # The models count every decoded message as a book event; the core's book never sees the
    # Stock Trading Actions (they go to the quoter).
    model["book_events"] -= model["feed_mold_trading"]
    out = [
        name
        for name, value in device.items()
        if name in model
        and name not in TIMED + ROUTED + _CONTROL
        and not name.endswith(ROUTED_SUFFIXES)
        and model[name] != value
    ]
    if device["tob_sent"] != tob_received:
        out.append("tob_sent_not_received")
    if device["tob_sent"] + device["tob_dropped"] != model["tob_sent"]:
        out.append("tob_sent_plus_dropped")
    return out


# -- host-side faults ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultResult:
    """One host-side fault scenario: ``kind``, whether the host behaved as it must (``ok``),
    what it did (``outcome``: the error type raised, or the counts), and the ``seconds`` it
    took (a hang is reported as ``outcome="hang"``)."""

    kind: str
    ok: bool
    outcome: str
    seconds: float


class _StandIn(threading.Thread):
    """A misbehaving device on loopback: answers each control request with ``reply(request)``
    (None: no answer) after ``delay`` seconds."""

    def __init__(self, reply: Callable[[bytes], bytes | None], delay: float = 0.0):
        super().__init__(daemon=True)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.05)
        self.port = self.socket.getsockname()[1]
        self.reply, self.delay, self.requests = reply, delay, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                data, peer = self.socket.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            self.requests += 1
            answer = self.reply(data)
            if answer is not None:
                threading.Timer(self.delay, self._send, (answer, peer)).start()

    def _send(self, answer: bytes, peer) -> None:
        try:
            self.socket.sendto(answer, peer)
        except OSError:
            pass

    def close(self) -> None:
        self._done.set()
        self.join(2)
        self.socket.close()


def _echo_id(data: bytes, body: bytes) -> bytes:
    """A reply carrying the request's id where a response carries it, around ``body``."""
    return body[:4] + data[4:8] + body[8:]


def _scenario(description: dict, token: int, timeout: float, retries: int) -> dict:
    """The scenarios: kind -> (reply function, delay, the check of what happened)."""

    def garbage(data):
        return _echo_id(data, bytes(range(RESPONSE_HEADER.size + 8)))

    def truncated(data):
        return data[:6]

    def other_id(data):
        return data[:4] + (int.from_bytes(data[4:8], "big") ^ 1).to_bytes(4, "big") + data[8:]

    return {
        "malformed_reply": (garbage, 0.0, DecodeError),
        "truncated_reply": (truncated, 0.0, DeviceTimeout),
        "other_request_id": (other_id, 0.0, DeviceTimeout),
        "silent_device": (lambda data: None, 0.0, DeviceTimeout),
        "slow_device": (garbage, timeout * (retries + 2), DeviceTimeout),
    }


def host_faults(
    description: dict,
    token: int = 0,
    *,
    timeout: float = 0.1,
    retries: int = 1,
    deadline: float = 10.0,
) -> list[FaultResult]:
    """Run every host-side fault scenario (see the module documentation) with a
    :class:`Device` described by ``description``; ``timeout`` and ``retries`` are the
    transport's, ``deadline`` the seconds after which a scenario counts as hung."""
    results = []
    bound = timeout * (retries + 1) + 1.0  # how long a typed error may take to come
    for kind, (reply, delay, expected) in _scenario(description, token, timeout, retries).items():
        device = _StandIn(reply, delay)
        device.start()
        transport = UdpTransport("127.0.0.1", {"control": device.port}, timeout=timeout,
                                 retries=retries)  # fmt: skip

        def attempt(transport=transport):
            Device(transport, description, token=token).read("cycle")

        results.append(_judged(kind, attempt, expected, bound, deadline, transport))
        transport.close()
        device.close()
    results.append(_closed_port(description, token, timeout, retries, bound, deadline))
    results.append(_bad_datagrams(description, token, deadline))
    return results


def _run_bounded(fn: Callable[[], None], deadline: float) -> tuple[BaseException | None, bool]:
    """Run ``fn`` in a worker thread; ``(exception raised or None, finished in time)``."""
    box: list[BaseException | None] = [None]

    def work():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported, not swallowed
            box[0] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(deadline)
    return box[0], not worker.is_alive()


def _judged(kind, fn, expected, bound, deadline, transport=None) -> FaultResult:
    start = time.monotonic()
    error, done = _run_bounded(fn, deadline)
    took = time.monotonic() - start
    if not done:
        return FaultResult(kind, False, "hang", took)
    name = type(error).__name__ if error is not None else "no error"
    counts = ""
    if transport is not None:
        c = transport.counters
        counts = f" (retries {c.retries}, stray {c.stray}, timeouts {c.timeouts})"
    ok = isinstance(error, expected) and took <= bound
    return FaultResult(kind, ok, f"{name}{counts}", took)


def _closed_port(description, token, timeout, retries, bound, deadline) -> FaultResult:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    transport = UdpTransport("127.0.0.1", {"control": port}, timeout=timeout, retries=retries)
    try:
        return _judged(
            "device_gone",
            lambda: Device(transport, description, token=token).read("cycle"),
            (DeviceTimeout, ConnectionError),
            bound,
            deadline,
            transport,
        )
    finally:
        transport.close()


def _bad_datagrams(description, token, deadline) -> FaultResult:
    """Garbage on the order and top-of-book channels: counted by the Device, nothing raised."""
    silent = _StandIn(lambda data: None)
    silent.start()
    transport = UdpTransport("127.0.0.1", {"control": silent.port}, timeout=0.1, retries=0)
    device = Device(transport, description, token=token)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    garbage = [b"", b"\x00", b"\x00\x05Ujunk", bytes(39), bytes(41), b"\xff" * 200]
    try:
        for payload in garbage:
            sender.sendto(payload, transport.listen_address("orders"))
            sender.sendto(payload, transport.listen_address("tob"))

        def drain():
            time.sleep(0.1)
            device.pump()
            list(device.orders(0.05))
            list(device.tops(0.05))

        start = time.monotonic()
        error, done = _run_bounded(drain, deadline)
        took = time.monotonic() - start
        bad = device.counters["bad_order"] + device.counters["bad_top"]
        ok = done and error is None and bad == 2 * len(garbage)
        what = "hang" if not done else f"{type(error).__name__ if error else 'counted'} {bad}"
        return FaultResult("malformed_datagrams", ok, what, took)
    finally:
        sender.close()
        transport.close()
        silent.close()
