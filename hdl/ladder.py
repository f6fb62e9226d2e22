"""The depth-limited price ladder of one book side, as one wide memory word, and its
update logic: the per-level compares (:func:`ladder_flags`), then the new word
(:class:`LadderUpdate`).

A ladder word holds ``depth`` level slots ``(price, shares, orders)``, best first, and the count
of *untracked* orders of the side. A slot is in use exactly when its ``orders`` is not 0; used
slots are a prefix and unused slots are all zero (so an empty side reads price 0, size 0). The
rules are those of :class:`tick2quote.sim.models.ordertable.PriceLadder`: an add joins a tracked
level, inserts a new one (evicting the worst when full) or goes untracked; a removal updates the
tracked level (closing it when its last order leaves) or decrements the untracked count.
"""

from amaranth.hdl import Cat, Mux, Signal, Value
from amaranth.lib import data

__all__ = ["level_layout", "ladder_layout", "flags_layout", "ladder_flags", "LadderUpdate"]


def level_layout(count_bits: int) -> data.StructLayout:
    """One tracked level: price, aggregate shares, number of orders."""
    return data.StructLayout({"price": 32, "shares": 32, "orders": count_bits})


def ladder_layout(depth: int, count_bits: int) -> data.StructLayout:
    """One side of one symbol: ``depth`` level slots, best first, and the untracked count."""
    return data.StructLayout(
        {
            "levels": data.ArrayLayout(level_layout(count_bits), depth),
            "untracked": count_bits,
        }
    )


def best_unknown(ladder) -> Value:
    """Whether a ladder's best price is unknown: no tracked level, some untracked order."""
    return (ladder.levels[0].orders == 0) & (ladder.untracked != 0)


def flags_layout(depth: int) -> data.StructLayout:
    """Per-level compare results of one ladder against one price (see :func:`ladder_flags`)."""
    return data.StructLayout({"used": depth, "equal": depth, "better": depth, "single": depth})


def ladder_flags(m, old, *, bid, price) -> Signal:
    """The compares :class:`LadderUpdate` needs, per level of ``old``: ``used`` (the slot holds a
    level), ``equal`` (used, at ``price``), ``better`` (used, ``price`` is better than it) and
    ``single`` (the level holds one order). Computed apart so that a pipeline can register them
    between the compares and the update."""
    depth = old.shape()["levels"].shape.length
    slots = [old.levels[j] for j in range(depth)]
    used = [s.orders != 0 for s in slots]
    flags = Signal(flags_layout(depth))
    m.d.comb += [
        flags.used.eq(Cat(used)),
        flags.equal.eq(Cat(used[j] & (slots[j].price == price) for j in range(depth))),
        flags.better.eq(
            Cat(
                used[j] & Mux(bid, price > slots[j].price, price < slots[j].price)
                for j in range(depth)
            )
        ),
        flags.single.eq(Cat(s.orders == 1 for s in slots)),
    ]
    return flags


class LadderUpdate:
    """Combinational update of one ladder word ``old`` (a view of :func:`ladder_layout`).

    ``flags`` are :func:`ladder_flags` of ``old`` and ``price`` (possibly registered a cycle
    before). With ``add`` an order of ``shares`` at ``price`` joins the side; with ``remove``
    ``shares`` leave the order at ``price`` and ``leaves`` says the order itself goes. Exposes
    ``new`` (the updated word) and ``evicted`` (an add pushed the worst level out).
    """

    def __init__(self, m, old, flags, *, add, remove, price, shares, leaves):
        layout = old.shape()
        depth = layout["levels"].shape.length
        slots = [old.levels[j] for j in range(depth)]
        used = [flags.used[j] for j in range(depth)]
        equal = [flags.equal[j] for j in range(depth)]
        better = [flags.better[j] for j in range(depth)]
        hit = flags.equal.any()
        full = used[-1]
        insert = ~hit & (flags.better.any() | (~full & (old.untracked == 0)))
        # at or after the insertion point (a monotonic mask: better levels come first)
        after = [better[j] | ~used[j] for j in range(depth)]
        self.new = new = Signal(layout)
        self.evicted = Signal()
        m.d.comb += new.eq(old)
        with m.If(add):
            with m.If(hit):
                for j in range(depth):
                    with m.If(equal[j]):
                        m.d.comb += [
                            new.levels[j].shares.eq(slots[j].shares + shares),
                            new.levels[j].orders.eq(slots[j].orders + 1),
                        ]
            with m.Elif(insert):
                for j in range(depth):
                    fresh = [
                        new.levels[j].price.eq(price),
                        new.levels[j].shares.eq(shares),
                        new.levels[j].orders.eq(1),
                    ]
                    with m.If(after[j]):
                        if j == 0:
                            m.d.comb += fresh
                        else:
                            with m.If(after[j - 1]):  # below the insertion point: shift down
                                m.d.comb += new.levels[j].eq(slots[j - 1])
                            with m.Else():
                                m.d.comb += fresh
                with m.If(full):
                    m.d.comb += [
                        new.untracked.eq(old.untracked + slots[-1].orders),
                        self.evicted.eq(1),
                    ]
            with m.Else():
                m.d.comb += new.untracked.eq(old.untracked + 1)
        with m.Elif(remove):
            with m.If(hit):
                closed = [equal[j] & leaves & flags.single[j] for j in range(depth)]
                for j in range(depth):
                    with m.If(Cat(closed[: j + 1]).any()):
                        if j + 1 < depth:
                            m.d.comb += new.levels[j].eq(slots[j + 1])
                        else:
                            m.d.comb += new.levels[j].eq(0)
                    with m.Elif(equal[j]):
                        m.d.comb += [
                            new.levels[j].shares.eq(slots[j].shares - shares),
                            new.levels[j].orders.eq(slots[j].orders - leaves),
                        ]
            with m.Elif(leaves):
                m.d.comb += new.untracked.eq(old.untracked - 1)
