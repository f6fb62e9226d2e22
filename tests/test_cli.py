"""The ``t2q`` command line, checked against independent decoders and book engines."""

import json
import os

import pytest
from click.testing import CliRunner
from itch_book._core import Session
from tick2quote.host.cli import main
from tick2quote.host.protocol import itch
from tick2quote.sim.feed import FeedConfig, generate, write_itch

os.environ.setdefault("ITCH_NO_CPP", "1")
from itch.messages import messages as itchfeed_messages  # noqa: E402

OMI = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "omi")
if not os.path.isdir(OMI):
    OMI = "/work/shared/data/omi"


@pytest.fixture(scope="module")
def day_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("feed") / "day.itch"
    msgs = generate(FeedConfig(seed=11, symbols=20, messages=5_000))
    write_itch(path, msgs)
    return path, msgs


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_decode_json_agrees_with_itchfeed_on_real_captures():
    checked = 0
    for name in sorted(os.listdir(OMI)):
        if "Itch" not in name:
            continue
        result = run("decode", "--json", os.path.join(OMI, name))
        assert result.exit_code == 0, result.output
        for line in result.output.splitlines():
            obj = json.loads(line)
            assert list(obj)[:4] == ["type", "locate", "tracking", "timestamp"]
            body = itch.encode_message(
                itch.FORMATS[obj["type"]].record(
                    **{k: v for k, v in obj.items() if k != "sequence"}
                )
            )
            ref = itchfeed_messages[obj["type"].encode()](body)
            assert obj["locate"] == ref.stock_locate
            assert obj["timestamp"] == ref.timestamp
            if obj["type"] == "U":
                assert obj["original_ref"] == ref.order_reference_number
                assert obj["new_ref"] == ref.new_order_reference_number
            elif hasattr(ref, "order_reference_number"):
                assert obj["order_ref"] == ref.order_reference_number
            if hasattr(ref, "price"):
                assert obj["price"] == ref.price
            if hasattr(ref, "stock"):
                assert obj["stock"] == ref.stock.decode().rstrip()
            checked += 1
    assert checked >= 20


def test_book_json_equals_itchbook_after_every_book_message(day_file):
    path, msgs = day_file
    session = Session(tables=["bbo"], depth=0, symbols=[])
    session.feed(path.read_bytes())
    bbo = session.take_bbo()
    changes = {}
    for seq, locate, *top in zip(
        *(bbo[k].tolist() for k in ("seq", "locate", "bid_px", "bid_sz", "ask_px", "ask_sz"))
    ):
        changes[seq - 1] = (locate, top)
    result = run("book", "--json", path)
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.output.splitlines()]
    book_msgs = [i for i, m in enumerate(msgs) if m.type in itch.BOOK_TYPES]
    assert [r["msg"] for r in rows] == book_msgs
    current = {}
    by_msg = {r["msg"]: r for r in rows}
    for index, msg in enumerate(msgs):
        if index in changes:
            current[changes[index][0]] = changes[index][1]
        if index in by_msg:
            row = by_msg[index]
            assert row["locate"] == msg.locate
            want = current.get(msg.locate, [0, 0, 0, 0])
            assert [row["bid_px"], row["bid_sz"], row["ask_px"], row["ask_sz"]] == want
            assert row["stale"] is False


def test_feed_writes_three_forms_that_decode(tmp_path):
    itch_path, pcap_path, tick_path = tmp_path / "f.itch", tmp_path / "f.pcap", tmp_path / "f.tick"
    result = run(
        "feed",
        "--seed",
        3,
        "--symbols",
        5,
        "--messages",
        500,
        "--itch",
        itch_path,
        "--pcap",
        pcap_path,
        "--ticks",
        tick_path,
        "--vlan",
        7,
    )
    assert result.exit_code == 0, result.output
    from_itch = [json.loads(x) for x in run("decode", "--json", itch_path).output.splitlines()]
    from_pcap = [json.loads(x) for x in run("decode", "--json", pcap_path).output.splitlines()]
    assert [{k: v for k, v in m.items() if k != "sequence"} for m in from_pcap] == from_itch
    assert [m["sequence"] for m in from_pcap] == list(range(1, len(from_pcap) + 1))
    ticks = [json.loads(x) for x in run("decode", "--json", tick_path).output.splitlines()]
    assert ticks and all(t["type"] == "tick" for t in ticks)


def test_bad_file_is_one_line_naming_file_and_offset(tmp_path, day_file):
    path, _ = day_file
    cut = tmp_path / "cut.itch"
    data = path.read_bytes()
    cut.write_bytes(data[:1000])
    blocks = 0
    pos = 0
    while pos + 2 <= 1000 and pos + 2 + int.from_bytes(data[pos : pos + 2], "big") <= 1000:
        pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
        blocks += 1
    result = CliRunner().invoke(main, ["decode", str(cut)])
    assert result.exit_code != 0
    error = [line for line in result.output.splitlines() if "Error" in line]
    assert len(error) == 1
    assert str(cut) in error[0] and f"offset {pos}" in error[0]
    assert "Traceback" not in result.output
