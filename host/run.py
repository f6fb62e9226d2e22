"""A feed through a device end to end, with a simulated exchange: the logic behind ``t2q run``.

:class:`Runner` takes a :class:`Feed` (:func:`load_feed`; :func:`default_feed` writes a generated
one) through a target (:func:`tick2quote.host.run_cli.open_target`: the device twin, a device
at ``udp://HOST:PORT``, or the in-process :class:`~.modeldevice.ModelDevice`):

1. **configure**: clear the latency statistics, write the quoting parameters given to every
   symbol the device quotes, point the order gateway and the top-of-book feed at this host's
   sockets, lift the kill switch;
2. **stream** the feed's datagrams, paced at ``rate`` messages per second (a datagram leaves
   when its first message is due), each stamped just before it is sent;
3. meanwhile a :class:`~.exchange.SimulatedExchange` answers every order the device sends
   (Accepted, Replaced, Canceled) and fills orders by its documented fill model from the same
   feed, with the market's touch from a host-side reference book; its Order Executed messages
   go back to the device unless ``fills`` is off (then the device's quotes depend on the feed
   alone, as a reference model's do). Tick-record feeds carry no symbols: the exchange answers
   their orders but fills none;
4. **settle**: wait until the device is quiet, read the latency registers (the feed's orders),
   set the kill switch (the device cancels every live quote and the exchange answers), wait
   again, then read the counters.

Latency. *Device tick-to-quote* with the twin comes from its tap: for every Enter and Replace,
the cycle the order frame's first beat left the core minus the order's ClOrdID stamp (the cycle
the core took the beat holding the triggering message's last byte), exact to the cycle; a Cancel
carries no ClOrdID and is not measured. Other targets report the device's latency registers
(every order, power-of-two buckets; see :mod:`.latency`). *Host round trip*: the time the
datagram holding the triggering message was sent to the time the order datagram arrived. The
trigger is found from the stamp: with the twin, the tapped input frame whose beats hold the
stamp; otherwise the top-of-book record with the same stamp names its MoldUDP64 sequence (an
order whose top-of-book update the device dropped is not matched). Arrival stamps are the
kernel's (``SO_TIMESTAMPNS``, compared with ``time.time_ns`` at send) where the OS gives them,
else ``time.perf_counter_ns`` after the receive; send stamps are taken in user space just before
``sendto``.
"""

from __future__ import annotations

import bisect
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .capture import detect_format, read_frames, read_itch_file, read_tick_file
from .device import OrderMessage, Top
from .exchange import SimulatedExchange
from .latency import LatencyRecorder
from .protocol import ethernet, itch, moldudp64, ouch, tick
from .protocol import tap as tap_codec
from .protocol.errors import DecodeError
from .transport import DeviceTimeout, Transport

if TYPE_CHECKING:
    from .run_cli import Target

__all__ = [
    "DEFAULT_RATE",
    "DEFAULT_IFG",
    "RunError",
    "FeedDatagram",
    "Feed",
    "default_feed",
    "load_feed",
    "Recorder",
    "Runner",
]

#: Messages per second a run is paced at by default, per target kind (None: as fast as possible).
DEFAULT_RATE = {"twin": 5000.0, "udp": 5000.0, "pcie": 5000.0, "model": None}
#: Idle cycles between frames into the twin's core: a burst of 8-message packets at this
#: spacing is one the core sustains (queued back to back at 16, they overflow its feed buffer).
DEFAULT_IFG = 64
_MASK32 = 0xFFFFFFFF
_MAX_DATAGRAM = 1472
_SESSION = b"TICK2QUOTE"


class RunError(RuntimeError):
    """A run could not go on: the device does not answer, or stayed busy too long."""


# -- feeds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedDatagram:
    """One datagram of a feed: ``channel`` (``feed`` or ``tick``), the UDP ``payload``, the
    messages it counts, the MoldUDP64 sequence of its first message (None for tick records) and
    its decoded ITCH records (for the exchange)."""

    channel: str
    payload: bytes
    count: int
    first_sequence: int | None
    records: tuple = ()


