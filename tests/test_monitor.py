"""The monitor: figures and alerts from readings, the Prometheus text (checked with a parser of
the exposition format written here), the ledger (against the SimulatedExchange's own positions
and cash, fed through the twin's tap format), the HTTP endpoint and the CLI over UDP."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from test_transport import ModelServer
from tick2quote.hdl.coremap import CoreConfig
from tick2quote.host.cli import main
from tick2quote.host.device import Device, OrderMessage, Top
from tick2quote.host.exchange import SimulatedExchange
from tick2quote.host.latency import from_device_registers
from tick2quote.host.modeldevice import ModelDevice
from tick2quote.host.monitor import (
    ALERTS,
    Ledger,
    LedgerView,
    Reading,
    Thresholds,
    alerts,
    figures,
    prometheus_text,
    take_reading,
)
from tick2quote.host.monitor_cli import CONTENT_TYPE, PrometheusServer
from tick2quote.host.protocol import ethernet, tap
from tick2quote.host.transport import Transport
from tick2quote.sim.feed import FeedConfig, generate
from tick2quote.sim.models.book import BookModel

CFG = CoreConfig(
    symbols=64, order_sets=256, order_ways=4, ladder_depth=8, ref_window=256, peers=("127.0.0.1",)
)
HZ = 156_250_000


def _latency(samples: list[int]):
    hist = [0] * 32
    for v in samples:
        hist[min(v.bit_length(), 31)] += 1
    return from_device_registers(min(samples), max(samples), sum(samples), len(samples), hist)


def _reading(t, counters, samples=(10, 20, 900), ledger=None):
    return Reading(t, counters, _latency(list(samples)), HZ, ledger)


def test_alerts_fire_only_past_their_thresholds():
    quiet = {"feed_mold_messages": 100, "feed_overflow": 0, "tob_dropped": 0, "egress_enter": 5}
    before = _reading(10.0, quiet)
    fig = figures(_reading(11.0, quiet), before)
    # p99 is the upper edge of 900's bucket (512..1023), clamped to the max: 900 cycles.
    assert fig.latency_p99_ns == round(900 * 1e9 / HZ)  # 5760 ns
    assert alerts(fig, Thresholds(p99_ns=6_000)) == []
    assert [a.name for a in alerts(fig, Thresholds(p99_ns=5_000))] == ["high_latency"]

    busy = dict(quiet, feed_mold_messages=100 + 600_000, feed_overflow=3, tob_dropped=2)
    view = LedgerView(
        pnl=-12_500.0, positions={7: -6_000, 8: 10}, fills=9, unknown_fills=0, active=2
    )
    fig = figures(_reading(11.0, busy, ledger=view), before)
    assert fig.message_rate == 600_000 and fig.drops == {"feed_overflow": 3, "tob_dropped": 2}
    assert fig.overload == {"feed_overflow": 3, "tob_dropped": 2} and fig.max_position == 6_000
    raised = alerts(fig, Thresholds(p99_ns=None, max_loss=10_000, max_position=5_000))
    assert [a.name for a in raised] == ["large_loss", "large_position", "overload", "drops"]
    assert raised[0].value == -12_500 and raised[2].message.endswith("tob_dropped +2")
    relaxed = Thresholds(p99_ns=None, max_loss=20_000, max_position=6_000, max_drops=5)
    assert [a.name for a in alerts(fig, relaxed)] == ["overload"]  # overload counters moved
    rate_only = figures(_reading(11.0, dict(busy, feed_overflow=0, tob_dropped=0)), before)
    assert alerts(rate_only, Thresholds(p99_ns=None, max_message_rate=1e6)) == []
    limited = Thresholds(p99_ns=None, max_message_rate=5e5)
    assert [a.name for a in alerts(rate_only, limited)] == ["overload"]


def test_counter_deltas_wrap_at_32_bits():
    before = _reading(0.0, {"egress_enter": 0xFFFF_FFF0, "quoter_fills": 5})
    fig = figures(_reading(2.0, {"egress_enter": 0x10, "quoter_fills": 9}), before)
    assert fig.order_rates["enter"] == 0x20 / 2 and fig.fill_rate == 2.0


def test_figures_from_a_device():
    model = ModelDevice(CFG, latency_cycles=30)
    device = Device(model, model.description)
    device.set_kill(False)
    first = take_reading(device, 100.0)
    msgs = generate(FeedConfig(seed=4, symbols=8, messages=800))
    device.stream_feed(msgs)
    orders = list(device.orders())
    fig = figures(take_reading(device, 102.0), first)
    assert fig.orders["enter"] == sum(o.type == "O" for o in orders)
    assert fig.order_rates["cancel"] == sum(o.type == "X" for o in orders) / 2
    assert fig.message_rate == len(msgs) / 2 and fig.samples == len(orders)
    assert fig.latency_avg_ns == fig.interval_avg_ns == pytest.approx(30 * 1e9 / HZ)
    assert fig.pnl is None and fig.drops_total == 0


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _parse(text: str) -> dict:
    """Families of a text exposition: name -> {"help", "type", "samples": [(labels, value)]}."""
    assert text.endswith("\n")
    families, current = {}, None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert name not in families, f"{name} declared twice"
            current = families[name] = {"help": help_text, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name in families and families[name]["type"] is None and not current["samples"]
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped")
            families[name]["type"] = kind
        else:
            name, labels, value = _SAMPLE.match(line).groups()
            assert name in families and families[name]["type"], f"{name} undeclared"
            pairs = _LABEL.findall(labels or "")
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or "")
            unescaped = {
                k: re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), v) for k, v in pairs
            }
            families[name]["samples"].append((unescaped, float(value)))
    return families


def test_prometheus_text_is_a_valid_exposition_of_the_figures():
    counters = {"egress_enter": 7, "egress_replace": 3, "egress_cancel": 2, "quoter_fills": 4}
    counters['odd "name"\\\n'] = 1  # label values are escaped
    view = LedgerView(pnl=-1.5, positions={3: 40}, fills=4, unknown_fills=0, active=1)
    fig = figures(_reading(1.0, counters, ledger=view), _reading(0.0, {}))
    raised = alerts(fig, Thresholds(p99_ns=1_000))
    families = _parse(prometheus_text(fig, raised))
    assert families["t2q_orders_total"]["type"] == "counter"
    assert families["t2q_orders_total"]["samples"] == [
        ({"kind": "enter"}, 7.0),
        ({"kind": "replace"}, 3.0),
        ({"kind": "cancel"}, 2.0),
    ]
    assert families["t2q_latency_p99_ns"]["samples"] == [({}, fig.latency_p99_ns)]
    assert families["t2q_pnl_dollars"]["samples"] == [({}, -1.5)]
    assert families["t2q_max_abs_position"]["samples"] == [({}, 40.0)]
    alert_values = dict((labels["name"], v) for labels, v in families["t2q_alert"]["samples"])
    assert alert_values == {name: float(name == "high_latency") for name in ALERTS}
    device_counters = {lab["name"]: v for lab, v in families["t2q_device_counter"]["samples"]}
    assert device_counters == {k: float(v) for k, v in counters.items()}
    bare = figures(_reading(1.0, {}))  # no ledger: no PnL family at all
    assert "t2q_pnl_dollars" not in _parse(prometheus_text(bare, []))


def test_ledger_pnl_by_hand():
    ledger = Ledger()
    ledger.on_order(OrderMessage("O", 1, None, 5, "B", 100, 100_000, 1, "ABC"))
    ledger.on_order(OrderMessage("O", 2, None, 5, "S", 100, 105_000, 1, "ABC"))
    ledger.on_fill(1, 100, 100_000)  # bought 100 @ 10.00
    ledger.on_fill(2, 60, 105_000)  # sold 60 @ 10.50
    assert ledger.view().pnl == pytest.approx(-1000 + 630 + 40 * 10.50)  # marked at last fill
    ledger.on_top(Top(0, 5, 101_000, 100, 103_000, 100, False))
    view = ledger.view()
    assert view.pnl == pytest.approx(-1000 + 630 + 40 * 10.20)  # marked at the mid
    assert view.positions == {5: 40} and view.fills == 2 and view.active == 1  # 2 has 40 open
    ledger.on_fill(99, 1, 1)
    assert ledger.view().unknown_fills == 1


class _Tap(Transport):
    """A ModelDevice whose traffic is also written as the twin's tap datagrams."""

    def __init__(self, inner: ModelDevice):
        super().__init__()
        self.inner, self.datagrams, self.orders, self.cycle = inner, [], [], 0
        self.ports = {"feed": CFG.feed_port, "orders": CFG.order_port, "tob": CFG.tob_port}

    def _tap(self, direction, channel, payload, peer_port):
        port = self.ports[channel]
        src, dst = (port, peer_port) if direction == tap.OUT else (peer_port, port)
        ip = ipaddress.IPv4Address("127.0.0.1").packed
        frame = ethernet.encode_udp_frame(
            ethernet.UdpFrame(bytes(6), bytes(6), ip, ip, src, dst, payload)
        )
        self.cycle += 1
        self.datagrams.append(tap.encode(tap.TapRecord(direction, self.cycle, frame)))

    def send(self, channel, payload):
        if channel in self.ports:
            self._tap(tap.IN, channel, payload, 40000)
        self.inner.send(channel, payload)

    def recv(self, channel, timeout=0.0):
        datagram = self.inner.recv(channel, timeout)
        if datagram is not None:
            if channel == "orders":
                self.orders.append(datagram.payload)
            peer = CFG.gateway_port if channel == "orders" else CFG.tob_port
            self._tap(tap.OUT, channel, datagram.payload, peer)
        return datagram

    def request(self, payload, timeout=None):
        return self.inner.request(payload, timeout)

    def close(self):
        pass


