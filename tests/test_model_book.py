"""The reference book model, against hand-worked streams, a brute-force book kept by the test,
itch-book's C++ engine and meatpy's limit order book."""

from __future__ import annotations

import datetime
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itch_book._core import Session
from meatpy.itch50 import ITCH50MarketProcessor
from meatpy.itch50.itch50_market_message import ITCH50MarketMessage
from tick2quote.host.protocol import itch
from tick2quote.sim.models.book import Bbo, BookModel, TopOfBook

T0 = 34_200_000_000_000
EMPTY = Bbo(0, 0, 0, 0, False)


def add(locate, ref, side, shares, price, kind="A"):
    return itch.make(kind, locate=locate, order_ref=ref, side=side, shares=shares, stock="T",
                     price=price)  # fmt: skip


def execute(locate, ref, shares):
    return itch.make("E", locate=locate, order_ref=ref, executed_shares=shares)


def cancel(locate, ref, shares):
    return itch.make("X", locate=locate, order_ref=ref, cancelled_shares=shares)


def delete(locate, ref):
    return itch.make("D", locate=locate, order_ref=ref)


def replace(locate, old, new, shares, price):
    return itch.make("U", locate=locate, original_ref=old, new_ref=new,
                     shares=shares, price=price)  # fmt: skip


# --------------------------------------------------------------------------- hand-worked streams
def test_small_stream_worked_by_hand():
    # Bid/ask after each message, worked out on paper (and reproduced by itch-book and meatpy).
    stream = [
        (itch.make("R", locate=1, stock="TEST"), EMPTY),
        (add(1, 1, "B", 100, 100000), Bbo(100000, 100, 0, 0, False)),
        (add(1, 2, "B", 200, 100100), Bbo(100100, 200, 0, 0, False)),
        (add(1, 3, "S", 150, 100300), Bbo(100100, 200, 100300, 150, False)),
        (add(1, 4, "S", 250, 100200), Bbo(100100, 200, 100200, 250, False)),
        (execute(1, 2, 50), Bbo(100100, 150, 100200, 250, False)),
        (cancel(1, 4, 100), Bbo(100100, 150, 100200, 150, False)),
        (replace(1, 1, 5, 300, 100150), Bbo(100150, 300, 100200, 150, False)),
        (delete(1, 5), Bbo(100100, 150, 100200, 150, False)),
    ]
    book = BookModel()
    previous = EMPTY
    for index, (msg, expected) in enumerate(stream):
        record = book.apply(msg, sequence=100 + index)
        assert book.bbo(1) == expected
        if expected == previous:
            assert record is None
        else:
            assert record == TopOfBook(1, expected, 100 + index, index)
        previous = expected
    assert book.symbol(1) == "TEST"
    assert book.live_orders == 3
    assert book.counters["applied"] == 8
    assert book.depth(1, "B") == [(100100, 150)]
    assert book.order(3) == (1, "S", 100300, 150)


def test_best_level_emptied_by_executions_falls_to_next_level():
    book = BookModel()
    for ref, price in ((1, 5000), (2, 5100), (3, 5100), (4, 4900)):
        book.apply(add(7, ref, "B", 10, price))
    assert book.bbo(7) == Bbo(5100, 20, 0, 0, False)
    book.apply(execute(7, 2, 4))
    book.apply(execute(7, 2, 6))  # order 2 gone, level holds order 3 alone
    assert book.bbo(7) == Bbo(5100, 10, 0, 0, False)
    record = book.apply(itch.make("C", locate=7, order_ref=3, executed_shares=10,
                                  printable="Y", execution_price=9999))  # fmt: skip
    assert record.bbo == Bbo(5000, 10, 0, 0, False)
    assert book.order(2) is None and book.order(3) is None
    book.apply(delete(7, 1))
    assert book.bbo(7) == Bbo(4900, 10, 0, 0, False)
    book.apply(cancel(7, 4, 10))
    assert book.bbo(7) == EMPTY and book.live_orders == 0


