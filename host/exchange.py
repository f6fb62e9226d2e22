"""A simulated exchange that answers the device's OUCH 5.0 orders and fills them from the feed.

:class:`SimulatedExchange` plays the order-entry side of the market for a run without a real
venue: it accepts, replaces and cancels the device's orders, decides from the same ITCH feed the
device sees when they would have traded, and keeps its own position and cash per symbol, so the
device's risk state (``quoting.md``, "Fills in") can be cross-checked against it.

Orders in (OUCH 5.0 to exchange; records of :mod:`.protocol.ouch`)
    *Enter* ``'O'`` answers *Order Accepted* ``'A'`` (order state ``'L'``, a new exchange Order
    Reference Number). *Replace* ``'U'`` of a live order answers *Order Replaced* ``'U'``: the
    order moves to the new UserRefNum with the new price and quantity as its open quantity, and
    loses its time priority. *Cancel* ``'X'`` with quantity 0 cancels all; with a smaller
    quantity than the open one it reduces the order to that size; the answer is *Order
    Canceled* ``'C'`` naming the shares cancelled, reason ``'U'`` (user requested). A cancel to a
    size at or above the open quantity changes nothing and counts ``cancel_noop``.
    Every time-in-force is treated as a day order.

Rejections (no answer, counted in :attr:`SimulatedExchange.counters`)
    A new UserRefNum (of an Enter or Replace) not above every one seen before:
    ``bad_user_ref_num``; once a message carries an increasing UserRefNum, that number is used
    up even if the message is then rejected. A Replace or Cancel naming a UserRefNum that is not
    live (unknown, replaced, cancelled or completely filled): ``unknown_user_ref_num``. A side
    other than ``'B'``, ``'S'``, ``'T'``, ``'E'``: ``bad_side``; quantity 0: ``bad_quantity``;
    price <= 0: ``bad_price``. ``'T'`` and ``'E'`` (short sells) are sells.

Fill model (OUCH *Order Executed* ``'E'``; all fills are at our order's own price)
    (a) **Feed prints.** An ITCH execution against a resting order on the *same side* as ours
    at a price *at or through* ours fills our order up to the executed shares: for our buy at
    ``p``, a buy-side print at ``q <= p`` (someone sold at ``q``, so a bid at ``p`` would have
    been hit first, or alongside); for our sell at ``p``, a sell-side print at ``q >= p``. The
    side and price of ``'E'`` (Order Executed) come from the resting order the exchange tracks
    from the feed (``A``/``F``/``U``/``X``/``D``/``E``/``C``); ``'C'`` uses its execution price;
    ``'P'`` (non-cross trade) carries no usable side, so a print at ``q`` qualifies our buys at
    ``p >= q`` and our sells at ``p <= q``. The shares of one print are shared among our
    qualifying orders in price priority, then time priority (buys before sells for ``'P'``),
    each taking at most its open quantity. This is optimistic: at an equal price our order is
    assumed to be first in the queue. Liquidity flag ``'A'`` (added). An execution of a feed
    order the exchange never saw added counts ``unknown_feed_ref`` and fills nothing.
    (b) **Crossed by the touch.** When the opposite side of the book reaches our price (for a
    buy, ``0 < ask_px <= p``; for a sell, ``0 < p <= bid_px``; a side whose price, or size when
    the ``bbo`` has one, is 0 is empty), our whole open quantity fills at our price, as
    liquidity taken from the book (flag ``'R'``). It is checked after rule (a) on every
    :meth:`~SimulatedExchange.on_market` call that brings a ``bbo`` that is not ``stale``, and
    at once when an Enter or Replace arrives, against the last such ``bbo`` of its symbol; a
    ``stale`` one makes the exchange forget the symbol's touch until a fresh one arrives.

Symbols
    Orders name a symbol; ITCH messages a Stock Locate. The map comes from ``symbols`` and is
    extended by ITCH Stock Directory (``'R'``) and Add Order messages. A print (``E``, ``C``,
    ``P``) or a ``bbo`` whose locate is not mapped fills nothing and counts ``unknown_locate``.

Bookkeeping
    Match numbers start at 1 and increase by one per execution. Timestamps are the supplied
    clock's nanoseconds since midnight (default: UTC, from :func:`time.time_ns`), one reading
    per call. A buy fill adds ``qty`` to the symbol's position and subtracts ``qty * price``
    from its cash; a sell does the opposite (``quoting.md``), with Python integers (no
    saturation).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from .protocol import ouch
from .protocol.errors import DecodeError

__all__ = ["LiveOrder", "SimulatedExchange", "ns_since_midnight"]

_BUY_SIDES = ("B",)
_SELL_SIDES = ("S", "T", "E")
_DAY_NS = 86_400 * 10**9


def ns_since_midnight() -> int:
    """Nanoseconds since the last UTC midnight."""
    return time.time_ns() % _DAY_NS


@dataclass
class LiveOrder:
    """One of our orders resting at the exchange."""

    user_ref_num: int
    symbol: str
    side: str
    price: int
    open_qty: int
    order_reference_number: int
    priority: int

    @property
    def is_buy(self) -> bool:
        """True for a buy, False for a sell (short sells included)."""
        return self.side in _BUY_SIDES


@dataclass
class _FeedOrder:
    locate: int
    side: str
    price: int
    shares: int


def _touch_price(bbo, side: str) -> int:
    """The price of one side of ``bbo``; 0 when that side is empty (price 0, or size 0 if given)."""
    if getattr(bbo, f"{side}_sz", None) == 0:
        return 0
    return getattr(bbo, f"{side}_px")


class SimulatedExchange:
    """Answers OUCH 5.0 orders and fills them from the ITCH feed (rules in the module docstring).

    Parameters
    ----------
    clock:
        Returns the time in nanoseconds since midnight for the messages' timestamps.
    symbols:
        Stock Locate to symbol, for feed messages that do not carry the symbol.
    """

    def __init__(
        self,
        clock: Callable[[], int] = ns_since_midnight,
        symbols: Mapping[int, str] | None = None,
    ):
        self._clock = clock
        self._directory: dict[int, str] = dict(symbols or {})
        self._live: dict[int, LiveOrder] = {}
        self._feed: dict[int, _FeedOrder] = {}
        self._touch: dict[str, object] = {}
        self._positions: Counter = Counter()
        self._cash: Counter = Counter()
        self._last_user_ref_num = 0
        self._next_order_reference = 1
        self._next_match = 1
        self._next_priority = 0
        self._inbound = bytearray()
        self.counters: Counter = Counter()

    # -- views ---------------------------------------------------------------------------------

    def live_orders(self) -> dict[int, LiveOrder]:
        """Our live orders by UserRefNum (copies)."""
        return {ref: replace(order) for ref, order in self._live.items()}

    def positions(self) -> dict[str, int]:
        """Shares held per symbol (+ long, - short), for every symbol that has traded."""
        return dict(self._positions)

    def cash(self) -> dict[str, int]:
        """Cash flow per symbol in price units x shares (buys negative, sells positive)."""
        return dict(self._cash)

    # -- orders in -----------------------------------------------------------------------------

    def on_order(self, record) -> list:
        """Handle one OUCH to-exchange record; return the from-exchange records it causes."""
        now = self._clock()
        handler = {"O": self._enter, "U": self._replace, "X": self._cancel}.get(record.type)
        if handler is None:
            self.counters["bad_message"] += 1
            return []
        return handler(record, now)

    def on_bytes(self, data: bytes) -> bytes:
        """Feed SoupBinTCP bytes from the client; return the SoupBinTCP bytes answered.

        Bytes may arrive in any split: an incomplete packet waits for the rest. Unsequenced data
        packets (``'U'``) carry the orders; other packet types count ``ignored_packets`` and
        messages that do not decode count ``bad_message``.
        """
        self._inbound += data
        replies = []
        while len(self._inbound) >= 2:
            length = int.from_bytes(self._inbound[:2], "big")
            if length == 0:
                self.counters["bad_message"] += 1
                del self._inbound[:2]
                continue
            if len(self._inbound) < 2 + length:
                break
            packet_type, payload = chr(self._inbound[2]), bytes(self._inbound[3 : 2 + length])
            del self._inbound[: 2 + length]
            if packet_type != "U":
                self.counters["ignored_packets"] += 1
                continue
            try:
                record, _appendage = ouch.decode(payload, "to_exchange")
            except DecodeError:
                self.counters["bad_message"] += 1
                continue
            replies += self.on_order(record)
        return self.frame(replies)

    @staticmethod
    def frame(records: Iterable) -> bytes:
        """Encode from-exchange records as SoupBinTCP sequenced data (``'S'``) packets."""
        return b"".join(
            ouch.encode_soup("S", ouch.encode(r, direction="from_exchange")) for r in records
        )

    def _take_user_ref_num(self, user_ref_num: int) -> bool:
        if user_ref_num <= self._last_user_ref_num:
            self.counters["bad_user_ref_num"] += 1
            return False
        self._last_user_ref_num = user_ref_num
        return True

    def _check_terms(self, quantity: int, price: int) -> bool:
        if quantity == 0:
            self.counters["bad_quantity"] += 1
            return False
        if price <= 0:
            self.counters["bad_price"] += 1
            return False
        return True

    def _new_order(self, user_ref_num, symbol, side, price, quantity) -> LiveOrder:
        order = LiveOrder(
            user_ref_num,
            symbol,
            side,
            price,
            quantity,
            self._next_order_reference,
            self._next_priority,
        )
        self._next_order_reference += 1
        self._next_priority += 1
        self._live[user_ref_num] = order
        return order

    def _enter(self, record, now: int) -> list:
        if not self._take_user_ref_num(record.user_ref_num):
            return []
        if record.side not in _BUY_SIDES + _SELL_SIDES:
            self.counters["bad_side"] += 1
            return []
        if not self._check_terms(record.quantity, record.price):
            return []
        order = self._new_order(
            record.user_ref_num, record.symbol, record.side, record.price, record.quantity
        )
        self.counters["accepted"] += 1
        accepted = ouch.make(
            "from_exchange",
            "A",
            **_live_fields(order, record, now),
            capacity=record.capacity,
            cross_type=record.cross_type,
        )
        return [accepted, *self._cross([order], self._touch.get(order.symbol), now)]

    def _replace(self, record, now: int) -> list:
        old = self._live.get(record.orig_user_ref_num)
        if old is None:
            self.counters["unknown_user_ref_num"] += 1
            return []
        if not self._take_user_ref_num(record.user_ref_num):
            return []
        if not self._check_terms(record.quantity, record.price):
            return []
        del self._live[old.user_ref_num]
        order = self._new_order(
            record.user_ref_num, old.symbol, old.side, record.price, record.quantity
        )
        self.counters["replaced"] += 1
        replaced = ouch.make(
            "from_exchange",
            "U",
            **_live_fields(order, record, now),
            orig_user_ref_num=old.user_ref_num,
        )
        return [replaced, *self._cross([order], self._touch.get(order.symbol), now)]

    def _cancel(self, record, now: int) -> list:
        order = self._live.get(record.user_ref_num)
        if order is None:
            self.counters["unknown_user_ref_num"] += 1
            return []
        if record.quantity >= order.open_qty and record.quantity != 0:
            self.counters["cancel_noop"] += 1
            return []
        cancelled = order.open_qty - record.quantity
        order.open_qty = record.quantity
        if order.open_qty == 0:
            del self._live[order.user_ref_num]
        self.counters["canceled"] += 1
        return [
            ouch.make(
                "from_exchange",
                "C",
                timestamp=now,
                user_ref_num=order.user_ref_num,
                quantity=cancelled,
                reason="U",
            )
        ]

    # -- market in -----------------------------------------------------------------------------

    def on_market(self, record, bbo=None) -> list:
        """Apply one ITCH record and the symbol's top of book after it; return the executions.

        ``bbo`` is duck-typed (``bid_px``, ``ask_px``, ``stale``) and describes the book of the
        record's Stock Locate after the record; ``None`` leaves the last one in force.
        """
        now = self._clock()
        kind, locate = record.type, record.locate
        if kind in ("R", "A", "F"):
            self._directory.setdefault(locate, record.stock)
        symbol = self._directory.get(locate)
        fills = self._apply_feed(record, symbol, now)
        if bbo is not None:
            if symbol is None:
                self.counters["unknown_locate"] += 1
            elif getattr(bbo, "stale", False):
                self._touch.pop(symbol, None)
            else:
                self._touch[symbol] = bbo
                ours = [o for o in self._live.values() if o.symbol == symbol]
                fills += self._cross(ours, bbo, now)
        return fills

    def _apply_feed(self, record, symbol: str | None, now: int) -> list:
        kind = record.type
        if kind in ("A", "F"):
            self._feed[record.order_ref] = _FeedOrder(
                record.locate, record.side, record.price, record.shares
            )
        elif kind == "U":
            old = self._feed.pop(record.original_ref, None)
            if old is None:
                self.counters["unknown_feed_ref"] += 1
            else:
                self._feed[record.new_ref] = _FeedOrder(
                    old.locate, old.side, record.price, record.shares
                )
        elif kind == "D":
            if self._feed.pop(record.order_ref, None) is None:
                self.counters["unknown_feed_ref"] += 1
        elif kind in ("X", "E", "C"):
            resting = self._feed.get(record.order_ref)
            if resting is None:
                self.counters["unknown_feed_ref"] += 1
                return []
            shares = record.cancelled_shares if kind == "X" else record.executed_shares
            resting.shares -= min(shares, resting.shares)
            if resting.shares == 0:
                del self._feed[record.order_ref]
            if kind != "X":
                price = resting.price if kind == "E" else record.execution_price
                return self._print(symbol, (resting.side,), price, shares, now)
        elif kind == "P":
            return self._print(symbol, ("B", "S"), record.price, record.shares, now)
        return []

    def _print(self, symbol: str | None, sides, price: int, shares: int, now: int) -> list:
        """Rule (a): share ``shares`` printed at ``price`` among our qualifying orders."""
        if symbol is None:
            self.counters["unknown_locate"] += 1
            return []
        fills = []
        for side in sides:
            buy = side in _BUY_SIDES
            ours = [
                o
                for o in self._live.values()
                if o.symbol == symbol
                and o.is_buy == buy
                and (price <= o.price if buy else price >= o.price)
            ]
            ours.sort(key=lambda o: (-o.price if buy else o.price, o.priority))
            for order in ours:
                if shares == 0:
                    break
                quantity = min(shares, order.open_qty)
                shares -= quantity
                fills.append(self._execute(order, quantity, "A", now))
        return fills

    def _cross(self, orders: list[LiveOrder], bbo, now: int) -> list:
        """Rule (b): fill every order the opposite touch has reached, in full."""
        if bbo is None:
            return []
        fills = []
        for order in sorted(orders, key=lambda o: o.priority):
            if order.is_buy:
                crossed = 0 < _touch_price(bbo, "ask") <= order.price
            else:
                crossed = 0 < order.price <= _touch_price(bbo, "bid")
            if crossed:
                fills.append(self._execute(order, order.open_qty, "R", now))
        return fills

    def _execute(self, order: LiveOrder, quantity: int, liquidity: str, now: int):
        order.open_qty -= quantity
        if order.open_qty == 0:
            del self._live[order.user_ref_num]
        signed = quantity if order.is_buy else -quantity
        self._positions[order.symbol] += signed
        self._cash[order.symbol] -= signed * order.price
        self.counters["executed"] += 1
        self.counters["executed_shares"] += quantity
        match, self._next_match = self._next_match, self._next_match + 1
        return ouch.make(
            "from_exchange",
            "E",
            timestamp=now,
            user_ref_num=order.user_ref_num,
            quantity=quantity,
            price=order.price,
            liquidity_flag=liquidity,
            match_number=match,
            appendage_length=0,
        )


def _live_fields(order, record, now: int) -> dict:
    """The fields an Order Accepted and an Order Replaced share: the live order as it now rests,
    with the terms the client sent."""
    return dict(
        timestamp=now,
        user_ref_num=order.user_ref_num,
        side=order.side,
        quantity=order.open_qty,
        symbol=order.symbol,
        price=order.price,
        time_in_force=record.time_in_force,
        display=record.display,
        order_reference_number=order.order_reference_number,
        intermarket_sweep=record.intermarket_sweep,
        order_state="L",
        cl_ord_id=record.cl_ord_id,
        appendage_length=0,
    )