def test_ledger_from_the_twin_tap_matches_the_exchange():
    model = ModelDevice(CFG)
    wire = _Tap(model)
    device = Device(wire, model.description)
    device.configure(range(1, 9), spread_bps=2)  # inside the touch: prints fill us
    device.set_kill(False)
    exchange, market = SimulatedExchange(clock=lambda: 0), BookModel()
    msgs = generate(FeedConfig(seed=21, symbols=8, messages=2000))
    for start in range(0, len(msgs), 8):
        chunk = msgs[start : start + 8]
        device.stream_feed(chunk)
        while wire.orders:
            device.send_exchange(exchange.on_bytes(wire.orders.pop(0)))
        for msg in chunk:
            touch = market.apply(msg)
            executed = exchange.on_market(msg, touch.bbo if touch else None)
            device.send_exchange(exchange.frame(executed))
    ledger = Ledger(CFG.order_port, CFG.tob_port, CFG.feed_port)
    for datagram in wire.datagrams:
        ledger.on_tap(datagram)
    view, directory = ledger.view(), device.decoder.directory
    assert exchange.counters["executed"] >= 5 and ledger.skipped == 0
    assert view.fills == exchange.counters["executed"] and view.unknown_fills == 0
    assert view.positions == {directory[s]: p for s, p in exchange.positions().items() if p}
    assert dict(ledger.cash) == {directory[s]: c for s, c in exchange.cash().items()}


