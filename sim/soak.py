"""The soak: fuzzed and mutated frames through the whole core RTL, against the reference models.

:class:`SoakRunner` runs the device twin (:class:`~tick2quote.sim.twin.Twin`, the whole core
compiled with Verilator) and the reference models (:class:`~tick2quote.host.modeldevice.
ModelDevice`) side by side and sends both the same datagrams, batch by batch. After every batch
it waits until the twin is idle and checks:

- **no lock-up**: the core answers a control read, and took the batch's last frame (a clean
  heartbeat, the *probe*) through its feed filter;
- **orders**: the twin's OUCH orders equal the models' one for one (every field but the
  ClOrdID, whose stamp counts cycles the model does not keep);
- **counters**: every block counter of the twin equals the models' (so every frame, message,
  duplicate, gap, drop and fill is accounted for in the same way), the top-of-book records the
  twin sent plus the ones it dropped equal the models' updates, every datagram sent reached the
  core, and no buffer overflowed;
- **"must never happen"**: every quote, judged by :class:`~tick2quote.host.soak.QuoteChecker`
  against the state the models decided it in.

Between batches it writes random quoting parameters (valid ones, and invalid ones the device
must refuse), sets and clears the kill switch, and recovers stale symbols. A run is cut into
epochs of ``epoch`` frames, each with a fresh twin, models and session whose first batch (the
session's preamble) goes unmutated. Each epoch but the last ends by killing the twin process
(SIGKILL) in the middle of a batch, which the host must report as a typed error
(:class:`~tick2quote.sim.twin.TwinError`, then :class:`~tick2quote.host.transport.
DeviceTimeout` for the next request) within a bounded time; the datagrams sent after the kill
are counted as lost. An epoch in which the twin and the models diverge (orders or counters)
ends after that batch, with the violation counted and the batch saved as a reproducer
(``violation-e<epoch>-b<batch>.jsonl``: the command that replays that epoch alone, then every
datagram of the batch); with ``record`` every datagram and control call of each epoch is
written to ``epoch-<n>.jsonl`` as well, so that a divergence can be bisected from a fresh start.

What reaches the core: the twin wraps each datagram in Ethernet, IPv4 and UDP headers of its
own, so the mutations are of the UDP payloads (MoldUDP64, ITCH, tick records, SoupBinTCP,
control requests); mutated Ethernet, VLAN, IPv4 and UDP headers are the feed handler's own fuzz
test's (tests/test_feedhandler_fuzz.py, cocotb).

The reference is :class:`~tick2quote.host.modeldevice.ModelDevice`.

The throttle (``refresh_cycles``) is drawn as 0 or 2**32 - 1 only: any other interval compares
cycle counts, which the models do not keep as the twin does, so equality would not be a fair
test of it. Frames into the core are paced (``ifg`` idle cycles between frames) so that its
buffers never overflow; an overflow is reported, since from then on the twin and the models
(which have no timing) legitimately differ.

:class:`Fuzzer` turns a generated ITCH session (:class:`~tick2quote.sim.feed.FeedGenerator`,
streamed, so a run of any length costs no memory) into MoldUDP64 payloads, most of them clean
and the rest mutated, and adds tick records, fills and control-plane garbage. Every datagram is
a :class:`Step` naming its channel (``feed``, ``tick``, ``orders`` for fills, ``control`` for
raw control payloads) and the mutation that made it. The fuzzer is deterministic for a seed.

Mutations of a feed packet (:data:`FEED_MUTATIONS`):

``truncate``        the payload cut at a random byte (header or message)
``flip_header``     one random byte of the 20-byte MoldUDP64 header replaced
``flip_payload``    one to three random bytes of the message blocks replaced
``bad_length``      one message's length prefix made wrong (0, one off, 0xFFFF, random)
``unknown_type``    a message of a type ITCH 5.0 does not define inserted (counted in the header)
``gap``             the packet is never sent (the sequence jumps)
``duplicate``       the packet is sent again 1 to 30 packets later
``ab_copy``         the packet is sent again 0 to 2 packets later (the B line of an A/B pair)
``overlap``         the packet starts with the last messages of the previous one
``session_change``  a new session name, sequence numbers from 1 again
``heartbeat``       a heartbeat (count 0) at the current sequence
``end_of_session``  an end-of-session packet (count 0xFFFF); a new session follows

Tick records (:data:`TICK_KINDS`) add, modify and cancel orders of their own (references in a
range the ITCH session never uses, each cancelled again later), print trades, and break every
validity rule (symbol, type, side, price) or the 40-byte framing. Fills (:meth:`Fuzzer.fills`)
name UserRefNums the reference model issued, old ones, and numbers never issued, with odd
quantities and prices; malformed SoupBinTCP packets are mixed in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import socket
import string
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..host.device import Device
from ..host.modeldevice import ModelDevice
from ..host.protocol import itch, moldudp64, ouch, tick
from ..host.protocol.control import RegisterError
from ..host.protocol.errors import DecodeError
from ..host.soak import (
    QuoteChecker,
    QuoteContext,
    SoakReport,
    accounting,
    counter_differences,
    garbage_answers,
    order_terms,
)
from ..host.transport import DeviceTimeout, UdpTransport
from .feed import FeedConfig, FeedGenerator
from .models.book import Bbo
from .twin import Twin, TwinError

__all__ = ["FEED_MUTATIONS", "TICK_KINDS", "Step", "Fuzzer", "SoakConfig", "SoakRunner"]

FEED_MUTATIONS = {
    "truncate": 1.0,
    "flip_header": 1.0,
    "flip_payload": 2.0,
    "bad_length": 1.0,
    "unknown_type": 2.0,
    "gap": 1.0,
    "duplicate": 2.0,
    "ab_copy": 3.0,
    "overlap": 1.0,
    "session_change": 0.3,
    "heartbeat": 1.0,
    "end_of_session": 0.2,
}
TICK_KINDS = (
    "tick_add",
    "tick_modify",
    "tick_cancel",
    "tick_trade",
    "tick_invalid",
    "tick_framing",
)
#: Mutation rates a batch draws from: clean batches, lightly and heavily mutated ones.
BATCH_RATES = (0.0, 0.0, 0.01, 0.05, 0.3)
_UNKNOWN_TYPES = [
    c for c in (string.ascii_letters + string.digits + "~!\x00\xff") if c not in itch.SIZES
]
_TICK_REF_BASE = 1 << 60  # tick-record order ids: far above any reference the session uses


@dataclass(frozen=True)
class Step:
    """One datagram to a device: ``channel``, UDP ``payload`` and the ``kind`` that made it."""

    channel: str
    payload: bytes
    kind: str


class Fuzzer:
    """Deterministic fuzzed traffic (see the module documentation).

    ``symbols``: stocks of the generated session (locates 1 .. symbols); ``max_orders``: live
    orders per symbol the session keeps at most (so a small order table does not fill).
    """

    def __init__(self, seed: int, *, symbols: int = 40, max_orders: int = 8):
        self.rng = random.Random(seed)
        self.symbols = symbols
        config = FeedConfig(
            seed=seed, symbols=symbols, messages=1 << 62, max_orders_per_symbol=max_orders
        )
        self._messages = FeedGenerator(config).messages()
        self.session, self.sequence = b"SOAK000000", 1
        self.ended = False
        self.injected: Counter = Counter()
        self._recent: deque[moldudp64.Packet] = deque(maxlen=32)
        self._delayed: list[tuple[int, bytes, str]] = []  # (due packet index, payload, kind)
        self._index = 0
        self._tick_live: dict[int, tuple[int, int, int, int]] = {}  # id -> symbol, side, px, vol
        self._next_tick = _TICK_REF_BASE

    # -- the feed --------------------------------------------------------------------------
    def _take(self, count: int) -> list[bytes]:
        return [itch.encode_message(next(self._messages)) for _ in range(count)]

    def _packet(self, messages: list[bytes], sequence: int | None = None) -> moldudp64.Packet:
        start = self.sequence if sequence is None else sequence
        packet = moldudp64.Packet(self.session, start, messages)
        self.sequence = max(self.sequence, start + len(messages))
        self._recent.append(packet)
        return packet

    def _new_session(self) -> None:
        self.session = "".join(self.rng.choices(string.ascii_uppercase, k=10)).encode()
        self.sequence, self.ended = 1, False

    def feed(self, count: int, rate: float) -> list[Step]:
        """``count`` feed datagrams (delayed copies included), each mutated with probability
        ``rate``; ends with a clean heartbeat of the current session (the probe)."""
        out: list[Step] = []
        while len(out) < count - 1:
            self._index += 1
            due = [d for d in self._delayed if d[0] <= self._index]
            self._delayed = [d for d in self._delayed if d[0] > self._index]
            out += [Step("feed", payload, kind) for _, payload, kind in due]
            kind = "clean"
            if self.ended:
                kind = "session_change"
            elif self.rng.random() < rate:
                kinds, weights = zip(*FEED_MUTATIONS.items())
                kind = self.rng.choices(kinds, weights)[0]
            self.injected[kind] += 1
            payload = self._mutated(kind)
            if payload is not None:
                out.append(Step("feed", payload, kind))
        probe = moldudp64.Packet(self.session, self.sequence, [], moldudp64.HEARTBEAT)
        out.append(Step("feed", moldudp64.encode(probe), "probe"))
        return out

    def _mutated(self, kind: str) -> bytes | None:
        rng = self.rng
        if kind == "session_change":
            self._new_session()
            kind = "clean"
        if kind == "heartbeat":
            return moldudp64.encode(moldudp64.Packet(self.session, self.sequence, [], 0))
        if kind == "end_of_session":
            self.ended = True
            end = moldudp64.Packet(self.session, self.sequence, [], moldudp64.END_OF_SESSION)
            return moldudp64.encode(end)
        if kind == "overlap" and self._recent:
            last = self._recent[-1]
            keep = rng.randint(1, max(1, len(last.messages)))
            old = last.messages[-keep:]
            start = last.sequence + len(last.messages) - len(old)
            return moldudp64.encode(self._packet(old + self._take(rng.randint(0, 4)), start))
        messages = self._take(rng.randint(1, 8))
        if kind == "unknown_type":
            body = rng.choice(_UNKNOWN_TYPES).encode("latin-1") + rng.randbytes(rng.randint(0, 50))
            messages.insert(rng.randrange(len(messages) + 1), body)
        payload = bytearray(moldudp64.encode(self._packet(messages)))
        if kind == "gap":
            return None
        if kind in ("duplicate", "ab_copy"):
            lag = rng.randint(1, 30) if kind == "duplicate" else rng.randint(0, 2)
            self._delayed.append((self._index + lag, bytes(payload), kind))
        elif kind == "truncate":
            payload = payload[: rng.randrange(len(payload))]
        elif kind == "flip_header":
            payload[rng.randrange(20)] = rng.randrange(256)
        elif kind == "flip_payload":
            for _ in range(rng.randint(1, 3)):
                payload[rng.randrange(20, len(payload))] = rng.randrange(256)
        elif kind == "bad_length":
            blocks = list(itch.iter_blocks(bytes(payload), moldudp64.HEADER.size))
            pos, length = rng.choice(blocks)
            wrong = rng.choice((0, 1, length - 1, length + 1, 0xFFFF, rng.randrange(1 << 16)))
            payload[pos - 2 : pos] = wrong.to_bytes(2, "big")
        return bytes(payload)

    # -- tick records ----------------------------------------------------------------------
    def ticks(self, count: int) -> list[Step]:
        """``count`` tick-record datagrams of one to four records each."""
        out = []
        for _ in range(count):
            records, kinds = [], []
            for _ in range(self.rng.randint(1, 4)):
                kind, record = self._tick()
                records.append(record)
                kinds.append(kind)
            payload = b"".join(records)
            if self.rng.random() < 0.1:
                payload = payload[: self.rng.randrange(1, len(payload))]
                kinds = ["tick_framing"]
            self.injected.update(kinds)
            out.append(Step("tick", payload, kinds[0]))
        return out

    def _tick(self) -> tuple[str, bytes]:
        rng = self.rng
        fields = dict(timestamp=rng.getrandbits(48), reserved=0)
        roll = rng.random()
        if roll < 0.15:
            kind = "tick_invalid"
            fields.update(
                symbol_id=rng.choice((4096, 0xFFFF, rng.randint(1, self.symbols))),
                message_type=rng.choice((0, 5, 255, tick.ADD)),
                side=rng.choice((2, 255, 0)),
                price=rng.choice((0, tick.DEFAULT_MAX_PRICE, 2**64 - 1, 1000)),
                volume=rng.getrandbits(rng.choice((8, 32, 64))),
                sequence=rng.getrandbits(64),
            )
        elif roll < 0.25:
            kind = "tick_trade"
            fields.update(symbol_id=rng.randint(1, self.symbols), message_type=tick.TRADE,
                          side=rng.randint(0, 1), price=rng.randint(1, 10**7),
                          volume=rng.randint(1, 500), sequence=rng.getrandbits(32))  # fmt: skip
        elif self._tick_live and (roll < 0.6 or len(self._tick_live) >= 24):
            ref = rng.choice(list(self._tick_live))
            symbol, side, price, volume = self._tick_live[ref]
            if rng.random() < 0.3:
                kind, price, volume = "tick_modify", price + 100 * rng.randint(-3, 3), volume
                price = max(price, 100)
                self._tick_live[ref] = (symbol, side, price, volume)
                fields.update(message_type=tick.MODIFY)
            else:
                kind = "tick_cancel"
                del self._tick_live[ref]
                fields.update(message_type=tick.CANCEL)
            fields.update(symbol_id=symbol, side=side, price=price, volume=volume, sequence=ref)
        else:
            kind, ref = "tick_add", self._next_tick
            self._next_tick += 1
            symbol, side = rng.randint(1, self.symbols), rng.randint(0, 1)
            price, volume = 100 * rng.randint(1, 50_000), rng.randint(1, 900)
            self._tick_live[ref] = (symbol, side, price, volume)
            fields.update(symbol_id=symbol, message_type=tick.ADD, side=side, price=price,
                          volume=volume, sequence=ref)  # fmt: skip
        return kind, tick.TICK.encode(**fields)

    # -- fills and control garbage ---------------------------------------------------------
    def fills(self, orders: Sequence[tuple[int, int, int]], count: int) -> list[Step]:
        """``count`` fill datagrams (OUCH Order Executed in SoupBinTCP) for ``orders``, the
        ``(user_ref, quantity, price)`` of recent Enter and Replace orders, plus unknown
        references and malformed packets."""
        rng, out = self.rng, []
        for _ in range(count):
            roll = rng.random()
            if roll < 0.1:
                junk = rng.choice((rng.randbytes(rng.randint(0, 60)), b"\x00\x00", b"\x00\x05SE"))
                self.injected["fill_malformed"] += 1
                out.append(Step("orders", junk, "fill_malformed"))
                continue
            if orders and roll < 0.85:
                ref, qty, price = rng.choice(orders[-64:])
                kind = "fill"
                qty = rng.choice((rng.randint(1, max(1, qty)), qty, qty + 1, 0))
                price = price if rng.random() < 0.9 else rng.getrandbits(rng.choice((31, 40)))
            else:
                kind, ref = "fill_unknown", rng.getrandbits(32)
                qty, price = rng.randint(1, 100), rng.randint(1, 10**7)
            record = ouch.make("from_exchange", "E", timestamp=rng.getrandbits(40),
                               user_ref_num=ref, quantity=qty, price=price, liquidity_flag="A",
                               match_number=rng.getrandbits(40))  # fmt: skip
            data = ouch.encode_soup("S", ouch.encode(record, direction="from_exchange"))
            self.injected[kind] += 1
            out.append(Step("orders", data, kind))
        return out

    def control_garbage(self, token: int) -> Step:
        """A control payload the device must drop without answering: random bytes, a short
        request, or a well-formed request with the wrong token."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            payload = rng.randbytes(rng.randint(0, 40))
        else:
            from ..host.protocol.control import Opcode, Request, encode_request

            request = Request(Opcode.READ, rng.getrandbits(32), token ^ (1 + rng.getrandbits(63)),
                              rng.randrange(0x300), 1)  # fmt: skip
            payload = encode_request(request)
            if roll < 0.7:
                payload = payload[: rng.randrange(len(payload))]
        self.injected["control_garbage"] += 1
        return Step("control", payload, "control_garbage")


