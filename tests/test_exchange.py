"""host.exchange: order life cycle, both fill rules, rejections, framing, and a property test."""

from __future__ import annotations

import itertools
from typing import NamedTuple

from hypothesis import event, given, settings
from hypothesis import strategies as st
from tick2quote.host.exchange import SimulatedExchange
from tick2quote.host.protocol import itch, ouch

AAPL, MSFT = 7, 9
SYMBOLS = {AAPL: "AAPL", MSFT: "MSFT"}


class Bbo(NamedTuple):
    bid_px: int
    ask_px: int
    stale: bool = False


def _exchange(**kwargs) -> SimulatedExchange:
    ticks = itertools.count(1000, 10)
    return SimulatedExchange(clock=lambda: next(ticks), symbols=SYMBOLS, **kwargs)


def enter(ref, side, qty, price, symbol="AAPL"):
    return ouch.make(
        "to_exchange", "O", user_ref_num=ref, side=side, quantity=qty, symbol=symbol,
        price=price, time_in_force="0", cl_ord_id=f"c{ref}",
    )  # fmt: skip


def replace(orig, ref, qty, price):
    return ouch.make(
        "to_exchange", "U", orig_user_ref_num=orig, user_ref_num=ref, quantity=qty, price=price
    )


def cancel(ref, qty=0):
    return ouch.make("to_exchange", "X", user_ref_num=ref, quantity=qty)


def add(ref, side, shares, price, locate=AAPL):
    stock = SYMBOLS.get(locate, "ZZZZ")
    return itch.make(
        "A", locate=locate, order_ref=ref, side=side, shares=shares, stock=stock, price=price
    )


def executed(ref, shares, locate=AAPL):
    return itch.make("E", locate=locate, order_ref=ref, executed_shares=shares, match_number=1)


def executed_at(ref, shares, price, locate=AAPL):
    return itch.make(
        "C", locate=locate, order_ref=ref, executed_shares=shares, printable="Y",
        execution_price=price, match_number=1,
    )  # fmt: skip


def trade(shares, price, locate=AAPL):
    stock = SYMBOLS[locate]
    return itch.make("P", locate=locate, side="B", shares=shares, stock=stock, price=price)


def fills(records):
    return [(r.user_ref_num, r.quantity, r.price, r.liquidity_flag) for r in records]


# -- life cycle --------------------------------------------------------------------------------


def test_enter_is_accepted():
    ex = _exchange()
    (a,) = ex.on_order(enter(5, "B", 100, 1_500_000))
    assert (a.type, a.timestamp, a.user_ref_num, a.side, a.quantity) == ("A", 1000, 5, "B", 100)
    assert (a.symbol, a.price, a.order_state, a.cl_ord_id) == ("AAPL", 1_500_000, "L", "c5")
    (b,) = ex.on_order(enter(6, "S", 50, 1_500_100))
    assert b.timestamp == 1010 and b.order_reference_number > a.order_reference_number
    live = ex.live_orders()
    assert sorted(live) == [5, 6] and (live[6].side, live[6].open_qty) == ("S", 50)
    assert ex.counters["accepted"] == 2


def test_replace_moves_to_the_new_user_ref_num():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_000))
    (u,) = ex.on_order(replace(1, 2, 80, 1_000_100))
    assert (u.type, u.orig_user_ref_num, u.user_ref_num) == ("U", 1, 2)
    assert (u.side, u.quantity, u.symbol, u.price) == ("B", 80, "AAPL", 1_000_100)
    assert list(ex.live_orders()) == [2]
    assert ex.on_order(replace(1, 3, 80, 1_000_000)) == []  # 1 is dead now
    assert ex.counters["unknown_user_ref_num"] == 1 and ex.counters["replaced"] == 1


def test_cancel_all_and_cancel_down():
    ex = _exchange()
    ex.on_order(enter(1, "S", 100, 1_000_000))
    (c,) = ex.on_order(cancel(1, 30))
    assert (c.type, c.user_ref_num, c.quantity, c.reason) == ("C", 1, 70, "U")
    assert ex.live_orders()[1].open_qty == 30
    assert ex.on_order(cancel(1, 30)) == [] and ex.counters["cancel_noop"] == 1
    (c,) = ex.on_order(cancel(1, 0))
    assert (c.quantity, ex.live_orders()) == (30, {})
    assert ex.on_order(cancel(1, 0)) == [] and ex.counters["unknown_user_ref_num"] == 1