def test_many_orders_at_one_price_aggregate():
    book = BookModel()
    for ref in range(1, 51):
        book.apply(add(3, ref, "S", ref, 20000))
    assert book.bbo(3) == Bbo(0, 0, 20000, sum(range(1, 51)), False)
    remaining = sum(range(1, 51))
    for ref in range(1, 50):
        book.apply(delete(3, ref))
        remaining -= ref
        assert book.bbo(3).ask_sz == remaining
    assert book.depth(3, "S") == [(20000, 50)]


def test_replace_moves_price_off_and_onto_the_top():
    book = BookModel()
    book.apply(add(1, 1, "S", 100, 300))
    book.apply(add(1, 2, "S", 100, 310))
    record = book.apply(replace(1, 1, 9, 40, 320))  # best ask moves away: 310 takes over
    assert record.bbo == Bbo(0, 0, 310, 100, False)
    assert book.order(1) is None and book.order(9) == (1, "S", 320, 40)
    record = book.apply(replace(1, 9, 9, 70, 305))  # same reference, now the best
    assert record.bbo == Bbo(0, 0, 305, 70, False)
    assert book.apply(replace(1, 2, 11, 100, 310)) is None  # deeper level, same figures


def test_table_full_refuses_add_and_marks_stale_until_recover():
    book = BookModel(max_orders=2)
    book.apply(add(1, 1, "B", 10, 100))
    book.apply(add(2, 2, "B", 10, 100))
    record = book.apply(add(1, 3, "B", 10, 200), sequence=42)
    assert record == TopOfBook(1, Bbo(100, 10, 0, 0, True), 42, 2)
    assert book.counters["table_full"] == 1 and book.live_orders == 2
    assert book.order(3) is None
    assert not book.is_stale(2)
    book.apply(delete(2, 2))
    assert book.apply(add(1, 3, "B", 10, 200)).bbo == Bbo(200, 10, 0, 0, True)  # stale sticks
    book.recover(1)
    assert book.bbo(1) == Bbo(200, 10, 0, 0, False)


def test_levels_full_refuses_a_new_level_but_not_an_existing_one():
    book = BookModel(max_levels=2)
    book.apply(add(1, 1, "B", 10, 100))
    book.apply(add(1, 2, "B", 10, 101))
    book.apply(add(1, 3, "S", 10, 105))  # the other side has its own budget
    assert book.apply(add(1, 4, "B", 10, 101)).bbo == Bbo(101, 20, 105, 10, False)
    assert book.apply(add(1, 5, "B", 10, 102)).bbo == Bbo(101, 20, 105, 10, True)
    assert book.counters["levels_full"] == 1 and book.order(5) is None
    book.apply(delete(1, 1))  # frees a level
    book.apply(add(1, 5, "B", 7, 102))
    assert book.bbo(1) == Bbo(102, 7, 105, 10, True)
    assert book.depth(1, "B") == [(102, 7), (101, 20)]
    # a replace that would open a third ask level: original removed, new one refused
    book.apply(add(1, 6, "S", 10, 106))
    book.apply(add(1, 7, "S", 1, 106))
    book.apply(replace(1, 7, 8, 1, 104))
    assert book.counters["levels_full"] == 2
    assert book.order(7) is None and book.order(8) is None
    assert book.depth(1, "S") == [(105, 10), (106, 10)]


def test_unknown_reference_marks_the_header_symbol_stale():
    book = BookModel()
    book.apply(add(1, 1, "B", 10, 100))
    for msg in (execute(2, 77, 1), cancel(2, 77, 1), delete(2, 77), replace(2, 77, 78, 1, 1)):
        book.apply(msg)
    assert book.counters["unknown_ref"] == 4
    assert book.bbo(2) == Bbo(0, 0, 0, 0, True)
    assert book.bbo(1) == Bbo(100, 10, 0, 0, False)
    assert book.order(78) is None


