"""The synthetic ITCH feed: structure, mix, determinism, writers, and its book invariants checked
by independent implementations (itch-book for the book, meatpy for queue priority, itchfeed for
the encoding)."""

import collections
import datetime
import os

import pytest

os.environ.setdefault("ITCH_NO_CPP", "1")

from itch.parser import MessageParser  # noqa: E402
from itch_book._core import Session  # noqa: E402
from meatpy.itch50 import ITCH50MarketProcessor  # noqa: E402
from meatpy.itch50.itch50_market_message import ITCH50MarketMessage  # noqa: E402
from tick2quote.host import capture  # noqa: E402
from tick2quote.host.protocol import ethernet, itch, moldudp64, tick  # noqa: E402
from tick2quote.sim import feed  # noqa: E402

SYMBOLS = 200
FLOW = 100_000
PREAMBLE = 2 + 2 * SYMBOLS + 1
FLOW_TYPES = set("AFDUECXPH")


@pytest.fixture(scope="module")
def config():
    return feed.FeedConfig(seed=11, symbols=SYMBOLS, messages=FLOW)


@pytest.fixture(scope="module")
def messages(config):
    return feed.generate(config)


@pytest.fixture(scope="module")
def itchbook(messages):
    session = Session(tables=["bbo"], depth=0, symbols=[])
    session.feed(itch.encode_blocks(messages))
    return session.stats(), session.take_bbo()


def flow_of(messages):
    return messages[PREAMBLE:-3]


def test_same_seed_same_bytes_other_seed_other_bytes():
    def stream(seed):
        return itch.encode_blocks(feed.generate(feed.FeedConfig(seed=seed, messages=5_000)))

    assert stream(5) == stream(5)
    assert stream(5) != stream(6)
    gen = feed.FeedGenerator(feed.FeedConfig(seed=5, messages=2_000))
    assert list(gen.messages()) == list(gen.messages())


def test_session_opens_lists_symbols_and_closes(messages, config):
    events = [(m.type, m.event_code) for m in messages[:2]]
    assert events == [("S", "O"), ("S", "S")]
    directory = messages[2 : 2 + SYMBOLS]
    assert [m.type for m in directory] == ["R"] * SYMBOLS
    assert [m.locate for m in directory] == list(range(1, SYMBOLS + 1))
    tickers = [m.stock for m in directory]
    assert len(set(tickers)) == SYMBOLS
    assert all(1 <= len(t) <= 8 and t.isalpha() and t.isupper() for t in tickers)
    actions = messages[2 + SYMBOLS : 2 + 2 * SYMBOLS]
    assert [(m.type, m.trading_state, m.locate) for m in actions] == [
        ("H", "T", locate) for locate in range(1, SYMBOLS + 1)
    ]
    assert (messages[PREAMBLE - 1].type, messages[PREAMBLE - 1].event_code) == ("S", "Q")
    assert messages[PREAMBLE - 1].timestamp == config.open_ns
    assert [(m.type, m.event_code) for m in messages[-3:]] == [("S", "M"), ("S", "E"), ("S", "C")]
    flow = flow_of(messages)
    assert len(flow) == FLOW
    assert {m.type for m in flow} <= FLOW_TYPES
    assert all(1 <= m.locate <= SYMBOLS for m in flow)
    stamps = [m.timestamp for m in messages]
    assert all(a < b for a, b in zip(stamps, stamps[1:]))
    stock_of = {m.locate: m.stock for m in directory}
    assert all(m.stock == stock_of[m.locate] for m in flow if m.type in "AFPH")


def mix(flow):
    counts = collections.Counter(m.type for m in flow)
    n = len(flow)
    return {
        "add": (counts["A"] + counts["F"]) / n,
        "delete": counts["D"] / n,
        "replace": counts["U"] / n,
        "execute": (counts["E"] + counts["C"]) / n,
        "cancel": counts["X"] / n,
        "trade": counts["P"] / n,
    }, counts


