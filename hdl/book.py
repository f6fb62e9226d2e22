"""The gateware order book: order table, price ladders and top-of-book updates.

:class:`OrderBook` consumes :data:`~tick2quote.hdl.events.BookEvent` and emits a
:data:`top_of_book_layout` record whenever an event changes the best bid/offer, the best sizes
or the stale flag of its symbol. Its behaviour is exactly that of
:class:`tick2quote.sim.models.book.BookModel` built with the same geometry
(``BookModel(symbols, sets=sets, ways=ways, depth=depth)``), with ``ADD`` .. ``REPLACE`` events
in place of ITCH ``A F E C X D U``, ``DIRECTORY`` / ``TRADING`` in place of ``R`` / ``H``, and
every other kind counted ``ignored``.

Structure (all state in block-RAM-shaped memories with registered read ports):

- **order table**: ``sets x ways`` entries, one memory per way, indexed by the XOR-fold hash of
  the reference (:mod:`.ordertable`); a set with no free way refuses an add (``table_full``);
- **price ladders**: one memory per side, one word per symbol holding the best ``depth`` levels
  and the untracked order count (:mod:`.ladder`);
- subscription mask and trading state: one bit / one byte per symbol, in memories; sticky stale
  flags: one register bit per symbol (``mark_stale_all`` sets all at once).

Timing. One event is in flight at a time, in three registered stages and a write-back. Cycle 0:
the event is accepted; its hash and locate address the order table and both ladders at once.
Cycle 1 (*read*): the memories answer and their words are registered as they are (block RAM's
output delay is most of an ECP5 cycle). Cycle 2 (*match*): the way match and, side by side, the
compares against every way's entry (its quantity; every ladder level against its price on its
side) and against the event's own price, the one that applies chosen after the match, with
what follows from those compares alone (the insertion point, the levels a closing moves up);
registered. Cycle 3 (*commit*): the table entry is written back, the stale flags updated, and
the new ladder word, a one-hot selection per level, registered; the next event is accepted in
this cycle. Cycle 4 (*write-back*): the ladder word is written to its memory (a read of it
issued in cycle 3 takes it from the register), the update record made from it and the counters
counted: the record is valid on ``o`` in cycle 5. So **one event per 3 cycles** (``REPLACE``
takes a second pass for its new reference: six cycles, update valid in cycle 8). ``o``
back-pressure holds the commit; nothing is dropped. At 10 GbE line rate messages average about
5 beats of 8 bytes (42 bytes on the wire for a realistic mix), so one event per 3 cycles keeps
up, with the feed handler's buffer for bursts.

Stale marks and recoveries (``mark_stale_all``, ``recover_all``, ``recover``) act after every
event accepted before them: while an event is in flight they wait, composed in arrival order,
and apply when it finishes (or at once when the book is idle). ``busy`` is high while an event
is in flight.

After reset the book sweeps every memory clear (``max(sets, symbols)`` cycles, ``i.ready`` low
meanwhile): block RAM keeps its contents across a soft reset.

Widths: counters are 32 bits and wrap; level sizes are 32 bits (a level is assumed never to hold
2**32 shares or more); order counts have ``log2(sets * ways) + 1`` bits, enough for a full table.
"""

import random
from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .events import BookEvent, EventKind
from .ladder import LadderUpdate, best_unknown, flags_layout, ladder_flags, ladder_layout
from .ordertable import WayMatch, entry_layout, fold_hash
from .sweep import reset_sweep

__all__ = ["OrderBook", "top_of_book_layout", "COUNTERS", "counter_layout"]

#: The top-of-book record emitted on ``o``.
top_of_book_layout = data.StructLayout(
    {
        "locate": 16,
        "bid_px": 32,
        "bid_sz": 32,
        "ask_px": 32,
        "ask_sz": 32,
        "stale": 1,
        "sequence": 64,
        "stamp": 32,
        "unknown": 1,
    }
)