def test_locate_mismatch_changes_nothing_and_marks_header_symbol_stale():
    book = BookModel()
    book.apply(add(1, 1, "B", 10, 100))
    record = book.apply(delete(2, 1))
    assert record == TopOfBook(2, Bbo(0, 0, 0, 0, True), None, 1)
    assert book.counters["locate_mismatch"] == 1
    assert book.order(1) == (1, "B", 100, 10) and not book.is_stale(1)


def test_overfill_removes_order_counts_and_marks_stale():
    book = BookModel()
    book.apply(add(1, 1, "S", 10, 100))
    book.apply(add(1, 2, "S", 5, 100))
    assert book.apply(execute(1, 1, 11)).bbo == Bbo(0, 0, 100, 5, True)
    book.apply(cancel(1, 2, 6))
    assert book.counters["overfill"] == 2 and book.live_orders == 0
    assert book.bbo(1) == Bbo(0, 0, 0, 0, True)


def test_duplicate_add_keeps_live_order_and_marks_stale():
    book = BookModel()
    book.apply(add(1, 1, "B", 10, 100))
    assert book.apply(add(1, 1, "B", 99, 200)).bbo == Bbo(100, 10, 0, 0, True)
    assert book.counters["duplicate_ref"] == 1 and book.order(1) == (1, "B", 100, 10)


@pytest.mark.parametrize(
    "msg, cause",
    [
        (add(1, 1, "B", 0, 100), "bad_add"),
        (add(1, 1, "S", 10, 0), "bad_add"),
        (add(1, 1, "Z", 10, 100), "bad_side"),
    ],
)
def test_invalid_adds_are_refused(msg, cause):
    book = BookModel()
    assert book.apply(msg).bbo == Bbo(0, 0, 0, 0, True)
    assert book.counters[cause] == 1 and book.live_orders == 0


def test_untracked_locates_are_filtered_before_the_table_and_never_stale():
    book = BookModel(max_symbols=8, tracked=frozenset({1, 3}))
    assert book.apply(add(2, 1, "B", 10, 100)) is None
    assert book.apply(delete(2, 55)) is None  # would be an unknown ref if tracked
    assert book.counters["untracked"] == 2 and book.counters["unknown_ref"] == 0
    assert book.live_orders == 0
    book.mark_stale()
    assert [book.is_stale(loc) for loc in range(8)] == [loc in (1, 3) for loc in range(8)]
    book.mark_stale(2)
    assert not book.is_stale(2)
    book.recover()
    assert not any(book.is_stale(loc) for loc in range(8))
    predicate = BookModel(max_symbols=8, tracked=lambda loc: loc % 2 == 0)
    predicate.apply(add(3, 1, "B", 10, 100))
    predicate.apply(add(4, 2, "B", 10, 100))
    assert predicate.counters["untracked"] == 1 and predicate.live_orders == 1


def test_bad_locate_is_counted_and_ignored():
    book = BookModel(max_symbols=16)
    assert book.apply(add(16, 1, "B", 10, 100)) is None
    book.apply(itch.make("H", locate=20, stock="X", trading_state="H"))
    assert book.counters["bad_locate"] == 2 and book.live_orders == 0
    with pytest.raises(ValueError, match="locate must be 0 .. 15, not 16"):
        book.bbo(16)


def test_reference_data_and_ignored_types():
    book = BookModel()
    assert book.trading_state(5) == "T" and book.symbol(5) is None
    book.apply(itch.make("R", locate=5, stock="AAPL"))
    book.apply(itch.make("H", locate=5, stock="AAPL", trading_state="H"))
    book.apply(itch.make("S", event_code="O"))
    book.apply(itch.make("P", locate=5, order_ref=1, side="B", shares=5, stock="AAPL", price=1))
    assert book.symbol(5) == "AAPL" and book.trading_state(5) == "H"
    assert book.counters["ignored"] == 2 and book.live_orders == 0