@dataclass
class Feed:
    """A feed ready to send: where it came from, its format and its datagrams."""

    path: Path
    format: str
    datagrams: list[FeedDatagram]
    skipped: int = 0

    @property
    def messages(self) -> int:
        """Messages (ITCH messages or tick records) in all the datagrams."""
        return sum(d.count for d in self.datagrams)


def default_feed(path: str | Path, *, seed: int = 7, symbols: int = 40, messages: int = 3000):
    """Write a generated ITCH session (:mod:`tick2quote.sim.feed`) to ``path`` as a pcap of
    MoldUDP64 frames (8 messages a packet) and return the path. ``symbols`` must stay below the
    device's symbol count (the default twin quotes locates 0 .. 63)."""
    from ..sim.feed import FeedConfig, generate, write_pcap

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    session = generate(FeedConfig(seed=seed, symbols=symbols, messages=messages))
    write_pcap(path, session, per_packet=8)
    return path


def _itch_records(bodies: Iterable[bytes]) -> tuple:
    out = []
    for body in bodies:
        try:
            out.append(itch.decode_message(body))
        except DecodeError:
            pass  # unknown or malformed: the device judges it, the exchange ignores it
    return tuple(out)


def _mold_datagram(payload: bytes) -> FeedDatagram:
    try:
        packet = moldudp64.decode(payload)
    except DecodeError:
        return FeedDatagram("feed", payload, 0, None)
    count = len(packet.messages)
    return FeedDatagram("feed", payload, count, packet.sequence, _itch_records(packet.messages))


def load_feed(
    path: str | Path, fmt: str | None = None, *, messages: int | None = None, per_packet: int = 8
) -> Feed:
    """Read a feed file into datagrams: a pcap (the UDP payload of each frame, as it is), an
    ITCH day file (packed ``per_packet`` messages to a MoldUDP64 packet, sequence from 1) or
    tick records (``per_packet`` to a datagram). ``messages`` keeps only the datagrams up to
    the one holding that many messages. Raises :class:`~.protocol.errors.DecodeError` for a
    file that does not decode."""
    from ..sim.feedwriter import to_packets

    path = Path(path)
    fmt = fmt or detect_format(path)
    limit = messages if messages is not None else float("inf")
    out, skipped, total = [], 0, 0

    def keep(datagram: FeedDatagram) -> bool:
        nonlocal total
        out.append(datagram)
        total += datagram.count
        return total < limit

    if fmt == "pcap":
        for _ts, frame, _offset in read_frames(path):
            try:
                udp = ethernet.decode_udp_frame(frame, allow_zero_checksum=True)
            except DecodeError:
                skipped += 1
                continue
            if not keep(_mold_datagram(bytes(udp.payload))):
                break
    elif fmt == "tick":
        records = [item.message for item in read_tick_file(path)]
        for start in range(0, len(records), per_packet):
            batch = records[start : start + per_packet]
            payload = b"".join(tick.encode(r) for r in batch)
            if not keep(FeedDatagram("tick", payload, len(batch), None)):
                break
    elif fmt == "itch":
        records = [item.message for item in read_itch_file(path)]
        for packet in to_packets(records, per_packet, _SESSION):
            if not keep(_mold_datagram(moldudp64.encode(packet))):
                break
    else:
        raise ValueError(f"format must be 'pcap', 'itch' or 'tick', not {fmt!r}")
    return Feed(path, fmt, out, skipped)


class Recorder(Transport):
    """A transport passing everything to ``inner`` that keeps each order datagram received
    (in :attr:`orders`) for the exchange: what a :class:`Runner` talks to the device through."""

    def __init__(self, inner: Transport):
        super().__init__()
        self.inner, self.counters = inner, inner.counters
        self.orders: list[bytes] = []

    def send(self, channel, payload):
        self.inner.send(channel, payload)

    def recv(self, channel, timeout=0.0):
        datagram = self.inner.recv(channel, timeout)
        if channel == "orders" and datagram is not None:
            self.orders.append(datagram.payload)
        return datagram

    def request(self, payload, timeout=None):
        return self.inner.request(payload, timeout)

    def close(self):
        self.inner.close()


# -- the run -------------------------------------------------------------------------------------