@pytest.mark.parametrize(
    "ratios",
    [
        {},
        dict(
            add_ratio=0.40,
            delete_ratio=0.25,
            replace_ratio=0.2,
            execute_ratio=0.1,
            cancel_ratio=0.05,
            trade_ratio=0.0,
        ),
    ],
    ids=["default", "replace-heavy"],
)
def test_message_mix_follows_the_configured_ratios(ratios, messages, config):
    if ratios:
        config = feed.FeedConfig(seed=3, symbols=50, messages=40_000, **ratios)
        messages = feed.generate(config)
    got, counts = mix(messages[2 + 2 * config.symbols + 1 : -3])
    weights = config.weights()
    total = sum(weights.values())
    for name, share in got.items():
        assert share == pytest.approx(weights[name] / total, abs=0.015), name
    adds, executions = counts["A"] + counts["F"], counts["E"] + counts["C"]
    assert counts["F"] / adds == pytest.approx(config.mpid_ratio, abs=0.02)
    assert counts["C"] / executions == pytest.approx(config.execute_with_price_ratio, abs=0.05)


def test_activity_is_skewed_and_arrivals_are_bursty(messages):
    flow = flow_of(messages)
    per_symbol = sorted(collections.Counter(m.locate for m in flow).values(), reverse=True)
    assert per_symbol[0] > 10 * per_symbol[len(per_symbol) // 2]
    gaps = [b.timestamp - a.timestamp for a, b in zip(flow, flow[1:])]
    within_a_microsecond = sum(g < 1_000 for g in gaps) / len(gaps)
    assert 0.1 < within_a_microsecond < 0.9
    assert max(gaps) > 100_000
    same_microsecond_runs = sum(
        1 for a, b, c in zip(flow, flow[1:], flow[2:]) if a.timestamp // 1000 == c.timestamp // 1000
    )
    assert same_microsecond_runs > 100


def test_references_are_new_increasing_and_prices_positive(messages):
    new_refs = [
        m.order_ref if m.type in "AF" else m.new_ref for m in flow_of(messages) if m.type in "AFU"
    ]
    assert all(a < b for a, b in zip(new_refs, new_refs[1:]))
    assert all(m.price > 0 for m in flow_of(messages) if m.type in "AFUP")


def test_every_message_round_trips_through_our_codec_and_itchfeed(messages):
    stream = itch.encode_blocks(messages)
    assert itch.decode_blocks(stream) == messages
    sample = messages[: PREAMBLE + 20_000] + messages[-3:]
    theirs = list(MessageParser().parse_stream(itch.encode_blocks(sample)))
    assert len(theirs) == len(sample)
    for ours, other in zip(sample, theirs):
        assert other.message_type.decode() == ours.type
        assert (other.stock_locate, other.timestamp) == (ours.locate, ours.timestamp)
        if ours.type in "AF":
            theirs_add = (other.order_reference_number, other.shares, other.price)
            assert theirs_add == (ours.order_ref, ours.shares, ours.price)
            assert other.buy_sell_indicator.decode() == ours.side
        elif ours.type == "U":
            refs = (other.order_reference_number, other.new_order_reference_number)
            assert refs == (ours.original_ref, ours.new_ref)
            assert (other.shares, other.price) == (ours.shares, ours.price)


def test_itchbook_sees_a_clean_never_crossed_book(messages, itchbook):
    stats, bbo = itchbook
    assert stats["messages"] == len(messages)
    for key in ("unknown", "malformed", "missing_ref", "dup_ref", "rejected", "clamped"):
        assert stats[key] == 0, key
    assert stats["crossed_books"] == 0
    assert stats["pending_bytes"] == 0
    assert len(bbo["seq"]) > FLOW // 10
    both = (bbo["bid_px"] > 0) & (bbo["ask_px"] > 0)
    assert both.sum() > len(bbo["seq"]) // 2
    assert (bbo["bid_px"][both] < bbo["ask_px"][both]).all()


def test_executions_take_the_head_of_the_queue_for_meatpy(messages):
    """meatpy raises ExecutionPriorityExceptionList when an E misses the head of the queue."""
    flow = flow_of(messages)[:40_000]
    busiest = [loc for loc, _ in collections.Counter(m.locate for m in flow).most_common(3)]
    stocks = {m.locate: m.stock for m in messages if m.type == "R"}
    for locate in busiest:
        proc = ITCH50MarketProcessor(stocks[locate], datetime.datetime(2024, 1, 2))
        executions = 0
        for msg in flow:
            if msg.locate == locate and msg.type in "AFEXDUC":
                executions += msg.type == "E"
                proc.process_message(ITCH50MarketMessage.from_bytes(itch.encode_message(msg)))
        proc.processing_done()
        assert executions > 50


@pytest.mark.parametrize("vlan", [None, 42])
def test_pcap_reads_back_in_consecutive_moldudp64_packets(tmp_path, messages, vlan):
    sample = messages[:3_000]
    path = tmp_path / "feed.pcap"
    feed.write_pcap(path, sample, per_packet=range(1, 20), vlan=vlan, first_sequence=1000)
    read = list(capture.read_messages(path))
    assert [item.message for item in read] == sample
    assert [item.sequence for item in read] == list(range(1000, 1000 + len(sample)))
    frames = [frame for _, frame, _ in capture.read_frames(path)]
    assert len(frames) < len(sample) / 5
    assert len({item.frame for item in read}) == len(frames)
    for frame in frames:
        udp = ethernet.decode_udp_frame(frame)
        assert udp.vlan_tci == vlan
        assert (udp.dst_ip, udp.dst_port) == (bytes([233, 54, 12, 111]), 26477)
        assert udp.src_ip == bytes([10, 0, 0, 1])
        assert udp.dst_mac == bytes.fromhex("01005e360c6f")
        assert len(udp.payload) <= 1472
        packet = moldudp64.decode(udp.payload)
        assert packet.session == b"TICK2QUOTE"


def test_packets_hold_the_requested_count_and_split_when_full(messages):
    sample = messages[:1_000]
    packets = feed.to_packets(sample, 8)
    assert [p.count for p in packets[:-1]] == [8] * (len(packets) - 1)
    assert sum(p.count for p in packets) == len(sample)
    big = feed.to_packets(sample, 1_000)
    assert all(len(moldudp64.encode(p)) <= 1472 for p in big)
    assert [m for p in big for m in p.messages] == [itch.encode_message(m) for m in sample]
    with pytest.raises(ValueError, match="per_packet"):
        feed.to_packets(sample, 0)


def test_tick_records_read_back_valid_and_keep_the_same_book(tmp_path, messages, itchbook):
    path = tmp_path / "feed.ticks"
    feed.write_ticks(path, messages)
    records = [item.message for item in capture.read_messages(path)]  # validates each record
    counts = collections.Counter(m.type for m in messages)
    expected = sum(counts[t] for t in "AFXDUP") + 2 * (counts["E"] + counts["C"])
    assert len(records) == expected
    book = {}  # tick order id -> [symbol, side, price, volume]
    for rec in records:
        if rec.message_type == tick.ADD:
            assert rec.sequence not in book
            book[rec.sequence] = [rec.symbol_id, rec.side, rec.price, rec.volume]
        elif rec.message_type == tick.MODIFY:
            book[rec.sequence][2:] = [rec.price, rec.volume]
        elif rec.message_type == tick.CANCEL:
            order = book[rec.sequence]
            assert 0 < rec.volume <= order[3]
            order[3] -= rec.volume
            if not order[3]:
                del book[rec.sequence]
    stats, bbo = itchbook
    assert len(book) == stats["live_orders"]
    columns = [bbo[k].tolist() for k in ("locate", "bid_px", "bid_sz", "ask_px", "ask_sz")]
    final = {locate: tuple(top) for locate, *top in zip(*columns)}
    levels = collections.defaultdict(lambda: collections.defaultdict(int))
    for symbol, side, price, volume in book.values():
        levels[symbol, side][price] += volume
    for locate, want in final.items():
        bids, asks = levels[locate, tick.BID], levels[locate, tick.ASK]
        bid = max(bids) if bids else 0
        ask = min(asks) if asks else 0
        assert (bid, bids[bid] if bids else 0, ask, asks[ask] if asks else 0) == want, locate


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="symbols"):
        feed.FeedConfig(symbols=0)
    with pytest.raises(ValueError, match="ratios"):
        feed.FeedConfig(delete_ratio=-0.1)
    with pytest.raises(ValueError, match="mpid_ratio"):
        feed.FeedConfig(mpid_ratio=1.5)
    with pytest.raises(ValueError, match="vlan"):
        feed.to_frames([itch.make("S", event_code="O")], vlan=4096)