def test_raw_bytes_are_decoded_or_counted():
    by_record, by_bytes = BookModel(), BookModel()
    stream = [add(1, 1, "B", 10, 100, "F"), add(1, 2, "S", 10, 120), execute(1, 2, 3)]
    for msg in stream:
        assert by_bytes.apply(itch.encode_message(msg), 1) == by_record.apply(msg, 1)
    assert by_bytes.apply(b"z" + bytes(20)) is None
    assert by_bytes.apply(itch.encode_message(stream[0])[:-1]) is None
    assert by_bytes.apply(b"") is None
    assert by_bytes.counters["unknown_type"] == 1 and by_bytes.counters["malformed"] == 2
    assert by_bytes.apply(delete(1, 1)).index == 6  # every apply() call takes an index


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_symbols": 0}, "max_symbols must be 1 .. 65536, not 0"),
        ({"max_symbols": 70000}, "max_symbols must be 1 .. 65536, not 70000"),
        ({"max_orders": -1}, "max_orders must be a positive integer, not -1"),
        ({"max_levels": 1.5}, "max_levels must be a positive integer, not 1.5"),
    ],
)
def test_constructor_checks_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BookModel(**kwargs)


def test_depth_checks_side():
    with pytest.raises(ValueError, match="side must be 'B' or 'S', not 'X'"):
        BookModel().depth(0, "X")


# --------------------------------------------------------------------------- random valid streams
LOCATES = (1, 2, 5)
SYMBOLS = {1: "AAA", 2: "BBB", 5: "CCC"}
BASE_PRICE = 1_000_000


class StreamBuilder:
    """Turns abstract operations into a *valid* ITCH stream, keeping the live order set."""

    def __init__(self, ticks: int = 12, head_only_executions: bool = False):
        self.ticks = ticks
        self.head_only_executions = head_only_executions
        self.live: dict[int, list] = {}  # ref -> [locate, side, price, shares]
        self.next_ref = 1
        self.time = T0
        self.messages: list = []

    def _emit(self, kind, **values):
        self.time += 1_000  # one microsecond apart (meatpy keeps microseconds)
        msg = itch.make(kind, tracking=0, timestamp=self.time, **values)
        self.messages.append(msg)
        return msg

    def op(self, kind: int, a: int, b: int, c: int, d: int):
        """One operation; kinds: 0 A, 1 F, 2 E, 3 C, 4 X, 5 D, 6 U (adds when nothing is live)."""
        if kind <= 1 or not self.live:
            loc = LOCATES[a % len(LOCATES)]
            side, price, shares = "BS"[b % 2], BASE_PRICE + (c % self.ticks) * 100, 1 + d % 500
            ref, self.next_ref = self.next_ref, self.next_ref + 1
            self.live[ref] = [loc, side, price, shares]
            extra = {"attribution": "MPID"} if kind == 1 else {}
            return self._emit("AF"[kind == 1], locate=loc, order_ref=ref, side=side, shares=shares,
                              stock=SYMBOLS[loc], price=price, **extra)  # fmt: skip
        if kind == 2 and self.head_only_executions:
            ref = self._head_of_a_queue(a)
        else:
            refs = list(self.live)
            ref = refs[a % len(refs)]
        entry = self.live[ref]
        loc, shares = entry[0], entry[3]
        qty = shares if c % 3 == 0 else 1 + b % shares
        if kind in (2, 3, 4):
            if qty == shares:
                del self.live[ref]
            else:
                entry[3] -= qty
            if kind == 2:
                return self._emit("E", locate=loc, order_ref=ref, executed_shares=qty,
                                  match_number=self.time)  # fmt: skip
            if kind == 3:
                return self._emit("C", locate=loc, order_ref=ref, executed_shares=qty,
                                  match_number=self.time, printable="YN"[d % 2],
                                  execution_price=entry[2] + d % 7)  # fmt: skip
            return self._emit("X", locate=loc, order_ref=ref, cancelled_shares=qty)
        del self.live[ref]
        if kind == 5:
            return self._emit("D", locate=loc, order_ref=ref)
        new, self.next_ref = self.next_ref, self.next_ref + 1
        price, new_shares = BASE_PRICE + (c % self.ticks) * 100, 1 + d % 500
        self.live[new] = [loc, entry[1], price, new_shares]
        return self._emit("U", locate=loc, original_ref=ref, new_ref=new,
                          shares=new_shares, price=price)  # fmt: skip

    def _head_of_a_queue(self, a: int) -> int:
        """The oldest order at the best price of one of the non-empty books (picked by ``a``)."""
        books = sorted({(loc, side) for loc, side, _, _ in self.live.values()})
        loc, side = books[a % len(books)]
        best = self.brute_force_bbo(loc)
        price = best.bid_px if side == "B" else best.ask_px
        # the live dict is in arrival order, and a replace re-enters at the back: time priority
        return next(
            ref for ref, (lc, sd, p, _) in self.live.items() if (lc, sd, p) == (loc, side, price)
        )

    def brute_force_bbo(self, locate: int) -> Bbo:
        return bbo_from_orders(self.live.values(), locate)


