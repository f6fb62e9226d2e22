"""The quoter reference model against worked examples of quoting.md and randomised risk streams.

Expected figures are worked out by hand in the comments from the formulas of quoting.md; the
property tests use a checker written here, independent of the model's helpers.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tick2quote.sim.models.book import Bbo
from tick2quote.sim.models.pricing import Quote, QuoteParams, ceil_to_tick, floor_to_tick, price
from tick2quote.sim.models.quoter import Order, QuoterModel


class Book(NamedTuple):
    bid_px: int
    ask_px: int
    bid_sz: int = 100
    ask_sz: int = 100
    stale: bool = False


def enter(locate, side, ref, qty, px, stamp=0):
    return Order("enter", locate, side, ref, None, qty, px, stamp)


def replace(locate, side, ref, orig, qty, px, stamp=0):
    return Order("replace", locate, side, ref, orig, qty, px, stamp)


def cancel(locate, side, ref, stamp=0):
    return Order("cancel", locate, side, ref, None, 0, 0, stamp)


# ---------------------------------------------------------------------------- pricing by hand


def test_tick_rounding_of_negative_values():
    assert floor_to_tick(-150, 100) == -200
    assert ceil_to_tick(-150, 100) == -100
    assert floor_to_tick(150, 100) == 100
    assert ceil_to_tick(150, 100) == 200
    assert floor_to_tick(-200, 100) == ceil_to_tick(-200, 100) == -200
    assert floor_to_tick(-7, 1) == ceil_to_tick(-7, 1) == -7


def test_symmetric_quote_around_mid():
    # mid = (1_000_000 + 1_000_200) >> 1 = 1_000_100; half = max(100, 1_000_100*20//20000 = 1000)
    # bid = floor(999_100) = 999_100, ask = ceil(1_001_100) = 1_001_100; band 50_005: inside.
    p = price(QuoteParams(), 0, 1_000_000, 1_000_200)
    assert p.mid == 1_000_100
    assert p.quote == Quote(999_100, 100, 1_001_100, 100)
    assert not (p.bid_band_reject or p.ask_band_reject or p.edge_reject)


def test_skew_long_lowers_both_quotes():
    # skew = (300*5) >> 2 = 375; r = 1_000_100 - 375 = 999_725
    # bid = floor(998_725, 100) = 998_700; ask = ceil(1_000_725, 100) = 1_000_800
    # sizes: bid min(100, 1000, 1000-300) = 100; ask min(100, 1000, 1000+300) = 100
    p = price(QuoteParams(skew_num=5, skew_shift=2), 300, 1_000_000, 1_000_200)
    assert p.quote == Quote(998_700, 100, 1_000_800, 100)


def test_skew_short_raises_both_quotes_with_a_floor_shift():
    # skew = (-3*1) >> 1 = floor(-1.5) = -2 (a truncating shift would give -1); r = mid + 2
    # tick 1: bid = 1_000_100 + 2 - 1000 = 999_102; ask = 1_001_102
    p = price(QuoteParams(tick=1, skew_num=1, skew_shift=1), -3, 1_000_000, 1_000_200)
    assert p.quote == Quote(999_102, 100, 1_001_102, 100)


@pytest.mark.parametrize("tick, expected", [(1, (998_575, 1_001_575)), (100, (998_500, 1_001_600))])
def test_tick_1_and_100_rounding(tick, expected):
    # mid = (1_000_001 + 1_000_150) >> 1 = 1_000_075; half = 1_000_075*30//20000 = 1500
    # r - half = 998_575, r + half = 1_001_575; to the cent: floor 998_500, ceil 1_001_600
    p = price(QuoteParams(tick=tick, spread_bps=30), 0, 1_000_001, 1_000_150)
    assert (p.quote.bid_px, p.quote.ask_px) == expected


def test_never_cross_clamps_the_bid():
    # mid = 1_000_050, half = 1000; skew = 100*-20 = -2000: r = 1_002_050
    # bid = floor(1_001_050) = 1_001_000 -> min(., 1_000_100 - 100) = 1_000_000
    # ask = ceil(1_003_050) = 1_003_100; sizes min(100, 900) = 100, min(100, 1100) = 100
    p = price(QuoteParams(skew_num=-20), 100, 1_000_000, 1_000_100)
    assert p.quote == Quote(1_000_000, 100, 1_003_100, 100)


def test_never_cross_clamps_the_ask():
    # skew = 100*20 = 2000: r = 998_050; bid = floor(997_050) = 997_000
    # ask = ceil(999_050) = 999_100 -> max(., 1_000_000 + 100) = 1_000_100
    p = price(QuoteParams(skew_num=20), 100, 1_000_000, 1_000_100)
    assert p.quote == Quote(997_000, 100, 1_000_100, 100)


def test_band_is_inclusive_and_rejects_one_side():
    # mid = 1_000_000, half = 1000, band = 1_000_000*10//10000 = 1000
    params = QuoteParams(tick=1, band_bps=10)
    # bid 999_000 = mid - band and ask 1_001_000 = mid + band: both on the edge, both quoted
    assert price(params, 0, 999_900, 1_000_100).quote == Quote(999_000, 100, 1_001_000, 100)
    # position 1, skew 1: r = 999_999; bid 998_999 < 999_000 rejected, ask 1_000_999 kept
    p = price(QuoteParams(tick=1, band_bps=10, skew_num=1), 1, 999_900, 1_000_100)
    assert p.quote == Quote(0, 0, 1_000_999, 100)
    assert p.bid_band_reject and not p.ask_band_reject


def test_non_positive_price_is_a_band_reject():
    # bid 1, ask 3: mid 2, half max(1, 0) = 1; skew 10: r = -8; bid floor(-9) = -9,
    # ask ceil(-7) = -7 -> max(., 1 + 1) = 2; band 2*65535//10000 = 13 keeps -9 in range,
    # but a price <= 0 is rejected; ask qty min(100, 1000, 1000 + 10) = 100
    p = price(QuoteParams(tick=1, skew_num=1, band_bps=65535), 10, 1, 3)
    assert p.quote == Quote(0, 0, 2, 100)
    assert p.bid_band_reject and not p.ask_band_reject


@pytest.mark.parametrize("edge, rejected", [(10, False), (11, True)])
def test_min_edge(edge, rejected):
    # mid 1_000_000, half 1000: bid 999_000, ask 1_001_000, width 2000
    # 2000*10000 = 20_000_000 vs 2*edge*1_000_000: equal at edge 10 (kept), short at 11
    p = price(QuoteParams(min_edge_bps=edge), 0, 999_900, 1_000_100)
    assert p.edge_reject is rejected
    assert p.quote == (Quote(0, 0, 0, 0) if rejected else Quote(999_000, 100, 1_001_000, 100))


@pytest.mark.parametrize(
    "position, bid_qty, ask_qty",
    [
        (0, 60, 60),  # capped by max_order_qty 60
        (950, 50, 60),  # bid min(100, 60, 1000-950)
        (999, 1, 60),
        (1000, 0, 60),  # at max_inventory: the bid side stops
        (1001, 0, 60),  # beyond it too
        (-999, 60, 1),  # ask min(100, 60, 1000-999)
        (-1000, 60, 0),
        (-1500, 60, 0),
    ],
)
def test_size_limits(position, bid_qty, ask_qty):
    params = QuoteParams(max_order_qty=60, band_bps=65535)
    q = price(params, position, 1_000_000, 1_000_200).quote
    assert (q.bid_qty, q.ask_qty) == (bid_qty, ask_qty)


# ---------------------------------------------------------------------------- orders and fills

BOOK = Book(1_000_000, 1_000_200)  # quotes 999_100 / 1_001_100 with the default parameters
BOOK_UP = Book(1_000_100, 1_000_300)  # mid 1_000_200, half 1000: 999_200 / 1_001_200


def test_enter_replace_cancel_with_increasing_user_ref_nums():
    m = QuoterModel(default=QuoteParams(max_inventory=100))
    assert m.on_book(7, BOOK, cycle=1) == [
        enter(7, "B", 1, 100, 999_100, 1),
        enter(7, "S", 2, 100, 1_001_100, 1),
    ]
    assert m.on_book(7, BOOK_UP, cycle=2) == [
        replace(7, "B", 3, 1, 100, 999_200, 2),
        replace(7, "S", 4, 2, 100, 1_001_200, 2),
    ]
    m.on_fill(3, 50, 999_200)  # position 50: the bid may now be min(100, 100 - 50) = 50
    assert m.live(7)["B"] == (3, 50, 999_200)
    assert m.on_book(7, BOOK_UP, cycle=3) == [replace(7, "B", 5, 3, 50, 999_200, 3)]
    m.set_params(7, QuoteParams(max_inventory=100, quote_size=0))
    assert m.on_book(7, BOOK_UP, cycle=4) == [cancel(7, "B", 5, 4), cancel(7, "S", 4, 4)]
    assert m.live(7) == {}
    assert m.counters["enter"] == 2 and m.counters["replace"] == 3 and m.counters["cancel"] == 2


def test_full_fill_removes_the_live_order_and_the_next_quote_enters():
    m = QuoterModel()
    m.on_book(0, BOOK)
    m.on_fill(1, 100, 999_100)
    assert "B" not in m.live(0)
    # position 100, no skew: the same prices; the bid is entered anew, the ask is unchanged
    assert m.on_book(0, BOOK, cycle=5) == [enter(0, "B", 3, 100, 999_100, 5)]


def test_fills_update_position_and_cash():
    m = QuoterModel()
    m.on_book(0, BOOK)
    m.on_fill(1, 40, 999_100)  # buy 40
    assert (m.position(0), m.cash(0)) == (40, -40 * 999_100)
    m.on_fill(2, 70, 1_001_100)  # sell 70
    assert (m.position(0), m.cash(0)) == (-30, -40 * 999_100 + 70 * 1_001_100)
    assert m.pnl(0, 1_000_000) == -40 * 999_100 + 70 * 1_001_100 - 30 * 1_000_000
    assert m.live(0) == {"B": (1, 60, 999_100), "S": (2, 30, 1_001_100)}
    assert m.counters["fills"] == 2


def test_unknown_late_and_over_fills_are_counted():
    m = QuoterModel(ref_window=2)
    m.on_book(0, BOOK)  # refs 1, 2
    m.on_fill(99, 10, 1)
    assert m.counters["unknown_fill"] == 1 and m.position(0) == 0 and m.cash(0) == 0
    m.on_book(0, BOOK_UP)  # refs 3, 4 replace 1, 2; the window now holds 3 and 4 only
    m.on_fill(1, 10, 999_100)
    assert m.counters["unknown_fill"] == 2 and m.position(0) == 0
    m2 = QuoterModel()
    m2.on_book(0, BOOK)
    m2.on_book(0, BOOK_UP)
    m2.on_fill(1, 10, 999_100)  # the replaced bid traded before the replace took effect
    assert m2.counters["late_fill"] == 1 and m2.position(0) == 10
    m2.on_fill(3, 150, 999_200)  # 150 > 100 open: applied in full, the order is gone
    assert m2.counters["overfill"] == 1 and m2.position(0) == 160 and "B" not in m2.live(0)


def test_position_and_cash_saturate():
    m = QuoterModel()
    m.on_book(0, BOOK)
    m.on_fill(1, 2**32 - 1, 2**62)
    assert m.position(0) == 2**31 - 1 and m.cash(0) == -(2**63)
    assert m.counters["position_saturated"] == 1 and m.counters["cash_saturated"] == 1


def test_fill_arguments_are_checked():
    m = QuoterModel()
    with pytest.raises(ValueError, match=r"quantity must be in 0..4294967295, not -1"):
        m.on_fill(1, -1, 100)
    with pytest.raises(ValueError, match=r"user_ref_num must be in 0..4294967295, not 4294967296"):
        m.on_fill(2**32, 1, 100)


def test_every_pull_condition_cancels_and_is_counted():
    cases = [
        ("halted", dict(trading_state="H")),
        ("halted", dict(trading_state="P")),
        ("stale", dict(bbo=BOOK._replace(stale=True))),
        ("empty", dict(bbo=BOOK._replace(bid_sz=0, bid_px=0))),
        ("empty", dict(bbo=BOOK._replace(ask_sz=0, ask_px=0))),
        ("empty", dict(bbo=None)),
        ("crossed", dict(bbo=Book(1_000_200, 1_000_200))),  # locked
        ("crossed", dict(bbo=Book(1_000_300, 1_000_200))),
    ]
    for reason, kwargs in cases:
        m = QuoterModel(default=QuoteParams(refresh_cycles=1000))
        m.on_book(3, BOOK, cycle=10)
        args = dict(bbo=BOOK, trading_state="T") | kwargs
        # the pull comes 1 cycle after the enter: a pull is never throttled
        assert m.on_book(3, args["bbo"], args["trading_state"], cycle=11) == [
            cancel(3, "B", 1, 11),
            cancel(3, "S", 2, 11),
        ], reason
        assert m.counters[f"pull_{reason}"] == 1 and m.live(3) == {}
        assert m.on_book(3, args["bbo"], args["trading_state"], cycle=12) == []
        assert m.counters[f"pull_{reason}"] == 2


def test_disabled_pulls_at_the_next_book_change():
    m = QuoterModel()
    m.on_book(3, BOOK)
    m.set_params(3, QuoteParams(enabled=False))
    assert m.on_book(3, BOOK) == [cancel(3, "B", 1), cancel(3, "S", 2)]
    assert m.counters["pull_disabled"] == 1
    assert m.quote(3, BOOK) is None


@pytest.mark.parametrize("state", ["T", "Q"])
def test_trading_and_quotation_only_states_quote(state):
    assert QuoterModel().quote(0, BOOK, state) == Quote(999_100, 100, 1_001_100, 100)


@pytest.mark.parametrize("max_loss, pulled", [(9_895_000, False), (9_894_999, True)])
def test_loss_limit_uses_the_current_mid(max_loss, pulled):
    m = QuoterModel(default=QuoteParams(max_loss=max_loss, band_bps=65535))
    m.on_book(0, BOOK)
    m.on_fill(1, 100, 999_000)  # position 100, cash -99_900_000
    # mid (900_000 + 900_100) >> 1 = 900_050: pnl = -99_900_000 + 90_005_000 = -9_895_000
    low = Book(900_000, 900_100)
    assert m.pnl(0, 900_050) == -9_895_000
    orders = m.on_book(0, low)
    assert (m.counters["pull_loss"] == 1) is pulled
    assert all(o.kind == "cancel" for o in orders) is pulled


def test_pull_reasons_are_counted_in_priority_order():
    m = QuoterModel(default=QuoteParams(enabled=False))
    m.set_kill(True)
    m.on_book(0, Book(5, 5, stale=True), "H")
    assert m.counters["pull_kill"] == 1 and m.counters["pull_disabled"] == 0
    m.set_kill(False)
    m.on_book(0, Book(5, 5, stale=True), "H")
    assert m.counters["pull_disabled"] == 1 and m.counters["pull_halted"] == 0


def test_kill_switch_pulls_every_symbol_at_once():
    m = QuoterModel()
    m.on_book(9, BOOK)  # refs 1, 2
    m.on_book(4, BOOK)  # refs 3, 4
    m.on_book(5, Book(0, 1_000_200, bid_sz=0))  # pulled: nothing live
    assert m.set_kill(True, cycle=20) == [
        cancel(4, "B", 3, 20),
        cancel(4, "S", 4, 20),
        cancel(9, "B", 1, 20),
        cancel(9, "S", 2, 20),
    ]
    assert m.kill and m.counters["pull_kill"] == 2
    assert m.on_book(4, BOOK, cycle=21) == [] and m.counters["pull_kill"] == 3
    assert m.set_kill(False, cycle=22) == []
    assert m.on_book(4, BOOK, cycle=23) == [
        enter(4, "B", 5, 100, 999_100, 23),
        enter(4, "S", 6, 100, 1_001_100, 23),
    ]


def test_throttle_and_dedupe():
    m = QuoterModel(default=QuoteParams(refresh_cycles=10))
    assert len(m.on_book(0, BOOK, cycle=0)) == 2
    assert m.on_book(0, BOOK, cycle=3) == [] and m.counters["unchanged"] == 1
    assert m.on_book(0, BOOK_UP, cycle=9) == [] and m.counters["throttled"] == 1
    assert [o.kind for o in m.on_book(0, BOOK_UP, cycle=10)] == ["replace", "replace"]
    assert len(m.on_book(0, BOOK._replace(stale=True), cycle=12)) == 2  # pulls are not throttled
    assert m.on_book(0, BOOK, cycle=21) == [] and m.counters["throttled"] == 2
    assert [o.kind for o in m.on_book(0, BOOK, cycle=22)] == ["enter", "enter"]
    assert m.counters["updates"] == 3 and m.counters["evaluations"] == 7


def test_user_ref_nums_run_out_without_blocking_pulls():
    m = QuoterModel(first_user_ref_num=2**32 - 2)
    assert [o.user_ref_num for o in m.on_book(0, BOOK)] == [2**32 - 2, 2**32 - 1]
    assert m.on_book(0, BOOK_UP) == [] and m.counters["ref_exhausted"] == 1
    assert len(m.on_book(0, BOOK, "H")) == 2


def test_accepts_the_book_models_bbo():
    assert QuoterModel().quote(0, Bbo(1_000_000, 100, 1_000_200, 100, False)) == Quote(
        999_100, 100, 1_001_100, 100
    )


def test_quote_is_pure():
    m = QuoterModel()
    m.quote(0, BOOK)
    assert not m.counters and m.live(0) == {}


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("tick", 5, ValueError, "tick must be 1 or 100, not 5"),
        ("band_bps", 0, ValueError, "band_bps must be in 1..65535, not 0"),
        ("quote_size", -1, ValueError, "quote_size must be in 0..4294967295, not -1"),
        ("max_order_qty", -5, ValueError, "max_order_qty must be in 0..4294967295, not -5"),
        ("max_inventory", 2**32, ValueError, "max_inventory must be in 0..4294967295, not "),
        ("skew_shift", 32, ValueError, "skew_shift must be in 0..31, not 32"),
        ("skew_num", 2**15, ValueError, "skew_num must be in -32768..32767, not 32768"),
        ("spread_bps", 65536, ValueError, "spread_bps must be in 0..65535, not 65536"),
        ("max_loss", -1, ValueError, "max_loss must be in 0..18446744073709551615, not -1"),
        ("refresh_cycles", -1, ValueError, "refresh_cycles must be in 0..4294967295, not -1"),
        ("min_edge_bps", 70000, ValueError, "min_edge_bps must be in 0..65535, not 70000"),
        ("quote_size", 1.5, TypeError, "quote_size must be an int, not 1.5"),
        ("tick", True, TypeError, "tick must be an int, not True"),
        ("enabled", 1, TypeError, "enabled must be a bool, not 1"),
    ],
)
def test_parameter_validation(field, value, error, message):
    with pytest.raises(error) as info:
        QuoteParams(**{field: value})
    assert str(info.value).startswith(message)
    params = QuoteParams()
    setattr(params, field, value)  # a mutated instance is refused when handed to the quoter
    with pytest.raises(error):
        QuoterModel().set_params(0, params)
    with pytest.raises(error):
        QuoterModel(default=params)


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="locate must be in 0..65535, not 65536"):
        QuoterModel().set_params(65536, QuoteParams())
    with pytest.raises(ValueError, match="first_user_ref_num must be in 1..4294967295, not 0"):
        QuoterModel(first_user_ref_num=0)
    with pytest.raises(ValueError, match="ref_window must be None or in 1..4294967295, not 0"):
        QuoterModel(ref_window=0)


# ---------------------------------------------------------------------------- randomised streams


def expected_quote(p: QuoteParams, position: int, bid: int, ask: int) -> dict[str, tuple]:
    """Steps 2-8 re-derived with exact fractions: side -> (price, quantity) of quoted sides."""
    mid = (bid + ask) // 2
    half = max(p.tick, math.floor(Fraction(mid * p.spread_bps, 20000)))
    reservation = mid - math.floor(Fraction(position * p.skew_num, 2**p.skew_shift))
    bid_q = min(math.floor(Fraction(reservation - half, p.tick)) * p.tick, ask - p.tick)
    ask_q = max(math.ceil(Fraction(reservation + half, p.tick)) * p.tick, bid + p.tick)
    if Fraction(ask_q - bid_q, mid) < Fraction(2 * p.min_edge_bps, 10000):
        return {}
    band = math.floor(Fraction(mid * p.band_bps, 10000))
    cap = min(p.quote_size, p.max_order_qty)
    sizes = {
        "B": min(cap, p.max_inventory - position) if position < p.max_inventory else 0,
        "S": min(cap, p.max_inventory + position) if position > -p.max_inventory else 0,
    }
    prices = {"B": bid_q, "S": ask_q}
    return {
        side: (prices[side], sizes[side])
        for side in "BS"
        if sizes[side] > 0 and prices[side] > 0 and abs(prices[side] - mid) <= band
    }


class Checker:
    """Follows the model's order stream with its own bookkeeping and checks quoting.md's rules."""

    def __init__(self, params: dict[int, QuoteParams]):
        self.params = params
        self.kill = False
        self.live: dict[tuple[int, str], list[int]] = {}  # -> [ref, price, sent qty, open qty]
        self.position = dict.fromkeys(params, 0)
        self.cash = dict.fromkeys(params, 0)
        self.last_ref = 0
        self.last_sent: dict[int, int] = {}
        self.unknown_fills = 0

    def must_pull(self, locate: int, book: Book, state: str) -> bool:
        p = self.params[locate]
        if self.kill or not p.enabled or state not in "TQ" or book.stale:
            return True
        if 0 in (book.bid_px, book.ask_px, book.bid_sz, book.ask_sz) or book.bid_px >= book.ask_px:
            return True
        mid = (book.bid_px + book.ask_px) // 2
        return self.cash[locate] + self.position[locate] * mid < -p.max_loss

    def cancels_everything(self, orders: list[Order], locates) -> None:
        expected = {(loc, side) for (loc, side) in self.live if loc in locates}
        assert all(o.kind == "cancel" and o.quantity == 0 for o in orders)
        assert [(o.locate, o.side) for o in orders] == sorted(expected)
        for o in orders:
            assert self.live.pop((o.locate, o.side))[0] == o.user_ref_num

    def book(self, locate: int, book: Book, state: str, cycle: int, orders: list[Order]):
        p = self.params[locate]
        if self.must_pull(locate, book, state):
            self.cancels_everything(orders, {locate})
        elif orders:
            if locate in self.last_sent:
                assert cycle - self.last_sent[locate] >= p.refresh_cycles, "throttle"
            self.check_update(locate, book, p, orders)
        if orders:
            self.last_sent[locate] = cycle
        self.check_inventory(locate)

    def check_update(self, locate: int, book: Book, p: QuoteParams, orders: list[Order]):
        mid = (book.bid_px + book.ask_px) // 2
        band = mid * p.band_bps // 10000
        position = self.position[locate]
        for o in orders:
            key = (locate, o.side)
            if o.kind == "cancel":
                assert o.quantity == 0 and self.live.pop(key)[0] == o.user_ref_num
                continue
            assert o.user_ref_num == self.last_ref + 1, "UserRefNum must increase by one"
            self.last_ref = o.user_ref_num
            if o.kind == "enter":
                assert key not in self.live and o.orig_user_ref_num is None
            else:
                assert self.live[key][0] == o.orig_user_ref_num
            assert 0 < o.quantity <= p.max_order_qty
            assert 0 < o.price and mid - band <= o.price <= mid + band, "band"
            if o.side == "B":
                assert o.price < book.ask_px, "a bid that takes liquidity"
                assert position + o.quantity <= p.max_inventory, "beyond max_inventory"
            else:
                assert o.price > book.bid_px, "an ask that takes liquidity"
                assert position - o.quantity >= -p.max_inventory, "beyond -max_inventory"
            self.live[key] = [o.user_ref_num, o.price, o.quantity, o.quantity]

    def check_inventory(self, locate: int) -> None:
        """Filling every live order can never take the position beyond the limit."""
        limit = self.params[locate].max_inventory
        buy = self.live.get((locate, "B"), [0, 0, 0, 0])[3]
        sell = self.live.get((locate, "S"), [0, 0, 0, 0])[3]
        assert self.position[locate] + buy <= limit and self.position[locate] - sell >= -limit

    def quoted(self, locate: int) -> dict[str, tuple]:
        return {side: tuple(v[1:3]) for (loc, side), v in self.live.items() if loc == locate}

    def fill(self, ref: int, quantity: int, fill_price: int) -> None:
        for (locate, side), v in self.live.items():
            if v[0] == ref:
                sign = 1 if side == "B" else -1
                self.position[locate] += sign * quantity
                self.cash[locate] -= sign * quantity * fill_price
                v[3] -= quantity
                if v[3] == 0:
                    del self.live[(locate, side)]
                return
        assert ref > self.last_ref or ref == 0
        self.unknown_fills += 1


LOCATES = (0, 1, 65535)


def mostly(draw, usual, unusual):
    """Draw from ``usual`` nine times in ten and from ``unusual`` otherwise."""
    return draw(unusual if draw(st.integers(0, 9)) == 0 else usual)


@st.composite
def quote_params(draw) -> QuoteParams:
    ints = st.integers
    return QuoteParams(
        tick=draw(st.sampled_from((1, 100))),
        spread_bps=mostly(draw, ints(0, 200), ints(0, 65535)),
        skew_num=mostly(draw, ints(-64, 64), ints(-(2**15), 2**15 - 1)),
        skew_shift=mostly(draw, ints(0, 4), ints(0, 31)),
        # sizes stay below 2**20 so that 60 fills cannot saturate position or cash
        quote_size=mostly(draw, ints(1, 500), ints(0, 2**20)),
        max_order_qty=mostly(draw, ints(1, 500), ints(0, 2**20)),
        max_inventory=mostly(draw, ints(1, 1000), ints(0, 2**32 - 1)),
        min_edge_bps=mostly(draw, ints(0, 12), ints(0, 65535)),
        band_bps=mostly(draw, ints(20, 1000), ints(1, 65535)),
        max_loss=mostly(draw, st.just(2**63 - 1), ints(0, 10**8)),
        refresh_cycles=draw(st.one_of(st.just(0), ints(1, 8))),
        enabled=mostly(draw, st.just(True), st.booleans()),
    )


@st.composite
def book_event(draw, base: int) -> tuple[Book, str]:
    unit = draw(st.sampled_from((1, 100)))
    bid = max(0, base + unit * draw(st.integers(-30, 30)))
    ask = max(0, bid + unit * mostly(draw, st.integers(1, 20), st.integers(-2, 0)))
    sizes = [mostly(draw, st.integers(1, 1000), st.just(0)) for _ in "BS"]
    stale = mostly(draw, st.just(False), st.just(True))
    state = mostly(draw, st.sampled_from("TQ"), st.sampled_from("HPX"))
    return Book(bid, ask, sizes[0], sizes[1], stale), state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_streams_never_break_the_rules(data):
    params = {loc: data.draw(quote_params(), label=f"params {loc}") for loc in LOCATES}
    base = data.draw(
        st.one_of(st.integers(1, 1000), st.integers(10_000, 2_000_000), st.integers(2**31, 2**32))
    )
    model = QuoterModel(params)
    checker = Checker(params)
    cycle = 0
    for _ in range(data.draw(st.integers(1, 60))):
        cycle += data.draw(st.integers(0, 4))
        action = data.draw(st.sampled_from(["book"] * 12 + ["fill"] * 7 + ["kill"]))
        if action == "book":
            locate = data.draw(st.sampled_from(LOCATES))
            book, state = data.draw(book_event(base))
            orders = model.on_book(locate, book, state, cycle)
            checker.book(locate, book, state, cycle, orders)
            p = params[locate]
            if not checker.must_pull(locate, book, state) and p.refresh_cycles == 0:
                wanted = expected_quote(p, checker.position[locate], book.bid_px, book.ask_px)
                assert checker.quoted(locate) == wanted
                assert model.quote(locate, book, state) == Quote(
                    *wanted.get("B", (0, 0)), *wanted.get("S", (0, 0))
                )
        elif action == "fill":
            if checker.live and data.draw(st.integers(0, 9)):
                key = data.draw(st.sampled_from(sorted(checker.live)))
                ref, px, _, open_qty = checker.live[key]
                qty = data.draw(st.integers(1, open_qty))
                fill_px = data.draw(st.one_of(st.just(px), st.integers(1, 2**32)))
            else:
                ref = data.draw(st.one_of(st.just(0), st.integers(checker.last_ref + 1, 2**32 - 1)))
                qty, fill_px = data.draw(st.integers(0, 1000)), data.draw(st.integers(1, 2**32))
            model.on_fill(ref, qty, fill_px)
            checker.fill(ref, qty, fill_px)
            for loc in LOCATES:
                checker.check_inventory(loc)
        else:
            on = data.draw(st.integers(0, 2)) == 0
            orders = model.set_kill(on, cycle)
            checker.kill = on
            checker.cancels_everything(orders if on else [], LOCATES if on else ())
            for o in orders:
                checker.last_sent[o.locate] = cycle
        for loc in LOCATES:
            assert model.position(loc) == checker.position[loc]
            assert model.cash(loc) == checker.cash[loc]
            assert {s: (r, q, px) for s, (r, q, px) in model.live(loc).items()} == {
                side: (v[0], v[3], v[1]) for (l2, side), v in checker.live.items() if l2 == loc
            }
    assert model.counters["unknown_fill"] == checker.unknown_fills
