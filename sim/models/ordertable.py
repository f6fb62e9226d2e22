"""The bounded storage of the gateware book, as the reference model keeps it: the XOR-fold hash
of the set-associative order table, and the depth-limited price ladder of one book side.

:class:`~tick2quote.sim.models.book.BookModel` uses these when it is given the gateware's
geometry (``sets``/``ways``, ``depth``), so that it refuses, evicts and flags exactly when the
gateware does.

Price ladder rules (one ladder per symbol and side, at most ``depth`` levels):

- the ladder holds the best ``K <= depth`` price levels exactly, each as ``(price, aggregate
  shares, order count)``; every other live order of the side is *untracked* (only counted) and
  lies strictly worse than the worst tracked level;
- an add at price ``p``: if ``p`` is a tracked level, it joins it; else if ``p`` is better than
  the worst tracked level, or ``K < depth`` and no order is untracked, ``p`` becomes a new level
  (when the ladder was full its worst level is evicted: its orders become untracked); otherwise
  the order is untracked;
- shares leaving at ``p`` come off the tracked level ``p`` (the level goes when its last order
  leaves), or, when ``p`` is not tracked, an order leaving decrements the untracked count;
- the best price of a side is *unknown* while its ladder is empty and some of its orders are
  untracked (the book knows they exist, not where): the symbol is then stale.
"""

from __future__ import annotations

__all__ = ["fold_hash", "PriceLadder"]


def fold_hash(ref: int, sets: int) -> int:
    """The order-table set of reference ``ref``: the XOR of its four 16-bit quarters, truncated
    to ``log2(sets)`` bits (``sets`` a power of two, at most 65536)."""
    return (ref ^ (ref >> 16) ^ (ref >> 32) ^ (ref >> 48)) & (sets - 1)


class PriceLadder:
    """One side of one symbol's book, limited to ``depth`` tracked levels (see module docs).

    ``levels`` is the list of ``[price, shares, orders]``, best first; ``untracked`` the number
    of live orders of the side that are not in it.
    """

    __slots__ = ("depth", "bid", "levels", "untracked")

    def __init__(self, depth: int, bid: bool):
        self.depth = depth
        self.bid = bid
        self.levels: list[list[int]] = []
        self.untracked = 0

    @property
    def unknown(self) -> bool:
        """Whether the best price is unknown (empty ladder, untracked orders live)."""
        return not self.levels and self.untracked > 0

    def best(self) -> tuple[int, int]:
        """``(price, shares)`` of the best tracked level, ``(0, 0)`` when there is none."""
        if self.levels:
            price, shares, _ = self.levels[0]
            return price, shares
        return 0, 0

    def add(self, price: int, shares: int) -> bool:
        """Add one order; return whether a level was evicted to make room."""
        levels = self.levels
        for index, level in enumerate(levels):
            if level[0] == price:
                level[1] += shares
                level[2] += 1
                return False
            if price > level[0] if self.bid else price < level[0]:
                levels.insert(index, [price, shares, 1])
                if len(levels) > self.depth:
                    self.untracked += levels.pop()[2]
                    return True
                return False
        if len(levels) < self.depth and self.untracked == 0:
            levels.append([price, shares, 1])
        else:
            self.untracked += 1
        return False

    def remove(self, price: int, shares: int, leaves: bool) -> None:
        """Take ``shares`` off an order at ``price``; ``leaves`` says the order is gone."""
        levels = self.levels
        for index, level in enumerate(levels):
            if level[0] == price:
                level[1] -= shares
                if leaves:
                    level[2] -= 1
                    if level[2] == 0:
                        del levels[index]
                return
        if leaves:
            self.untracked -= 1