# -- the runner ------------------------------------------------------------------------------


@dataclass
class SoakConfig:
    """What a soak does: ``frames`` datagrams in all, ``batch`` feed datagrams between checks,
    ``epoch`` frames per twin process, ``ifg`` idle cycles between frames into the core,
    ``symbols`` stocks in the generated session, ``seed``, ``out_dir`` for reproducers,
    ``record`` to write every epoch's datagrams and control calls there too, ``first_epoch``
    the number of the first epoch (each epoch's randomness comes from the seed and its number
    alone, so one epoch of a run can be replayed by itself) and ``stop_at_first`` to end the run
    at the first violation."""

    frames: int = 10_000
    batch: int = 400
    epoch: int = 10_000
    ifg: int = 48
    symbols: int = 40
    seed: int = 1
    out_dir: Path = Path("build/soak")
    record: bool = False
    first_epoch: int = 0
    stop_at_first: bool = False


def _context(model, locate: int, bbo, state: str) -> QuoteContext:
    q = model.core.quoter
    bbo = bbo or Bbo(0, 0, 0, 0, False)
    book = (bbo.bid_px, bbo.bid_sz, bbo.ask_px, bbo.ask_sz, bool(bbo.stale))
    mine = (q.params(locate), q.position(locate), q.cash(locate))
    return QuoteContext(locate, *book, state, q.kill, *mine)


