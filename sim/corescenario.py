"""Whole-core scenarios: the frames a test sends to a :class:`~tick2quote.hdl.core.Core` and what
the reference models say must come out.

A :class:`Scenario` is a list of :class:`Step`\\ s: feed frames, control requests (configuration,
kill switch), OUCH fills from the exchange, and idle gaps that let the device drain between
them, so the order of effects is the same in the device and in the model. :func:`plan` builds
one from an ITCH message list, using the reference :class:`~.models.core.CoreModel` to choose
fills for orders that are live at that point.

:func:`expected` replays the scenario through a fresh model once the device has run, with each
message stamped by the cycle in which the device saw the frame beat holding its last byte (the
device's ingress stamp), so even the ClOrdID stamps can be compared. :func:`decode_tx` sorts the
device's frames into orders, top-of-book records and control responses;
:func:`ouch_message` is the OUCH 5.0 message a model order must be, byte for byte.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..hdl.coremap import CoreConfig
from ..host.protocol import control, ethernet, ouch, tobfeed
from .feedwriter import to_frames
from .models.book import BookModel
from .models.core import CoreModel, CoreOutput
from .models.ingress import IngressConfig, IngressModel
from .models.pricing import QuoteParams
from .models.quoter import Order, QuoterModel

__all__ = [
    "HOST_IP",
    "HOST_MAC",
    "CONTROL_SRC_PORT",
    "Step",
    "Scenario",
    "plan",
    "expected",
    "decode_tx",
    "ouch_message",
    "control_frame",
    "tick_frame",
    "small_config",
]

HOST_IP = "10.0.0.1"
HOST_MAC = bytes.fromhex("020000000001")
CONTROL_SRC_PORT = 40000
_MOLD_HEADER = 20


@dataclass
class Step:
    """One thing sent to the device: ``kind`` is ``feed``, ``control``, ``fill`` or ``idle``
    (or ``control_params``: no frame, the model takes the parameters the writes before it set).

    ``frame`` is the Ethernet frame (FCS stripped) for all but ``idle``; ``cycles`` the idle
    gap; ``action`` what the model does: ``("kill", on)`` for a kill-switch write, ``(ref,
    quantity, price)`` for a fill, None otherwise.
    """

    kind: str
    frame: bytes = b""
    cycles: int = 0
    action: tuple | None = None


@dataclass
class Scenario:
    """The core's configuration, the steps and the symbol of each locate (for OUCH)."""

    config: CoreConfig
    steps: list[Step] = field(default_factory=list)
    symbols: dict[int, bytes] = field(default_factory=dict)


def small_config(**overrides) -> CoreConfig:
    """A small core that the simulators build quickly, reachable from :data:`HOST_IP`."""
    base = dict(
        symbols=64,
        order_sets=256,
        order_ways=4,
        ladder_depth=8,
        ref_window=256,
        token=0x5EC12E7_70CE,
        peers=(HOST_IP,),
    )
    return CoreConfig(**(base | overrides))


def _udp(cfg_dst: tuple[str, int], payload: bytes, src: tuple[str, int], dst_mac: bytes) -> bytes:
    return ethernet.encode_udp_frame(
        ethernet.UdpFrame(
            dst_mac=dst_mac,
            src_mac=HOST_MAC,
            src_ip=ipaddress.IPv4Address(src[0]).packed,
            dst_ip=ipaddress.IPv4Address(cfg_dst[0]).packed,
            src_port=src[1],
            dst_port=cfg_dst[1],
            payload=payload,
        )
    )


def control_frame(cfg: CoreConfig, regmap: dict, name: str, value: int, request_id: int) -> bytes:
    """A WRITE of register ``name`` (``regmap``: the core's description) from the host."""
    address = regmap["registers"][name]["address"]
    payload = control.encode_request(
        control.Request(control.Opcode.WRITE, request_id, cfg.token, address, value)
    )
    dst_mac = cfg.mac.to_bytes(6, "big")
    return _udp((cfg.ip, cfg.control_port), payload, (HOST_IP, CONTROL_SRC_PORT), dst_mac)