def bbo_from_orders(orders, locate: int, stale: bool = False) -> Bbo:
    """The best bid/offer recomputed from scratch from ``(locate, side, price, shares)``s."""
    levels = {"B": Counter(), "S": Counter()}
    for loc, side, price, shares in orders:
        if loc == locate:
            levels[side][price] += shares
    bid = max(levels["B"], default=0)
    ask = min(levels["S"], default=0)
    return Bbo(bid, levels["B"][bid], ask, levels["S"][ask], stale)


def random_stream(
    seed: int, length: int, ticks: int = 12, head_only_executions: bool = False
) -> StreamBuilder:
    rng = random.Random(seed)
    builder = StreamBuilder(ticks, head_only_executions)
    for _ in range(length):
        # weights lean on adds so books stay populated, with every other kind well represented
        kind = rng.choices(range(7), weights=(30, 5, 12, 6, 10, 20, 17))[0]
        builder.op(kind, *(rng.randrange(1 << 16) for _ in range(4)))
    return builder


OPS = st.lists(
    st.tuples(
        st.integers(0, 6),
        st.integers(0, 1 << 16),
        st.integers(0, 1 << 16),
        st.integers(0, 1 << 16),
        st.integers(0, 1 << 16),
    ),  # fmt: skip
    min_size=20,
    max_size=300,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, ticks=st.sampled_from([1, 3, 12]))
def test_random_streams_match_brute_force_after_every_message(ops, ticks):
    builder = StreamBuilder(ticks)
    book = BookModel()
    shown = dict.fromkeys(LOCATES, EMPTY)
    for index, op in enumerate(ops):
        msg = builder.op(*op)
        record = book.apply(msg, sequence=index + 1)
        for loc in LOCATES:
            assert book.bbo(loc) == builder.brute_force_bbo(loc), (index, msg)
        if record is None:
            assert book.bbo(msg.locate) == shown[msg.locate]
        else:
            assert record == TopOfBook(msg.locate, book.bbo(msg.locate), index + 1, index)
            assert record.bbo != shown[msg.locate]
            shown[msg.locate] = record.bbo
    assert book.live_orders == len(builder.live)
    assert book.counters["applied"] == len(ops) and sum(book.counters.values()) == len(ops)


class CapacityOracle:
    """A slow, obvious book with capacity limits: what the model must do with a valid stream
    when orders or levels run out (refuse, count, mark stale; later messages on a refused
    order then hit an unknown reference)."""

    def __init__(self, max_orders: int, max_levels: int):
        self.max_orders, self.max_levels = max_orders, max_levels
        self.live: dict[int, list] = {}
        self.stale: set[int] = set()
        self.counts: Counter = Counter()

    def _add(self, loc, ref, side, shares, price):
        levels = {p for lc, sd, p, _ in self.live.values() if (lc, sd) == (loc, side)}
        if len(self.live) >= self.max_orders:
            cause = "table_full"
        elif price not in levels and len(levels) >= self.max_levels:
            cause = "levels_full"
        else:
            self.live[ref] = [loc, side, price, shares]
            return True
        self.counts[cause] += 1
        self.stale.add(loc)
        return False

    def apply(self, msg):
        ref = msg.original_ref if msg.type == "U" else msg.order_ref
        if msg.type in "AF":
            ok = self._add(msg.locate, ref, msg.side, msg.shares, msg.price)
        elif ref not in self.live:
            self.counts["unknown_ref"] += 1
            self.stale.add(msg.locate)
            ok = False
        elif msg.type == "U":
            loc, side = self.live.pop(ref)[:2]
            ok = self._add(loc, msg.new_ref, side, msg.shares, msg.price)
        elif msg.type == "D":
            ok = bool(self.live.pop(ref))
        else:
            qty = msg.cancelled_shares if msg.type == "X" else msg.executed_shares
            self.live[ref][3] -= qty
            if self.live[ref][3] == 0:
                del self.live[ref]
            ok = True
        self.counts["applied"] += ok

    def bbo(self, locate) -> Bbo:
        return bbo_from_orders(self.live.values(), locate, locate in self.stale)


