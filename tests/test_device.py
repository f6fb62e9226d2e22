"""The Device API over the in-process ModelDevice, checked against a reference CoreModel fed
the same feed directly (frames from sim.feedwriter, parameters set on the model, not through
registers) and against the SimulatedExchange's own bookkeeping of fills."""

from __future__ import annotations

import dataclasses

import pytest
from tick2quote.hdl.coremap import CoreConfig
from tick2quote.host.device import Device
from tick2quote.host.exchange import SimulatedExchange
from tick2quote.host.modeldevice import ModelDevice
from tick2quote.host.protocol import tick
from tick2quote.host.transport import Transport
from tick2quote.sim.corescenario import new_model
from tick2quote.sim.feed import FeedConfig, generate, to_frames, write_itch, write_pcap
from tick2quote.sim.feedwriter import to_packets, to_ticks
from tick2quote.sim.models.book import BookModel
from tick2quote.sim.models.pricing import QuoteParams

CFG = CoreConfig(
    symbols=64, order_sets=256, order_ways=4, ladder_depth=8, ref_window=256, peers=("127.0.0.1",)
)
PARAMS = {
    2: dict(spread_bps=50, skew_num=-3, skew_shift=2, quote_size=300),
    3: dict(enabled=False),
    5: dict(min_edge_bps=15, max_order_qty=50),
}


@pytest.fixture(scope="module")
def messages():
    return generate(FeedConfig(seed=11, symbols=10, messages=1500))


def _device(**kwargs) -> tuple[Device, ModelDevice]:
    model = ModelDevice(CFG, **kwargs)
    return Device(model, model.description), model


def _reference(msgs, params=PARAMS):
    """The reference core fed ``msgs`` as frames; stamps are the causing message's sequence."""
    core = new_model(CFG)
    for locate, fields in params.items():
        core.quoter.set_params(locate, QuoteParams(**{**dataclasses.asdict(CFG.default), **fields}))
    tops, orders = [], []
    for frame in to_frames(msgs, per_packet=8):
        out = core.frame(frame, stamp_of=lambda sequence: sequence)
        tops += out.tops
        orders += out.orders
    return core, tops, orders


def _key(order):
    return order.kind, order.locate, order.side, order.user_ref_num, order.quantity, order.price


def _device_key(o):
    return o.kind, o.locate, o.side, o.user_ref, o.qty, o.price


def _run(msgs):
    device, model = _device()
    for locate, fields in PARAMS.items():
        device.set_params(locate, **fields)
    device.set_kill(False)
    device.stream_feed(msgs)
    return device, model, list(device.orders()), list(device.tops())


def test_orders_and_tops_equal_the_reference_model(messages):
    _device_, _model, orders, tops = _run(messages)
    _core, ref_tops, ref_orders = _reference(messages)
    assert len(ref_orders) > 100 and {o.kind for o in ref_orders} == {"enter", "replace", "cancel"}
    assert [_device_key(o) for o in orders] == [_key(o) for o in ref_orders]
    assert [o.orig_user_ref for o in orders] == [o.orig_user_ref_num for o in ref_orders]
    bbo = [(t.locate, t.bid_px, t.bid_sz, t.ask_px, t.ask_sz, t.stale) for t in tops]
    assert bbo == [(t.locate, *dataclasses.astuple(t.bbo)) for t in ref_tops]
    assert [t.book_sequence for t in tops] == [t.sequence for t in ref_tops]
    # Each order is stamped with its causing message's ingress cycle: the device's stamps are
    # ordered exactly as the causing messages' sequence numbers (the reference's stamps).
    stamped = [(o.stamp, r.stamp) for o, r in zip(orders, ref_orders) if o.type != "X"]
    assert all(s is not None for s, _ in stamped)
    for (a, ra), (b, rb) in zip(stamped, stamped[1:]):
        assert (a < b, a == b) == (ra < rb, ra == rb)
    assert [t.seq for t in tops] == list(range(len(tops)))


