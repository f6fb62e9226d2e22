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
    """Per-level compare results of one ladder against one price, and what follows from them
    alone (see :func:`ladder_flags`)."""
    return data.StructLayout(
        {
            "full": 1,
            "hit": 1,
            "room": 1,
            "equal": depth,
            "after": depth,
            "point": depth,
            "closing": depth,
        }
    )


def ladder_flags(m, old, *, bid, price, removal=False) -> Signal:
    """What :class:`LadderUpdate` needs to know of ``old`` against ``price``, per level and
    reduced: ``equal`` (the slot holds a level at ``price``), ``hit`` (some level does),
    ``after`` (the slot is empty or ``price`` is better: a monotonic mask, the insertion point
    and below), ``point`` (one-hot: the insertion point), ``closing`` (at or below a level at
    ``price`` holding a single order: the levels that move up when that order leaves), ``full``
    (every slot used) and ``room`` (a new level at ``price`` is tracked: it is better than some
    level, or a slot is free and no order is untracked).

    Computed apart, and complete, so that a pipeline can register them between the compares
    and the update and leave the update a plain selection. With ``removal`` only what a
    removal uses is computed (``equal``, ``hit``, ``closing``; and ``full``, which costs
    nothing); the rest is 0: an order that leaves is at a tracked level or untracked, so no
    price order is compared."""
    depth = old.shape()["levels"].shape.length
    slots = [old.levels[j] for j in range(depth)]
    used = [s.orders != 0 for s in slots]
    equal = [used[j] & (slots[j].price == price) for j in range(depth)]
    single = [equal[j] & (slots[j].orders == 1) for j in range(depth)]
    flags = Signal(flags_layout(depth))
    m.d.comb += [
        flags.full.eq(used[-1]),
        flags.hit.eq(Cat(equal).any()),
        flags.equal.eq(Cat(equal)),
        flags.closing.eq(Cat(Cat(single[: j + 1]).any() for j in range(depth))),
    ]
    if removal:
        return flags
    better = [
        used[j] & Mux(bid, price > slots[j].price, price < slots[j].price) for j in range(depth)
    ]
    after = [better[j] | ~used[j] for j in range(depth)]
    m.d.comb += [
        flags.room.eq(Cat(better).any() | (~used[-1] & (old.untracked == 0))),
        flags.after.eq(Cat(after)),
        flags.point.eq(Cat(after[j] & (~after[j - 1] if j else 1) for j in range(depth))),
    ]
    return flags


class LadderUpdate:
    """Combinational update of one ladder word ``old`` (a view of :func:`ladder_layout`).

    ``flags`` are :func:`ladder_flags` of ``old`` and ``price`` (possibly registered a cycle
    before). With ``add`` an order of ``shares`` at ``price`` joins the side; with ``remove``
    ``shares`` leave the order at ``price`` and ``leaves`` says the order itself goes. Exposes
    ``new`` (the updated word) and ``evicted`` (an add pushed the worst level out).

    Each level of ``new`` is an AND-OR selection, by one-hot terms of the flags and the
    operation, among: itself, its sum or difference with ``shares``, a fresh level, and its
    neighbours above and below (the shift of an insertion, of a closing).
    """

    def __init__(self, m, old, flags, *, add, remove, price, shares, leaves):
        layout = old.shape()
        depth = layout["levels"].shape.length
        slots = [old.levels[j] for j in range(depth)]
        insert = add & ~flags.hit & flags.room
        joins = add & flags.hit
        finds = remove & flags.hit
        closes = finds & leaves
        fresh = Signal(level_layout(len(slots[0].orders)))
        m.d.comb += [fresh.price.eq(price), fresh.shares.eq(shares), fresh.orders.eq(1)]
        self.new = new = Signal(layout)
        self.evicted = Signal()
        for j in range(depth):
            slot = slots[j]
            joined = Signal.like(slot, name=f"joined{j}")
            reduced = Signal.like(slot, name=f"reduced{j}")
            m.d.comb += [
                joined.price.eq(slot.price),
                joined.shares.eq(slot.shares + shares),
                joined.orders.eq(slot.orders + 1),
                reduced.price.eq(slot.price),
                reduced.shares.eq(slot.shares - shares),
                reduced.orders.eq(slot.orders - leaves),
            ]
            below = slots[j + 1].as_value() if j + 1 < depth else 0
            choices = [
                (insert & flags.point[j], fresh.as_value()),
                (insert & flags.after[j] & ~flags.point[j], slots[j - 1].as_value() if j else 0),
                (closes & flags.closing[j], below),
                (joins & flags.equal[j], joined.as_value()),
                (finds & flags.equal[j] & ~(leaves & flags.closing[j]), reduced.as_value()),
            ]
            kept = ~Cat(select for select, _ in choices).any()
            # ``Mux(select, value, 0)`` is an AND with the select, written so that the simulators
            # need not build a replicated select per bit
            word = Mux(kept, slot.as_value(), 0)
            for select, value in choices:
                word = word | Mux(select, value, 0)
            m.d.comb += new.levels[j].eq(word)
        evicts = insert & flags.full
        m.d.comb += [new.untracked.eq(old.untracked), self.evicted.eq(evicts)]
        with m.If(evicts):
            m.d.comb += new.untracked.eq(old.untracked + slots[-1].orders)
        with m.Elif(add & ~flags.hit & ~flags.room):
            m.d.comb += new.untracked.eq(old.untracked + 1)
        with m.Elif(remove & ~flags.hit & leaves):
            m.d.comb += new.untracked.eq(old.untracked - 1)