def test_prometheus_server_serves_the_latest_text():
    server = PrometheusServer(0)
    host, port = server.address
    assert host == "127.0.0.1"
    server.text = "# HELP t2q_x x\n# TYPE t2q_x gauge\nt2q_x 1\n"
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as reply:
        assert reply.headers["Content-Type"] == CONTENT_TYPE
        assert reply.read().decode() == server.text
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"http://{host}:{port}/other", timeout=2)
    server.close()


def test_monitor_cli_over_udp(tmp_path):
    model = ModelDevice(CFG, latency_cycles=30)
    local = Device(model, model.description)
    local.set_kill(False)
    local.stream_feed(generate(FeedConfig(seed=4, symbols=8, messages=600)))
    enters = sum(o.type == "O" for o in local.orders())
    path = tmp_path / "built.json"
    path.write_text(json.dumps({"config": {}, "describe": model.description}))
    server = ModelServer(model)
    try:
        args = ["monitor", "--control-port", str(server.ports["control"]), "--description"]
        args += [str(path), "--count", "2", "--interval", "0.05"]
        calm = CliRunner().invoke(main, args)
        assert calm.exit_code == 0, calm.output
        assert f"{enters:,} (0.0/s)" in calm.output and "no alerts" in calm.output
        alarmed = CliRunner().invoke(main, [*args, "--p99-ns", "100"])
        assert alarmed.exit_code == 1 and "ALERT high_latency" in alarmed.output
        silent = CliRunner().invoke(main, [*args, "--token", "5", "--timeout", "0.02"])
        assert silent.exit_code == 1 and "no answer from 127.0.0.1" in silent.output
    finally:
        server.close()
