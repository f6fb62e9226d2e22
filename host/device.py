"""The host's view of one device: a typed API over a :class:`~.transport.Transport`.

:class:`Device` configures the core through its registers (by the names of the register
description the core publishes, nothing else), streams market data to it, and decodes what it
sends back: OUCH 5.0 orders (:class:`OrderMessage`) and top-of-book records (:class:`Top`). The
same code runs against a board or the device twin (:class:`~.transport.UdpTransport`) and
against the reference models (:class:`~.modeldevice.ModelDevice`).

Received datagrams are decoded in arrival order into a backlog as soon as the device object
sees them (:meth:`Device.pump`, also called while a feed is streamed, so a burst of orders does
not overflow a socket buffer while the host is busy sending); :meth:`Device.orders` and
:meth:`Device.tops` read from that backlog first.

Orders carry no Stock Locate, so it is found the way a gateway would: an Enter names its symbol,
looked up in the Stock Directory the device was sent (``R`` messages streamed through this
object, or ``directory`` given); a Replace or Cancel inherits the locate and side of the order
it names. When the symbol is unknown (tick records carry none, so the device sends spaces) the
locate is that of the top-of-book record with the same ingress stamp, if one arrived first.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain

from .capture import FeedMessage, detect_format, read_frames, read_itch_file, read_tick_file
from .latency import LatencySummary, from_device_registers
from .protocol import control, ethernet, itch, moldudp64, ouch, tick, tobfeed
from .protocol.errors import DecodeError, FieldValueError
from .transport import Datagram, Transport

__all__ = [
    "OrderMessage",
    "Top",
    "StreamReport",
    "OrderDecoder",
    "decode_top",
    "Device",
    "to_ns",
]

_MAX_PAYLOAD = 1472
_KINDS = {"O": "enter", "U": "replace", "X": "cancel"}
_REMEMBERED = 1 << 20  # live UserRefNums and stamps kept for lookups


@dataclass(frozen=True)
class OrderMessage:
    """One OUCH 5.0 order the device sent.

    ``type`` is ``'O'`` (enter), ``'U'`` (replace) or ``'X'`` (cancel); ``orig_user_ref`` is
    set for a replace. ``locate``, ``side`` (``'B'``/``'S'``) and ``symbol`` are ``None`` when
    they cannot be known (see the module documentation). ``qty`` and ``price`` are 0 for a
    cancel. ``stamp`` is the device's ingress cycle of the causing event, from the ClOrdID
    (``None`` for a cancel, which has none). ``t_ns`` / ``clock``: arrival time (see
    :mod:`.transport`).
    """

    type: str
    user_ref: int
    orig_user_ref: int | None
    locate: int | None
    side: str | None
    qty: int
    price: int
    stamp: int | None
    symbol: str | None
    t_ns: int = 0
    clock: str = ""

    @property
    def kind(self) -> str:
        """``'enter'``, ``'replace'`` or ``'cancel'`` (the reference model's names)."""
        return _KINDS[self.type]


@dataclass(frozen=True)
class Top:
    """One top-of-book record: ``seq`` is its frame sequence number, ``book_sequence`` the
    MoldUDP64 sequence of the message that caused it, ``stamp`` its ingress cycle."""

    seq: int
    locate: int
    bid_px: int
    bid_sz: int
    ask_px: int
    ask_sz: int
    stale: bool
    book_sequence: int = 0
    stamp: int = 0
    t_ns: int = 0
    clock: str = ""


@dataclass(frozen=True)
class StreamReport:
    """What :meth:`Device.stream_feed` sent: datagrams, messages (ITCH messages or tick
    records), payload bytes, seconds taken and source frames skipped (not IPv4/UDP)."""

    datagrams: int
    messages: int
    bytes: int
    seconds: float
    skipped: int = 0

    @property
    def rate(self) -> float:
        """Messages per second achieved."""
        return self.messages / self.seconds if self.seconds > 0 else float("inf")


def _stamp_of(cl_ord_id: str) -> int | None:
    try:
        return int(cl_ord_id[1:9], 16) if cl_ord_id[:1] == "T" else None
    except ValueError:
        return None


def _remember(table: dict, key, value) -> None:
    """Insert into ``table``, forgetting its oldest entry beyond :data:`_REMEMBERED`."""
    table[key] = value
    if len(table) > _REMEMBERED:
        del table[next(iter(table))]


class OrderDecoder:
    """Decodes the device's order datagrams and tracks what a gateway would know.

    ``directory`` maps symbol to Stock Locate. :meth:`note_top` records the locate of each
    top-of-book stamp for symbols the directory lacks.
    """

    def __init__(self, directory: Mapping[str, int] | None = None):
        self.directory: dict[str, int] = dict(directory or {})
        self._live: dict[int, tuple] = {}  # UserRefNum -> (locate, side, symbol)
        self._stamps: dict[int, int] = {}  # stamp -> locate

    def note_top(self, top: Top) -> None:
        """Remember which symbol the event stamped ``top.stamp`` was for."""
        _remember(self._stamps, top.stamp, top.locate)

    def decode(self, datagram: Datagram) -> OrderMessage:
        """The order in one datagram (one SoupBinTCP ``'U'`` packet); raises
        :class:`~.protocol.errors.DecodeError` for anything else."""
        packets = list(ouch.iter_soup(datagram.payload))
        if len(packets) != 1 or packets[0].packet_type != "U":
            raise FieldValueError("an order datagram holds one SoupBinTCP 'U' packet", 0)
        record, _ = ouch.decode(packets[0].payload, "to_exchange")
        kind, ref, arrival = record.type, record.user_ref_num, (datagram.t_ns, datagram.clock)
        if kind == "X":
            locate, side, symbol = self._live.pop(ref, (None, None, None))
            return OrderMessage("X", ref, None, locate, side, 0, 0, None, symbol, *arrival)
        stamp, orig = _stamp_of(record.cl_ord_id), None
        if kind == "O":
            symbol, side = record.symbol or None, record.side
            locate = self.directory.get(symbol) if symbol else None
        else:
            orig = record.orig_user_ref_num
            locate, side, symbol = self._live.pop(orig, (None, None, None))
        if locate is None:
            locate = self._stamps.get(stamp)
        _remember(self._live, ref, (locate, side, symbol))
        terms = (record.quantity, record.price, stamp, symbol)
        return OrderMessage(kind, ref, orig, locate, side, *terms, *arrival)


def decode_top(datagram: Datagram) -> Top:
    """The top-of-book record in one datagram."""
    r = tobfeed.decode(datagram.payload)
    stale = bool(r.flags & tobfeed.FLAG_STALE)
    fields = (r.locate, r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, stale, r.book_sequence, r.stamp)
    return Top(r.frame_sequence, *fields, datagram.t_ns, datagram.clock)


def to_ns(summary: LatencySummary, clock_hz: int) -> LatencySummary:
    """A cycle summary converted to nanoseconds at ``clock_hz`` (rounded to whole ns)."""
    if summary.unit != "cycles":
        raise ValueError(f"summary is in {summary.unit!r}, not cycles")

    def ns(value):
        return None if value is None else round(value * 1e9 / clock_hz)

    stats = (ns(getattr(summary, k)) for k in ("min", "p50", "p99", "p999", "max"))
    mean = None if summary.mean is None else summary.mean * 1e9 / clock_hz
    return LatencySummary(summary.name, "ns", summary.count, *stats, mean)


class Device:
    """One device behind ``transport``, driven by register name.

    Parameters
    ----------
    transport:
        How the device is reached.
    description:
        The register description the core publishes (JSON-ready dict).
    token:
        The session token of control requests.
    directory:
        Symbol -> Stock Locate known in advance (extended by every ``R`` message streamed).
    session:
        The MoldUDP64 session of packets this object builds from ITCH messages.
    backlog:
        Decoded orders and tops held per channel before the oldest are dropped (counted).
    """

    def __init__(
        self,
        transport: Transport,
        description: Mapping,
        *,
        token: int = 0,
        directory: Mapping[str, int] | None = None,
        session: bytes = b"TICK2QUOTE",
        backlog: int = 1_000_000,
    ):
        self.transport = transport
        self.description = description
        self.registers = control.RegisterClient(description, transport.request, token)
        self.decoder = OrderDecoder(directory)
        self.session = session
        self.next_sequence = 1
        #: Host-side events: ``bad_order`` / ``bad_top`` datagrams, ``tob_lost`` (frame
        #: sequence gaps), ``backlog_dropped``.
        self.counters: Counter = Counter()
        self._orders: deque[OrderMessage] = deque()
        self._tops: deque[Top] = deque()
        self._backlog = backlog
        self._last_tob: int | None = None
        self._skipped = 0

    # -- registers ------------------------------------------------------------------------------

    def read(self, name: str) -> int:
        """Register ``name``."""
        return self.registers.read(name)

    def write(self, name: str, value: int) -> int:
        """Write register ``name`` (checked against its rule first); returns the read-back."""
        return self.registers.write(name, value)

    def _read_span(self, address: int, count: int) -> list[int]:
        """Raw values of ``count`` consecutive registers, ``max_read`` per request."""
        limit, out = self.description["max_read"], []
        for start in range(0, count, limit):
            out += self.registers.read_block(address + start, min(limit, count - start))
        return out

    def read_registers(self, names: Iterable[str]) -> dict[str, int]:
        """Several registers by name, read in as few requests as their addresses allow."""
        regs = self.description["registers"]
        runs: list[tuple[int, list[str]]] = []
        for address, name in sorted((regs[n]["address"], n) for n in names):
            if runs and address == runs[-1][0] + len(runs[-1][1]):
                runs[-1][1].append(name)
            else:
                runs.append((address, [name]))
        out = {}
        for start, run in runs:
            for name, value in zip(run, self._read_span(start, len(run))):
                out[name] = _signed(value, 64) if regs[name]["signed"] else value
        return out

    def read_counters(self) -> dict[str, int]:
        """Every counter: the block counters (``<block>_<counter>``, from 0x200) and the control
        plane's own frame counters."""
        regs = self.description["registers"]
        names = [
            n
            for n, e in regs.items()
            if e["access"] == "ro" and (e["address"] >= 0x200 or 0x40 <= e["address"] < 0x100)
        ]
        return self.read_registers(names)

    def read_status(self) -> dict[str, int]:
        """The status registers (``cycle``, ``symbols``, ``clock_hz``, ``latency_*``)."""
        regs = self.description["registers"]
        return self.read_registers(
            n for n, e in regs.items() if e["access"] == "ro" and 0x180 <= e["address"] < 0x200
        )

    def latency(self, attempts: int = 5) -> LatencySummary:
        """Tick-to-quote in cycles from the latency registers (:func:`.latency.from_device_
        registers`). Statistics and histogram take more than one read, so a sample landing in
        between tears them; such a read is taken again, up to ``attempts`` times."""
        regs = self.description["registers"]
        hist = sorted((n for n in regs if n.startswith("latency_hist")), key=lambda n: int(n[12:]))
        stats = ("latency_min", "latency_max", "latency_sum", "latency_count")
        for attempt in range(attempts):
            values = self.read_registers([*stats, *hist])
            try:
                return from_device_registers(*(values[n] for n in stats), [values[n] for n in hist])
            except ValueError:
                if attempt == attempts - 1:
                    raise
        raise ValueError("attempts must be >= 1")

    def latency_ns(self) -> LatencySummary:
        """:meth:`latency` in nanoseconds at the device's ``clock_hz``."""
        return to_ns(self.latency(), self.read("clock_hz"))

    # -- configuration --------------------------------------------------------------------------

    def params(self, locate: int) -> dict[str, int]:
        """Every quoting parameter of ``locate``, by field name."""
        fields = self.description["windows"]["params"]["fields"]
        base, _ = self.registers.field_address("params", locate, fields[0]["name"])
        values = self._read_span(base, len(fields))
        return {f["name"]: _signed(v, 64) if f["signed"] else v for f, v in zip(fields, values)}

    def set_params(self, locate: int, **fields) -> dict[str, int]:
        """Write quoting parameters of one symbol (fields of the ``params`` window, e.g.
        ``spread_bps=30, enabled=True``); each is checked against its rule before anything is
        sent. Returns the read-backs."""
        names = {f["name"] for f in self.description["windows"]["params"]["fields"]}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise KeyError(f"no quoting parameter {unknown}; the fields are {sorted(names)}")
        return {
            name: self.registers.write_param("params", locate, name, int(value))
            for name, value in fields.items()
        }

    def configure(self, locates: Iterable[int] | None = None, **fields) -> None:
        """Write the same quoting parameters to every symbol of ``locates`` (default: all the
        device quotes; one request per field and symbol, so name the symbols on a slow link)."""
        if locates is None:
            locates = range(self.description["windows"]["params"]["symbols"])
        for locate in locates:
            self.set_params(locate, **fields)

    def set_kill(self, on: bool) -> None:
        """Set (pull every quote at once, block new ones) or clear the kill switch."""
        self.write("kill_switch", int(bool(on)))

    def subscribe(self, locates: Iterable[int], tracked: bool = True) -> None:
        """Track (or with ``tracked=False`` stop tracking) the books of ``locates``."""
        for locate in locates:
            self.registers.write_param("subscription", locate, "tracked", int(tracked))

    def subscriptions(self) -> set[int]:
        """The locates whose books are tracked."""
        win = self.description["windows"]["subscription"]
        stride = win["stride"]
        values = self._read_span(win["base"], win["symbols"] * stride)
        return {k for k in range(win["symbols"]) if values[k * stride] & 1}

    def _bump(self, name: str) -> int:
        return self.write(name, (self.read(name) + 1) & 0xFFFFFFFF)

    def recover(self) -> int:
        """Trust every stale symbol again (after a rebuild); returns the new recover epoch."""
        return self._bump("recover_epoch")

    def clear_latency(self) -> int:
        """Clear the latency statistics; returns the new epoch."""
        return self._bump("latency_clear_epoch")

    def _address(self, prefix: str, ip: str, port: int, mac: int | None) -> None:
        self.write(f"{prefix}_ip" if prefix == "gateway" else f"{prefix}_group", _ipv4(ip))
        self.write(f"{prefix}_port", port)
        if mac is not None:
            self.write(f"{prefix}_mac", mac)

    def set_gateway(self, ip: str, port: int, mac: int | None = None) -> None:
        """Where orders go: the order-entry gateway's IPv4 address, UDP port and next-hop MAC."""
        self._address("gateway", ip, port, mac)

    def set_tob(self, ip: str, port: int, mac: int | None = None) -> None:
        """Where the top-of-book feed goes (a multicast group or a unicast address)."""
        self._address("tob", ip, port, mac)

    def set_feed(self, group: str, port: int, line: int = 0, enabled: bool = True) -> None:
        """The multicast group and UDP port of feed ``line`` (0 or 1) the device accepts."""
        self.write(f"feed_group{line}", int(enabled) << 32 | _ipv4(group))
        self.write(f"feed_port{line}", int(enabled) << 16 | port)

    # -- market data in -------------------------------------------------------------------------

    def stream_feed(
        self, source, rate: float | None = None, *, per_packet: int = 8, fmt: str | None = None
    ) -> StreamReport:
        """Send a feed to the device and return what was sent.

        ``source``: a path (pcap of MoldUDP64 frames, NASDAQ ITCH day file, ``.tick`` file;
        format detected unless ``fmt`` is given) or an iterable of ITCH records (e.g. a
        generated session), MoldUDP64 payloads (bytes) or :class:`~.protocol.moldudp64.Packet`,
        or tick records. ITCH records are packed ``per_packet`` to a MoldUDP64 packet (fewer if
        1472 bytes would be exceeded) with sequence numbers continuing from earlier calls; tick
        records ``per_packet`` to a datagram. ``rate``: messages per second (a datagram leaves
        when its first message is due; the wait is a sleep), ``None`` for as fast as possible.

        As fast as possible can be more than the device takes: the twin feeds datagrams to its
        core back to back at line rate, and a burst the book cannot absorb overflows the feed
        buffer, which marks every symbol stale (``feed_overflow``, ``core_stale_marks``) until
        :meth:`recover`. Pace a feed whose orders matter.
        """
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 messages/s or None, not {rate!r}")
        if per_packet < 1:
            raise ValueError(f"per_packet must be >= 1, not {per_packet!r}")
        datagrams = messages = size = 0
        self._skipped = 0
        start = time.perf_counter()
        for channel, payload, count in self._datagrams(source, per_packet, fmt):
            if rate is not None and start + messages / rate > time.perf_counter():
                self.pump()
                time.sleep(max(start + messages / rate - time.perf_counter(), 0.0))
            self.transport.send(channel, payload)
            datagrams, messages, size = datagrams + 1, messages + count, size + len(payload)
            if datagrams % 64 == 0:
                self.pump()
        self.pump()
        return StreamReport(datagrams, messages, size, time.perf_counter() - start, self._skipped)

    def _datagrams(self, source, per_packet: int, fmt: str | None) -> Iterator[tuple]:
        if isinstance(source, (str, os.PathLike)):
            fmt = fmt or detect_format(source)
            if fmt == "pcap":
                return self._pcap(source)
            reader = read_tick_file if fmt == "tick" else read_itch_file
            source = (item.message for item in reader(source))
        items = iter(source)
        first = next(items, None)
        if first is None:
            return iter(())
        if isinstance(first, FeedMessage):
            items, first = (i.message for i in chain([first], items)), first.message
        items = chain([first], items)
        if isinstance(first, (bytes, bytearray, memoryview, moldudp64.Packet)):
            return self._payloads(items)
        if type(first) is tick.TICK.record:
            return self._ticks(items, per_packet)
        return self._itch(items, per_packet)

    def _learn(self, msg) -> None:
        if msg.type == "R":
            self.decoder.directory[msg.stock] = msg.locate

    def _payloads(self, items) -> Iterator[tuple]:
        for item in items:
            payload = moldudp64.encode(item) if isinstance(item, moldudp64.Packet) else bytes(item)
            count = 0
            if len(payload) >= moldudp64.HEADER.size:
                count = int.from_bytes(payload[18:20], "big")
                count = 0 if count == moldudp64.END_OF_SESSION else count
                try:
                    for pos, length in itch.iter_blocks(payload, moldudp64.HEADER.size):
                        if payload[pos : pos + 1] == b"R" and length == itch.SIZES["R"]:
                            self._learn(itch.decode_message(payload, pos, length))
                except DecodeError:
                    pass  # the device judges a bad packet; it is sent as it is
            yield "feed", payload, count

    def _pcap(self, path) -> Iterator[tuple]:
        for _ts, frame, _offset in read_frames(path):
            try:
                udp = ethernet.decode_udp_frame(frame, allow_zero_checksum=True)
            except DecodeError:
                self._skipped += 1
                continue
            yield from self._payloads([udp.payload])

    def _itch(self, messages, per_packet: int) -> Iterator[tuple]:
        blocks, size = [], moldudp64.HEADER.size
        for msg in messages:
            self._learn(msg)
            body = itch.encode_message(msg)
            if blocks and (len(blocks) == per_packet or size + 2 + len(body) > _MAX_PAYLOAD):
                yield self._packet(blocks)
                blocks, size = [], moldudp64.HEADER.size
            blocks.append(body)
            size += 2 + len(body)
        if blocks:
            yield self._packet(blocks)

    def _packet(self, blocks: list[bytes]) -> tuple:
        packet = moldudp64.Packet(self.session, self.next_sequence, blocks)
        self.next_sequence += len(blocks)
        return "feed", moldudp64.encode(packet), len(blocks)

    def _ticks(self, records, per_packet: int) -> Iterator[tuple]:
        batch = []
        for record in records:
            batch.append(tick.encode(record))
            if len(batch) == per_packet:
                yield "tick", b"".join(batch), len(batch)
                batch = []
        if batch:
            yield "tick", b"".join(batch), len(batch)

    # -- orders, tops and fills -----------------------------------------------------------------

    def _keep(self, backlog: deque, item) -> None:
        if len(backlog) >= self._backlog:
            backlog.popleft()
            self.counters["backlog_dropped"] += 1
        backlog.append(item)

    def _take_top(self, datagram: Datagram) -> None:
        try:
            top = decode_top(datagram)
        except DecodeError:
            self.counters["bad_top"] += 1
            return
        self.counters["tob_lost"] += tobfeed.lost_between(self._last_tob, top.seq)
        self._last_tob = top.seq
        self.decoder.note_top(top)
        self._keep(self._tops, top)

    def _take_order(self, datagram: Datagram) -> None:
        try:
            self._keep(self._orders, self.decoder.decode(datagram))
        except DecodeError:
            self.counters["bad_order"] += 1

    def pump(self) -> None:
        """Decode every datagram already received (tops first) into the backlog."""
        for datagram in self.transport.drain("tob"):
            self._take_top(datagram)
        for datagram in self.transport.drain("orders"):
            self._take_order(datagram)

    def _stream(self, channel: str, backlog: deque, timeout: float) -> Iterator:
        while True:
            if not backlog:
                self.pump()
            if not backlog:
                datagram = self.transport.recv(channel, timeout)
                if datagram is None:
                    return
                (self._take_top if channel == "tob" else self._take_order)(datagram)
            if backlog:
                yield backlog.popleft()

    def orders(self, timeout: float = 0.0) -> Iterator[OrderMessage]:
        """The orders received, oldest first; ends when none arrives within ``timeout`` s."""
        return self._stream("orders", self._orders, timeout)

    def tops(self, timeout: float = 0.0) -> Iterator[Top]:
        """The top-of-book records received, oldest first; ends when none arrives within
        ``timeout`` s. Frame sequence gaps count in ``counters["tob_lost"]``."""
        return self._stream("tob", self._tops, timeout)

    def send_fill(
        self,
        user_ref: int,
        quantity: int,
        price: int,
        *,
        liquidity: str = "A",
        match_number: int = 0,
        timestamp: int = 0,
    ) -> None:
        """Send one OUCH Order Executed for ``user_ref`` (as the exchange would)."""
        record = ouch.make(
            "from_exchange",
            "E",
            timestamp=timestamp,
            user_ref_num=user_ref,
            quantity=quantity,
            price=price,
            liquidity_flag=liquidity,
            match_number=match_number,
        )
        self.send_exchange(ouch.encode_soup("S", ouch.encode(record, direction="from_exchange")))

    def send_exchange(self, data: bytes) -> None:
        """Send SoupBinTCP bytes from the exchange (e.g. ``SimulatedExchange.frame(...)``) to
        the device's order port, as one datagram."""
        if data:
            self.transport.send("orders", data)


def _ipv4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _signed(raw: int, width: int) -> int:
    return raw - (1 << width) if raw >> (width - 1) & 1 else raw
