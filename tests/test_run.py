"""``t2q run`` end to end: through the in-process models and through the device twin (the whole
core, Verilated; the build is cached in ``build/twin`` and shared with tests/test_twin.py),
checked against the reference models fed the same frames directly."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket

import pytest
from click.testing import CliRunner
from tick2quote.host.capture import read_frames, read_messages, write_frames
from tick2quote.host.cli import main
from tick2quote.host.protocol import ethernet, moldudp64
from tick2quote.host.run import RunError, Runner, load_feed
from tick2quote.host.run_cli import open_target, summary
from tick2quote.sim.corescenario import new_model
from tick2quote.sim.feed import FeedConfig, generate, write_itch, write_pcap, write_ticks
from tick2quote.sim.models.pricing import QuoteParams
from tick2quote.sim.twin import TwinError, twin_config

KIND = {"enter": "O", "replace": "U", "cancel": "X"}


@pytest.fixture(scope="module")
def session():
    return generate(FeedConfig(seed=21, symbols=30, messages=1500))


@pytest.fixture(scope="module")
def pcap(session, tmp_path_factory):
    path = tmp_path_factory.mktemp("feed") / "feed.pcap"
    write_pcap(path, session, per_packet=8)
    return path


def _reference(frames, **params):
    """The reference core fed ``frames`` (stamps: each message's sequence number), then the
    kill switch the run sets at its end: ``(tops, orders, pulled)``, tops and orders as the
    run's JSON objects, ``pulled`` the number of cancels the kill switch sent."""
    cfg = twin_config()
    core = new_model(dataclasses.replace(cfg, default=QuoteParams(**params)))
    tops, orders = [], []
    for frame in frames:
        out = core.frame(frame, stamp_of=lambda sequence: sequence)
        tops += out.tops
        orders += out.orders
    pulled = core.quoter.set_kill(True)
    orders += pulled
    bbo = [
        {"kind": "bbo", "seq": t.sequence, "locate": t.locate, **dataclasses.asdict(t.bbo)}
        for t in tops
    ]
    order = [
        {
            "kind": "order",
            "type": KIND[o.kind],
            "user_ref": o.user_ref_num,
            "locate": o.locate,
            "side": o.side,
            "qty": o.quantity,
            "price": o.price,
        }
        for o in orders
    ]
    return bbo, order, len(pulled)


def _frames(path):
    return [frame for _ts, frame, _offset in read_frames(path)]


def _cli(*args):
    result = CliRunner().invoke(main, ["run", *args], catch_exceptions=False)
    return result


def _events(text):
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [e for e in lines if e["kind"] == "bbo"], [e for e in lines if e["kind"] == "order"]


# -------------------------------------------------------------------------------- the models
def test_model_json_equals_the_reference(pcap, tmp_path):
    result = _cli(
        str(pcap),
        "--target=model",
        "--json",
        "--no-fills",
        "--param=spread_bps=10",
        f"--plot={tmp_path / 'p.png'}",
        f"--summary-json={tmp_path / 's.json'}",
    )
    assert result.exit_code == 0, result.output
    tops, orders = _events(result.stdout)
    ref_tops, ref_orders, _ = _reference(_frames(pcap), spread_bps=10)
    assert len(ref_orders) > 200 and {o["type"] for o in ref_orders} == {"O", "U", "X"}
    assert orders == ref_orders
    assert tops == ref_tops
    assert all(line.startswith("{") for line in result.stdout.splitlines())  # nothing else
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["orders"]["total"] == len(orders) and data["fills_sent"] is False


def test_itch_and_tick_files_are_detected(session, pcap, tmp_path):
    day, ticks = tmp_path / "feed.itch", tmp_path / "feed.tick"
    write_itch(day, session)
    write_ticks(ticks, session)
    outputs = {}
    for path in (pcap, day, ticks):
        files = (f"--summary-json={tmp_path / 's.json'}", f"--plot={tmp_path / 'p.png'}")
        result = _cli(str(path), "--target=model", "--json", "--no-fills", *files)
        assert result.exit_code == 0, result.output
        outputs[path.suffix] = _events(result.stdout)[1]
        data = json.loads((tmp_path / "s.json").read_text())
        assert (
            data["feed"]["format"]
            == {".pcap": "pcap", ".itch": "itch", ".tick": "tick"}[path.suffix]
        )
    assert outputs[".itch"] == outputs[".pcap"]  # the same packets: 8 messages each
    assert {o["type"] for o in outputs[".tick"]} == {"O", "U", "X"}


def test_default_feed_and_message_limit(pcap, tmp_path):
    files = (f"--summary-json={tmp_path / 's.json'}", f"--plot={tmp_path / 'p.png'}")
    result = _cli("--target=model", "--messages=400", "--symbols=12", "--seed=3", *files)
    assert result.exit_code == 0, result.output
    generated = generate(FeedConfig(seed=3, symbols=12, messages=400))
    assert [r.message for r in read_messages(tmp_path / "feed.pcap")] == generated
    assert json.loads((tmp_path / "s.json").read_text())["messages"] == len(generated)
    result = _cli(str(pcap), "--target=model", "--messages=100", *files)
    assert result.exit_code == 0, result.output
    assert 100 <= json.loads((tmp_path / "s.json").read_text())["messages"] < 108  # 8 a packet


def test_fills_move_the_devices_position_as_the_exchange_says(pcap):
    with open_target("model") as target:
        runner = Runner(target, load_feed(pcap), params={"spread_bps": 2}).run()
        model = target.recorder.inner
    ex = runner.exchange
    assert ex.counters["executed"] >= 5 and ex.counters["accepted"] > 100
    assert runner.counters["quoter_fills"] == ex.counters["executed"]
    for symbol, position in ex.positions().items():
        locate = runner.device.decoder.directory[symbol]
        assert model.core.quoter.position(locate) == position
        assert model.core.quoter.cash(locate) == ex.cash()[symbol]
    assert not ex.live_orders()  # the final pull cancelled every order the exchange held
    data = summary(runner)
    assert data["fills"]["executions"] == data["fills"]["device_fills"]
    pnl = sum(c + ex.positions()[s] * runner.marks[s] for s, c in ex.cash().items()) / 1e4
    assert data["pnl_dollars"] == pytest.approx(pnl)


# -------------------------------------------------------------------------------- the twin
def test_twin_orders_equal_the_reference_and_the_summary(pcap, tmp_path):
    summary_path = tmp_path / "summary.json"
    files = (f"--plot={tmp_path / 'latency.png'}", f"--summary-json={summary_path}")
    result = _cli(str(pcap), "--json", "--no-fills", "--rate=8000", *files)
    assert result.exit_code == 0, result.output
    tops, orders = _events(result.stdout)
    _ref_tops, ref_orders, pulled = _reference(_frames(pcap))
    assert orders == ref_orders
    data = json.loads(summary_path.read_text())
    for key in ("messages", "messages_per_s", "top_of_book_updates", "orders", "fills",
                "positions", "pnl_dollars", "drops", "stale_marks", "gaps",
                "device_tick_to_quote", "host_round_trip", "twin", "counters"):  # fmt: skip
        assert key in data, key
    assert data["messages"] == len(generate(FeedConfig(seed=21, symbols=30, messages=1500)))
    assert data["counters"]["feed_mold_messages"] == data["messages"]
    quoted = sum(o["type"] != "X" for o in orders)
    device = data["device_tick_to_quote"]
    assert device["source"] == "tap" and device["cycles"]["count"] == quoted
    assert device["ns"]["count"] == quoted
    assert device["ns"]["min"] == round(device["cycles"]["min"] * 1e9 / device["clock_hz"])
    # The registers count every order of the feed, cancels too (read before the final pull).
    registers = device["registers"]
    assert registers["count"] == len(orders) - pulled and pulled > 0
    assert registers["min"] <= device["cycles"]["min"] <= device["cycles"]["max"]
    assert device["cycles"]["max"] <= registers["max"]
    trip = data["host_round_trip"]
    assert trip["orders_with_stamp"] == quoted and 0.9 * quoted <= trip["ns"]["count"] <= quoted
    assert trip["ns"]["min"] > 0 and trip["clock"] in ("kernel", "user")
    assert data["twin"]["cycles"] > 0 and data["twin"]["cycles_per_s"] > 0
    assert len(tops) == data["top_of_book_updates"] == data["counters"]["tob_sent"]
    assert data["stale_marks"] == 0 and data["gaps"] == 0
    for plot in data["plots"]:
        assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(data["plots"]) == 2


def test_twin_gap_goes_stale_and_stops_quoting(session, tmp_path):
    frames = _frames_of(session)
    lost = len(frames) // 2
    gapped = frames[:lost] + frames[lost + 1 :]
    path = tmp_path / "gap.pcap"
    write_frames(path, gapped)
    gap_sequence = moldudp64.decode(ethernet.decode_udp_frame(frames[lost]).payload).sequence
    with open_target("twin") as target:
        runner = Runner(target, load_feed(path), rate=8000, fills=False).run()
    assert runner.counters["feed_mold_gaps"] == 1
    assert runner.counters["feed_mold_gap_messages"] > 0
    assert runner.counters["core_stale_marks"] == 1
    after = [t for t in runner.tops if t.book_sequence > gap_sequence]
    assert after and all(t.stale for t in after)
    first_stale = min(t.stamp for t in after)
    quotes = [o for o in runner.orders if o.type != "X"]
    assert quotes and all(o.stamp < first_stale for o in quotes)  # no quote once stale
    _ref_tops, ref_orders, _ = _reference(gapped)
    assert [(o.type, o.user_ref, o.locate, o.side, o.qty, o.price) for o in runner.orders] == [
        (o["type"], o["user_ref"], o["locate"], o["side"], o["qty"], o["price"]) for o in ref_orders
    ]
    assert summary(runner)["stale_marks"] == 1


def _frames_of(session):
    from tick2quote.sim.feed import to_frames

    return to_frames(session, per_packet=8)


def test_a_device_nobody_answers_for_gives_a_clear_error(pcap, tmp_path):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never answers
    port = silent.getsockname()[1]
    result = CliRunner().invoke(
        main,
        ["run", str(pcap), f"--target=udp://127.0.0.1:{port}", "--timeout=0.2",
         f"--summary-json={tmp_path / 's.json'}"],
    )  # fmt: skip
    silent.close()
    assert result.exit_code == 1
    assert f"does not answer: no answer from 127.0.0.1:{port}" in result.output
    assert "3 attempts" in result.output


def test_a_twin_that_dies_mid_run_gives_a_clear_error(pcap):
    with open_target("twin") as target:
        feed = load_feed(pcap)

        def kill_half_way(sent):
            if sent >= feed.messages // 2 and target.twin.running:
                os.kill(target.twin.pid, signal.SIGKILL)

        with pytest.raises((TwinError, RunError), match="signal 9|stopped answering"):
            Runner(target, feed, rate=20000, on_progress=kill_half_way).run()


def test_a_pcie_target_without_the_card_is_named(pcap):
    result = CliRunner().invoke(main, ["run", str(pcap), "--target=pcie://0000:7f:1f.7"])
    assert result.exit_code == 1
    assert "no PCI device 0000:7f:1f.7 on this machine" in result.output
    result = CliRunner().invoke(main, ["run", str(pcap), "--target=pcie://card0"])
    assert result.exit_code == 1 and "pcie://DOMAIN:BUS:DEVICE.FUNCTION" in result.output
