"""The soak: fuzzed frames through the whole core RTL (the device twin) against the reference
models, the "must never happen" checker, and the host driver against misbehaving devices.

The long run is ``t2q soak --frames 1000000`` (not part of the test suite); here a few thousand
frames, one twin kill included. The twin build is cached in ``build/twin`` (shared with
tests/test_twin.py)."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from tick2quote.host import modeldevice
from tick2quote.host.cli import main
from tick2quote.host.device import Device
from tick2quote.host.modeldevice import ModelDevice, model_description
from tick2quote.host.protocol import itch, moldudp64, ouch
from tick2quote.host.soak import NEVER, QuoteChecker, QuoteContext, host_faults
from tick2quote.host.transport import UdpTransport
from tick2quote.sim import soak as simsoak
from tick2quote.sim.models.parser import EventKind
from tick2quote.sim.models.pricing import QuoteParams
from tick2quote.sim.soak import FEED_MUTATIONS, Fuzzer, SoakConfig, SoakRunner
from tick2quote.sim.twin import Twin, twin_config


# ---------------------------------------------------------------------------------- the fuzzer
def test_fuzzer_is_deterministic_and_makes_every_mutation():
    def run(seed):
        fuzzer = Fuzzer(seed)
        steps = fuzzer.feed(3000, 1.0) + fuzzer.ticks(200) + fuzzer.fills([(5, 100, 1000)], 50)
        return steps, fuzzer.injected

    first, injected = run(4)
    again, _ = run(4)
    assert first == again
    assert run(5)[0] != first
    assert set(FEED_MUTATIONS) <= set(injected)
    for kind in simsoak.TICK_KINDS + ("fill", "fill_unknown", "fill_malformed"):
        assert injected[kind] > 0, kind
    assert first[2999].kind == "probe"  # the batch ends with a clean heartbeat
    assert moldudp64.decode(first[2999].payload).count == moldudp64.HEARTBEAT


def test_clean_feed_is_a_valid_session_in_sequence():
    steps = Fuzzer(2).feed(300, 0.0)
    expected = 1
    for step in steps[:-1]:
        packet = moldudp64.decode(step.payload)
        assert step.kind == "clean" and packet.sequence == expected
        for body in packet.messages:
            itch.decode_message(body)
        expected += packet.count


# ---------------------------------------------------------------------------------- the checker
def _ctx(**changes) -> QuoteContext:
    base = dict(locate=3, bid_px=1000000, bid_sz=500, ask_px=1010000, ask_sz=400, stale=False,
                state="T", kill=False, params=QuoteParams(band_bps=200, max_order_qty=300,
                max_inventory=500), position=0, cash=0)  # fmt: skip
    base.update(changes)
    return QuoteContext(**base)


@pytest.mark.parametrize(
    "ctx, side, qty, price, broken",
    [
        (_ctx(), "B", 100, 1002900, []),
        (_ctx(stale=True), "B", 100, 1002900, ["stale_quoted"]),
        (_ctx(kill=True), "S", 100, 1007100, ["quoted_while_pulled"]),
        (_ctx(state="H"), "S", 100, 1007100, ["quoted_while_pulled"]),
        (_ctx(ask_sz=0), "B", 100, 1002900, ["quoted_while_pulled"]),
        (_ctx(), "B", 100, 1010000, ["crosses_book"]),
        (_ctx(), "S", 100, 1200000, ["outside_band"]),
        (_ctx(), "B", 301, 1002900, ["over_max_order_qty"]),
        (_ctx(position=450), "B", 100, 1002900, ["over_max_inventory"]),
        (_ctx(position=-450), "S", 100, 1007100, ["over_max_inventory"]),
        (_ctx(position=-900), "B", 100, 1002900, []),  # a buy reduces a short beyond the limit
        (_ctx(position=900), "S", 100, 1007100, []),
        (_ctx(cash=-(10**9), position=1), "B", 100, 1002900, ["quoted_while_pulled"]),
    ],
)
def test_checker_names_each_rule(ctx, side, qty, price, broken):
    if ctx.cash:
        ctx = _ctx(cash=-(10**9), position=1, params=QuoteParams(band_bps=200, max_loss=1000))
    found = QuoteChecker().order("O", 7, None, side, qty, price, ctx)
    assert found == broken and set(found) <= set(NEVER)


def test_checker_finds_an_own_crossed_quote_after_an_update():
    checker = QuoteChecker()
    assert checker.order("O", 1, None, "B", 100, 1002900, _ctx()) == []
    assert checker.order("O", 2, None, "S", 100, 1007100, _ctx()) == []
    assert checker.settle(3) == []
    assert checker.order("U", 3, 1, "B", 100, 1008000, _ctx(ask_px=1020000)) == []
    assert checker.settle(3) == ["crossed_own_quote"]
    assert checker.order("X", 2, None, None, 0, 0, None) == []
    assert checker.settle(3) == []
    assert checker.checked == 3


# ---------------------------------------------------------------------------------- the host
def test_host_faults_end_in_typed_errors_in_bounded_time():
    start = time.monotonic()
    results = host_faults(model_description(twin_config()), token=3, timeout=0.05, retries=1)
    assert {r.kind for r in results} == {
        "malformed_reply", "truncated_reply", "other_request_id", "silent_device",
        "slow_device", "device_gone", "malformed_datagrams"}  # fmt: skip
    assert all(r.ok for r in results), results
    assert all(r.outcome != "hang" for r in results)
    assert time.monotonic() - start < 20


# ---------------------------------------------------------------------------------- the RTL
def test_short_soak_through_the_twin_finds_nothing_and_counts_everything(tmp_path):
    config = SoakConfig(frames=4000, batch=300, epoch=2200, seed=4, out_dir=tmp_path)
    report = SoakRunner(config).run()
    assert report.violations == {}, (report.violations, report.reproducers)
    assert report.tried >= 4000 and report.frames["feed"] > 3500
    assert report.checks["batches"] >= 8 and report.checks["orders_compared"] > 100
    assert report.checks["quotes_judged"] > 0 and report.checks["counters_compared"] > 1000
    assert report.host_faults["twin_killed"] == 1
    assert report.host_faults["twin_killed_reported_twinerror"] == 1
    assert report.host_faults["twin_killed_reported_timeout"] == 1
    assert report.checks["lost_after_kill"] > 0
    injected = {k for k, v in report.injected.items() if v}
    assert {"gap", "duplicate", "ab_copy", "truncate", "fill", "params"} <= injected


def test_the_comparison_catches_a_wrong_reference(tmp_path, monkeypatch):
    """With a wrong reference (a tick-record cancel taken as a trade print, which leaves the
    book alone), the soak must report a counter mismatch and save a reproducer."""
    right = modeldevice._itch_of_event

    def cancel_as_delete(event):
        if event.kind is EventKind.CANCEL:
            fields = {"side": chr(event.code), "shares": event.shares, "price": event.price}
            return itch.make("P", locate=event.locate, order_ref=event.order_ref, **fields)
        return right(event)

    monkeypatch.setattr(modeldevice, "_itch_of_event", cancel_as_delete)
    monkeypatch.setattr(simsoak, "BATCH_RATES", (0.0,))
    feed = Fuzzer.feed
    monkeypatch.setattr(Fuzzer, "feed", lambda self, n, rate: feed(self, n, rate) + self.ticks(30))
    config = SoakConfig(frames=800, batch=200, epoch=800, seed=5, out_dir=tmp_path)
    report = SoakRunner(config).run()
    assert report.violations["counter_mismatch"] >= 1
    assert report.reproducers and json.loads(open(report.reproducers[0]).readline())["command"]


def test_cli_prints_the_closing_table_and_writes_json(tmp_path):
    out = tmp_path / "soak.json"
    result = CliRunner().invoke(
        main,
        ["soak", "--frames=700", "--batch=200", "--epoch=400", f"--json={out}",
         f"--out={tmp_path}", "--seed=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for title in ("frames tried", "Faults injected", "violations found"):
        assert title in result.output
    data = json.loads(out.read_text())
    assert data["frames_tried"] >= 700 and data["violations_total"] == 0
    assert data["host_faults_ok"] and data["host_faults"]["twin_killed"] == 1


# A gateware divergence the soak found (t2q soak --frames 20000 --seed 3 --batch 300 --epoch
# 10000, epoch 1 batch 25; and in every 1 000 000-frame run): a Stock Trading Action makes the
# quoter evaluate its symbol from its own cached copy of the book's last top-of-book update, whose
# stale flag neither a MoldUDP64 gap (every symbol stale) nor a recovery reaches. After a gap, a
# resume quotes a stale book (a "must never happen"); after a recovery, a symbol whose last
# update came while stale stays pulled. The models take the book's current flag.
STALE_CASES = {
    "gap_then_resume_quotes_a_stale_book": ("gap", "resume"),
    "recovered_symbol_stays_pulled": ("gap", "update", "recover", "resume"),
}


@pytest.mark.parametrize("case", sorted(STALE_CASES))
def test_trading_action_uses_the_books_current_stale_flag(case):
    with Twin(tail=20_000, ifg=48) as twin:
        roles = {"control": "control", "feed": "feed", "tick": "tick", "orders": "order"}
        transport = UdpTransport("127.0.0.1", {k: twin.ports[v] for k, v in roles.items()})
        dut = Device(transport, twin.description, token=twin.token)
        model = ModelDevice(twin.config)
        ref = Device(model, model.description, token=twin.token)
        for device in (dut, ref):
            device.set_gateway("127.0.0.1", transport.listen_address("orders")[1])
            device.set_params(1, spread_bps=40, band_bps=2000, quote_size=100)
            device.set_kill(False)
        orders = {"twin": [], "model": []}
        for step in _stale_steps(STALE_CASES[case]):
            if step == "recover":
                dut.recover()
                ref.recover()
            else:
                transport.send("feed", step)
                model.send("feed", step)
            time.sleep(0.3)
            orders["twin"] += [_order(d.payload) for d in transport.drain("orders")]
            orders["model"] += [_order(d.payload) for d in model.drain("orders")]
        transport.close()
    assert len(orders["model"]) >= 4  # the first quotes, and what followed
    assert orders["twin"] == orders["model"]


def _order(payload: bytes) -> tuple:
    (packet,) = ouch.iter_soup(payload)
    record, _ = ouch.decode(packet.payload, "to_exchange")
    return record.type, record.user_ref_num, record.quantity


def _stale_steps(script: tuple[str, ...]) -> list:
    """The reproducer: a two-sided book for locate 1 and its quotes, a halt (they are pulled),
    then per ``script``: ``gap`` (sequence numbers skipped; the packet touches locate 2 only),
    ``update`` (a new bid for locate 1), ``recover``, ``resume`` (trading state T)."""
    session, sequence, steps = b"REPRO00001", 1, []
    directory = itch.make("R", locate=1, stock="ABC", market_category="Q",
                          financial_status="N", round_lot_size=100, round_lots_only="N",
                          issue_classification="C", issue_sub_type="Z", authenticity="P",
                          short_sale_threshold="N", ipo_flag="N", luld_tier="1", etp_flag="N",
                          etp_leverage=0, inverse="N")  # fmt: skip

    def halt(state):
        return itch.make("H", locate=1, stock="ABC", trading_state=state, reserved=" ", reason="")

    def add(locate, ref, side, price):
        return itch.make("A", locate=locate, order_ref=ref, side=side, shares=500,
                         stock="ABC", price=price)  # fmt: skip

    def packet(messages, skip=0):
        nonlocal sequence
        sequence += skip
        bodies = [itch.encode_message(m) for m in messages]
        steps.append(moldudp64.encode(moldudp64.Packet(session, sequence, bodies)))
        sequence += len(messages)

    packet([directory, halt("T"), add(1, 1, "B", 1000000), add(1, 2, "S", 1010000)])
    if "update" not in script:
        packet([halt("H")])
    for step in script:
        if step == "gap":
            packet([add(2, 9, "B", 100)], skip=5)
        elif step == "update":
            packet([add(1, 3, "B", 1001000)])
        elif step == "recover":
            steps.append("recover")
        else:
            packet([halt("T")])
    return steps
