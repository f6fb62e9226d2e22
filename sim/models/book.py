"""Reference model of the order book: order table, price levels, best bid/offer per symbol.

The model applies decoded ITCH 5.0 records (or raw message bytes) one at a time and reports the
top of book of the message's symbol whenever that message changed it. It is the exact
behaviour the gateware book is checked against, so every rule is spelled out here.

Filtering, in this order, before anything else happens:

1. a Stock Locate ``>= max_symbols`` is counted ``bad_locate`` and the message is ignored;
2. ``R`` (Stock Directory) and ``H`` (Stock Trading Action) are recorded for any valid locate;
   every other non-book type is counted ``ignored``;
3. a book message (A F E C X D U) for a locate outside the subscription is counted
   ``untracked`` and ignored: it never reaches the order table and never makes anything stale.

Book messages, for a tracked locate (the locate is always the one in the message header):

- **A / F** add a resting order. Refused (counted, the symbol marked stale) when the reference
  is already live (``duplicate_ref``; the live order is kept), the side is not ``B``/``S``
  (``bad_side``), shares or price is 0 (``bad_add``), the table already holds ``max_orders``
  live orders (``table_full``), or the price would open a level beyond ``max_levels`` live
  levels on that symbol's side (``levels_full``).
- **E / C / X** reduce the order by the executed or cancelled shares; C's execution price does
  not move the book. An order reaching 0 shares is removed. A reduction larger than the order
  removes it, counts ``overfill`` and marks the symbol stale.
- **D** removes the order.
- **U** removes the original order, then adds the new reference with the original's side and
  locate and the message's shares and price (absolute values). The add follows the A rules
  (so a refused add leaves the original removed and the symbol stale); since the original is
  removed first, ``new ref == original ref`` is a plain replace.
- E C X D U on a reference not in the table count ``unknown_ref``; on a live reference whose
  stored locate differs from the header's they count ``locate_mismatch``. Either way the
  message changes no order and marks the **header's** symbol stale (the lookup is keyed by
  reference and locate together, so a mismatch is a miss for that symbol).

Successful book messages count ``applied``. Stale is sticky: it is set as above or by
:meth:`BookModel.mark_stale` (for example on a sequence gap) and only :meth:`BookModel.recover`
clears it. A stale symbol keeps its book up to date; its :class:`Bbo` carries ``stale=True``.

Capacity is that of an ideal fully associative table: ``table_full`` happens exactly when
``max_orders`` orders are live. Level sizes are exact Python integers (no saturation).

The gateware's geometry (see :mod:`.ordertable`), each part optional:

- ``sets`` and ``ways`` (given together): the order table is set-associative; an add is
  ``table_full`` exactly when the ``ways`` slots of the reference's set
  (:func:`~.ordertable.fold_hash`) are taken, whatever the total; ``max_orders`` is not used.
- ``depth``: each side of each symbol keeps a :class:`~.ordertable.PriceLadder` of at most
  ``depth`` levels instead of every level; ``max_levels`` and ``levels_full`` are not used.
  Evictions count ``levels_evicted``. A side whose best price becomes unknown (empty ladder,
  untracked orders live) counts ``best_unknown`` once, when it starts; the symbol's
  :class:`Bbo` is stale for as long as that lasts. That stale flag is *derived*, not sticky: it
  goes with the condition and :meth:`BookModel.recover` does not touch it. An add while the best
  is unknown is untracked, as it may not be the best. Whenever the flag is clear, the
  :class:`Bbo` equals that of the ideal book.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tick2quote.host.protocol import itch
from tick2quote.host.protocol.errors import DecodeError, UnknownTypeError

from .ordertable import PriceLadder, fold_hash

__all__ = ["Bbo", "TopOfBook", "BookModel"]

_BID, _ASK = 0, 1


@dataclass(frozen=True, slots=True)
class Bbo:
    """Best bid and offer of one symbol: raw ``Price(4)`` prices and aggregate shares.

    An empty side is ``0`` price and ``0`` size. ``stale`` means the model knows it may have
    missed something for this symbol: the figures are its best knowledge, not to be trusted.
    """

    bid_px: int
    bid_sz: int
    ask_px: int
    ask_sz: int
    stale: bool


@dataclass(frozen=True, slots=True)
class TopOfBook:
    """One change of a symbol's best price, best size or stale flag.

    ``sequence`` is whatever the caller passed to :meth:`BookModel.apply` (the MoldUDP64
    sequence number of the message, when known). ``index`` is the 0-based position of the
    message among all those handed to this model's :meth:`~BookModel.apply`, whatever their
    type or fate.
    """

    locate: int
    bbo: Bbo
    sequence: int | None
    index: int


class BookModel:
    """Order table and per-symbol price levels fed by ITCH 5.0 messages (see the module docs).

    Parameters
    ----------
    max_symbols:
        Locates ``0 .. max_symbols - 1`` are valid (at most 65536, the width of Stock Locate).
    max_orders:
        Live orders the table holds across all symbols.
    max_levels:
        Distinct live price levels per symbol and side.
    tracked:
        The subscription: ``None`` for every locate, a set of locates, or a predicate called
        once per locate at construction.
    sets, ways:
        Set-associative table geometry (``sets`` a power of two up to 65536), or ``None``.
    depth:
        Tracked price levels per symbol and side (a :class:`~.ordertable.PriceLadder`), or
        ``None`` for every level.
    """

    def __init__(
        self,
        max_symbols: int = 1024,
        max_orders: int = 65536,
        max_levels: int = 4096,
        tracked: Callable[[int], bool] | frozenset[int] | None = None,
        *,
        sets: int | None = None,
        ways: int | None = None,
        depth: int | None = None,
    ):
        if (sets is None) != (ways is None):
            raise ValueError(f"sets and ways go together, not sets={sets!r} and ways={ways!r}")
        if sets is not None:
            if not isinstance(sets, int) or sets < 1 or sets > 1 << 16 or sets & (sets - 1):
                raise ValueError(f"sets must be a power of two in 1 .. 65536, not {sets!r}")
            if not isinstance(ways, int) or ways < 1:
                raise ValueError(f"ways must be a positive integer, not {ways!r}")
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise ValueError(f"depth must be a positive integer or None, not {depth!r}")
        self.sets, self.ways, self.depth_limit = sets, ways, depth
        self._set_load = [0] * sets if sets else None
        self._ladders = (
            [PriceLadder(depth, bid=(i % 2 == 0)) for i in range(2 * max_symbols)]
            if depth
            else None
        )
        for name, value, top in (
            ("max_symbols", max_symbols, 1 << 16),
            ("max_orders", max_orders, None),
            ("max_levels", max_levels, None),
        ):
            if not isinstance(value, int) or value < 1 or (top is not None and value > top):
                limit = f"1 .. {top}" if top else "a positive integer"
                raise ValueError(f"{name} must be {limit}, not {value!r}")
        self.max_symbols = max_symbols
        self.max_orders = max_orders
        self.max_levels = max_levels
        if tracked is None:
            mask = bytes([1]) * max_symbols
        elif callable(tracked):
            mask = bytes(1 if tracked(loc) else 0 for loc in range(max_symbols))
        else:
            mask = bytes(1 if loc in tracked else 0 for loc in range(max_symbols))
        self._tracked = mask
        self.counters: Counter = Counter()
        # ref -> [locate, side (0 bid, 1 ask), price, shares]
        self._orders: dict[int, list[int]] = {}
        # per (locate, side) at index 2 * locate + side: price -> aggregate shares
        self._levels: list[dict[int, int] | None] = [None] * (2 * max_symbols)
        self._best: list[int] = [0] * (2 * max_symbols)  # 0 = empty side
        self._stale = bytearray(max_symbols)
        self._symbols: dict[int, str] = {}
        self._states: dict[int, str] = {}
        self._index = 0
        self._book_handlers = {
            "A": self._on_add,
            "F": self._on_add,
            "E": self._on_execute,
            "C": self._on_execute,
            "X": self._on_cancel,
            "D": self._on_delete,
            "U": self._on_replace,
        }

    # ------------------------------------------------------------------ feeding
    def apply(self, msg, sequence: int | None = None) -> TopOfBook | None:
        """Apply one ITCH record (any type; non-book types except R/H ignored); return the
        top-of-book record if this message changed the best bid/offer (or stale flag) of its
        symbol.

        ``msg`` is a record from :mod:`tick2quote.host.protocol.itch` or the raw message bytes
        (no length prefix); bytes of an unknown type count ``unknown_type``, bytes that do not
        decode count ``malformed``, and both are otherwise ignored.
        """
        index = self._index
        self._index = index + 1
        counters = self.counters
        if isinstance(msg, (bytes, bytearray, memoryview)):
            try:
                msg = itch.decode_message(msg)
            except UnknownTypeError:
                counters["unknown_type"] += 1
                return None
            except DecodeError:
                counters["malformed"] += 1
                return None
        kind = msg.type
        handler = self._book_handlers.get(kind)
        if handler is None:
            if kind == "R" or kind == "H":
                self._on_reference_data(msg)
            else:
                counters["ignored"] += 1
            return None
        locate = msg.locate
        if locate >= self.max_symbols:
            counters["bad_locate"] += 1
            return None
        if not self._tracked[locate]:
            counters["untracked"] += 1
            return None
        before = self._top(locate)
        ladders = self._ladders
        if ladders is not None:
            unknown = (ladders[2 * locate].unknown, ladders[2 * locate + 1].unknown)
        if handler(msg, locate):
            counters["applied"] += 1
        if ladders is not None:
            for side in (0, 1):
                if ladders[2 * locate + side].unknown and not unknown[side]:
                    counters["best_unknown"] += 1
        after = self._top(locate)
        if after == before:
            return None
        return TopOfBook(locate, Bbo(*after), sequence, index)

    def _on_reference_data(self, msg) -> None:
        if msg.locate >= self.max_symbols:
            self.counters["bad_locate"] += 1
        elif msg.type == "R":
            self._symbols[msg.locate] = msg.stock
        else:
            self._states[msg.locate] = msg.trading_state

    # ------------------------------------------------------------------ queries
    def bbo(self, locate: int) -> Bbo:
        """The best bid/offer of ``locate`` as the model knows it now."""
        self._check_locate(locate)
        return Bbo(*self._top(locate))

    def depth(self, locate: int, side: str) -> list[tuple[int, int]]:
        """Every live level of one side (``"B"`` or ``"S"``) as ``(price, shares)``, best first."""
        self._check_locate(locate)
        if side not in ("B", "S"):
            raise ValueError(f"side must be 'B' or 'S', not {side!r}")
        if self._ladders is not None:
            ladder = self._ladders[2 * locate + (side == "S")]
            return [(price, shares) for price, shares, _ in ladder.levels]
        levels = self._levels[2 * locate + (side == "S")] or {}
        return sorted(levels.items(), reverse=side == "B")

    def untracked_orders(self, locate: int, side: str) -> int:
        """With ``depth``: the live orders of one side outside its ladder (else always 0)."""
        self._check_locate(locate)
        if self._ladders is None:
            return 0
        return self._ladders[2 * locate + (side == "S")].untracked

    def order(self, ref: int) -> tuple[int, str, int, int] | None:
        """The live order ``ref`` as ``(locate, side, price, shares)``, or ``None``."""
        entry = self._orders.get(ref)
        if entry is None:
            return None
        locate, side, price, shares = entry
        return locate, "BS"[side], price, shares

    @property
    def live_orders(self) -> int:
        """Number of orders in the table."""
        return len(self._orders)

    def trading_state(self, locate: int) -> str:
        """The last ``H`` trading state of ``locate`` (``'T'``, trading, until one arrives)."""
        return self._states.get(locate, "T")

    def symbol(self, locate: int) -> str | None:
        """The symbol an ``R`` message gave ``locate`` (space padding removed), or ``None``."""
        return self._symbols.get(locate)

    def is_stale(self, locate: int) -> bool:
        """Whether ``locate`` is stale."""
        self._check_locate(locate)
        return bool(self._stale[locate])

    def subscribe(self, locate: int, tracked: bool) -> None:
        """Change the subscription of one locate; its book and stale flag are kept as they are."""
        self._check_locate(locate)
        self._tracked = bytearray(self._tracked)
        self._tracked[locate] = int(bool(tracked))

    # ------------------------------------------------------------------ stale control
    def mark_stale(self, locate: int | None = None) -> None:
        """Mark one symbol, or with ``None`` every tracked symbol (a sequence gap), stale.

        Untracked symbols never become stale. No :class:`TopOfBook` is produced: the flag shows
        in :meth:`bbo` at once and in the next record reported for the symbol.
        """
        if locate is None:
            self._stale[:] = self._tracked
            return
        self._check_locate(locate)
        if self._tracked[locate]:
            self._stale[locate] = 1

    def recover(self, locate: int | None = None) -> None:
        """Clear the stale flag of one symbol (or of all with ``None``) after a rebuild."""
        if locate is None:
            self._stale[:] = bytes(self.max_symbols)
            return
        self._check_locate(locate)
        self._stale[locate] = 0

    # ------------------------------------------------------------------ internals
    def _check_locate(self, locate: int) -> None:
        if not 0 <= locate < self.max_symbols:
            raise ValueError(f"locate must be 0 .. {self.max_symbols - 1}, not {locate!r}")

    def _top(self, locate: int) -> tuple[int, int, int, int, bool]:
        i = 2 * locate
        if self._ladders is not None:
            bid, ask = self._ladders[i], self._ladders[i + 1]
            return (
                *bid.best(),
                *ask.best(),
                self._stale[locate] == 1 or bid.unknown or ask.unknown,
            )
        bid = self._best[i]
        ask = self._best[i + 1]
        return (
            bid,
            self._levels[i][bid] if bid else 0,
            ask,
            self._levels[i + 1][ask] if ask else 0,
            self._stale[locate] == 1,
        )

    def _refuse(self, cause: str, locate: int) -> bool:
        self.counters[cause] += 1
        self._stale[locate] = 1
        return False

    def _lookup(self, ref: int, locate: int) -> list[int] | None:
        entry = self._orders.get(ref)
        if entry is None:
            self._refuse("unknown_ref", locate)
            return None
        if entry[0] != locate:
            self._refuse("locate_mismatch", locate)
            return None
        return entry

    def _add(self, locate: int, ref: int, side: str, shares: int, price: int) -> bool:
        orders = self._orders
        if ref in orders:
            return self._refuse("duplicate_ref", locate)
        if side == "B":
            s = _BID
        elif side == "S":
            s = _ASK
        else:
            return self._refuse("bad_side", locate)
        if shares == 0 or price == 0:
            return self._refuse("bad_add", locate)
        load = self._set_load
        if load is not None:
            home = fold_hash(ref, self.sets)
            if load[home] >= self.ways:
                return self._refuse("table_full", locate)
            load[home] += 1
        elif len(orders) >= self.max_orders:
            return self._refuse("table_full", locate)
        i = 2 * locate + s
        if self._ladders is not None:
            if self._ladders[i].add(price, shares):
                self.counters["levels_evicted"] += 1
            orders[ref] = [locate, s, price, shares]
            return True
        levels = self._levels[i]
        if levels is None:
            levels = self._levels[i] = {}
        total = levels.get(price)
        if total is None:
            if len(levels) >= self.max_levels:
                return self._refuse("levels_full", locate)
            levels[price] = shares
            best = self._best[i]
            if not best or (price > best if s == _BID else price < best):
                self._best[i] = price
        else:
            levels[price] = total + shares
        orders[ref] = [locate, s, price, shares]
        return True

    def _remove_shares(self, ref: int, entry: list[int], quantity: int) -> None:
        """Take ``quantity`` shares (at most the order's) off the order and its level."""
        locate, s, price, shares = entry
        i = 2 * locate + s
        if quantity == shares:
            del self._orders[ref]
            if self._set_load is not None:
                self._set_load[fold_hash(ref, self.sets)] -= 1
        else:
            entry[3] = shares - quantity
        if self._ladders is not None:
            self._ladders[i].remove(price, quantity, quantity == shares)
            return
        levels = self._levels[i]
        left = levels[price] - quantity
        if left:
            levels[price] = left
            return
        del levels[price]
        if self._best[i] == price:
            self._best[i] = (max(levels) if s == _BID else min(levels)) if levels else 0

    def _reduce(self, ref: int, locate: int, quantity: int) -> bool:
        entry = self._lookup(ref, locate)
        if entry is None:
            return False
        shares = entry[3]
        if quantity > shares:
            self._remove_shares(ref, entry, shares)
            return self._refuse("overfill", locate)
        self._remove_shares(ref, entry, quantity)
        return True

    def _on_add(self, msg, locate: int) -> bool:
        return self._add(locate, msg.order_ref, msg.side, msg.shares, msg.price)

    def _on_execute(self, msg, locate: int) -> bool:
        return self._reduce(msg.order_ref, locate, msg.executed_shares)

    def _on_cancel(self, msg, locate: int) -> bool:
        return self._reduce(msg.order_ref, locate, msg.cancelled_shares)

    def _on_delete(self, msg, locate: int) -> bool:
        entry = self._lookup(msg.order_ref, locate)
        if entry is None:
            return False
        self._remove_shares(msg.order_ref, entry, entry[3])
        return True

    def _on_replace(self, msg, locate: int) -> bool:
        entry = self._lookup(msg.original_ref, locate)
        if entry is None:
            return False
        self._remove_shares(msg.original_ref, entry, entry[3])
        return self._add(locate, msg.new_ref, "BS"[entry[1]], msg.shares, msg.price)