def test_counters_move_as_the_reference_counts(messages):
    device, _model, orders, tops = _run(messages)
    core, ref_tops, ref_orders = _reference(messages)
    counters = device.read_counters()
    assert counters["feed_mold_messages"] == len(messages)
    assert counters["feed_filter_accepted"] == len(to_frames(messages, per_packet=8))
    for name in ("applied", "ignored", "levels_evicted"):
        assert counters[f"book_{name}"] == core.book.counters[name]
    for name in ("evaluations", "updates", "unchanged", "pull_empty", "enter", "cancel"):
        assert counters[f"quoter_{name}"] == core.quoter.counters[name], name
    for kind in ("enter", "replace", "cancel"):
        assert counters[f"egress_{kind}"] == sum(o.kind == kind for o in ref_orders)
    assert counters["tob_sent"] == len(tops) == len(ref_tops)
    assert counters["accepted"] > 0 and counters["responses"] == counters["accepted"] - 1
    status = device.read_status()
    assert status["clock_hz"] == CFG.clock_hz and status["symbols"] == CFG.symbols
    assert status["cycle"] > max(o.stamp for o in orders if o.stamp is not None)


def test_kill_switch_pulls_every_live_quote(messages):
    device, model, _orders, _tops = _run(messages)
    core, _, _ = _reference(messages)
    expected = core.quoter.set_kill(True)
    assert expected
    device.set_kill(True)
    pulled = list(device.orders())
    assert [(o.type, o.user_ref, o.locate, o.side) for o in pulled] == [
        ("X", o.user_ref_num, o.locate, o.side) for o in expected
    ]
    assert device.read_counters()["quoter_pull_kill"] == core.quoter.counters["pull_kill"]
    device.stream_feed(generate(FeedConfig(seed=12, symbols=10, messages=300))[-200:])
    assert [o.type for o in device.orders()] == []  # nothing quotes while killed
    assert device.read("kill_switch") == 1


class _Tee(Transport):
    """Passes everything to ``inner`` and keeps the order datagrams it hands out."""

    def __init__(self, inner: Transport):
        super().__init__()
        self.inner, self.orders = inner, []

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


def test_fills_from_the_exchange_move_the_models_position(messages):
    model = ModelDevice(CFG)
    tee = _Tee(model)
    device = Device(tee, model.description)
    device.configure(range(1, 11), spread_bps=2)  # inside the touch: prints fill us
    device.set_kill(False)
    exchange, market = SimulatedExchange(clock=lambda: 0), BookModel()
    for start in range(0, len(messages), 8):
        chunk = messages[start : start + 8]
        device.stream_feed(chunk)
        for payload in tee.orders:
            device.send_exchange(exchange.on_bytes(payload))
        tee.orders.clear()
        for msg in chunk:
            touch = market.apply(msg)
            executed = exchange.on_market(msg, touch.bbo if touch else None)
            device.send_exchange(exchange.frame(executed))
    positions = exchange.positions()
    assert exchange.counters["executed"] >= 5 and any(positions.values())
    for symbol, position in positions.items():
        locate = device.decoder.directory[symbol]
        assert model.core.quoter.position(locate) == position
        assert model.core.quoter.cash(locate) == exchange.cash()[symbol]
    counters = device.read_counters()
    assert counters["fills_fills"] == counters["quoter_fills"] == exchange.counters["executed"]
    device.send_fill(0xFFFF_0000, 10, 1_000)  # never issued
    device.send_fill(1, 10, -5)  # refused by the fill parser: negative price
    counters = device.read_counters()
    assert counters["quoter_unknown_fill"] == 1 and counters["fills_bad_price"] == 1


def test_latency_registers_and_a_torn_read(messages):
    device, model = _device(latency_cycles=14)
    device.set_kill(False)
    device.stream_feed(messages[:400])
    sent = sum(1 for _ in device.orders())
    summary = device.latency()
    assert (summary.count, summary.min, summary.p99, summary.max) == (sent, 14, 14, 14)
    assert device.latency_ns().p99 == round(14 * 1e9 / CFG.clock_hz)

    status = model.status
    torn = {"left": 1}

    def tearing():  # the next read of the statistics sees one sample more than the histogram
        values = status()
        if torn["left"]:
            torn["left"] -= 1
            values["latency_count"] += 1
        return values

    model.status = tearing
    assert device.latency().count == sent  # the torn read was taken again
    torn["left"] = 1
    with pytest.raises(ValueError, match="count"):
        device.latency(attempts=1)
    device.clear_latency()
    assert device.latency().count == 0