def test_rejections_are_counted():
    ex = _exchange()
    ex.on_order(enter(10, "B", 100, 1_000_000))
    assert ex.on_order(enter(10, "B", 100, 1_000_000)) == []  # not increasing
    assert ex.on_order(enter(9, "B", 100, 1_000_000)) == []
    assert ex.on_order(enter(11, "X", 100, 1_000_000)) == []
    assert ex.on_order(enter(12, "B", 0, 1_000_000)) == []
    assert ex.on_order(enter(13, "B", 10, 0)) == []
    assert ex.on_order(replace(10, 13, 10, 1_000_000)) == []  # 13 already used
    assert ex.on_order(replace(99, 14, 10, 1_000_000)) == []
    assert ex.on_order(cancel(98)) == []
    c = ex.counters
    assert (c["bad_user_ref_num"], c["bad_side"], c["bad_quantity"], c["bad_price"]) == (3, 1, 1, 1)
    assert c["unknown_user_ref_num"] == 2 and list(ex.live_orders()) == [10]


# -- fill rule (a): prints in the feed ---------------------------------------------------------


def test_same_side_print_at_or_through_our_buy_fills_up_to_the_shares():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_100))
    for ref, side, price in ((50, "B", 1_000_000), (51, "B", 1_000_200), (52, "S", 1_000_000)):
        assert ex.on_market(add(ref, side, 500, price)) == []
    assert ex.on_market(executed(51, 40)) == []  # a better bid traded: not through ours
    assert ex.on_market(executed(52, 40)) == []  # an ask traded: the other side
    assert fills(ex.on_market(executed(50, 30))) == [(1, 30, 1_000_100, "A")]
    assert ex.live_orders()[1].open_qty == 70
    # 200 shares print, but only 70 are live: the fill never exceeds the live quantity.
    assert fills(ex.on_market(executed(50, 200))) == [(1, 70, 1_000_100, "A")]
    assert ex.live_orders() == {}
    assert ex.on_market(executed(50, 10)) == []
    assert ex.positions() == {"AAPL": 100} and ex.cash() == {"AAPL": -100 * 1_000_100}


def test_print_at_exactly_our_price_fills_a_sell():
    ex = _exchange()
    ex.on_order(enter(1, "S", 100, 1_000_000))
    ex.on_market(add(60, "S", 300, 1_000_000))
    ex.on_market(add(61, "S", 300, 999_900))
    assert ex.on_market(executed(61, 50)) == []  # a lower ask traded: ours not reached
    assert fills(ex.on_market(executed(60, 60))) == [(1, 60, 1_000_000, "A")]
    assert ex.positions() == {"AAPL": -60} and ex.cash() == {"AAPL": 60 * 1_000_000}


def test_execution_with_price_uses_the_execution_price():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_000))
    ex.on_market(add(70, "B", 300, 1_000_000))  # resting at our price ...
    assert ex.on_market(executed_at(70, 20, 1_000_050)) == []  # ... but printed above it
    assert fills(ex.on_market(executed_at(70, 20, 999_900))) == [(1, 20, 1_000_000, "A")]


def test_non_cross_trade_fills_whichever_side_it_reaches():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_000))
    ex.on_order(enter(2, "S", 100, 1_000_400))
    assert ex.on_market(trade(50, 1_000_200)) == []  # between our quotes
    assert fills(ex.on_market(trade(50, 1_000_000))) == [(1, 50, 1_000_000, "A")]
    assert fills(ex.on_market(trade(500, 1_000_500))) == [(2, 100, 1_000_400, "A")]
    assert ex.positions() == {"AAPL": 50 - 100}


def test_one_print_is_shared_by_price_then_time_priority():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_000))
    ex.on_order(enter(2, "B", 100, 1_000_100))
    ex.on_order(enter(3, "B", 100, 1_000_000))
    ex.on_market(add(80, "B", 1000, 999_000))
    got = fills(ex.on_market(executed(80, 250)))
    assert got == [(2, 100, 1_000_100, "A"), (1, 100, 1_000_000, "A"), (3, 50, 1_000_000, "A")]
    assert [r.match_number for r in ex.on_market(executed(80, 60))] == [4]
    assert ex.positions() == {"AAPL": 300}


