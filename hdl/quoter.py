"""The gateware quote generator and risk gate, bit for bit the reference ``QuoterModel``.

:class:`Quoter` takes top-of-book records, trading-state changes, fills, a kill switch and
control requests, and emits OUCH 5.0 order actions (:data:`~tick2quote.hdl.orders.order_layout`)
in exactly the model's order with the model's fields and counters.

Operation. Events are taken one at a time from the first input that has one: ``ctl``,
``fill``, ``trading``, ``tob`` (and kill sweep steps). An event needs its symbol's state
(parameters, account, book-independent terms :mod:`.pricing_terms`, live orders, meta, last
book), which lives in block RAM behind a one-entry coherent cache (:mod:`.quoter_cache`). A
``tob`` whose symbol the cache holds is taken straight into *evaluation* (cycle 0); any other
event is first taken into a one-entry *fetch* stage, which requests its state (a registered
request: the read lands three cycles after the event is taken; a fill looks its UserRefNum up
first) and then enters evaluation. Evaluation copies the event and its state into registers in
the cycle it starts; the quote arithmetic (:mod:`.pricing_quote`: products, sums, corrections,
compares; no division) has its last results registered in cycle 5, where the decision
(:mod:`.quoterplan`) is made in one cycle: the event *commits*, loading its orders into the
output slots (bid, then ask; the first order valid on ``o`` in cycle 6) and its effects into
plan registers, which write the memories and counters in cycle 6. The next event can start in
cycle 6 (it sees those writes through the cache). An event that emits orders commits only when
the output slots are empty; nothing is ever dropped for back-pressure. ``o.payload`` is the bid
slot while it is valid, else the ask slot (one multiplexer after the slot registers).

Timing (cycles from the cycle a ``tob`` is taken, valid and ready, to its first order valid):

- :attr:`latency` + 1 = **6** when the cache holds the symbol, :attr:`miss_latency` + 1 = 9
  otherwise. The cache is filled ahead of time from the ``lookahead`` hint (below) and from a
  ``tob`` (or any event) waiting on its input while the quoter is busy, so under load every
  ``tob`` takes 6 cycles and ``tob`` records are taken one per 6 cycles. Back-to-back records
  of one symbol need no gap: the next one reads the previous one's writes through the cache.
- ``trading`` events take 4 + 6 cycles; kill sweep steps about 4 cycles per symbol; control
  requests and fills :attr:`ctl_latency` / :attr:`fill_latency` cycles after their state is read
  (they recompute the symbol's terms).

``lookahead`` (optional hint): a locate (``valid`` for one or more cycles) whose ``tob`` will
come soon, for example from the book in the cycle it accepts an event (its top of book is on
``o`` four cycles later). When no event waits, the quoter reads that symbol's state into the
cache in the same cycle (the hint drives the block RAM address directly), so the ``tob`` then
takes the 6-cycle path. A wrong, late or missing hint only costs time; tied to 0, a ``tob``
arriving at an idle quoter takes 9 cycles.

Time. The throttle of step 9 measures ``cycle`` (the free-running counter input) in the cycle an
event is taken from its input; ``cycle - last >= refresh_cycles`` is computed on 32 bits (wraps
after 2**32 cycles, 27 s at 156.25 MHz; the model's unbounded integers agree until then). Orders
carry ``stamp``: the ``tob`` record's stamp, the ``cycle`` a ``trading`` event was taken, or the
``cycle`` in which ``kill`` rose.

Kill switch. A rising edge of ``kill`` (``kill`` high, low the cycle before) blocks every input
from that cycle on; after the events already taken the quoter sweeps every locate in ascending
order, cancelling live orders bid then ask (one ``pull_kill`` per symbol that had any). Events
taken while ``kill`` is high are pulled (``pull_kill``). So the model's ``set_kill(True, c)``
sits between the events taken before cycle ``c`` and those after it.

Control port. ``ctl`` requests write or read one field (:class:`~.quoterstate.Field`) of one
locate; a read (parameters, position, cash) answers on ``ctl_data``. A write of a value the
model would refuse (``QuoteParams.validate``), to a read-only field, or any request for a locate
>= ``symbols`` counts ``bad_ctl`` and changes nothing (a refused read answers 0). After reset
every symbol has the ``default`` parameters, zero position and cash, no live order and
trading state ``'T'``; the reset sweep (``clearing``) takes ``max(symbols, ref_window / 2)``
cycles. ``tob`` and ``trading`` events for a locate >= ``symbols`` count ``bad_locate`` and are
otherwise ignored (the model would evaluate them).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.models.pricing import QuoteParams
from .book import top_of_book_layout
from .orders import fill_layout, order_layout
from .pricing_quote import DEPTH, quote_datapath
from .quoter_cache import RefTable, StateCache
from .quoter_events import event_datapath
from .quoterplan import EventKind, evaluation_inputs, evaluation_plan, plan_layout
from .quoterstate import (
    COUNTERS,
    STATE,
    bbo_layout,
    counter_layout,
    ctl_layout,
    lookahead_layout,
    ref_layout,
    state_reset,
    trading_layout,
)
from .sweep import reset_sweep

__all__ = ["Quoter", "EventKind"]  # EventKind: from .quoterplan

#: Commit cycle of a kill sweep step (its plan is registered once).
_KILL_LATENCY = 2


def _power_of_two(name: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or not low <= value <= high or value & (value - 1):
        raise ValueError(f"{name} must be a power of two in {low} .. {high}, not {value!r}")
    return value.bit_length() - 1


class Quoter(wiring.Component):
    """Quote generator and risk gate (see the module documentation).

    Parameters
    ----------
    symbols:
        Locates ``0 .. symbols - 1`` are quoted (a power of two, 2 .. 65536).
    ref_window:
        Depth of the UserRefNum -> (locate, side) table for fills (a power of two, 2 .. 2**20);
        the model must be built with the same ``ref_window``.
    default:
        The parameters every symbol has after reset (``QuoteParams()`` when omitted).
    first_user_ref_num:
        The first UserRefNum issued (1 .. 2**32 - 1), as the model's.
    adder_arity:
        Terms summed per pipeline stage in the adder trees of the fill and terms products (2 or
        3): 3 makes fills and parameter writes shorter, 2 is faster logic.

    Ports
    -----
    tob: in stream of :data:`~.book.top_of_book_layout`. trading: in stream of
    :data:`~.quoterstate.trading_layout`. fill: in stream of :data:`~.orders.fill_layout`.
    ctl: in stream of :data:`~.quoterstate.ctl_layout`; ctl_data: out stream of 64-bit answers.
    lookahead: :data:`~.quoterstate.lookahead_layout`, an optional hint (may stay 0). kill:
    level. cycle: the free-running 32-bit cycle counter. o: out stream of
    :data:`~.orders.order_layout`. counters: :data:`~.quoterstate.counter_layout`. clearing: the
    reset sweep is running.

    Attributes
    ----------
    latency / miss_latency: the commit cycle of a ``tob`` taken with its symbol cached / not
    (its first order is valid one cycle later). ctl_latency / fill_latency / kill_latency: the
    commit cycle of those events counted from the cycle they start evaluation (known after
    elaboration).
    """

    def __init__(
        self,
        symbols: int = 1024,
        ref_window: int = 4096,
        *,
        default: QuoteParams | None = None,
        first_user_ref_num: int = 1,
        adder_arity: int = 2,
    ):
        self.locate_bits = _power_of_two("symbols", symbols, 2, 1 << 16)
        self.ref_bits = _power_of_two("ref_window", ref_window, 2, 1 << 20)
        if default is None:
            default = QuoteParams()
        if not isinstance(default, QuoteParams):
            raise ValueError(f"default must be a QuoteParams, not {default!r}")
        default.validate()
        if not isinstance(first_user_ref_num, int) or not 1 <= first_user_ref_num < 2**32:
            raise ValueError(
                f"first_user_ref_num must be in 1 .. 4294967295, not {first_user_ref_num!r}"
            )
        if adder_arity not in (2, 3):
            raise ValueError(f"adder_arity must be 2 or 3, not {adder_arity!r}")
        self.symbols, self.ref_window = symbols, ref_window
        self.default, self.first_user_ref_num = default, first_user_ref_num
        self.adder_arity = adder_arity
        self.latency = DEPTH
        self.miss_latency = DEPTH + 3
        self.kill_latency = _KILL_LATENCY
        self.fill_latency = None  # known after elaboration
        self.ctl_latency = None
        super().__init__(
            {
                "tob": In(stream.Signature(top_of_book_layout)),
                "trading": In(stream.Signature(trading_layout)),
                "fill": In(stream.Signature(fill_layout)),
                "ctl": In(stream.Signature(ctl_layout)),
                "ctl_data": Out(stream.Signature(64)),
                "lookahead": In(lookahead_layout),
                "kill": In(1),
                "cycle": In(32),
                "o": Out(stream.Signature(order_layout)),
                "counters": Out(counter_layout),
                "clearing": Out(1),
            }
        )

    def elaborate(self, platform):  # noqa: PLR0915 - one control flow, read top to bottom
        m = Module()
        lb = self.locate_bits
        bank_bits = self.ref_bits - 1
        clear_bits = max(lb, bank_bits, 1)
        layout = plan_layout(lb, bank_bits)

        # ------------------------------------------------------------ reset sweep, memories
        clearing, clear_addr = reset_sweep(m, 1 << clear_bits)
        m.d.comb += self.clearing.eq(clearing)
        plan_valid = Signal()  # the plan registers write this cycle
        cache = StateCache(
            m, self.symbols, STATE, state_reset(self.default), clearing, clear_addr, plan_valid
        )

        def ok(locate):
            return (locate >> lb) == 0

        def hit(locate):
            return cache.hit(locate)

        ref_table = RefTable(m, bank_bits, clearing, clear_addr)  # read for fills only

        # ------------------------------------------------------------ kill switch
        kill_q = Signal()
        m.d.sync += kill_q.eq(self.kill)
        rise = self.kill & ~kill_q
        pending, sweeping = Signal(), Signal()
        pending_cycle, kill_cycle = Signal(32), Signal(32)
        sweep_locate = Signal(lb)

        # ------------------------------------------------------------ output buffer, answers
        slot = [Signal(order_layout, name=f"slot{k}") for k in (0, 1)]
        slot_valid = [Signal(name=f"slot{k}_valid") for k in (0, 1)]
        # the bid's order in slot 0, the ask's in slot 1; ``o`` shows the first valid one
        m.d.comb += [
            self.o.valid.eq(slot_valid[0] | slot_valid[1]),
            self.o.payload.eq(Mux(slot_valid[0], slot[0].as_value(), slot[1].as_value())),
        ]
        with m.If(self.o.ready & slot_valid[0]):
            m.d.sync += slot_valid[0].eq(0)
        with m.Elif(self.o.ready):
            m.d.sync += slot_valid[1].eq(0)
        room = ~slot_valid[0] & ~slot_valid[1]
        resp_valid = Signal()
        resp = Signal(64)
        m.d.comb += [self.ctl_data.valid.eq(resp_valid), self.ctl_data.payload.eq(resp)]
        with m.If(self.ctl_data.ready):
            m.d.sync += resp_valid.eq(0)

        # ------------------------------------------------------------ fetch stage
        f_valid = Signal()
        f_kind = Signal(EventKind)
        f_locate = Signal(16)
        f_cycle = Signal(32)
        f_kill = Signal()
        f_tob = Signal(top_of_book_layout)
        f_mid = Signal(32)
        f_book_wait = Signal()  # a trading event waits for its stored book
        f_state = Signal(8)
        f_sticky = Signal()  # a trading event's stale flag of the book, as it is now
        f_fill = Signal(fill_layout)
        f_ctl = Signal(ctl_layout)
        f_entry = Signal(ref_layout)
        f_lookup = Signal(2)  # a fill's table lookup: cycles to go
        f_stateful = Signal()  # needs the symbol's state

        # ------------------------------------------------------------ evaluation registers
        busy = Signal()
        kind = Signal(EventKind)
        step = Signal(range(64))
        due = Signal()
        shapes = {"locate": 16, "stamp": 32, "cycle": 32, "kill": 1, "state": 8, "mid": 32}
        shapes |= {"book": bbo_layout, "fill": fill_layout, "ctl": ctl_layout}
        shapes |= {"entry": ref_layout, **STATE}
        ev = SimpleNamespace(**{n: Signal(v, name=f"ev_{n}") for n, v in shapes.items()})
        ev.live = [ev.live_bid, ev.live_ask]
        plan = Signal(layout, name="plan", reset_less=True)  # read only while plan_valid
        zero = Signal(layout, name="zero_plan")  # 0, but read from a signal (evaluation_plan)
        m.d.comb += zero.eq(plan.as_value() & 0)

        # ------------------------------------------------------------ taking events
        # inputs in priority order (kill sweep steps, ctl, fill, trading, tob); the fetch stage
        # loads the first one every cycle it is empty and keeps it when it is taken
        ctl_v, fill_v, trad_v = self.ctl.valid, self.fill.valid, self.trading.valid
        tob_v, tob_p = self.tob.valid, self.tob.payload
        sweep = pending | sweeping
        free = ~busy
        open_in = ~clearing & ~rise & ~sweep & ~f_valid & free
        tob_open = open_in & ~ctl_v & ~fill_v & ~trad_v
        fast = tob_open & tob_v & (~ok(tob_p.locate) | hit(tob_p.locate))
        take_fill = open_in & ~ctl_v & fill_v & ~plan_valid  # the table is read, not written
        m.d.comb += [
            self.ctl.ready.eq(open_in),
            self.fill.ready.eq(open_in & ~ctl_v & ~plan_valid),
            self.trading.ready.eq(open_in & ~ctl_v & ~fill_v),
            self.tob.ready.eq(tob_open),
        ]
        later = trad_v | (tob_v & ~fast)  # trading, or a tob that is not taken at once
        accepted = open_in & (ctl_v | (fill_v & ~plan_valid) | (~fill_v & later))
        load_kill = sweep & ~f_valid & ~clearing
        in_locate = Mux(
            sweep,
            sweep_locate,
            Mux(
                ctl_v,
                self.ctl.payload.locate,
                Mux(trad_v, self.trading.payload.locate, tob_p.locate),
            ),
        )
        in_kind = Mux(
            sweep,
            EventKind.KILL.value,
            Mux(
                ctl_v,
                EventKind.CTL.value,
                Mux(fill_v, EventKind.FILL.value, Mux(trad_v, EventKind.TRADING.value, 0)),
            ),
        )
        in_fill = ~sweep & ~ctl_v & fill_v
        in_trading = ~sweep & ~ctl_v & ~fill_v & trad_v
        with m.If(~f_valid):
            m.d.sync += [
                f_valid.eq(accepted | load_kill),
                f_kind.as_value().eq(in_kind),
                f_locate.eq(in_locate),
                f_cycle.eq(self.cycle),
                f_kill.eq(self.kill),
                f_stateful.eq(ok(in_locate) & ~in_fill),
                f_tob.eq(tob_p),
                f_mid.eq((tob_p.bid_px + tob_p.ask_px) >> 1),
                f_book_wait.eq(in_trading & ok(in_locate)),
                f_state.eq(self.trading.payload.state),
                f_sticky.eq(self.trading.payload.stale),
                f_fill.eq(self.fill.payload),
                f_ctl.eq(self.ctl.payload),
                f_lookup.eq(Mux(in_fill, 2, 0)),
            ]
        with m.If(load_kill):
            m.d.sync += sweep_locate.eq(sweep_locate + 1)
            m.d.sync += sweeping.eq(sweep_locate != self.symbols - 1)
            with m.If(~sweeping):
                m.d.sync += [pending.eq(0), kill_cycle.eq(pending_cycle)]
        with m.If(rise):
            m.d.sync += [pending.eq(1), pending_cycle.eq(self.cycle)]

        # a fill looks its UserRefNum up first (two cycles), then reads its symbol's state
        m.d.comb += [
            ref_table.rd_addr.eq(self.fill.payload.user_ref[1:]),
            ref_table.rd_en.eq(take_fill),
        ]
        entry = Signal(ref_layout)
        m.d.comb += entry.eq(
            Mux(f_fill.user_ref[0], ref_table.raw[1].as_value(), ref_table.raw[0].as_value())
        )
        known = entry.valid & (entry.ref == f_fill.user_ref)
        with m.If(f_valid & (f_lookup != 0)):  # (the fetch stage loads only while empty)
            m.d.sync += f_lookup.eq(f_lookup - 1)
            with m.If(f_lookup == 1):
                m.d.sync += [f_entry.eq(entry), f_locate.eq(entry.locate), f_stateful.eq(known)]

        # the read port. A registered request, made the cycle before: the fetch stage's symbol,
        # else the first waiting input's (the read of an event being taken, or a prefetch while
        # the quoter is busy); else the hint, straight from its port (so a hint two cycles
        # ahead of its tob is in the cache in time). A cached locate is simply read again. The
        # block RAM address sees only registers and the hint: its nets span the die.
        look = self.lookahead
        waiting = sweep | ctl_v | trad_v | tob_v
        req = Signal(name="read_req")
        req_addr = Signal(lb, name="read_req_addr")
        f_reads = Mux(f_lookup == 1, known, f_stateful & (f_lookup == 0))
        m.d.sync += [
            req.eq(Mux(f_valid, f_reads, waiting & ok(in_locate))),
            req_addr.eq(Mux(f_valid, Mux(f_lookup == 1, entry.locate, f_locate), in_locate)[:lb]),
        ]
        m.d.comb += [
            cache.rd_addr.eq(Mux(req, req_addr, look.locate[:lb])),
            cache.rd_en.eq(cache.rd_ok & (req | (look.valid & ok(look.locate)))),
        ]

        # a trading event evaluates the symbol's stored book: copied once the cache has it
        stored = cache.word["bbo"]  # (no write this cycle: ``rd_ok``)
        with m.If(f_valid & f_book_wait & hit(f_locate) & cache.rd_ok):
            m.d.sync += [
                f_book_wait.eq(0),
                f_tob.bid_px.eq(stored.bid_px),
                f_tob.bid_sz.eq(stored.bid_sz),
                f_tob.ask_px.eq(stored.ask_px),
                f_tob.ask_sz.eq(stored.ask_sz),
                f_tob.stale.eq(f_sticky | stored.unknown),
                f_tob.unknown.eq(stored.unknown),
                f_mid.eq((stored.bid_px + stored.ask_px) >> 1),
            ]
        # the fetch stage starts evaluation when its state is in the cache
        move = f_valid & free & (f_lookup == 0) & ~f_book_wait & (~f_stateful | hit(f_locate))
        with m.If(move):
            m.d.sync += f_valid.eq(0)
        take = fast | move

        # ------------------------------------------------------------ starting evaluation
        # the evaluation registers load every idle cycle (from the tob input or the fetch
        # stage); ``take`` makes them hold (busy)
        tob_fetched = top_of_book_layout(Mux(fast, tob_p.as_value(), f_tob.as_value()))
        with m.If(take):
            m.d.sync += busy.eq(1)
        with m.If(~busy):
            m.d.sync += [
                kind.as_value().eq(Mux(fast, EventKind.TOB.value, f_kind.as_value())),
                ev.locate.eq(Mux(fast, tob_p.locate, f_locate)),
                ev.stamp.eq(tob_fetched.stamp),
                ev.cycle.eq(Mux(fast, self.cycle, f_cycle)),
                ev.kill.eq(Mux(fast, self.kill, f_kill)),
                ev.state.eq(f_state),
                ev.book.bid_px.eq(tob_fetched.bid_px),
                ev.book.bid_sz.eq(tob_fetched.bid_sz),
                ev.book.ask_px.eq(tob_fetched.ask_px),
                ev.book.ask_sz.eq(tob_fetched.ask_sz),
                ev.book.stale.eq(tob_fetched.stale),
                ev.book.unknown.eq(tob_fetched.unknown),
                ev.mid.eq(Mux(fast, (tob_p.bid_px + tob_p.ask_px) >> 1, f_mid)),
                ev.fill.eq(f_fill),
                ev.ctl.eq(f_ctl),
                ev.entry.eq(f_entry),
            ]
            for name in STATE:
                m.d.sync += getattr(ev, name).eq(cache.current[name])

        # ------------------------------------------------------------ evaluation datapaths
        is_tob = kind == EventKind.TOB
        is_eval = is_tob | (kind == EventKind.TRADING)
        params, terms, account = ev.params, ev.terms, ev.account
        book = SimpleNamespace(bid_px=ev.book.bid_px, ask_px=ev.book.ask_px, mid=ev.mid)
        live_px = (ev.live[0].price, ev.live[1].price)

        next_ref = Signal(33, init=self.first_user_ref_num)
        flags, refs = evaluation_inputs(m, ev, is_tob, ok(ev.locate), next_ref)
        quote = quote_datapath(m, book, params, terms, account, live_px, flags.gates)
        eval_plan = evaluation_plan(m, flags, quote, refs, layout, zero)

        # fills, control requests, kill steps
        slow_plan, self.ctl_latency, self.fill_latency = event_datapath(
            m,
            kind,
            ev,
            locate_ok=ok(ev.locate),
            kill_cycle=kill_cycle,
            layout=layout,
            arity=self.adder_arity,
        )

        # ------------------------------------------------------------ commit
        latency = Signal(range(64))
        with m.Switch(kind):
            with m.Case(EventKind.TOB, EventKind.TRADING):
                m.d.comb += latency.eq(self.latency)
            with m.Case(EventKind.FILL):
                m.d.comb += latency.eq(self.fill_latency)
            with m.Case(EventKind.CTL):
                m.d.comb += latency.eq(self.ctl_latency)
            with m.Default():
                m.d.comb += latency.eq(self.kill_latency)
        # cycles since the event was taken (1 in the cycle after), and "commit due"
        with m.If(busy):
            m.d.sync += [step.eq(Mux(step == 63, step, step + 1)), due.eq(step + 1 >= latency)]
        with m.Else():
            m.d.sync += [step.eq(1), due.eq(0)]
        emits = is_eval | (kind == EventKind.KILL)
        ctl_read = (kind == EventKind.CTL) & ~ev.ctl.write
        commit = busy & due & (~emits | room) & ~(ctl_read & resp_valid)
        chosen = Signal(layout, name="chosen_plan")
        m.d.comb += chosen.eq(Mux(is_eval, eval_plan.as_value(), slow_plan.as_value()))
        m.d.sync += [plan_valid.eq(commit), plan.eq(chosen)]  # the plan is used when valid
        with m.If(commit):
            m.d.sync += busy.eq(0)
        with m.If(commit & emits):
            valid = chosen.order_valid
            m.d.sync += [
                slot[0].eq(chosen.orders[0]),
                slot[1].eq(chosen.orders[1]),
                slot_valid[0].eq(valid[0]),
                slot_valid[1].eq(valid[1]),
                # sides set here, not as comb constants in the plan: Icarus and Verilator never
                # evaluate a combinational process that reads no signal
                slot[0].side.eq(0),
                slot[1].side.eq(1),
            ]

        # ------------------------------------------------------------ the plan's writes
        with m.If(plan_valid):
            for name in COUNTERS:
                counter = getattr(self.counters, name)
                m.d.sync += counter.eq(counter + getattr(plan.counts, name))
            m.d.sync += next_ref.eq(next_ref + plan.advance)
            with m.If(plan.answer_valid):
                m.d.sync += [resp_valid.eq(1), resp.eq(slow_plan.answer)]
        m.d.comb += [cache.wr_addr.eq(plan.locate), cache.wr_addr_next.eq(chosen.locate)]
        # Only fills and control requests write the parameters, the account and the terms (and
        # answer): their words come straight from the slow-event plan register, which still
        # holds the committed event's plan in this cycle (the evaluation registers hold until
        # the commit), so the plan register copies only what both kinds of plan write.
        writes = {
            "params": (plan.params_write, slow_plan.params),
            "account": (plan.account_write, slow_plan.account),
            "terms": (plan.terms_write, slow_plan.terms),
            "live_bid": (plan.live_write[0], plan.live[0]),
            "live_ask": (plan.live_write[1], plan.live[1]),
            "meta": (plan.meta_write, plan.meta),
            "bbo": (plan.bbo_write, plan.bbo),
        }
        for name, (enable, word) in writes.items():
            m.d.comb += [cache.wr_en[name].eq(plan_valid & enable), cache.wr_data[name].eq(word)]
        for bank in (0, 1):
            m.d.comb += [
                ref_table.wr_en[bank].eq(plan_valid & plan.ref_write[bank]),
                ref_table.wr_index[bank].eq(plan.ref_index[bank]),
                ref_table.wr_data[bank].eq(plan.ref[bank]),
            ]
        return m