class Runner:
    """Runs one feed through one target (see the module documentation).

    ``target``: an open :class:`~.run_cli.Target` (its device, reached through a
    :class:`Recorder`, and for the twin its tap); ``params``: quoting parameters written to
    every symbol (fields of the ``params`` window); ``rate``: messages per second (None: as
    fast as possible); ``fills``: send the exchange's executions to the device;
    ``on_event``: called with each top-of-book update and order in arrival order;
    ``on_progress``: called with the messages sent so far; ``settle_timeout``: seconds the
    device may stay busy after the feed before :class:`RunError`; ``quiet``: seconds with
    nothing received that mean a device other than the twin is done.

    After :meth:`run`: :attr:`tops` and :attr:`orders` (as received), :attr:`exchange` (its
    positions, cash and counters), :attr:`marks` (symbol -> mark price), :attr:`counters`,
    :attr:`registers` (the latency registers' summary, cycles), :attr:`clock_hz`,
    :attr:`device_cycles` (tap tick-to-quote recorder, None but for the twin),
    :attr:`round_trip` (ns) with :attr:`round_trip_clock`, :attr:`stream_seconds` and
    :attr:`twin` (the twin's statistics over the run: cycles, sim_s, cycles_per_s, frames).
    """

    def __init__(
        self,
        target: Target,
        feed: Feed,
        *,
        params: dict | None = None,
        rate: float | None = None,
        fills: bool = True,
        on_event: Callable[[Top | OrderMessage], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
        settle_timeout: float = 30.0,
        quiet: float = 0.5,
    ):
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 messages/s or None, not {rate!r}")
        from ..sim.models.book import BookModel

        self.target, self.feed, self.params = target, feed, dict(params or {})
        self.rate, self.fills = rate, fills
        self.on_event, self.on_progress = on_event, on_progress
        self.settle_timeout, self.quiet = settle_timeout, quiet
        self.device = target.device
        self.exchange = SimulatedExchange()
        self.market = BookModel(max_symbols=1 << 16, max_orders=1 << 24, max_levels=1 << 16)
        self.tops: list[Top] = []
        self.orders: list[OrderMessage] = []
        self.sent: list[tuple[int, int]] = []  # (time_ns, perf_counter_ns) per datagram
        self.tapped: list[tap_codec.TapRecord] = []
        self._last_heard = time.monotonic()
        self._mids: dict[int, int] = {}  # locate -> last mid of the host's book
        self.stream_seconds, self.twin, self.counters, self.marks = 0.0, None, {}, {}
        self.registers = self.device_cycles = self.round_trip = None
        self.clock_hz, self.round_trip_clock = 0, "none"

    # -- steps ------------------------------------------------------------------------------

    def run(self) -> Runner:
        """Configure, stream, settle, read back (see the module documentation); returns this
        runner with its results filled in."""
        try:
            self.configure()
            before = self.target.twin.stats() if self.target.twin else None
            self.stream_seconds = self.stream()
            self.settle()
            self.registers = self.device.latency()  # the feed's orders, not the final pull
            self.device.set_kill(True)
            self.settle()
            self.twin = self._twin_delta(before)
            self.counters = self.device.read_counters()
            self.clock_hz = self.device.read("clock_hz")
        except DeviceTimeout as exc:
            raise RunError(f"the device stopped answering: {exc}") from None
        self._drain_tap()
        self.device_cycles, stamps = self._tap_latency()
        self.round_trip, self.round_trip_clock = self._round_trips(stamps)
        self.marks = self._marks()
        return self

    def configure(self) -> None:
        """Clear the latency statistics, write the parameters, point the gateway and the
        top-of-book feed here, lift the kill switch."""
        device = self.device
        device.clear_latency()
        if self.params:
            try:
                device.configure(**self.params)
            except (KeyError, ValueError) as exc:
                raise RunError(f"quoting parameters {self.params}: {exc}") from None
        if self.target.gateway:
            device.set_gateway(*self.target.gateway)
        if self.target.tob:
            device.set_tob(*self.target.tob)
        device.set_kill(False)

    def stream(self) -> float:
        """Send every datagram at the pace asked, serving the exchange meanwhile; returns the
        seconds it took."""
        transport, directory = self.target.recorder, self.device.decoder.directory
        start, due = time.perf_counter(), 0
        for index, datagram in enumerate(self.feed.datagrams):
            if self.rate is not None:
                while (wait := start + due / self.rate - time.perf_counter()) > 0:
                    self.service()
                    time.sleep(min(wait, 0.002))
            elif index % 16 == 0:
                self.service()
            for record in datagram.records:
                if record.type == "R":
                    directory[record.stock] = record.locate
            self.sent.append((time.time_ns(), time.perf_counter_ns()))
            transport.send(datagram.channel, datagram.payload)
            self._market(datagram.records)
            due += datagram.count
            if self.on_progress:
                self.on_progress(due)
        seconds = time.perf_counter() - start
        self.service()
        return seconds

    def settle(self) -> None:
        """Serve the exchange until the device is idle (the twin: its cycle count stands still
        with nothing queued; another device: nothing arrived for ``quiet`` seconds)."""
        deadline, twin, last = time.monotonic() + self.settle_timeout, self.target.twin, None
        self._last_heard = time.monotonic()  # an answer may still be on its way
        while True:
            busy = self.service()
            if twin is not None:
                stats = twin.stats()
                busy |= last is None or stats["cycles"] != last or stats["queued"] > 0
                last = stats["cycles"]
            elif self.target.kind == "udp":
                busy |= time.monotonic() - self._last_heard < self.quiet
            if not busy:
                return
            if time.monotonic() > deadline:
                raise RunError(f"the device was still busy {self.settle_timeout} s after the feed")
            time.sleep(0.05)

    def service(self) -> int:
        """Take in what the device sent: keep the tops and orders, let the exchange answer
        the orders; returns how many datagrams came or went."""
        device, recorder = self.device, self.target.recorder
        device.pump()
        tops, orders = list(device.tops()), list(device.orders())
        replies = []
        for payload in recorder.orders:
            for packet in ouch.iter_soup(payload):
                try:
                    record, _ = ouch.decode(packet.payload, "to_exchange")
                except DecodeError:
                    continue
                replies += self.exchange.on_order(record)
        recorder.orders.clear()
        self._answer(replies)
        events = sorted((*tops, *orders), key=lambda e: e.t_ns)
        if self.on_event:
            for event in events:
                self.on_event(event)
        self.tops += tops
        self.orders += orders
        if self.target.tap is not None:
            self._drain_tap()
        if events:
            self._last_heard = time.monotonic()
        return len(events) + bool(replies)

    def host_counters(self) -> dict:
        """What went wrong or was counted on the host side: the device object's counters
        (``bad_order``, ``tob_lost`` ...) and the transport's (sent, received, timeouts ...)."""
        return {**self.device.counters, **vars(self.target.recorder.counters)}

    # -- helpers ----------------------------------------------------------------------------

    def _answer(self, records: list) -> None:
        """Send the exchange's messages to the device, packed into datagrams of at most
        1472 bytes (one Ethernet MTU); executions only when ``fills`` is on."""
        packed = b""
        for record in records:
            if record.type == "E" and not self.fills:
                continue
            framed = self.exchange.frame([record])
            if len(packed) + len(framed) > _MAX_DATAGRAM:
                self.device.send_exchange(packed)
                packed = b""
            packed += framed
        self.device.send_exchange(packed)

    def _market(self, records: tuple) -> None:
        executed = []
        for record in records:
            top = self.market.apply(record)
            if top is not None and top.bbo.bid_px and top.bbo.ask_px and not top.bbo.stale:
                self._mids[top.locate] = (top.bbo.bid_px + top.bbo.ask_px) // 2
            executed += self.exchange.on_market(record, top.bbo if top else None)
        self._answer(executed)

    def _drain_tap(self) -> None:
        sock = self.target.tap.socket if self.target.tap is not None else None
        while sock is not None:
            try:
                self.tapped.append(tap_codec.decode(sock.recv(65536, socket.MSG_DONTWAIT)))
            except (BlockingIOError, InterruptedError):
                return

    def _twin_delta(self, before: dict | None) -> dict | None:
        if before is None:
            return None
        after = self.target.twin.stats()
        keys = ("cycles", "sim_s", "cpu_s", "wall_s", "frames_in", "frames_out")
        out = {k: after[k] - before[k] for k in keys}
        out["cycles_per_s"] = out["cycles"] / out["sim_s"] if out["sim_s"] > 0 else 0.0
        out["dropped"] = {
            k: v - before["dropped"].get(k, 0)
            for k, v in after["dropped"].items()
            if v != before["dropped"].get(k, 0)
        }
        return out

    def _tap_latency(self) -> tuple[LatencyRecorder | None, dict]:
        """Tick-to-quote cycles of every tapped Enter and Replace, and each one's stamp
        unwrapped to the tap's 64-bit cycle, by UserRefNum."""
        if self.target.twin is None:
            return None, {}
        order_port = self.target.twin.config.order_port
        recorder = LatencyRecorder("device tick-to-quote", "cycles", highest=1 << 32)
        stamps = {}
        for record in self.tapped:
            if record.direction != tap_codec.OUT:
                continue
            try:
                udp = ethernet.decode_udp_frame(record.frame)
                if udp.src_port != order_port:
                    continue
                (packet,) = ouch.iter_soup(udp.payload)
                order, _ = ouch.decode(packet.payload, "to_exchange")
            except (DecodeError, ValueError):
                continue
            if order.type in ("O", "U") and order.cl_ord_id[:1] == "T":
                cycles = (record.cycle - int(order.cl_ord_id[1:9], 16)) & _MASK32
                recorder.record(cycles)
                stamps[order.user_ref_num] = record.cycle - cycles
        return recorder, stamps

    def _trigger_index(self, stamps: dict) -> Callable[[OrderMessage], int | None]:
        """A function giving the index of the datagram that triggered an order (or None)."""
        if self.target.twin is not None:
            cfg = self.target.twin.config
            index_of = {d.payload: k for k, d in reversed(list(enumerate(self.feed.datagrams)))}
            frames = []
            for record in self.tapped:
                if record.direction == tap_codec.IN:
                    try:
                        udp = ethernet.decode_udp_frame(record.frame)
                    except DecodeError:
                        continue
                    if udp.dst_port in (cfg.feed_port, cfg.tick_port):
                        frames.append((record.cycle, index_of.get(bytes(udp.payload))))
            frames.sort(key=lambda f: f[0])
            cycles = [c for c, _ in frames]

            def by_tap(order: OrderMessage) -> int | None:
                stamp = stamps.get(order.user_ref)
                at = bisect.bisect_right(cycles, stamp) - 1 if stamp is not None else -1
                return frames[at][1] if at >= 0 else None

            return by_tap
        by_sequence = {}
        for k, d in enumerate(self.feed.datagrams):
            if d.first_sequence is not None:
                by_sequence.update(
                    dict.fromkeys(range(d.first_sequence, d.first_sequence + d.count), k)
                )
        cause = {t.stamp: t.book_sequence for t in self.tops}
        return lambda order: by_sequence.get(cause.get(order.stamp))

    def _round_trips(self, stamps: dict) -> tuple[LatencyRecorder, str]:
        recorder = LatencyRecorder("host round trip", "ns", highest=10**11)
        trigger, clocks = self._trigger_index(stamps), Counter()
        for order in self.orders:
            if order.type == "X" or order.stamp is None:
                continue
            index = trigger(order)
            if index is None:
                continue
            sent = self.sent[index][0 if order.clock == "kernel" else 1]
            if order.t_ns >= sent:
                recorder.record(order.t_ns - sent)
                clocks[order.clock] += 1
        return recorder, "/".join(sorted(clocks)) or "none"

    def _marks(self) -> dict[str, int]:
        """Each traded symbol's mark: the last mid of the host's book with both sides set,
        else the symbol's average fill price (so its PnL reads 0 rather than its cash)."""
        marks = {}
        for symbol, position in self.exchange.positions().items():
            locate = self.device.decoder.directory.get(symbol)
            cash = self.exchange.cash().get(symbol, 0)
            average = -cash // position if position else 0
            marks[symbol] = self._mids.get(locate, average)
        return marks
