"""A realistic synthetic NASDAQ TotalView-ITCH 5.0 session, deterministic for a given seed.

A session has three parts:

1. the preamble: System Event ``O`` (start of messages) and ``S`` (start of system hours), one
   Stock Directory ``R`` per symbol (locates ``1..N`` in ticker order), one Stock Trading Action
   ``H`` with state ``T`` per symbol, then System Event ``Q`` (start of market hours, 09:30);
2. ``FeedConfig.messages`` order-flow messages: adds ``A``/``F``, deletes ``D``, replaces ``U``,
   executions ``E``/``C``, partial cancels ``X``, hidden-order trades ``P`` and occasional
   trading halts (``H`` state ``H`` or ``P``, resumed later by ``H`` state ``T``);
3. the close: System Event ``M`` (end of market hours), ``E`` (end of system hours) and ``C``
   (end of messages).

The order flow is drawn around a per-symbol random-walk price; symbols are picked with skewed
(Zipf-like) activity, and arrivals are bursty (clusters of messages nanoseconds apart between
exponential gaps). The generator keeps its own book and guarantees:

- the book is never crossed or locked: a bid is always below the best ask and an ask above the
  best bid, including the new price of a replace;
- every reference names a live order, and no execution or cancel exceeds the shares left;
- an ``E`` always executes the oldest order at the best price of its side (the head of the
  queue); a ``C`` may execute any order, at the order's price;
- order references are unique and increasing; a replace always takes a new reference;
- timestamps increase strictly; order prices are positive multiples of the symbol's tick
  (a ``P`` print may sit at the midpoint between them).

Prices are ITCH ``Price(4)`` integers (1/10 000 dollar): a tick of 100 is one cent, the tick of
sub-dollar symbols is 1.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass

from ..host.protocol import itch
from .feedwriter import to_frames, to_packets, to_ticks, write_itch, write_pcap, write_ticks

__all__ = [
    "FeedConfig",
    "FeedGenerator",
    "generate",
    "to_packets",
    "to_frames",
    "to_ticks",
    "write_itch",
    "write_pcap",
    "write_ticks",
]

_NS = 1_000_000_000
_MPIDS = ("NSDQ", "GSCO", "MSCO", "UBSS", "CDRG", "VIRT", "JPMS", "CITD", "SUSQ", "HRTF")
#: Relative frequency of ticker lengths (NASDAQ symbols are mostly 3-4 letters, 8 at most).
_TICKER_LENGTHS = {1: 1, 2: 4, 3: 30, 4: 52, 5: 10, 6: 2, 7: 0.5, 8: 0.5}


@dataclass
class FeedConfig:
    """What the generated session looks like.

    The ``*_ratio`` fields are the relative weights of the order-flow actions; they are
    normalised to sum to one. An action that needs a resting order on a symbol with none becomes
    an add, so the realised mix is close to, not exactly, the configured one.
    """

    seed: int = 1
    #: Number of symbols (locates ``1..symbols``).
    symbols: int = 200
    #: Order-flow messages between market open (``S Q``) and market close (``S M``).
    messages: int = 100_000
    add_ratio: float = 0.45
    delete_ratio: float = 0.40
    replace_ratio: float = 0.08
    #: Executions ``E`` and ``C`` together.
    execute_ratio: float = 0.04
    #: Partial cancels ``X``.
    cancel_ratio: float = 0.02
    #: Trades against hidden orders ``P``.
    trade_ratio: float = 0.0098
    #: Trading halts and pauses (each is resumed by a later ``H`` state ``T``).
    halt_ratio: float = 0.0002
    #: Share of adds that carry an MPID (``F`` rather than ``A``).
    mpid_ratio: float = 0.1
    #: Share of executions that are ``C`` (any order) rather than ``E`` (head of the queue).
    execute_with_price_ratio: float = 0.1
    #: Symbol activity follows weight ``1 / rank ** zipf_exponent``.
    zipf_exponent: float = 1.0
    #: Mean of the exponential gap between bursts, in nanoseconds.
    mean_gap_ns: int = 20_000
    #: Chance that a gap starts a burst instead.
    burst_probability: float = 0.05
    #: Mean number of messages in a burst.
    mean_burst_length: int = 20
    #: Gaps inside a burst are uniform in ``1..burst_gap_ns``.
    burst_gap_ns: int = 250
    #: Start prices are log-uniform in this range (Price(4) units).
    start_price_min: int = 20_000
    start_price_max: int = 5_000_000
    #: Share of symbols trading below one dollar (tick 1 instead of ``tick``).
    sub_dollar_ratio: float = 0.03
    #: The tick of symbols priced at a dollar or more (100 = one cent).
    tick: int = 100
    #: Chance per event of a symbol that its reference price moves by one tick.
    walk_probability: float = 0.1
    #: Mean distance of a new order from the reference price, in ticks.
    depth_ticks: float = 3.0
    #: An add on a symbol holding this many orders becomes a delete.
    max_orders_per_symbol: int = 2000
    #: Messages a halt lasts, at least and at most.
    halt_length: tuple[int, int] = (200, 2000)
    #: Start of market hours, nanoseconds since midnight (09:30).
    open_ns: int = 34_200 * _NS
    #: End of market hours (16:00).
    close_ns: int = 57_600 * _NS

    def __post_init__(self):
        if not 1 <= self.symbols <= 65_535:
            raise ValueError(f"symbols must be in 1..65535, not {self.symbols!r}")
        if self.messages < 0:
            raise ValueError(f"messages must be >= 0, not {self.messages!r}")
        weights = self.weights()
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"action ratios must be >= 0 with a positive sum, not {weights!r}")
        for name in ("mpid_ratio", "execute_with_price_ratio", "burst_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)!r}")
        if self.tick < 1 or not 0 < self.start_price_min <= self.start_price_max:
            raise ValueError("tick must be >= 1 and 0 < start_price_min <= start_price_max")
        if self.start_price_max >= 1 << 31:
            raise ValueError(f"start_price_max must be below 2**31, not {self.start_price_max}")
        if self.max_orders_per_symbol < 1:
            raise ValueError("max_orders_per_symbol must be >= 1")
        low, high = self.halt_length
        if not 1 <= low <= high:
            raise ValueError(f"halt_length must have 1 <= low <= high, not {(low, high)!r}")
        if self.mean_gap_ns < 1 or self.burst_gap_ns < 1 or self.mean_burst_length < 1:
            raise ValueError("mean_gap_ns, burst_gap_ns and mean_burst_length must be >= 1")

    def weights(self) -> dict[str, float]:
        """The action weights by name, as configured (not normalised)."""
        return {
            "add": self.add_ratio,
            "delete": self.delete_ratio,
            "replace": self.replace_ratio,
            "execute": self.execute_ratio,
            "cancel": self.cancel_ratio,
            "trade": self.trade_ratio,
            "halt": self.halt_ratio,
        }


class _Order:
    __slots__ = ("ref", "symbol", "is_bid", "price", "shares", "index")

    def __init__(self, ref, symbol, is_bid, price, shares):
        self.ref, self.symbol, self.is_bid = ref, symbol, is_bid
        self.price, self.shares, self.index = price, shares, 0


class _Symbol:
    """One symbol's book: price levels (FIFO queues of orders) and its reference price."""

    __slots__ = ("locate", "stock", "tick", "center", "min_center", "orders", "levels", "prices")

    def __init__(self, locate: int, stock: str, tick: int, center: int):
        self.locate, self.stock, self.tick = locate, stock, tick
        self.center = center  # reference price, in ticks
        self.min_center = max(20, center // 4)
        self.orders: list[_Order] = []  # live orders, for picking one at random
        # Per side (0 bid, 1 ask): price -> {ref: order} in time priority, and sorted prices.
        self.levels: tuple[dict, dict] = ({}, {})
        self.prices: tuple[list, list] = ([], [])

    def best_bid(self) -> int:
        return self.prices[0][-1] if self.prices[0] else 0

    def best_ask(self) -> int:
        return self.prices[1][0] if self.prices[1] else 0

    def insert(self, order: _Order) -> None:
        side = 0 if order.is_bid else 1
        level = self.levels[side].get(order.price)
        if level is None:
            level = self.levels[side][order.price] = {}
            insort(self.prices[side], order.price)
        level[order.ref] = order
        order.index = len(self.orders)
        self.orders.append(order)

    def remove(self, order: _Order) -> None:
        side = 0 if order.is_bid else 1
        level = self.levels[side][order.price]
        del level[order.ref]
        if not level:
            del self.levels[side][order.price]
            prices = self.prices[side]
            del prices[bisect_left(prices, order.price)]
        last = self.orders.pop()
        if last is not order:
            self.orders[order.index] = last
            last.index = order.index


def _tickers(rng: random.Random, count: int) -> list[str]:
    lengths, weights = zip(*_TICKER_LENGTHS.items())
    seen: set[str] = set()
    while len(seen) < count:
        (length,) = rng.choices(lengths, weights)
        seen.add("".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=length)))
    return sorted(seen)


