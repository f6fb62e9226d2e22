"""An in-process stand-in for the device, built on the reference models: a :class:`Transport`.

:class:`ModelDevice` answers on the device's channels (:mod:`.transport`) with the gateware's
byte formats, so :class:`~tick2quote.host.device.Device` code runs against it unchanged. It is a
**model, not the gateware**: it shows what the core is specified to do (the reference models of
:mod:`tick2quote.sim.models` are what the gateware is checked against), with no timing of its
own. Unlike the rest of ``host``, this module imports ``sim`` (the models) and ``hdl`` (the
register map): it is a simulation transport.

What it does with each channel
------------------------------
``feed``
    Each MoldUDP64 payload is wrapped in an Ethernet/IPv4/UDP frame addressed to register
    ``feed_group0`` / ``feed_port0`` (from ``10.0.0.1:26477``) and handed to
    :class:`~tick2quote.sim.models.core.CoreModel` (ingress with the feed address registers as
    its filter, book, quoter).
``tick``
    The payload is cut into 40-byte records (a shorter tail counts ``tick_framing``), parsed by
    :class:`~tick2quote.sim.models.parser.ParserModel` and applied as the book event's ITCH
    equivalent (ADD ``A``, DELETE ``D``, REPLACE ``U`` keeping the reference, TRADE ``P``).
``control``
    :class:`~tick2quote.host.protocol.control.EndpointModel` over the register description,
    with the peer and token checks; a request the device would drop raises
    :class:`~tick2quote.host.transport.DeviceTimeout` at once (nothing could ever answer).
    Writes act on the models: ``kill_switch`` (pulls at once), ``recover_epoch`` (a new value
    recovers every stale symbol), ``latency_clear_epoch``, ``feed_group*`` / ``feed_port*`` /
    ``allow_zero_checksum`` (the ingress filter), the ``params`` window (the symbol's
    :class:`~tick2quote.sim.models.pricing.QuoteParams`) and ``subscription``. Gateway, top-of-book
    and MAC registers are held and read back but change nothing here: every order goes to the
    ``orders`` channel and every update to ``tob``.
``orders`` (in)
    SoupBinTCP from the exchange, split by the fill parser's rules (:mod:`tick2quote.hdl.fills`);
    each Order Executed becomes a fill of the quoter model.
``orders`` (out) / ``tob``
    Every order as one SoupBinTCP ``'U'`` packet with the OUCH 5.0 message the egress builds
    (:mod:`tick2quote.hdl.egress`: symbol from the Stock Directory, ClOrdID ``T%08X`` of the
    stamp); every top-of-book change as one 40-byte record (frame sequence from 0).

Time. The model has no clock of its own: each datagram it takes (feed, tick, control, fills)
becomes a frame whose 8-byte beats are taken one a cycle, with 3 idle cycles between frames, as
the twin feeds its core; ``cycle`` counts those cycles and nothing else. A message (or tick
record) is stamped with the cycle of the beat holding its last byte, as the gateware stamps it,
and every order and update it causes carries that stamp. Each order records ``latency_cycles``
(a constructor argument, default 0) in the latency registers: a stated figure, not a
measurement. Nothing is ever dropped for lack of time (``tob_dropped``, ``core_ctl_lost`` and
every ``overflow`` stay 0), so where the gateware drops a top-of-book update it had no time to
send, or overflows under a burst, the model does not: its ``tob`` stream holds every update.

Counters. Every ``ro`` register the models have a figure for reads it (block counters by their
gateware names); the rest read 0 and are listed in :attr:`ModelDevice.unmodelled`.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping

from ..hdl.coremap import CoreConfig
from ..sim.models.book import BookModel
from ..sim.models.core import CoreModel, CoreOutput
from ..sim.models.ingress import IngressConfig, IngressModel
from ..sim.models.parser import EventKind, ParserModel
from ..sim.models.pricing import QuoteParams
from ..sim.models.quoter import QuoterModel
from .protocol import control, ethernet, itch, ouch, tobfeed
from .protocol.errors import DecodeError
from .transport import RECEIVE_CHANNELS, SEND_CHANNELS, Datagram, DeviceTimeout, Transport

__all__ = ["ModelDevice", "model_description"]

_FEED_SRC = (ipaddress.IPv4Address("10.0.0.1").packed, 26477)
_FEED_SRC_MAC = bytes.fromhex("020000000001")
_TICK_SIZE = 40
_PAYLOAD_AT = 42  # untagged Ethernet 14 + IPv4 20 + UDP 8
_IFG = 3  # idle cycles between two frames (a 10G MAC's inter-frame gap)
_MASK32 = 0xFFFFFFFF
#: Blocks whose counters the model keeps.
_BLOCKS = ("feed", "tick", "tickrx", "book", "quoter", "egress", "fills", "tob", "core")


def model_description(config: CoreConfig) -> dict:
    """The register description of a :class:`~tick2quote.hdl.core.Core` built with ``config``
    (its ``describe()``): what a board or the twin built the same way publishes."""
    from ..hdl.core import Core

    return Core(config).describe()


def _message_ends(payload: bytes, offset: int) -> dict[int, int]:
    """MoldUDP64 sequence number -> frame offset of the message's last byte, for the messages
    complete in ``payload`` (which starts at frame offset ``offset``)."""
    ends: dict[int, int] = {}
    if len(payload) < 20:
        return ends
    sequence, at = int.from_bytes(payload[10:18], "big"), 20
    while at + 2 <= len(payload):
        at += 2 + int.from_bytes(payload[at : at + 2], "big")
        if at > len(payload):
            break
        ends[sequence + len(ends)] = offset + at - 1
    return ends


class _TappedIngress(IngressModel):
    """The ingress model, keeping the messages the last frame delivered (for the counters)."""

    delivered: list = []

    def frame(self, frame: bytes):
        self.delivered = super().frame(frame)
        return self.delivered


def _signed(raw: int, width: int) -> int:
    return raw - (1 << width) if raw >> (width - 1) & 1 else raw


def _itch_of_event(event):
    """The ITCH record a tick-record book event stands for."""
    side = chr(event.code)
    common = {"locate": event.locate, "order_ref": event.order_ref}
    if event.kind is EventKind.ADD:
        return itch.make("A", **common, side=side, shares=event.shares, price=event.price)
    if event.kind is EventKind.DELETE:
        return itch.make("D", **common)
    if event.kind is EventKind.CANCEL:  # a partial cancel, as the gateware applies it
        return itch.make("X", **common, cancelled_shares=event.shares)
    if event.kind is EventKind.REPLACE:
        return itch.make(
            "U",
            locate=event.locate,
            original_ref=event.order_ref,
            new_ref=event.new_ref,
            shares=event.shares,
            price=event.price,
        )
    return itch.make("P", **common, side=side, shares=event.shares, price=event.price)


class ModelDevice(Transport):
    """The reference models behind the device's channels (see the module documentation).

    Parameters
    ----------
    config:
        The core's build configuration; default: :class:`CoreConfig` with ``host_ip`` as its
        only peer.
    description:
        The register description to serve; default :func:`model_description` of ``config``
        (the core's own).
    host_ip:
        The address control requests come from (it must be an enabled peer to be answered).
    latency_cycles:
        The tick-to-quote figure recorded for every order (see the module documentation).
    """

    def __init__(
        self,
        config: CoreConfig | None = None,
        *,
        description: Mapping | None = None,
        host_ip: str = "127.0.0.1",
        latency_cycles: int = 0,
    ):
        super().__init__()
        self.config = config or CoreConfig(peers=(host_ip,))
        self.description = description or model_description(self.config)
        self.host_ip = int(ipaddress.IPv4Address(host_ip))
        self.latency_cycles = latency_cycles
        self.endpoint = control.EndpointModel(self.description)
        regs = self.description["registers"]
        self._names = {e["address"]: name for name, e in regs.items()}
        self._status_regs = [(n, e["width"]) for n, e in regs.items() if e["access"] == "ro"]
        self.unmodelled = sorted(
            n for n, e in regs.items() if e["address"] >= 0x200 and n.split("_")[0] not in _BLOCKS
        )
        self._buckets = sum(1 for n in regs if n.startswith("latency_hist"))
        cfg = self.config
        self.core = CoreModel(
            ingress=_TappedIngress(self._ingress_config()),
            book=BookModel(
                cfg.symbols, sets=cfg.order_sets, ways=cfg.order_ways, depth=cfg.ladder_depth
            ),
            quoter=QuoterModel(default=self._window_params(None), ref_window=cfg.ref_window),
        )
        self.core.quoter.set_kill(bool(self._reg("kill_switch", 1)))
        subscription = self.description["windows"].get("subscription")
        if subscription and not subscription["fields"][0]["reset"]:
            for locate in range(subscription["symbols"]):
                self.core.book.subscribe(locate, False)
        self.feed_parser = ParserModel()
        self.tick_parser = ParserModel()
        self.cycle = 0
        self.blocks = {name: Counter() for name in ("tickrx", "egress", "fills", "tob", "core")}
        self.guard: Counter = Counter()
        self._clear_latency()
        self._tob_sequence = 0
        self._ident = 0
        self._out: dict[str, deque[Datagram]] = {ch: deque() for ch in RECEIVE_CHANNELS}

    # -- registers ------------------------------------------------------------------------------

    def _reg(self, name: str, default: int = 0) -> int:
        entry = self.description["registers"].get(name)
        return default if entry is None else self.endpoint.values[entry["address"]]

    def _window_params(self, locate: int | None) -> QuoteParams:
        """The ``params`` window of ``locate`` as QuoteParams (``None``: the reset values)."""
        win = self.description["windows"]["params"]
        values = {}
        for f in win["fields"]:
            if locate is None:
                raw = f["reset"] & ((1 << f["width"]) - 1)
            else:
                raw = self.endpoint.values[win["base"] + locate * win["stride"] + f["index"]]
            values[f["name"]] = _signed(raw, f["width"]) if f["signed"] else raw
        values["enabled"] = bool(values["enabled"])
        return QuoteParams(**values)

    def _ingress_config(self) -> IngressConfig:
        groups, ports = set(), set()
        for k in (0, 1):
            group, port = self._reg(f"feed_group{k}"), self._reg(f"feed_port{k}")
            if group >> 32 & 1:
                groups.add((group & _MASK32).to_bytes(4, "big"))
            if port >> 16 & 1:
                ports.add(port & 0xFFFF)
        zero = bool(self._reg("allow_zero_checksum"))
        return IngressConfig(frozenset(groups), frozenset(ports), allow_zero_checksum=zero)

    def _clear_latency(self) -> None:
        self.latency = {"min": 0, "max": 0, "sum": 0, "count": 0}
        self.histogram = [0] * self._buckets

    def _record_latency(self, value: int) -> None:
        lat = self.latency
        lat["min"] = value if lat["count"] == 0 else min(lat["min"], value)
        lat["max"] = max(lat["max"], value)
        lat["sum"] += value
        lat["count"] += 1
        if self._buckets:
            self.histogram[min(value.bit_length(), self._buckets - 1)] += 1

    def status(self) -> dict[str, int]:
        """Every ``ro`` register by name, as the device would read it now."""
        blocks = dict(self.blocks)
        ingress = self.core.ingress.counters
        feed = {f"filter_{k}": v for k, v in ingress.items()}
        feed |= {f"mold_{k}": v for k, v in (ingress + self.feed_parser.counters).items()}
        blocks["feed"] = feed
        blocks["tick"] = self.tick_parser.counters
        blocks["book"] = self.core.book.counters + Counter(events=self.core.counters["messages"])
        blocks["quoter"] = self.core.quoter.counters
        blocks["core"] = {"stale_marks": self.core.ingress.stale_marks, **self.blocks["core"]}
        values = {f"latency_{k}": v for k, v in self.latency.items()}
        values |= {f"latency_hist{k}": v for k, v in enumerate(self.histogram)}
        values |= {"cycle": self.cycle, "symbols": self.config.symbols}
        values |= {"clock_hz": self.config.clock_hz, **self.guard}
        out = {}
        for name, width in self._status_regs:
            value = values.get(name)
            if value is None:
                block, _, rest = name.partition("_")
                value = blocks.get(block, {}).get(rest, 0)
            out[name] = value & ((1 << width) - 1)
        return out

    def _on_write(self, address: int, old: int, new: int) -> None:
        name = self._names.get(address)
        if name == "kill_switch":
            stamp = self.cycle & _MASK32
            self._emit(CoreOutput(orders=self.core.quoter.set_kill(bool(new), stamp)), stamp)
        elif name == "recover_epoch" and new != old:
            self.core.recover()
            self.blocks["core"]["recoveries"] += 1
        elif name == "latency_clear_epoch" and new != old:
            self._clear_latency()
        elif name and name.startswith(("feed_group", "feed_port", "allow_zero")):
            self.core.ingress.config = self._ingress_config()
        elif name is None:
            for wname, win in self.description["windows"].items():
                offset = address - win["base"]
                if 0 <= offset < win["symbols"] * win["stride"]:
                    locate = offset // win["stride"]
                    if wname == "params":
                        self.core.quoter.set_params(locate, self._window_params(locate))
                    elif wname == "subscription":
                        self.core.book.subscribe(locate, bool(new))

    # -- the Transport interface ----------------------------------------------------------------

    def request(self, payload: bytes, timeout: float | None = None) -> bytes:
        """Answer one control request as the device would, or raise :class:`DeviceTimeout` at
        once for one it drops (counted in the guard counters)."""
        self.guard["frames"] += 1
        self.counters.sent["control"] += 1
        self._take_frame(_PAYLOAD_AT + len(payload))
        drop = None
        try:
            req = control.decode_request(payload)
        except DecodeError:
            req, drop = None, "malformed"
        if self.host_ip not in self.endpoint.peers():
            drop = "not_peer"
        elif req is not None and req.token != self._reg("session_token"):
            drop = "bad_token"
        if drop:
            self.guard[drop] += 1
            self.counters.timeouts += 1
            rid = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else 0
            raise DeviceTimeout(self.config.ip, self.config.control_port, 0.0, 1, rid)
        self.guard["accepted"] += 1
        old = self.endpoint.values.get(req.address)
        if req.opcode == control.Opcode.READ:
            self.endpoint.status = self.status()
        response = self.endpoint.handle(payload, self.host_ip)
        decoded = control.decode_response(response)
        self.guard["responses"] += 1
        self.guard["refused"] += decoded.status != control.Status.OK
        if req.opcode == control.Opcode.WRITE and decoded.status == control.Status.OK:
            self._on_write(req.address, old, self.endpoint.values[req.address])
        self.counters.received["control"] += 1
        return response

    def send(self, channel: str, payload: bytes) -> None:
        if channel not in SEND_CHANNELS:
            raise ValueError(f"send channel must be one of {SEND_CHANNELS}, not {channel!r}")
        self.counters.sent[channel] += 1
        {"feed": self._feed, "tick": self._ticks, "orders": self._fills}[channel](bytes(payload))

    def recv(self, channel: str, timeout: float = 0.0) -> Datagram | None:
        """The next payload the model produced on ``channel``; never waits (nothing else could
        produce one while the caller waits)."""
        if channel not in RECEIVE_CHANNELS:
            raise ValueError(f"receive channel must be one of {RECEIVE_CHANNELS}, not {channel!r}")
        if not self._out[channel]:
            return None
        self.counters.received[channel] += 1
        return self._out[channel].popleft()

    def close(self) -> None:
        """Nothing to release: the models live as long as the object."""

    # -- inputs ---------------------------------------------------------------------------------

    def _take_frame(self, length: int) -> int:
        """The cycle a frame of ``length`` bytes starts in; time moves past it."""
        start = self.cycle
        self.cycle += -(-max(length, 60) // 8) + _IFG
        return start

    def _feed(self, payload: bytes) -> None:
        group = (self._reg("feed_group0") & _MASK32).to_bytes(4, "big")
        frame = ethernet.encode_udp_frame(
            ethernet.UdpFrame(
                dst_mac=bytes((0x01, 0x00, 0x5E, group[1] & 0x7F, group[2], group[3])),
                src_mac=_FEED_SRC_MAC,
                src_ip=_FEED_SRC[0],
                dst_ip=group,
                src_port=_FEED_SRC[1],
                dst_port=self._reg("feed_port0") & 0xFFFF,
                payload=payload,
                ident=self._ident,
            )
        )
        self._ident = (self._ident + 1) & 0xFFFF
        start, ends = self._take_frame(len(frame)), _message_ends(payload, _PAYLOAD_AT)

        def stamp_of(sequence: int | None) -> int:
            return (start + ends.get(sequence, len(frame) - 1) // 8) & _MASK32

        out = self.core.frame(frame, start & _MASK32, stamp_of=stamp_of)
        for item in self.core.ingress.delivered:
            self.feed_parser.message(item.data, item.sequence, stamp_of(item.sequence))
            locate = int.from_bytes(item.data[1:3], "big")
            if item.data[:1] == b"R" and locate >= self.config.symbols:
                self.blocks["egress"]["directory_ignored"] += 1
        self._emit(out, stamp_of)

    def _ticks(self, payload: bytes) -> None:
        self.blocks["tickrx"].update(frames=1, accepted=1)
        start = self._take_frame(_PAYLOAD_AT + len(payload))
        for offset in range(0, len(payload), _TICK_SIZE):
            last = _PAYLOAD_AT + min(offset + _TICK_SIZE, len(payload)) - 1
            stamp = (start + last // 8) & _MASK32
            event = self.tick_parser.tick(payload[offset : offset + _TICK_SIZE], stamp)
            if event is not None:
                out = self.core.message(_itch_of_event(event), event.sequence, stamp)
                self._emit(out, stamp)

    def _fills(self, payload: bytes) -> None:
        """The fill parser's rules (:mod:`tick2quote.hdl.fills`) on one datagram."""
        counts = self.blocks["fills"]
        counts["filter_frames"] += 1
        self._take_frame(_PAYLOAD_AT + len(payload))
        if len(payload) < 20:
            counts["filter_short_payload"] += 1
            return
        counts["filter_accepted"] += 1
        pos = 0
        while pos < len(payload):
            if pos + 3 > len(payload):
                counts["truncated"] += 1
                return
            length = int.from_bytes(payload[pos : pos + 2], "big")
            if length == 0:
                counts["malformed"] += 1
                return
            end = pos + 2 + length
            if end > len(payload):
                counts["truncated"] += 1
                return
            counts[self._fill_packet(payload[pos + 2 : end])] += 1
            pos = end

    def _fill_packet(self, packet: bytes) -> str:
        if packet[:2] != b"SE":
            return "skipped"
        message = packet[1:]
        if len(message) < 36 or len(message) != 36 + int.from_bytes(message[34:36], "big"):
            return "malformed"
        record, _ = ouch.decode(message, "from_exchange")
        if not 0 <= record.price < 1 << 32:
            return "bad_price"
        self.core.fill(record.user_ref_num, record.quantity, record.price)
        return "fills"

    # -- outputs --------------------------------------------------------------------------------

    def _put(self, channel: str, payload: bytes) -> None:
        port = self.config.order_port if channel == "orders" else self.config.tob_port
        datagram = Datagram(
            channel, payload, time.perf_counter_ns(), "model", (self.config.ip, port)
        )
        self._out[channel].append(datagram)

    def _emit(self, out: CoreOutput, stamp: int | Callable[[int | None], int]) -> None:
        """Send ``out``; ``stamp`` is the ingress stamp, or gives it by MoldUDP64 sequence."""
        for top in out.tops:
            bbo = top.bbo
            record = tobfeed.make(
                frame_sequence=self._tob_sequence,
                locate=top.locate,
                bid_px=bbo.bid_px,
                bid_sz=bbo.bid_sz,
                ask_px=bbo.ask_px,
                ask_sz=bbo.ask_sz,
                flags=tobfeed.FLAG_STALE if bbo.stale else 0,
                book_sequence=top.sequence or 0,
                stamp=stamp(top.sequence) if callable(stamp) else stamp,
            )
            self._tob_sequence += 1
            self.blocks["tob"]["sent"] += 1
            self._put("tob", tobfeed.encode(record))
        for order in out.orders:
            self._put("orders", ouch.encode_soup("U", ouch.encode(self._ouch(order))))
            self.blocks["egress"][order.kind] += 1
            self._record_latency(self.latency_cycles)

    def _ouch(self, order):
        """The OUCH 5.0 message the egress builds for ``order``."""
        if order.kind == "cancel":
            return ouch.make("to_exchange", "X", user_ref_num=order.user_ref_num, quantity=0)
        common = dict(
            user_ref_num=order.user_ref_num,
            quantity=order.quantity,
            price=order.price,
            time_in_force="0",
            display="Y",
            intermarket_sweep="N",
            cl_ord_id=f"T{order.stamp & _MASK32:08X}",
            appendage_length=0,
        )
        if order.kind == "replace":
            return ouch.make(
                "to_exchange", "U", orig_user_ref_num=order.orig_user_ref_num, **common
            )
        symbol = self.core.book.symbol(order.locate) if order.locate < self.config.symbols else None
        return ouch.make(
            "to_exchange",
            "O",
            side=order.side,
            symbol=symbol or "",
            capacity="P",
            cross_type="N",
            **common,
        )