@settings(max_examples=100, deadline=None)
@given(
    ops=OPS,
    max_orders=st.integers(1, 12),
    max_levels=st.integers(1, 4),
    ticks=st.sampled_from([2, 6]),
)
def test_capacity_exhaustion_is_refused_counted_and_stale(ops, max_orders, max_levels, ticks):
    builder = StreamBuilder(ticks)
    book = BookModel(max_orders=max_orders, max_levels=max_levels)
    oracle = CapacityOracle(max_orders, max_levels)
    for op in ops:
        msg = builder.op(*op)
        book.apply(msg)
        oracle.apply(msg)
        for loc in LOCATES:
            assert book.bbo(loc) == oracle.bbo(loc), msg
        assert book.live_orders == len(oracle.live) <= max_orders
    assert book.counters == oracle.counts


# --------------------------------------------------------------------------- itch-book
def itch_book_rows(messages) -> tuple[dict[int, dict[int, Bbo]], int]:
    """itch-book's BBO rows keyed by seq (1-based over decoded messages), then by locate, and
    its count of live orders at the end."""
    session = Session(tables=["bbo"], depth=0, symbols=[])
    session.feed(itch.encode_blocks(messages))
    stats = session.stats()
    assert stats["pending_bytes"] == 0 and stats["unknown"] == 0 and stats["malformed"] == 0
    assert stats["missing_ref"] == stats["dup_ref"] == stats["rejected"] == stats["clamped"] == 0
    assert stats["messages"] == len(messages)
    bbo = session.take_bbo()
    rows: dict[int, dict[int, Bbo]] = {}
    for seq, loc, bp, bs, ap, az in zip(
        bbo["seq"], bbo["locate"], bbo["bid_px"], bbo["bid_sz"], bbo["ask_px"], bbo["ask_sz"]
    ):
        rows.setdefault(int(seq), {})[int(loc)] = Bbo(int(bp), int(bs), int(ap), int(az), False)
    return rows, stats["live_orders"]


def check_against_itch_book(messages):
    rows, live_orders = itch_book_rows(messages)
    book = BookModel()
    filled = dict.fromkeys(LOCATES, EMPTY)
    for index, msg in enumerate(messages):
        seq = index + 1
        record = book.apply(msg, sequence=seq)
        filled.update(rows.get(seq, {}))
        for loc in LOCATES:
            assert book.bbo(loc) == filled[loc], (seq, msg)
        # a record exactly where itch-book writes a row (it writes on price or size change)
        assert (record is not None) == (seq in rows), (seq, msg)
        if record is not None:
            assert rows[seq] == {record.locate: record.bbo}
    assert book.live_orders == live_orders


@pytest.mark.parametrize("seed, ticks", [(1, 12), (2, 3), (3, 40), (4, 1)])
def test_long_streams_match_itch_book(seed, ticks):
    builder = random_stream(seed, 4000, ticks)
    check_against_itch_book(builder.messages)
    book = BookModel()
    for msg in builder.messages:
        book.apply(msg)
    assert {loc: book.bbo(loc) for loc in LOCATES} == {
        loc: builder.brute_force_bbo(loc) for loc in LOCATES
    }