class FeedGenerator:
    """Generates the session described by a :class:`FeedConfig`.

    Each call of :meth:`messages` replays the same session from the start.
    """

    def __init__(self, config: FeedConfig):
        self.config = config

    def messages(self) -> Iterator:
        """Yield the session's ITCH records (``tick2quote.host.protocol.itch``), in order."""
        return _Session(self.config).run()


def generate(config: FeedConfig) -> list:
    """The whole session as a list of ITCH records."""
    return list(FeedGenerator(config).messages())


_REC = {code: fmt.record for code, fmt in itch.FORMATS.items()}


class _Session:
    """The mutable state of one generation run."""

    def __init__(self, config: FeedConfig):
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.now = 0
        self.burst_left = 0
        self.next_ref = 1000 + self.rng.randrange(1_000_000)
        self.next_match = 1 + self.rng.randrange(1_000_000)
        self.orders: dict[int, _Order] = {}
        self.symbols = self._symbols()
        self.halted: dict[int, int] = {}  # locate -> message count at which it resumes

    def _symbols(self) -> list[_Symbol]:
        cfg, rng = self.cfg, self.rng
        out = []
        for locate, stock in enumerate(_tickers(rng, cfg.symbols), start=1):
            if rng.random() < cfg.sub_dollar_ratio:
                tick, price = 1, rng.randrange(1_000, 10_000)
            else:
                low, high = max(cfg.start_price_min, 10_000), max(cfg.start_price_max, 10_000)
                tick, price = cfg.tick, int(low * (high / low) ** rng.random())
            out.append(_Symbol(locate, stock, tick, max(20, price // tick)))
        return out

    # -- time -------------------------------------------------------------------------------

    def _tick_clock(self) -> int:
        cfg, rng = self.cfg, self.rng
        if self.burst_left > 0:
            self.burst_left -= 1
            gap = rng.randint(1, cfg.burst_gap_ns)
        elif rng.random() < cfg.burst_probability:
            self.burst_left = int(rng.expovariate(1 / cfg.mean_burst_length))
            gap = rng.randint(1, cfg.burst_gap_ns)
        else:
            gap = 1 + int(rng.expovariate(1 / cfg.mean_gap_ns))
        self.now += gap
        return self.now

    def _at(self, when: int) -> int:
        """A timestamp at ``when`` or, if the clock is already past it, just after."""
        self.now = max(self.now + 1, when)
        return self.now

    # -- session structure ------------------------------------------------------------------

    def run(self) -> Iterator:
        yield from self._preamble()
        yield from self._order_flow()
        for event, when in (("M", self.cfg.close_ns), ("E", 72_000 * _NS), ("C", 72_300 * _NS)):
            yield _REC["S"]("S", 0, 0, self._at(when), event)

    def _preamble(self) -> Iterator:
        rng, rec_r, rec_h = self.rng, _REC["R"], _REC["H"]
        yield _REC["S"]("S", 0, 0, self._at(3 * 3600 * _NS + rng.randrange(_NS)), "O")
        yield _REC["S"]("S", 0, 0, self._at(4 * 3600 * _NS), "S")
        for sym in self.symbols:
            category = rng.choice("QQQGGS")
            yield rec_r(
                type="R",
                locate=sym.locate,
                tracking=0,
                timestamp=self._at(self.now + rng.randint(500, 5_000)),
                stock=sym.stock,
                market_category=category,
                financial_status="N",
                round_lot_size=100,
                round_lots_only="N",
                issue_classification=rng.choice("CCCCCCEA"),
                issue_sub_type=rng.choice(("Z", "", "A")),
                authenticity="P",
                short_sale_threshold="N",
                ipo_flag="N",
                luld_tier="1" if category == "Q" else "2",
                etp_flag="N",
                etp_leverage=0,
                inverse="N",
            )
        for sym in self.symbols:
            ts = self._at(self.now + rng.randint(500, 5_000))
            yield rec_h("H", sym.locate, 0, ts, sym.stock, "T", " ", "")
        yield _REC["S"]("S", 0, 0, self._at(self.cfg.open_ns), "Q")

    def _order_flow(self) -> Iterator:
        cfg, rng = self.cfg, self.rng
        weights = cfg.weights()
        total = sum(weights.values())
        names, cum, acc = list(weights), [], 0.0
        for name in names:
            acc += weights[name] / total
            cum.append(acc)
        cum[-1] = 1.0
        actions = [getattr(self, "_" + name) for name in names]
        ranked = self.symbols[:]
        rng.shuffle(ranked)
        activity, acc = [], 0.0
        for rank in range(1, len(ranked) + 1):
            acc += 1 / rank**cfg.zipf_exponent
            activity.append(acc)
        random_ = rng.random
        for count in range(cfg.messages):
            sym = ranked[min(bisect_right(activity, random_() * acc), len(ranked) - 1)]
            if sym.locate in self.halted:
                resume = self.halted[sym.locate]
                if count < resume:
                    sym = self._running_symbol(ranked, activity, acc)
                if sym.locate in self.halted:  # its halt is over, or every draw was halted
                    del self.halted[sym.locate]
                    yield _REC["H"]("H", sym.locate, 0, self._tick_clock(), sym.stock, "T", " ", "")
                    continue
            if random_() < cfg.walk_probability:
                sym.center = max(sym.min_center, sym.center + (1 if random_() < 0.5 else -1))
            yield actions[bisect_right(cum, random_())](sym, count)

    def _running_symbol(self, ranked, activity, total) -> _Symbol:
        for _ in range(8):
            sym = ranked[min(bisect_right(activity, self.rng.random() * total), len(ranked) - 1)]
            if sym.locate not in self.halted:
                break
        return sym

    # -- actions (each returns exactly one record) ------------------------------------------

    def _shares(self) -> int:
        r = self.rng.random()
        if r < 0.2:
            return self.rng.randint(1, 99)  # odd lot
        if r < 0.95:
            return 100 * (1 + int(self.rng.expovariate(0.4)))
        return 100 * self.rng.randint(10, 100)

    def _add(self, sym: _Symbol, count: int):
        if len(sym.orders) >= self.cfg.max_orders_per_symbol:
            return self._delete(sym, count)
        rng = self.rng
        is_bid = rng.random() < 0.5
        depth = int(rng.expovariate(1 / self.cfg.depth_ticks)) if self.cfg.depth_ticks else 0
        best_bid, best_ask = sym.best_bid(), sym.best_ask()
        if is_bid:
            price = max(1, sym.center - depth) * sym.tick
            if best_ask and price >= best_ask:  # asks never go below min_center: stays > 0
                price = best_ask - sym.tick
        else:
            price = (sym.center + 1 + depth) * sym.tick
            if best_bid and price <= best_bid:
                price = best_bid + sym.tick
        ref = self.next_ref
        self.next_ref += 1
        order = _Order(ref, sym, is_bid, price, self._shares())
        self.orders[ref] = order
        sym.insert(order)
        side = "B" if is_bid else "S"
        ts = self._tick_clock()
        if rng.random() < self.cfg.mpid_ratio:
            mpid = rng.choice(_MPIDS)
            return _REC["F"](
                "F", sym.locate, 0, ts, ref, side, order.shares, sym.stock, price, mpid
            )
        return _REC["A"]("A", sym.locate, 0, ts, ref, side, order.shares, sym.stock, price)

    def _pick(self, sym: _Symbol) -> _Order:
        return sym.orders[int(self.rng.random() * len(sym.orders))]

    def _forget(self, order: _Order) -> None:
        order.symbol.remove(order)
        del self.orders[order.ref]

    def _delete(self, sym: _Symbol, count: int):
        if not sym.orders:
            return self._add(sym, count)
        order = self._pick(sym)
        self._forget(order)
        return _REC["D"]("D", sym.locate, 0, self._tick_clock(), order.ref)

    def _cancel(self, sym: _Symbol, count: int):
        if not sym.orders:
            return self._add(sym, count)
        order = self._pick(sym)
        if order.shares < 2:
            return self._delete(sym, count)
        cancelled = self.rng.randint(1, order.shares - 1)
        if order.shares >= 200 and self.rng.random() < 0.7:
            cancelled = 100 * self.rng.randint(1, (order.shares - 1) // 100)
        order.shares -= cancelled
        return _REC["X"]("X", sym.locate, 0, self._tick_clock(), order.ref, cancelled)

    def _replace(self, sym: _Symbol, count: int):
        if not sym.orders:
            return self._add(sym, count)
        rng, tick = self.rng, sym.tick
        order = self._pick(sym)
        self._forget(order)
        price = order.price + tick * rng.randint(-2, 2)
        if order.is_bid:
            best_ask = sym.best_ask()
            if price < tick or (best_ask and price >= best_ask):
                price = order.price  # the old price was below the (unchanged) best ask
        else:
            best_bid = sym.best_bid()
            if price <= sym.min_center * tick or price <= best_bid:
                price = order.price
        shares = order.shares if rng.random() < 0.5 else self._shares()
        new = _Order(self.next_ref, sym, order.is_bid, price, shares)
        self.next_ref += 1
        self.orders[new.ref] = new
        sym.insert(new)
        ts = self._tick_clock()
        return _REC["U"]("U", sym.locate, 0, ts, order.ref, new.ref, shares, price)

    def _execute(self, sym: _Symbol, count: int):
        if not sym.orders:
            return self._add(sym, count)
        rng = self.rng
        with_price = rng.random() < self.cfg.execute_with_price_ratio
        if with_price:
            order = self._pick(sym)
        else:
            bids, asks = sym.prices
            if not bids or not asks:
                hit_bid = bool(bids)
            elif sym.center * sym.tick >= asks[0]:
                hit_bid = False  # the price has moved up through the offer: buyers lift it
            elif sym.center * sym.tick < bids[-1]:
                hit_bid = True
            else:
                hit_bid = rng.random() < 0.5
            level = sym.levels[0][bids[-1]] if hit_bid else sym.levels[1][asks[0]]
            order = next(iter(level.values()))
        shares = order.shares
        executed = shares if shares == 1 or rng.random() < 0.6 else rng.randint(1, shares - 1)
        order.shares -= executed
        if not order.shares:
            self._forget(order)
        match = self.next_match
        self.next_match += 1
        ts = self._tick_clock()
        if with_price:
            printable = "Y" if rng.random() < 0.8 else "N"
            return _REC["C"](
                "C", sym.locate, 0, ts, order.ref, executed, match, printable, order.price
            )
        return _REC["E"]("E", sym.locate, 0, ts, order.ref, executed, match)

    def _trade(self, sym: _Symbol, count: int):
        best_bid, best_ask = sym.best_bid(), sym.best_ask()
        if best_bid and best_ask:
            price = (best_bid + best_ask) // 2
        else:
            price = sym.center * sym.tick
        match = self.next_match
        self.next_match += 1
        side = "B" if self.rng.random() < 0.5 else "S"
        ts = self._tick_clock()
        return _REC["P"]("P", sym.locate, 0, ts, 0, side, self._shares(), sym.stock, price, match)

    def _halt(self, sym: _Symbol, count: int):
        low, high = self.cfg.halt_length
        self.halted[sym.locate] = count + self.rng.randint(low, high)
        state, reason = ("P", "LUDP") if self.rng.random() < 0.5 else ("H", "T1")
        return _REC["H"]("H", sym.locate, 0, self._tick_clock(), sym.stock, state, " ", reason)