def test_parameters_and_subscription_by_register(messages):
    device, model = _device()
    assert device.set_params(2, spread_bps=35, skew_num=-7) == {"spread_bps": 35, "skew_num": -7}
    assert device.params(2)["skew_num"] == -7 and model.core.quoter.params(2).skew_num == -7
    sent = model.counters.sent["control"]
    with pytest.raises(ValueError, match="tick"):
        device.set_params(2, tick=5)
    with pytest.raises(KeyError, match="spread"):
        device.set_params(2, spread=1)
    assert model.counters.sent["control"] == sent  # refused before anything was sent
    device.configure([6, 7], quote_size=250)
    assert model.core.quoter.params(7).quote_size == 250
    device.subscribe([4], tracked=False)
    assert 4 not in device.subscriptions() and 5 in device.subscriptions()
    device.set_kill(False)
    device.stream_feed(messages)
    assert {o.locate for o in device.orders()} & {4} == set()
    assert device.read_counters()["book_untracked"] > 0


def test_tick_records_quote_and_orders_find_their_locate(messages):
    device, model = _device()
    device.set_kill(False)
    records = to_ticks(messages)
    quoted, checked, datagrams = set(), 0, 0
    for start in range(0, len(records), 50):
        report = device.stream_feed(records[start : start + 50], per_packet=5)
        datagrams += report.datagrams
        orders = list(device.orders())
        assert all(o.symbol is None for o in orders if o.type == "O")  # ticks name no symbol
        quoted |= {(o.locate, o.user_ref) for o in orders if o.type != "X"}
        quoter = model.core.quoter
        live = {(loc, v[0]) for loc in range(CFG.symbols) for v in quoter.live(loc).values()}
        assert live <= quoted  # each live order's locate came from its stamp
        checked += len(live)
    assert checked > 50
    counters = device.read_counters()
    assert counters["tick_add"] == sum(r.message_type == tick.ADD for r in records)
    assert counters["tickrx_accepted"] == datagrams


def test_file_sources_and_pacing(messages, tmp_path):
    msgs = messages[:300]
    pcap, day = tmp_path / "feed.pcap", tmp_path / "feed.itch"
    write_pcap(pcap, msgs, per_packet=8)
    write_itch(day, msgs)
    results = []
    for source in (msgs, pcap, day):
        device, _ = _device()
        device.set_kill(False)
        report = device.stream_feed(source)
        assert report.messages == len(msgs) and report.skipped == 0
        results.append([_device_key(o) for o in device.orders()])
    assert results[0] and results[0] == results[1] == results[2]
    device, _ = _device()
    report = device.stream_feed(msgs[:120], rate=1000)
    assert 0.105 <= report.seconds < 0.6  # 15 datagrams, the last due at 112 ms
    assert report.rate <= 1000 * 120 / 112 * 1.05


def test_a_gap_goes_stale_until_recover(messages):
    packets = to_packets(messages, per_packet=8)
    lost, resume = len(packets) // 3, 2 * len(packets) // 3
    device, _model = _device()
    device.set_kill(False)
    device.stream_feed(packets[:lost] + packets[lost + 1 : resume])
    before = list(device.orders())
    tops = list(device.tops())
    assert device.read_counters()["feed_mold_gaps"] == 1
    assert device.read_counters()["core_stale_marks"] == 1
    after_gap = [t for t in tops if t.book_sequence >= packets[lost + 1].sequence]
    assert after_gap and all(t.stale for t in after_gap)
    assert device.recover() == 1 and device.read_counters()["core_recoveries"] == 1
    device.stream_feed(packets[resume:])
    after = list(device.orders())
    assert not any(t.stale for t in device.tops())

    core = new_model(CFG)
    expected = []
    for k, frame in enumerate(to_frames(messages, per_packet=8)[:resume]):
        if k != lost:
            expected += core.frame(frame).orders
    core.recover()
    expected_after = [
        o for f in to_frames(messages, per_packet=8)[resume:] for o in core.frame(f).orders
    ]
    assert [_device_key(o) for o in before] == [_key(o) for o in expected]
    assert [_device_key(o) for o in after] == [_key(o) for o in expected_after]
    assert {o.type for o in after} >= {"O"}  # quoting again