@settings(max_examples=60, deadline=None)
@given(ops=OPS, ticks=st.sampled_from([1, 4]))
def test_generated_streams_match_itch_book(ops, ticks):
    builder = StreamBuilder(ticks)
    for op in ops:
        builder.op(*op)
    check_against_itch_book(builder.messages)


# --------------------------------------------------------------------------- meatpy
def meatpy_bbo_after_each(messages) -> list[dict[int, Bbo]]:
    """meatpy's BBO per locate after each message: one processor per symbol."""
    day = datetime.datetime(2024, 1, 2)
    processors = {loc: ITCH50MarketProcessor(SYMBOLS[loc], day) for loc in LOCATES}
    out = []
    for msg in messages:
        body = itch.encode_message(msg)
        for proc in processors.values():
            proc.process_message(ITCH50MarketMessage.from_bytes(body))
        state = {}
        for loc, proc in processors.items():
            lob = proc.current_lob
            bids = lob.bid_levels if lob else []
            asks = lob.ask_levels if lob else []
            state[loc] = Bbo(
                bids[0].price if bids else 0,
                bids[0].volume if bids else 0,
                asks[0].price if asks else 0,
                asks[0].volume if asks else 0,
                False,
            )
        out.append(state)
    return out


@pytest.mark.parametrize("seed, ticks", [(11, 6), (12, 2)])
def test_stream_matches_meatpy(seed, ticks):
    # E only at the head of a best level (meatpy checks time priority; C is not checked), and
    # the builder never touches an order again once it is gone (meatpy keeps the references of
    # fully executed or cancelled orders).
    messages = random_stream(seed, 800, ticks, head_only_executions=True).messages
    expected = meatpy_bbo_after_each(messages)
    book = BookModel()
    for index, msg in enumerate(messages):
        book.apply(msg)
        assert {loc: book.bbo(loc) for loc in LOCATES} == expected[index], (index, msg)


# --------------------------------------------------------------------------- gateware geometry
def test_depth_ladder_evicts_tracks_and_flags_an_unknown_best():
    book = BookModel(depth=2)
    book.apply(add(1, 1, "B", 10, 100))
    book.apply(add(1, 2, "B", 10, 99))
    book.apply(add(1, 3, "B", 5, 99))  # joins the tracked level 99
    book.apply(add(1, 4, "B", 10, 98))  # worse than a full ladder: untracked
    assert book.depth(1, "B") == [(100, 10), (99, 15)]
    assert book.untracked_orders(1, "B") == 1
    book.apply(add(1, 5, "B", 1, 101))  # better: level 99 (two orders) is evicted
    assert book.depth(1, "B") == [(101, 1), (100, 10)]
    assert book.untracked_orders(1, "B") == 3 and book.counters["levels_evicted"] == 1
    book.apply(delete(1, 5))
    book.apply(add(1, 6, "B", 1, 50))  # room in the ladder, but untracked orders may be better
    assert book.depth(1, "B") == [(100, 10)] and book.untracked_orders(1, "B") == 4
    record = book.apply(delete(1, 1))  # the ladder empties while orders are untracked
    assert record.bbo == Bbo(0, 0, 0, 0, True) and book.counters["best_unknown"] == 1
    book.recover(1)
    assert book.bbo(1).stale  # derived: recover does not clear it
    for ref in (2, 3, 4):
        book.apply(delete(1, ref))
    assert book.apply(execute(1, 6, 1)).bbo == Bbo(0, 0, 0, 0, False)  # last untracked gone
    assert book.counters["best_unknown"] == 1 and book.live_orders == 0
    assert book.apply(add(1, 7, "B", 3, 10)).bbo == Bbo(10, 3, 0, 0, False)


