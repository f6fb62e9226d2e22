"""The reference book model against itch-book (an independent C++ book engine), message by
message, on a generated multi-symbol session of over 200 000 messages."""

import pytest
from itch_book._core import Session
from tick2quote.host.protocol import itch
from tick2quote.sim.feed import FeedConfig, generate
from tick2quote.sim.models.book import BookModel

SYMBOLS = 300
FLOW = 200_000


@pytest.fixture(scope="module")
def messages():
    return generate(FeedConfig(seed=2024, symbols=SYMBOLS, messages=FLOW))


def itchbook_rows(messages):
    """itch-book's BBO rows keyed by seq (1-based over every decoded message): one row per
    message that changed a top price or size, as ``(locate, (bid_px, bid_sz, ask_px, ask_sz))``
    with 0/0 for an empty side."""
    session = Session(tables=["bbo"], depth=0, symbols=[])
    session.feed(itch.encode_blocks(messages))
    stats = session.stats()
    assert stats["messages"] == len(messages)
    assert stats["unknown"] == stats["malformed"] == stats["pending_bytes"] == 0
    bbo = session.take_bbo()
    columns = [bbo[k].tolist() for k in ("seq", "locate", "bid_px", "bid_sz", "ask_px", "ask_sz")]
    rows = {}
    for seq, locate, *top in zip(*columns):
        assert seq not in rows, "one message changed two books"
        rows[seq] = (locate, tuple(top))
    return rows


def test_model_bbo_equals_itchbook_after_every_message(messages):
    assert len(messages) > 200_000
    rows = itchbook_rows(messages)
    model = BookModel(max_symbols=1024)
    current = {}  # locate -> itch-book's BBO, forward-filled
    disagreements = mismatches = 0
    first_mismatch = None
    for seq, msg in enumerate(messages, start=1):
        top = model.apply(msg, seq)
        row = rows.get(seq)
        if row is not None:
            assert row[0] == msg.locate, f"seq {seq}: itch-book changed locate {row[0]}"
            current[msg.locate] = row[1]
        if (top is not None) != (row is not None):
            disagreements += 1
        got = model.bbo(msg.locate)
        want = current.get(msg.locate, (0, 0, 0, 0))
        if (got.bid_px, got.bid_sz, got.ask_px, got.ask_sz) != want or got.stale:
            mismatches += 1
            first_mismatch = first_mismatch or (seq, msg, got, want)
    assert mismatches == 0, f"{mismatches} mismatches; first: {first_mismatch}"
    assert disagreements == 0, "the model reported a top-of-book change where itch-book saw none"
    for name in ("unknown_ref", "locate_mismatch", "overfill", "duplicate_ref", "bad_add"):
        assert model.counters[name] == 0, name
    assert model.counters["applied"] == sum(1 for m in messages if m.type in itch.BOOK_TYPES)