def read_frame(cfg: CoreConfig, address: int, count: int, request_id: int) -> bytes:
    """A READ of ``count`` registers from ``address``."""
    payload = control.encode_request(
        control.Request(control.Opcode.READ, request_id, cfg.token, address, count)
    )
    dst_mac = cfg.mac.to_bytes(6, "big")
    return _udp((cfg.ip, cfg.control_port), payload, (HOST_IP, CONTROL_SRC_PORT), dst_mac)


def tick_frame(cfg: CoreConfig, records: bytes) -> bytes:
    """A datagram of tick records to the device's tick port."""
    dst_mac = cfg.mac.to_bytes(6, "big")
    return _udp((cfg.ip, cfg.tick_port), records, (HOST_IP, 5000), dst_mac)


def _fill_frame(cfg: CoreConfig, ref: int, quantity: int, price: int, match: int) -> bytes:
    record = ouch.make(
        "from_exchange",
        "E",
        timestamp=match,
        user_ref_num=ref,
        quantity=quantity,
        price=price,
        liquidity_flag="A",
        match_number=match,
    )
    payload = ouch.encode_soup("S", ouch.encode(record))
    return _udp(
        (cfg.ip, cfg.order_port),
        payload,
        (cfg.gateway_ip, cfg.gateway_port),
        cfg.mac.to_bytes(6, "big"),
    )


def new_model(cfg: CoreConfig) -> CoreModel:
    """The reference core for ``cfg`` (same book geometry, quoter defaults and window)."""
    return CoreModel(
        IngressModel(IngressConfig()),
        BookModel(cfg.symbols, sets=cfg.order_sets, ways=cfg.order_ways, depth=cfg.ladder_depth),
        QuoterModel(default=cfg.default, ref_window=cfg.ref_window),
    )


def plan(
    cfg: CoreConfig,
    regmap: dict,
    messages: Sequence,
    *,
    seed: int = 0,
    fills: int = 3,
    kill: bool = True,
    per_packet: range = range(1, 9),
    pace: int = 0,
    random_params: bool = False,
) -> Scenario:
    """A scenario: unkill, the feed with a batch of fills a third in and a kill / unkill two
    thirds in (each between idle gaps), then an idle tail. ``pace`` adds that many idle cycles
    per message after each feed frame (0: frames back to back). ``random_params`` first gives
    every symbol of the feed its own random quoting parameters, written field by field through
    the control protocol's ``params`` window."""
    rng = random.Random(seed)
    frames = to_frames(messages, per_packet, dst=(cfg.feed_group, cfg.feed_port), seed=seed)
    scenario = Scenario(cfg)
    for msg in messages:
        if msg.type == "R":
            scenario.symbols[msg.locate] = msg.stock.encode().ljust(8)[:8]
    steps = scenario.steps
    rid = iter(range(1, 1 << 30))
    steps.append(Step("control", control_frame(cfg, regmap, "kill_switch", 0, next(rid))))
    steps.append(Step("idle", cycles=64))
    model = new_model(cfg)
    if random_params:
        locates = sorted({m.locate for m in messages if hasattr(m, "locate")})
        for locate in locates:
            params = random_quote_params(rng)
            for name, value in param_writes(cfg.default, params):
                frame = param_frame(cfg, regmap, locate, name, value, next(rid))
                steps.append(Step("control", frame))
                steps.append(Step("idle", cycles=40))  # one request at a time
            model.quoter.set_params(locate, params)
            steps.append(Step("control_params", action=(locate, params)))
        steps.append(Step("idle", cycles=64))
    live: dict[int, Order] = {}
    drain = 40 + 4 * 40  # the book, quoter and egress empty well within this
    match = 1
    for k, frame in enumerate(frames):
        steps.append(Step("feed", frame))
        if pace:
            steps.append(Step("idle", cycles=pace * _message_count(frame)))
        for order in model.frame(frame).orders:
            _track(live, order)
        if fills and k == len(frames) // 3:
            steps.append(Step("idle", cycles=drain))
            for order in rng.sample(sorted(live.values(), key=lambda o: o.user_ref_num),
                                    min(fills, len(live))):  # fmt: skip
                qty = rng.randint(1, max(1, order.quantity))
                steps.append(
                    Step(
                        "fill",
                        _fill_frame(cfg, order.user_ref_num, qty, order.price, match),
                        action=(order.user_ref_num, qty, order.price),
                    )  # fmt: skip
                )
                model.fill(order.user_ref_num, qty, order.price)
                match += 1
            steps.append(Step("idle", cycles=drain))
        if kill and k == 2 * len(frames) // 3:
            steps.append(Step("idle", cycles=drain))
            for on in (1, 0):
                frame_k = control_frame(cfg, regmap, "kill_switch", on, next(rid))
                steps.append(Step("control", frame_k, action=("kill", bool(on))))
                steps.append(Step("idle", cycles=drain + (2 * cfg.symbols if on else 0)))
                for order in model.quoter.set_kill(bool(on), 0):
                    _track(live, order)
    steps.append(Step("idle", cycles=drain))
    return scenario