def test_hash_geometry_refuses_an_add_only_when_its_set_is_full():
    book = BookModel(sets=4, ways=2)
    same_set = [(k << 16) | k for k in range(1, 4)]  # quarters cancel: every one hashes to 0
    for ref in same_set:
        book.apply(add(1, ref, "B", 1, 100))
    assert book.counters["table_full"] == 1 and book.order(same_set[2]) is None
    book.apply(add(1, 1, "B", 1, 100))  # set 1 is free although 3 orders were offered
    assert book.live_orders == 3
    book.apply(replace(1, same_set[0], same_set[2], 1, 100))  # frees a way, then takes it
    assert book.order(same_set[2]) is not None and book.counters["table_full"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sets": 4}, "sets and ways go together, not sets=4 and ways=None"),
        ({"sets": 6, "ways": 2}, "sets must be a power of two in 1 .. 65536, not 6"),
        ({"sets": 4, "ways": 0}, "ways must be a positive integer, not 0"),
        ({"depth": 0}, "depth must be a positive integer or None, not 0"),
    ],
)
def test_geometry_parameters_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BookModel(**kwargs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, depth=st.integers(1, 4), ticks=st.sampled_from([3, 12]))
def test_depth_ladder_is_exact_whenever_not_stale(ops, depth, ticks):
    # Against the ideal model: the ladder holds the ideal book's best levels exactly, tracked
    # plus untracked orders are all the live ones, and an unflagged BBO is the ideal one.
    builder = StreamBuilder(ticks)
    ideal, limited = BookModel(), BookModel(depth=depth)
    for index, op in enumerate(ops):
        msg = builder.op(*op)
        ideal.apply(msg)
        limited.apply(msg, sequence=index)
        for loc in LOCATES:
            bbo = limited.bbo(loc)
            if not bbo.stale:
                assert bbo == ideal.bbo(loc), (index, msg)
            for side in "BS":
                tracked = limited.depth(loc, side)
                assert tracked == ideal.depth(loc, side)[: len(tracked)]
                orders = sum(1 for lc, sd, _, _ in builder.live.values() if (lc, sd) == (loc, side))
                prices = {p for p, _ in tracked}
                in_ladder = sum(
                    1 for lc, sd, p, _ in builder.live.values() if (lc, sd) == (loc, side)
                    and p in prices
                )  # fmt: skip
                assert orders - in_ladder == limited.untracked_orders(loc, side)
    assert limited.counters["applied"] == ideal.counters["applied"] == len(ops)


@settings(max_examples=100, deadline=None)
@given(ops=OPS, sets=st.sampled_from([1, 2, 4]), ways=st.integers(1, 3))
def test_hash_geometry_matches_a_per_set_oracle(ops, sets, ways):
    builder = StreamBuilder(6)
    book = BookModel(sets=sets, ways=ways)
    live: dict[int, int] = {}  # ref -> set, the orders the oracle accepted
    refused = 0

    def try_add(ref: int) -> bool:
        home = (ref ^ ref >> 16 ^ ref >> 32 ^ ref >> 48) % sets
        if sum(1 for s in live.values() if s == home) >= ways:
            return False
        live[ref] = home
        return True

    for op in ops:
        msg = builder.op(*op)
        book.apply(msg)
        ref = msg.original_ref if msg.type == "U" else msg.order_ref
        if msg.type in "AF":
            refused += not try_add(ref)
        elif ref in live:
            if msg.type in "DU":
                del live[ref]
                if msg.type == "U":
                    refused += not try_add(msg.new_ref)
            elif ref not in builder.live:  # executed or cancelled in full
                del live[ref]
    assert book.counters["table_full"] == refused
    assert book.live_orders == len(live)


def test_subscribe_changes_filtering_but_keeps_the_book():
    book = BookModel(max_symbols=8)
    book.apply(add(2, 1, "B", 10, 100))
    book.subscribe(2, False)
    assert book.apply(delete(2, 1)) is None and book.counters["untracked"] == 1
    book.subscribe(2, True)
    assert book.bbo(2) == Bbo(100, 10, 0, 0, False)
    assert book.apply(delete(2, 1)).bbo == EMPTY
    with pytest.raises(ValueError, match="locate must be 0 .. 7, not 8"):
        book.subscribe(8, True)
