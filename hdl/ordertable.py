"""Order-table pieces of the gateware book: the entry layout, the XOR-fold hash and the one-hot
way match.

The table is set-associative: ``sets`` sets of ``ways`` entries, one memory per way, all read
at the same set index. The set of a reference is :func:`fold_hash` (the same function as
:func:`tick2quote.sim.models.ordertable.fold_hash`). An entry does not store the low
``log2(sets)`` bits of its reference: within a set they follow from the others (the set index
is the XOR of the four quarters), so equal high bits in the same set mean equal references.
"""

from amaranth.hdl import Cat, Const, Signal, Value
from amaranth.lib import data

__all__ = ["entry_layout", "fold_hash", "WayMatch"]


def entry_layout(set_bits: int, locate_bits: int) -> data.StructLayout:
    """One order-table entry: a live flag, the reference without its low ``set_bits`` bits,
    the symbol, the side (0 bid, 1 ask), the price and the shares left."""
    return data.StructLayout(
        {
            "valid": 1,
            "ref_high": 64 - set_bits,
            "locate": max(locate_bits, 1),
            "side": 1,
            "price": 32,
            "shares": 32,
        }
    )


def fold_hash(ref: Value, set_bits: int) -> Value:
    """The set index of the 64-bit reference ``ref``: the XOR of its four 16-bit quarters,
    truncated to ``set_bits`` bits (at most 16)."""
    quarters = [ref[16 * k : 16 * (k + 1)] for k in range(4)]
    return (quarters[0] ^ quarters[1] ^ quarters[2] ^ quarters[3])[:set_bits]


class WayMatch:
    """Combinational match of one reference against the ``ways`` entries read from its set.

    Builds, inside module ``m``: ``hits`` (one-hot, at most one way matches since a reference
    is stored once), ``found``, ``entry`` (the matching entry, an AND-OR select: no priority
    encoder), ``free_first`` (one-hot: the lowest free way) and ``any_free``.
    """

    def __init__(self, m, layout: data.StructLayout, entries: list, ref: Value, set_bits: int):
        ways = len(entries)
        ref_high = ref[set_bits:]
        self.hits = Signal(ways)
        free = Signal(ways)
        m.d.comb += [
            self.hits.eq(Cat(e.valid & (e.ref_high == ref_high) for e in entries)),
            free.eq(Cat(~e.valid for e in entries)),
        ]
        self.found = self.hits.any()
        selected = Const(0, layout.size)
        for way, e in enumerate(entries):
            selected = selected | (e.as_value() & self.hits[way].replicate(layout.size))
        self.entry = Signal(layout)
        m.d.comb += self.entry.eq(selected)
        # lowest free way, one-hot: x & -x on a `ways`-bit vector
        self.free_first = Signal(ways)
        m.d.comb += self.free_first.eq(free & (~free + 1)[:ways])
        self.any_free = free.any()