def random_quote_params(rng: random.Random) -> QuoteParams:
    """Quoting parameters spread over what makes quotes come and go: ticks of 1 and 100
    units, narrow and wide spreads, inventory skew, small inventories, tight bands, edge and
    loss limits, a symbol disabled now and then. ``refresh_cycles`` stays 0: the throttle
    measures the cycle the quoter takes an event, which the reference model does not see (it
    is exercised at the quoter's own level)."""
    return QuoteParams(
        tick=rng.choice([1, 100]),
        spread_bps=rng.randint(2, 300),
        skew_num=rng.randint(-64, 64),
        skew_shift=rng.randint(0, 10),
        quote_size=rng.randint(1, 500),
        max_order_qty=rng.randint(1, 600),
        max_inventory=rng.randint(0, 800),
        min_edge_bps=rng.choice([0, 0, rng.randint(1, 40)]),
        band_bps=rng.randint(20, 3000),
        max_loss=rng.choice([2**63 - 1, rng.randint(0, 10**9)]),
        refresh_cycles=0,
        enabled=rng.random() > 0.1,
    )


def param_writes(old: QuoteParams, new: QuoteParams) -> list[tuple[str, int]]:
    """``(field, value)`` of every field of ``new`` that differs from ``old``."""
    return [
        (f.name, int(getattr(new, f.name)))
        for f in dataclasses.fields(QuoteParams)
        if getattr(new, f.name) != getattr(old, f.name)
    ]


def param_frame(
    cfg: CoreConfig, regmap: dict, locate: int, name: str, value: int, request_id: int
) -> bytes:
    """A WRITE of one per-symbol quoting parameter (window ``params``)."""
    window = regmap["windows"]["params"]
    index = next(f["index"] for f in window["fields"] if f["name"] == name)
    address = window["base"] + locate * window["stride"] + index
    payload = control.encode_request(
        control.Request(
            control.Opcode.WRITE, request_id, cfg.token, address, value & ((1 << 64) - 1)
        )
    )
    dst_mac = cfg.mac.to_bytes(6, "big")
    return _udp((cfg.ip, cfg.control_port), payload, (HOST_IP, CONTROL_SRC_PORT), dst_mac)


def _track(live: dict[int, Order], order: Order) -> None:
    if order.kind == "replace":
        live.pop(order.orig_user_ref_num, None)
    if order.kind == "cancel":
        live.pop(order.user_ref_num, None)
    else:
        live[order.user_ref_num] = order


def _message_count(frame: bytes) -> int:
    payload = ethernet.decode_udp_frame(frame).payload
    return int.from_bytes(payload[18:20], "big")


def _message_ends(frame: bytes) -> dict[int, int]:
    """MoldUDP64 sequence number -> (offset in the frame of the message's last byte, type)."""
    udp = ethernet.decode_udp_frame(frame)
    pos = udp.payload_offset
    payload = udp.payload
    sequence = int.from_bytes(payload[10:18], "big")
    count = int.from_bytes(payload[18:20], "big")
    ends, at = {}, _MOLD_HEADER
    for k in range(count):
        length = int.from_bytes(payload[at : at + 2], "big")
        kind = chr(payload[at + 2]) if length else ""
        at += 2 + length
        ends[sequence + k] = (pos + at - 1, kind)
    return ends


