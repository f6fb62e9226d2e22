"""The whole-core reference model: composition of ingress, book and quoter."""

from tick2quote.sim.feed import FeedConfig, generate
from tick2quote.sim.feedwriter import to_frames
from tick2quote.sim.models.book import BookModel
from tick2quote.sim.models.core import CoreModel


def _frames(seed=5, messages=3_000):
    msgs = generate(FeedConfig(seed=seed, symbols=12, messages=messages))
    return msgs, to_frames(msgs, per_packet=6)


def test_core_tops_equal_the_book_fed_directly():
    msgs, frames = _frames()
    core = CoreModel()
    tops = [t for i, f in enumerate(frames) for t in core.frame(f, i).tops]
    book = BookModel()
    direct = [t for t in (book.apply(m) for m in msgs) if t is not None]
    assert [(t.locate, t.bbo) for t in tops] == [(t.locate, t.bbo) for t in direct]
    assert core.counters["messages"] == len(msgs)
    assert core.ingress.counters["gaps"] == 0


def test_a_gap_pulls_every_quote_until_recovery():
    msgs, frames = _frames(seed=6)
    core = CoreModel()
    half = len(frames) // 2
    for i, f in enumerate(frames[:half]):
        core.frame(f, i)
    live_before = sum(len(core.quoter.live(loc)) for loc in range(1, 13))
    assert live_before > 0
    after_gap = []
    for i, f in enumerate(frames[half + 1 :], start=half + 1):  # one packet lost
        after_gap.extend(core.frame(f, i).orders)
    assert core.ingress.counters["gaps"] == 1
    assert all(core.book.bbo(loc).stale for loc in range(1, 13))
    assert after_gap and all(o.kind == "cancel" for o in after_gap)
    assert sum(len(core.quoter.live(loc)) for loc in range(1, 13)) == 0
    core.recover()
    assert not any(core.book.bbo(loc).stale for loc in range(1, 13))


def test_a_b_feeds_merge_to_one_stream():
    msgs, frames = _frames(seed=7, messages=1_000)
    single, merged = CoreModel(), CoreModel()
    want = [o for i, f in enumerate(frames) for o in single.frame(f, i).orders]
    got = []
    for i, f in enumerate(frames):
        got.extend(merged.frame(f, i).orders)  # line A
        got.extend(merged.frame(f, i).orders)  # line B, same packet
    assert got == want
    assert merged.ingress.counters["duplicates"] == len(msgs)