def test_feed_order_table_follows_replace_cancel_delete():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_000))
    ex.on_market(add(90, "B", 100, 1_000_300))
    ex.on_market(
        itch.make("U", locate=AAPL, original_ref=90, new_ref=91, shares=50,
                  price=999_000)
    )  # fmt: skip
    assert ex.on_market(executed(90, 10)) == [] and ex.counters["unknown_feed_ref"] == 1
    assert fills(ex.on_market(executed(91, 10))) == [(1, 10, 1_000_000, "A")]
    ex.on_market(itch.make("X", locate=AAPL, order_ref=91, cancelled_shares=30))
    ex.on_market(itch.make("D", locate=AAPL, order_ref=91))
    assert ex.on_market(executed(91, 10)) == [] and ex.counters["unknown_feed_ref"] == 2


def test_unknown_locate_fills_nothing():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_000))
    msg = itch.make("P", locate=42, side="B", shares=5, stock="AAPL", price=1)
    assert ex.on_market(msg) == [] and ex.counters["unknown_locate"] == 1
    # A Stock Directory message teaches the exchange the locate.
    ex.on_market(itch.make("R", locate=42, stock="AAPL"))
    assert fills(ex.on_market(msg)) == [(1, 5, 1_000_000, "A")]


# -- fill rule (b): the opposite touch crosses our order ---------------------------------------


def test_touch_crossing_fills_the_whole_open_quantity_at_our_price():
    ex = _exchange()
    ex.on_order(enter(1, "B", 100, 1_000_000))
    ex.on_order(enter(2, "S", 70, 1_000_500))
    ex.on_market(add(90, "B", 100, 999_000))
    ex.on_market(executed(90, 30))  # a print: 30 of ours fill first
    assert ex.live_orders()[1].open_qty == 70
    tick = add(91, "S", 10, 1_000_000)
    assert ex.on_market(tick, Bbo(999_000, 1_000_100)) == []
    assert ex.on_market(tick, Bbo(999_000, 1_000_000, stale=True)) == []
    assert fills(ex.on_market(tick, Bbo(999_000, 1_000_000))) == [(1, 70, 1_000_000, "R")]
    assert ex.on_market(tick, Bbo(0, 0)) == []  # empty sides never cross
    assert fills(ex.on_market(tick, Bbo(1_000_600, 1_000_700))) == [(2, 70, 1_000_500, "R")]
    assert ex.positions() == {"AAPL": 100 - 70}
    assert ex.cash() == {"AAPL": -100 * 1_000_000 + 70 * 1_000_500}


def test_an_order_entered_into_a_crossing_touch_fills_at_once():
    ex = _exchange()
    ex.on_market(add(90, "S", 10, 1_000_000), Bbo(999_900, 1_000_000))
    a, e = ex.on_order(enter(1, "B", 40, 1_000_000))
    assert a.type == "A" and fills([e]) == [(1, 40, 1_000_000, "R")]
    ex.on_order(enter(2, "B", 40, 999_000))
    u, e = ex.on_order(replace(2, 3, 25, 1_000_100))
    assert u.type == "U" and fills([e]) == [(3, 25, 1_000_100, "R")]
    ex.on_market(add(91, "S", 10, 1_000_000), Bbo(999_900, 1_000_000, stale=True))
    assert len(ex.on_order(enter(4, "B", 40, 1_000_000))) == 1  # stale touch: no cross


# -- framing -----------------------------------------------------------------------------------


def test_soup_stream_in_any_split():
    ex = _exchange()
    stream = b"".join(
        ouch.encode_soup("U", ouch.encode(r))
        for r in (enter(1, "B", 100, 1_000_000), replace(1, 2, 90, 1_000_100), cancel(2))
    )
    stream += ouch.encode_soup("R") + ouch.encode_soup("U", b"Zjunk")
    out = b"".join(ex.on_bytes(stream[i : i + 1]) for i in range(len(stream)))
    packets = list(ouch.iter_soup(out))
    assert [p.packet_type for p in packets] == ["S", "S", "S"]
    records = [ouch.decode(p.payload, "from_exchange")[0] for p in packets]
    assert [(r.type, r.user_ref_num) for r in records] == [("A", 1), ("U", 2), ("C", 2)]
    assert records[2].quantity == 90
    assert ex.counters["ignored_packets"] == 1 and ex.counters["bad_message"] == 1