def _watch(model) -> list:
    """Wrap the models' quoter so every order it makes is logged with its context."""
    quoter, log = model.core.quoter, []
    on_book, set_kill = quoter.on_book, quoter.set_kill

    def watched_on_book(locate, bbo, state, cycle):
        ctx = _context(model, locate, bbo, state)
        orders = on_book(locate, bbo, state, cycle)
        log.extend((order, ctx) for order in orders)
        return orders

    def watched_set_kill(on, cycle=0):
        orders = set_kill(on, cycle)
        log.extend((order, None) for order in orders)
        return orders

    quoter.on_book, quoter.set_kill = watched_on_book, watched_set_kill
    return log


def _random_params(rng: random.Random) -> dict:
    from .bench_quoter import random_params

    params = dataclasses.asdict(random_params(rng))
    params["refresh_cycles"] = rng.choice((0, 0, 0, 2**32 - 1))
    params["enabled"] = int(params["enabled"])
    return params


class SoakRunner:
    """Runs a soak (see the module documentation); :meth:`run` returns a :class:`SoakReport`.
    ``on_progress`` is called with the datagrams sent so far after every batch."""

    def __init__(self, config: SoakConfig, on_progress: Callable[[int], None] | None = None):
        self.cfg, self.on_progress = config, on_progress
        self.report = SoakReport()
        self.rng = random.Random(config.seed)
        self._saved: set[str] = set()
        self._build = None
        self._record = None

    def run(self) -> SoakReport:
        """Every epoch in turn; returns the report."""
        start, epoch = time.monotonic(), self.cfg.first_epoch
        while self.report.tried < self.cfg.frames:
            if self.cfg.stop_at_first and self.report.violations:
                break
            left = self.cfg.frames - self.report.tried
            self._epoch(epoch, min(self.cfg.epoch, left), kill=left > self.cfg.epoch)
            epoch += 1
        self.report.seconds = time.monotonic() - start
        return self.report

    # -- one twin process --------------------------------------------------------------------
    def _epoch(self, epoch: int, frames: int, kill: bool) -> None:
        twin = Twin(build=self._build, tail=20_000, ifg=self.cfg.ifg).start()
        self._build = twin.build
        roles = {"control": "control", "feed": "feed", "tick": "tick", "orders": "order"}
        transport = UdpTransport("127.0.0.1", {k: twin.ports[v] for k, v in roles.items()},
                                 timeout=0.5, retries=2)  # fmt: skip
        garbage = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        garbage.bind(("127.0.0.1", 0))
        self.rng = random.Random(self.cfg.seed * 1_000_003 + epoch)
        self._fuzzer = Fuzzer(self.cfg.seed * 1009 + epoch, symbols=self.cfg.symbols)
        self._frames = frames
        self._record = None
        if self.cfg.record:
            Path(self.cfg.out_dir).mkdir(parents=True, exist_ok=True)
            self._record = open(Path(self.cfg.out_dir) / f"epoch-{epoch}.jsonl", "w")  # noqa: SIM115
        try:
            self._epoch_body(epoch, frames, kill, twin, transport, garbage)
        finally:
            self.report.injected.update(self._fuzzer.injected)
            if self._record is not None:
                self._record.close()
            stats = twin.stop()
            if stats:
                self.report.twin.update(cycles=stats["cycles"], frames_in=stats["frames_in"])
                self.report.twin.update(frames_out=stats["frames_out"])
                self.report.twin["sim_ms"] += int(1000 * stats["sim_s"])
            transport.close()
            garbage.close()

    def _epoch_body(self, epoch, frames, kill, twin, transport, garbage) -> None:
        rng, report = self.rng, self.report
        model = ModelDevice(twin.config)
        log = _watch(model)
        dut = Device(transport, twin.description, token=twin.token)
        ref = Device(model, model.description, token=twin.token)
        fuzzer = self._fuzzer
        symbols = twin.description["windows"]["params"]["symbols"]
        for device in (dut, ref):
            device.set_gateway("127.0.0.1", transport.listen_address("orders")[1])
            device.set_tob("127.0.0.1", transport.listen_address("tob")[1])
        for locate in range(symbols):
            self._both(dut, ref, "set_params", locate, **_random_params(rng))
        self._both(dut, ref, "set_kill", False)
        state = {"sent": 0, "tob": 0, "accepted": 0, "emitted": 0, "diverged": False, "batch": 0}
        checker = QuoteChecker()
        while state["sent"] < frames:
            rate = rng.choice(BATCH_RATES) if state["batch"] else 0.0  # the preamble clean
            steps = fuzzer.feed(min(self.cfg.batch, frames - state["sent"]), rate)
            if rng.random() < 0.3:
                steps += fuzzer.ticks(rng.randint(1, 4))
            if rng.random() < 0.2:
                steps.append(fuzzer.control_garbage(twin.token))
            recent = [(o.user_ref_num, o.quantity, o.price) for o, _ in log[-64:] if o.quantity]
            steps += fuzzer.fills(recent, rng.randint(0, 6))
            last = kill and state["sent"] + len(steps) >= frames
            if last:
                self._kill_mid_batch(twin, transport, model, dut, steps)
                return
            for step in steps:
                self._send(step, transport, model, garbage, twin)
            self._log({"op": "check"})
            state["sent"] += len(steps)
            report.frames.update(s.channel for s in steps)
            self._check(epoch, steps, state, twin, transport, model, log, dut, garbage, checker)
            if self.on_progress:
                self.on_progress(report.tried)
            if state["diverged"]:
                report.checks["epochs_ended_by_a_divergence"] += 1
                return  # a fresh twin and models take the remaining frames
            self._control(dut, ref, model, rng, symbols)
            state["batch"] += 1

    def _both(self, dut, ref, method: str, *args, **kwargs) -> None:
        self._log({"op": "call", "on": type(dut).__name__, "method": method, "args": args,
                   "kwargs": kwargs})  # fmt: skip
        results = []
        for device in (dut, ref):
            try:
                getattr(device, method)(*args, **kwargs)
                results.append("ok")
            except RegisterError as exc:
                results.append(exc.status.name)
        if results[0] != results[1]:
            self.report.violations["control_mismatch"] += 1

    def _log(self, entry: dict) -> None:
        if self._record is not None:
            self._record.write(json.dumps(entry) + "\n")

    def _send(self, step: Step, transport, model, garbage, twin) -> None:
        self._log({"op": "send", "channel": step.channel, "payload": step.payload.hex()})
        if step.channel == "control":
            garbage.sendto(step.payload, twin.address("control"))
            try:
                model.request(step.payload)
                self.report.violations["garbage_answered_by_model"] += 1
            except DeviceTimeout:
                pass
            return
        transport.send(step.channel, step.payload)
        model.send(step.channel, step.payload)

    # -- after each batch ------------------------------------------------------------------
    def _barrier(self, twin, timeout: float = 120.0) -> dict:
        """Wait until the twin took every datagram and ran its idle tail."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            stats = twin.stats()
            if last is not None and stats["cycles"] == last and not stats["queued"]:
                return stats
            if time.monotonic() > deadline:
                raise TwinError(f"the twin was still busy {timeout} s after a batch")
            last = stats["cycles"]
            time.sleep(0.005)

    def _check(self, epoch, steps, state, twin, transport, model, log, dut, garbage, checker):
        report = self.report
        stats = self._barrier(twin)
        report.checks["batches"] += 1
        bad: Counter = Counter()
        requests = transport.counters.sent["control"]
        try:
            dut.read("cycle")
            before = transport.counters.sent["control"]
            counters = dut.read_counters()
            reads = transport.counters.sent["control"] - before
            report.checks["control_reads"] += 1
        except (DeviceTimeout, DecodeError) as exc:
            report.violations["lockup"] += 1
            self._save(epoch, state["batch"], steps, f"lockup: {exc}")
            raise
        if counters["feed_filter_accepted"] <= state["accepted"]:
            bad["lockup_probe_not_taken"] += 1
        state["accepted"] = counters["feed_filter_accepted"]
        twin_orders = [d.payload for d in transport.drain("orders")]
        state["tob"] += sum(1 for _ in transport.drain("tob"))
        model_orders = [d.payload for d in model.drain("orders")]
        list(model.drain("tob"))
        emitted, state["emitted"] = log[state["emitted"] :], len(log)
        if garbage_answers(garbage):
            bad["garbage_answered"] += 1
        bad.update(accounting(stats, state["sent"] + requests, counters, reads))
        if not state["diverged"]:
            mine = [order_terms(p) for p in twin_orders]
            if mine != [order_terms(p) for p in model_orders] or len(emitted) != len(mine):
                bad["order_mismatch"] += 1
                state["diverged"] = True
            else:
                report.checks["orders_compared"] += len(mine)
                judged = checker.checked
                bad.update(self._judge(checker, mine, emitted))
                report.checks["quotes_judged"] += checker.checked - judged
            differ = counter_differences(counters, model.status(), state["tob"])
            if differ:
                bad["counter_mismatch"] += 1
                state["diverged"] = True
                bad.update({f"counter:{name}": 1 for name in differ})
                detail = {k: (counters.get(k), model.status().get(k)) for k in differ}
            report.checks["counters_compared"] += len(counters)
        if bad:
            report.checks["batches_with_a_violation"] += 1
            report.violations.update(bad)
            what = ", ".join(sorted(bad))
            if "counter_mismatch" in bad:
                what += f" (device, models): {detail}"
            self._save(epoch, state["batch"], steps, what)

    def _judge(self, checker: QuoteChecker, terms: list[tuple], emitted: list) -> Counter:
        found: Counter = Counter()
        previous = None
        for (order, ctx), fields in zip(emitted, terms):
            if previous is not None and ctx is not previous[1]:
                found.update(checker.settle(previous[0]))
            kind = fields[0]
            orig = order.orig_user_ref_num if kind == "U" else None
            found.update(checker.order(kind, order.user_ref_num, orig, order.side,
                                       order.quantity, order.price, ctx))  # fmt: skip
            previous = (order.locate, ctx)
        if previous is not None:
            found.update(checker.settle(previous[0]))
        return found

    def _control(self, dut, ref, model, rng: random.Random, symbols: int) -> None:
        """Random control actions on both: parameters, refused writes, kill, recover."""
        injected = self.report.injected
        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                self._both(dut, ref, "set_params", rng.randrange(symbols), **_random_params(rng))
                injected["params"] += 1
        if rng.random() < 0.05:
            name = rng.choice(("spread_bps", "skew_shift", "tick", "enabled", "band_bps"))
            value = rng.choice((2**40, 2**64 - 1, 7, 99))
            locate = rng.randrange(symbols)
            self._both(dut.registers, ref.registers, "write_param", "params", locate, name,
                       value, check=False)  # fmt: skip
            injected["params_invalid"] += 1
        if model.core.quoter.kill and rng.random() < 0.5:
            self._both(dut, ref, "set_kill", False)
        elif rng.random() < 0.04:
            self._both(dut, ref, "set_kill", True)
            injected["kill_switch"] += 1
        if model.core.ingress.stale or rng.random() < 0.1:
            self._both(dut, ref, "recover")
            injected["recover"] += 1

    def _kill_mid_batch(self, twin, transport, model, dut, steps: list[Step]) -> None:
        """Kill the twin half way through ``steps``: the host must get typed errors, soon."""
        report, half = self.report, len(steps) // 2
        for step in steps[:half]:
            if step.channel != "control":
                transport.send(step.channel, step.payload)
        os.kill(twin.pid, signal.SIGKILL)
        for step in steps[half:]:
            if step.channel != "control":
                transport.send(step.channel, step.payload)
        report.frames.update(s.channel for s in steps if s.channel != "control")
        report.checks["lost_after_kill"] += len(steps) - half
        report.host_faults["twin_killed"] += 1
        start = time.monotonic()
        try:
            twin.stats()
            report.violations["kill_not_reported"] += 1
        except TwinError:
            report.host_faults["twin_killed_reported_twinerror"] += 1
        try:
            dut.read("cycle")
            report.violations["kill_not_reported"] += 1
        except DeviceTimeout:
            report.host_faults["twin_killed_reported_timeout"] += 1
        if time.monotonic() - start > 5.0:
            report.violations["kill_reported_late"] += 1

    def _save(self, epoch: int, batch: int, steps: list[Step], what: str) -> None:
        """Write the batch's datagrams and the command that replays its epoch alone (the first
        batch of each kind of violation, 20 files at most)."""
        kinds = set(what.split(" (")[0].split(", ")) - self._saved
        if not kinds or len(self.report.reproducers) >= 20:
            return
        self._saved |= kinds
        out = Path(self.cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"violation-e{epoch}-b{batch}.jsonl"
        cfg = self.cfg
        command = (f"t2q soak --seed {cfg.seed} --first-epoch {epoch} --frames {self._frames} "
                   f"--epoch {self._frames} --batch {cfg.batch} --ifg {cfg.ifg} --stop-at-first "
                   "--record --no-host-faults")  # fmt: skip
        with open(path, "w") as f:
            head = {"what": what, "epoch": epoch, "batch": batch, "command": command}
            f.write(json.dumps(head) + "\n")
            for step in steps:
                f.write(json.dumps({"channel": step.channel, "kind": step.kind,
                                    "payload": step.payload.hex()}) + "\n")  # fmt: skip
        self.report.reproducers.append(str(path))