def expected(
    scenario: Scenario, beat_cycles: Sequence[Sequence[int]], beat_bytes: int = 8
) -> tuple[CoreOutput, CoreModel]:
    """The model's output for a run in which the beats of step ``i``'s frame were taken in
    cycles ``beat_cycles[i]`` (empty for idle steps). Orders of the kill switch and of trading
    state changes carry stamp -1: the device stamps them with the cycle its quoter took the
    change, which is not known here."""
    model = new_model(scenario.config)
    out = CoreOutput()
    for step, cycles in zip(scenario.steps, beat_cycles, strict=True):
        if step.kind == "feed":
            ends = _message_ends(step.frame)

            def stamp_of(sequence: int, ends=ends, cycles=cycles) -> int:
                end, kind = ends[sequence]
                # the quoter stamps a trading-state re-evaluation with the cycle it took it
                return -1 if kind == "H" else cycles[end // beat_bytes]

            result = model.frame(step.frame, stamp_of=stamp_of)
            out.tops += result.tops
            out.orders += result.orders
        elif step.kind == "fill":
            model.fill(*step.action)
        elif step.kind == "control_params":
            model.quoter.set_params(*step.action)
        elif step.kind == "control" and step.action and step.action[0] == "kill":
            out.orders += model.quoter.set_kill(step.action[1], -1)
    return out, model


@dataclass
class TxFrames:
    """The device's frames, decoded: OUCH messages (with the cycle their first beat left),
    top-of-book records and control responses."""

    orders: list[tuple[int, bytes]] = field(default_factory=list)
    tops: list = field(default_factory=list)
    responses: list = field(default_factory=list)
    other: list[bytes] = field(default_factory=list)


def decode_tx(cfg: CoreConfig, frames: Sequence[tuple[int, bytes]]) -> TxFrames:
    """Sort ``(first-beat cycle, frame)`` pairs by destination port (the reset configuration)."""
    out = TxFrames()
    for cycle, frame in frames:
        udp = ethernet.decode_udp_frame(frame)
        if udp.dst_port == cfg.gateway_port and udp.src_port == cfg.order_port:
            (packet,) = list(ouch.iter_soup(udp.payload))
            assert packet.packet_type == "U", packet
            out.orders.append((cycle, bytes(packet.payload)))
        elif udp.dst_port == cfg.tob_port:
            out.tops.append(tobfeed.decode(udp.payload))
        elif udp.dst_port == CONTROL_SRC_PORT:
            out.responses.append(control.decode_response(udp.payload))
        else:
            out.other.append(frame)
    return out


def ouch_message(order: Order, symbol: bytes, stamp: int | None = None) -> bytes:
    """The OUCH 5.0 message of a model order as the device must send it (``stamp`` replaces
    the order's own in the ClOrdID when given)."""
    stamp = order.stamp if stamp is None else stamp
    common = dict(time_in_force="0", display="Y", intermarket_sweep="N", cl_ord_id=f"T{stamp:08X}")
    if order.kind == "enter":
        record = ouch.make("to_exchange", "O", user_ref_num=order.user_ref_num,
                           side=order.side,
                           quantity=order.quantity, symbol=symbol.decode(), price=order.price,
                           capacity="P", cross_type="N", **common)  # fmt: skip
    elif order.kind == "replace":
        record = ouch.make("to_exchange", "U", orig_user_ref_num=order.orig_user_ref_num,
                           user_ref_num=order.user_ref_num, quantity=order.quantity,
                           price=order.price, **common)  # fmt: skip
    else:
        record = ouch.make("to_exchange", "X", user_ref_num=order.user_ref_num, quantity=0)
    return ouch.encode(record)


def symbol_of(scenario: Scenario) -> Callable[[int], bytes]:
    """The OUCH Symbol bytes the device uses for a locate (8 spaces when never named)."""
    return lambda locate: scenario.symbols.get(locate, b" " * 8)