#: Counter names: ``events`` counts every event taken; the others are the model's counters.
COUNTERS = (
    "events",
    "applied",
    "ignored",
    "bad_locate",
    "untracked",
    "unknown_ref",
    "locate_mismatch",
    "overfill",
    "duplicate_ref",
    "bad_add",
    "bad_side",
    "table_full",
    "levels_evicted",
    "best_unknown",
)

#: The ``counters`` output: one 32-bit counter per name in :data:`COUNTERS`.
counter_layout = data.StructLayout({name: 32 for name in COUNTERS})

_BOOK_KINDS = (
    EventKind.ADD,
    EventKind.EXECUTE,
    EventKind.EXECUTE_PRICE,
    EventKind.CANCEL,
    EventKind.DELETE,
    EventKind.REPLACE,
)


def _power_of_two(name: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or not low <= value <= high or value & (value - 1):
        raise ValueError(f"{name} must be a power of two in {low} .. {high}, not {value!r}")
    return value.bit_length() - 1


def _decode(m: Module, value, bits: int, name: str) -> Signal:
    """One-hot decode of a ``bits``-bit value, from two half-width predecoders (no wide case
    statement, which synthesis handles poorly at 1024 symbols)."""
    low_bits = bits // 2
    low = Signal(1 << low_bits, name=f"{name}_low")
    high = Signal(1 << (bits - low_bits), name=f"{name}_high")
    one_hot = Signal(1 << bits, name=name)
    mask = (1 << low_bits) - 1
    m.d.comb += [
        low.eq(Cat(value[:low_bits] == k for k in range(len(low)))),
        high.eq(Cat(value[low_bits:bits] == k for k in range(len(high)))),
        one_hot.eq(Cat(high[k >> low_bits] & low[k & mask] for k in range(1 << bits))),
    ]
    return one_hot


class OrderBook(wiring.Component):
    """Order book with top-of-book output (see the module documentation).

    Parameters
    ----------
    symbols:
        Locates ``0 .. symbols - 1`` are kept (a power of two, 2 .. 65536); others count
        ``bad_locate``.
    sets, ways:
        Order-table geometry: ``sets`` (a power of two, 2 .. 65536) times ``ways`` (1 .. 16)
        entries; the default holds 65 536 orders.
    depth:
        Tracked price levels per symbol and side (1 .. 64).
    garbage_seed:
        For tests: fill every memory's initial contents with pseudo-random garbage from this
        seed (as block RAM holds after a soft reset), to check the clear sweep.

    Ports
    -----
    i: in stream of :data:`BookEvent`. o: out stream of :data:`top_of_book_layout`.
    mark_stale_all: pulse, every symbol becomes stale (a sequence gap).
    recover_all / recover + recover_locate: pulse, clear the stale flag of all / one symbol.
    mask_write + mask_locate + mask_tracked: write one subscription bit (all are 1 after
    reset); applies to events accepted after the write cycle.
    state_locate -> state: the last ``TRADING`` state byte of a symbol (``'T'`` after reset),
    one cycle after the address.
    stale_locate -> stale_now: the symbol's sticky stale flag (gaps, refusals, recoveries) in
    the same cycle; a record's ``stale`` is that flag or ``unknown`` (a best price not known
    because its ladder lost track of levels).
    counters: :data:`counter_layout`. clearing: the reset-time sweep is running.

    ``mark_stale_all`` and the recover inputs act after every event accepted before them (a
    REPLACE's two passes included). busy: an event is in flight (to its write-back).
    """

    def __init__(self, symbols=1024, sets=16384, ways=4, depth=8, *, garbage_seed=None):
        self.locate_bits = _power_of_two("symbols", symbols, 2, 1 << 16)
        self.set_bits = _power_of_two("sets", sets, 2, 1 << 16)
        if not isinstance(ways, int) or not 1 <= ways <= 16:
            raise ValueError(f"ways must be an integer in 1 .. 16, not {ways!r}")
        if not isinstance(depth, int) or not 1 <= depth <= 64:
            raise ValueError(f"depth must be an integer in 1 .. 64, not {depth!r}")
        self.symbols, self.sets, self.ways, self.depth = symbols, sets, ways, depth
        self.orders = sets * ways
        self.count_bits = self.orders.bit_length()
        self.garbage_seed = garbage_seed
        super().__init__(
            {
                "i": In(stream.Signature(BookEvent)),
                "o": Out(stream.Signature(top_of_book_layout)),
                "mark_stale_all": In(1),
                "recover_all": In(1),
                "recover": In(1),
                "recover_locate": In(16),
                "mask_write": In(1),
                "mask_locate": In(16),
                "mask_tracked": In(1),
                "state_locate": In(16),
                "state": Out(8),
                "stale_locate": In(16),
                "stale_now": Out(1),
                "counters": Out(counter_layout),
                "clearing": Out(1),
                "busy": Out(1),
            }
        )

    def _memory(self, width: int, depth: int, name: str) -> Memory:
        init = []
        if self.garbage_seed is not None:
            rng = random.Random(f"{self.garbage_seed}-{name}")
            init = [rng.getrandbits(width) for _ in range(depth)]
        return Memory(shape=width, depth=depth, init=init)

    def elaborate(self, platform):
        m = Module()
        lb, sb = self.locate_bits, self.set_bits
        entry_shape = entry_layout(sb, lb)
        ladder_shape = ladder_layout(self.depth, self.count_bits)

        # ------------------------------------------------------------ clear sweep after reset
        clear_bits = max(lb, sb)
        clearing, clear_addr = reset_sweep(m, 1 << clear_bits)
        m.d.comb += self.clearing.eq(clearing)
        clear_sets = clearing & (clear_addr >> sb == 0)
        clear_symbols = clearing & (clear_addr >> lb == 0)

        # ------------------------------------------------------------ memories
        def memory(name, width, depth):
            mem = self._memory(width, depth, name)
            m.submodules[name] = mem
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=(wp,))
            return wp, rp

        table = [memory(f"way{w}", entry_shape.size, self.sets) for w in range(self.ways)]
        ladders = [memory(name, ladder_shape.size, self.symbols) for name in ("bids", "asks")]
        mask_wp, mask_rp = memory("mask", 1, self.symbols)
        state_mem = self._memory(8, self.symbols, "state")
        m.submodules.state = state_mem
        state_wp = state_mem.write_port()
        state_rp = state_mem.read_port()
        m.d.comb += [state_rp.addr.eq(self.state_locate), self.state.eq(state_rp.data)]

        # ------------------------------------------------------------ pipeline state
        # the ladder a commit wrote, written back and turned into the update record next cycle
        wb_write, wb_record = Signal(), Signal()
        wb_side = Signal()
        wb_loc = Signal(lb)
        wb_ladder = Signal(ladder_shape)
        # One event (one REPLACE pass) is in flight at a time: read (1), match (2), commit (3).
        s1_valid, s2_valid, s3_valid = Signal(), Signal(), Signal()
        ev = Signal(BookEvent)  # the event in flight, from acceptance to its commit
        second = Signal()  # REPLACE: the pass that adds the new reference
        s1_set = Signal(sb)
        s1_key = Signal(64)  # the reference the pass looks up (registered with its set)
        saved_side = Signal()
        saved_top = Signal(top_of_book_layout)
        saved_unknown = Signal()
        saved_sticky = Signal()
        stale = Signal(self.symbols)  # sticky stale flags

        o_free = ~self.o.valid | self.o.ready
        commit = s3_valid & o_free
        busy = s1_valid | s2_valid | s3_valid
        m.d.comb += self.busy.eq(busy | wb_record)
        is_replace_first = (ev.kind == EventKind.REPLACE) & ~second
        go_second = Signal()
        finish = commit & ~go_second
        accept = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(~clearing & (~busy | (commit & ~is_replace_first)))

        # ------------------------------------------------------------ stage 0: addresses
        issue_second = commit & go_second
        # the memories are addressed by the input event or, while a REPLACE's first pass waits
        # to commit (no event is accepted then), by its new reference: the addresses do not
        # wait for the commit (nor for ``o.ready``), only the read enables do
        second_next = s3_valid & go_second
        set_addr = Mux(
            second_next, fold_hash(ev.new_ref, sb), fold_hash(self.i.payload.order_ref, sb)
        )
        symbol_addr = Mux(second_next, ev.locate, self.i.payload.locate)[:lb]
        for _, rp in table:
            m.d.comb += rp.en.eq(accept | issue_second)
        # the ladders and the tracked mask are read every cycle (stage 1 takes their words only
        # in the cycle after an issue): their read registers do not wait for ``i.ready``
        for _, rp in ladders:
            m.d.comb += rp.en.eq(1)
        for _, rp in table:
            m.d.comb += rp.addr.eq(set_addr)
        for _, rp in ladders:
            m.d.comb += rp.addr.eq(symbol_addr)
        m.d.comb += [mask_rp.en.eq(1), mask_rp.addr.eq(self.i.payload.locate[:lb])]
        m.d.sync += [s1_valid.eq(accept | issue_second), s2_valid.eq(s1_valid)]
        with m.If(accept):
            m.d.sync += [
                ev.eq(self.i.payload),
                second.eq(0),
                s1_set.eq(set_addr),
                s1_key.eq(self.i.payload.order_ref),
            ]
        with m.Elif(issue_second):
            m.d.sync += [second.eq(1), s1_set.eq(set_addr), s1_key.eq(ev.new_ref)]
        with m.If(s2_valid):
            m.d.sync += s3_valid.eq(1)
        with m.Elif(commit):
            m.d.sync += s3_valid.eq(0)

        # ------------------------------------------------------------ stage 1: read
        # the memories answer; their words are registered as they are (block RAM's output delay
        # is most of a cycle)
        read_entries = [Signal(entry_shape, name=f"read_way{w}") for w in range(self.ways)]
        read_bids, read_asks = Signal(ladder_shape), Signal(ladder_shape)
        read_tracked = Signal()
        with m.If(s1_valid):
            m.d.sync += [r.eq(rp.data) for r, (_, rp) in zip(read_entries, table)]
            # a ladder written back this cycle was read the cycle before: forwarded
            for side, read in enumerate((read_bids, read_asks)):
                forward = wb_write & (wb_side == side) & (wb_loc == ev.locate[:lb])
                m.d.sync += read.eq(Mux(forward, wb_ladder.as_value(), ladders[side][1].data))
            m.d.sync += read_tracked.eq(mask_rp.data[0])

        # ------------------------------------------------------------ stage 2: match, compare
        kind = ev.kind
        is_book = Cat(kind == k for k in _BOOK_KINDS).any()
        is_reference = (kind == EventKind.DIRECTORY) | (kind == EventKind.TRADING)
        locate_ok = (ev.locate >> lb) == 0
        loc = ev.locate[:lb]
        active = is_book & locate_ok & (read_tracked | second)

        match = WayMatch(m, entry_shape, read_entries, s1_key, sb)
        entry = match.entry
        adding = (kind == EventKind.ADD) | second
        side_code_ok = (ev.code == ord("B")) | (ev.code == ord("S"))
        duplicate = match.found
        bad_side = ~second & ~side_code_ok
        bad_add = (ev.shares == 0) | (ev.price == 0)
        table_full = ~match.any_free
        add_ok = ~duplicate & ~bad_side & ~bad_add & ~table_full
        mismatch = match.found & (entry.locate != loc)
        lookup_ok = match.found & ~mismatch
        takes_all = (kind == EventKind.DELETE) | (kind == EventKind.REPLACE)

        # the compares against the entry's fields made for every way, the way chosen after
        def of_match(per_way, shape, name):
            chosen = Signal(shape, name=name)
            word = 0
            for way, value in enumerate(per_way):
                word = word | (value & match.hits[way].replicate(len(chosen)))
            m.d.comb += chosen.eq(word)
            return chosen

        more = of_match([ev.shares > e.shares for e in read_entries], 1, "more_than_entry")
        same = of_match([ev.shares == e.shares for e in read_entries], 1, "same_as_entry")
        overfill = ~takes_all & more
        quantity = Mux(takes_all | overfill, entry.shares, ev.shares)
        side = Mux(adding, Mux(second, saved_side, ev.side), entry.side)
        price = Mux(adding, ev.price, entry.price)
        at_loc = _decode(m, loc, lb, "at_loc")  # one-hot: the event's stale register bit
        # the sticky flags change only when no event is in flight or one finishes (below)
        sticky = Mux(second, saved_sticky, (stale & at_loc).any())
        new_entry = Signal(entry_shape)
        with m.If(adding):
            m.d.comb += [
                new_entry.valid.eq(1),
                new_entry.ref_high.eq(s1_key[sb:]),
                new_entry.locate.eq(loc),
                new_entry.side.eq(side),
                new_entry.price.eq(ev.price),
                new_entry.shares.eq(ev.shares),
            ]
        with m.Else():
            m.d.comb += new_entry.eq(entry)  # its shares less the quantity in stage 3

        def stage3(value, name):
            """``value`` registered at the end of stage 2 (held until the next pass)."""
            shape = value.shape() if isinstance(value, data.View) else Value.cast(value).shape()
            reg = Signal(shape, name=f"m_{name}")
            with m.If(s2_valid):
                m.d.sync += reg.eq(value)
            return reg

        # the ladder compares made for every price the event can act at (its own, for an add;
        # each way's entry, for a removal) on the side that price is on; the one that applies
        # chosen after the way match
        def side_flags(price, on_ask, removal=False):
            bid_flags = ladder_flags(m, read_bids, bid=1, price=price, removal=removal)
            ask_flags = ladder_flags(m, read_asks, bid=0, price=price, removal=removal)
            return Mux(on_ask, ask_flags.as_value(), bid_flags.as_value())

        add_side = Mux(second, saved_side, ev.side)
        add_flags = side_flags(ev.price, add_side)
        flag_bits = flags_layout(self.depth).size
        way_flags = of_match(
            [side_flags(e.price, e.side, removal=True) for e in read_entries],
            flag_bits,
            "entry_flags",
        )
        flags = stage3(Mux(adding, add_flags, way_flags), "flags")
        r = SimpleNamespace(
            **{
                name: stage3(value, name)
                for name, value in {
                    "active": active,
                    "adding": adding,
                    "add_ok": add_ok,
                    "do_add": active & adding & add_ok,
                    "do_remove": active & ~adding & lookup_ok,
                    "lookup_ok": lookup_ok,
                    "overfill": overfill,
                    "side": side,
                    "price": price,
                    "shares": Mux(adding, ev.shares, quantity),
                    "leaves": takes_all | overfill | same,
                    "sticky": sticky,
                    "hits": match.hits,
                    "free_first": match.free_first,
                    "new_entry": new_entry,
                    "bids": read_bids,
                    "asks": read_asks,
                    "untracked": is_book & locate_ok & ~read_tracked & ~second,
                    "unknown_ref": active & ~adding & ~match.found,
                    "mismatch": active & ~adding & mismatch,
                    "dup": active & adding & duplicate,
                    "bad_add": active & adding & ~duplicate & ~bad_side & bad_add,
                    "bad_side": active & adding & ~duplicate & bad_side,
                    "full": active & adding & ~duplicate & ~bad_side & ~bad_add & table_full,
                    "ignored": ~is_book & ~is_reference,
                    "bad_locate": (is_book | is_reference) & ~locate_ok,
                    "changes": is_book & locate_ok & (read_tracked | second),
                }.items()
            }
        )
        m.d.comb += go_second.eq(r.active & is_replace_first & r.lookup_ok)

        # ------------------------------------------------------------ stage 3: update, commit
        bids, asks = r.bids, r.asks
        # the side's ladder chosen here, after the registered side, not after the way match
        old = Signal(ladder_shape)
        m.d.comb += old.eq(Mux(r.side, asks.as_value(), bids.as_value()))
        update = LadderUpdate(
            m,
            old,
            data.View(flags_layout(self.depth), flags),
            add=r.do_add,
            remove=r.do_remove,
            price=r.price,
            shares=r.shares,
            leaves=r.leaves,
        )
        refused = r.active & Mux(
            r.adding, ~r.add_ok, ~r.lookup_ok | r.overfill
        )  # any counted refusal marks the symbol stale

        def top(bid_ladder, ask_ladder, sticky, event):
            rec = Signal(top_of_book_layout)
            m.d.comb += [
                rec.locate.eq(event.locate),
                rec.bid_px.eq(bid_ladder.levels[0].price),
                rec.bid_sz.eq(bid_ladder.levels[0].shares),
                rec.ask_px.eq(ask_ladder.levels[0].price),
                rec.ask_sz.eq(ask_ladder.levels[0].shares),
                rec.stale.eq(sticky | best_unknown(bid_ladder) | best_unknown(ask_ladder)),
                rec.sequence.eq(event.sequence),
                rec.stamp.eq(event.stamp),
                rec.unknown.eq(best_unknown(bid_ladder) | best_unknown(ask_ladder)),
            ]
            return rec

        # the second pass of a REPLACE uses the flag its first pass saw: a stale pulse between
        # the passes then acts after the whole REPLACE, as documented
        current = top(bids, asks, r.sticky, ev)
        before = Signal(top_of_book_layout)
        m.d.comb += before.eq(Mux(second, saved_top.as_value(), current.as_value()))
        unknown_before = Mux(second, saved_unknown, best_unknown(old))

        # stage 4 (write-back): the new ladder, registered at the commit, is written to its
        # memory and the update record made from it
        writes = commit & r.active
        ladder_write = writes & Mux(r.adding, r.add_ok, r.lookup_ok)
        m.d.sync += [wb_write.eq(ladder_write), wb_record.eq(finish)]
        with m.If(commit):
            m.d.sync += [wb_side.eq(r.side), wb_loc.eq(loc), wb_ladder.eq(update.new)]
        held = {
            "before": before,
            "bids": bids,
            "asks": asks,
            "sticky": r.sticky | refused,
            "changes": r.changes,
            "active": r.active,
            "unknown_before": unknown_before,
            "locate": ev.locate,
            "sequence": ev.sequence,
            "stamp": ev.stamp,
        }
        wb = SimpleNamespace(
            **{name: Signal.like(value, name=f"wb_{name}") for name, value in held.items()}
        )
        with m.If(commit):
            m.d.sync += [getattr(wb, name).eq(value) for name, value in held.items()]
        # the ladder is written only when the event changed it: otherwise it is the one read
        new_bids = Signal(ladder_shape)
        new_asks = Signal(ladder_shape)
        m.d.comb += [
            new_bids.eq(Mux(wb_write & ~wb_side, wb_ladder.as_value(), wb.bids.as_value())),
            new_asks.eq(Mux(wb_write & wb_side, wb_ladder.as_value(), wb.asks.as_value())),
        ]
        after = top(new_bids, new_asks, wb.sticky, wb)
        unknown_after = Mux(wb_side, best_unknown(new_asks), best_unknown(new_bids))
        # ``unknown`` is part of ``stale`` already: a record changes with what the model sees
        seen = [name for name, _ in top_of_book_layout if name != "unknown"]
        differs = Cat(wb.before[n] for n in seen) != Cat(after[n] for n in seen)
        changed = differs & wb.changes

        with m.If(issue_second):
            m.d.sync += [
                saved_side.eq(r.side),
                saved_top.eq(current),
                saved_unknown.eq(best_unknown(old)),
                saved_sticky.eq(r.sticky),
            ]
        kept = Signal(entry_shape)  # the entry with the quantity taken off
        m.d.comb += [kept.eq(r.new_entry), kept.shares.eq(r.new_entry.shares - r.shares)]
        new_entry = Mux(r.adding, r.new_entry.as_value(), Mux(r.leaves, 0, kept.as_value()))
        for w, (wp, _) in enumerate(table):
            written = Mux(r.adding, r.add_ok & r.free_first[w], r.lookup_ok & r.hits[w])
            m.d.comb += [
                wp.addr.eq(Mux(clearing, clear_addr, s1_set)),
                wp.data.eq(Mux(clearing, 0, new_entry)),
                wp.en.eq(clear_sets | (writes & written)),
            ]
        for s, (wp, _) in enumerate(ladders):
            m.d.comb += [
                wp.addr.eq(Mux(clearing, clear_addr, wb_loc)),
                wp.data.eq(Mux(clearing, 0, wb_ladder.as_value())),
                wp.en.eq(clear_symbols | (wb_write & (wb_side == s))),
            ]
        m.d.comb += [
            mask_wp.addr.eq(Mux(clearing, clear_addr, self.mask_locate)),
            mask_wp.data.eq(clearing | self.mask_tracked),
            mask_wp.en.eq(clear_symbols | (self.mask_write & (self.mask_locate >> lb == 0))),
            state_wp.addr.eq(Mux(clearing, clear_addr, loc)),
            state_wp.data.eq(Mux(clearing, ord("T"), ev.code)),
            state_wp.en.eq(clear_symbols | (finish & (kind == EventKind.TRADING) & locate_ok)),
        ]

        # ------------------------------------------------------------ sticky stale flags
        # mark / recover pulses act after every event accepted before them: while one is in
        # flight they wait, composed in order (mark all, recover one, recover all each cycle)
        pending_mark, pending_clear = Signal(), Signal()  # the last "all" operation waiting
        pending_recover = Signal(self.symbols)  # single recoveries since then
        at_recover = _decode(m, self.recover_locate[:lb], lb, "at_recover")
        mark = ~self.recover_all & (self.mark_stale_all | pending_mark)
        clear = self.recover_all | pending_clear & ~self.mark_stale_all
        recover = Mux(
            self.recover_all,
            0,
            Mux(self.mark_stale_all, 0, pending_recover) | Mux(self.recover, at_recover, 0),
        )
        apply_now = ~busy | finish
        flagged = stale | Mux(finish & refused, at_loc, 0)
        everything = (1 << self.symbols) - 1
        with m.If(apply_now):
            m.d.sync += [
                stale.eq(Mux(clear, 0, Mux(mark, everything, flagged)) & ~recover),
                pending_mark.eq(0),
                pending_clear.eq(0),
                pending_recover.eq(0),
            ]
        with m.Else():
            m.d.sync += [
                pending_mark.eq(mark),
                pending_clear.eq(clear),
                pending_recover.eq(recover),
            ]
        m.d.comb += self.stale_now.eq(stale.bit_select(self.stale_locate[:lb], 1))

        with m.If(wb_record):
            m.d.sync += [self.o.valid.eq(changed), self.o.payload.eq(after)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # ------------------------------------------------------------ counters
        outcomes = {
            "events": 1,
            "applied": r.active & ~refused,
            "ignored": r.ignored,
            "bad_locate": r.bad_locate,
            "untracked": r.untracked,
            "unknown_ref": r.unknown_ref,
            "locate_mismatch": r.mismatch,
            "overfill": r.do_remove & r.overfill,
            "duplicate_ref": r.dup,
            "bad_add": r.bad_add,
            "bad_side": r.bad_side,
            "table_full": r.full,
            "levels_evicted": update.evicted,  # only an enabled add evicts
        }
        # counted at the write-back, with ``best_unknown`` (from the ladder written back)
        counted = Signal(len(outcomes), name="wb_outcomes")
        with m.If(finish):
            m.d.sync += counted.eq(Cat(*outcomes.values()))
        outcomes = dict(zip(outcomes, counted))
        outcomes["best_unknown"] = wb.active & unknown_after & ~wb.unknown_before
        with m.If(wb_record):
            for name, cond in outcomes.items():
                counter = getattr(self.counters, name)
                m.d.sync += counter.eq(counter + cond)
        return m