# -- property: the exchange's position is the sum of its signed executions ---------------------

PRICES = st.integers(990, 1010).map(lambda p: p * 100)
OPS = st.one_of(
    st.tuples(st.just("enter"), st.sampled_from([AAPL, MSFT]), st.sampled_from("BS"), PRICES,
              st.integers(1, 300)),
    st.tuples(st.just("replace"), st.integers(0, 30), PRICES, st.integers(1, 300)),
    st.tuples(st.just("cancel"), st.integers(0, 30), st.integers(0, 200)),
    st.tuples(st.just("add"), st.sampled_from([AAPL, MSFT]), st.sampled_from("BS"), PRICES,
              st.integers(1, 500)),
    st.tuples(st.just("exec"), st.integers(0, 30), st.integers(1, 400), st.booleans(), PRICES),
    st.tuples(st.just("trade"), st.sampled_from([AAPL, MSFT]), PRICES, st.integers(1, 400)),
    st.tuples(st.just("bbo"), st.sampled_from([AAPL, MSFT]), PRICES, PRICES, st.booleans()),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(OPS, min_size=20, max_size=80))
def test_position_is_the_signed_sum_of_executions(ops):
    ex = _exchange()
    refs, feed_refs = [], []  # every UserRefNum we sent, every feed order reference added
    owner = {}  # UserRefNum -> (symbol, side, price), from our own orders
    open_qty = {}  # UserRefNum -> open shares, from the exchange's replies
    position, cash = {}, {}
    next_ref = itertools.count(1)
    next_feed = itertools.count(1)
    feed_locate = {}

    def check(replies):
        for r in replies:
            if r.type == "A":
                open_qty[r.user_ref_num] = r.quantity
            elif r.type == "U":
                open_qty[r.user_ref_num] = r.quantity
                del open_qty[r.orig_user_ref_num]
            elif r.type == "C":
                open_qty[r.user_ref_num] -= r.quantity
            elif r.type == "E":
                symbol, side, price = owner[r.user_ref_num]
                assert 0 < r.quantity <= open_qty[r.user_ref_num]
                assert r.price == price
                open_qty[r.user_ref_num] -= r.quantity
                signed = r.quantity if side == "B" else -r.quantity
                position[symbol] = position.get(symbol, 0) + signed
                cash[symbol] = cash.get(symbol, 0) - signed * r.price
        for ref in [ref for ref, q in open_qty.items() if q == 0]:
            del open_qty[ref]

    for op in ops:
        kind = op[0]
        if kind == "enter":
            _, locate, side, price, qty = op
            ref = next(next_ref)
            owner[ref] = (SYMBOLS[locate], side, price)
            refs.append(ref)
            check(ex.on_order(enter(ref, side, qty, price, SYMBOLS[locate])))
        elif kind in ("replace", "cancel") and refs:
            orig = refs[op[1] % len(refs)]
            if kind == "replace":
                ref = next(next_ref)
                owner[ref] = (owner[orig][0], owner[orig][1], op[2])
                refs.append(ref)
                check(ex.on_order(replace(orig, ref, op[3], op[2])))
            else:
                check(ex.on_order(cancel(orig, op[2])))
        elif kind == "add":
            _, locate, side, price, shares = op
            feed_refs.append(next(next_feed))
            feed_locate[feed_refs[-1]] = locate
            check(ex.on_market(add(feed_refs[-1], side, shares, price, locate)))
        elif kind == "exec" and feed_refs:
            _, index, shares, with_price, price = op
            ref = feed_refs[index % len(feed_refs)]
            locate = feed_locate[ref]
            if with_price:
                msg = executed_at(ref, shares, price, locate)
            else:
                msg = executed(ref, shares, locate)
            check(ex.on_market(msg))
        elif kind == "trade":
            check(ex.on_market(trade(op[3], op[2], op[1])))
        elif kind == "bbo":
            _, locate, bid, ask, stale = op
            tick = itch.make("S", locate=locate, event_code="Q")
            check(ex.on_market(tick, Bbo(min(bid, ask), max(bid, ask), stale)))
        assert {r: o.open_qty for r, o in ex.live_orders().items()} == open_qty

    n = ex.counters["executed"]
    event(f"executions: {n if n < 5 else '5+'}")
    assert ex.positions() == position
    assert ex.cash() == cash
