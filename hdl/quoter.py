"""The gateware quote generator and risk gate, bit for bit the reference ``QuoterModel``.

:class:`Quoter` takes top-of-book records, trading-state changes, fills, a kill switch and
control requests, and emits OUCH 5.0 order actions (:data:`~tick2quote.hdl.orders.order_layout`)
in exactly the model's order with the model's fields and counters.

Operation. The quoter handles **one event at a time**; an event is taken from the first of these
that has one: kill sweep step, ``ctl``, ``fill``, ``trading``, ``tob``. An event's inputs are
registered when it is taken (cycle 0; a ``tob`` record's mid is computed on the way in); the
per-symbol memories answer in cycle 1 and their words are registered (held) from cycle 2; the
arithmetic (:mod:`.pricing`) settles by cycle ``latency - 1``; every decision is then registered
as a *plan* (:mod:`.quoterplan`) and the event *commits* in cycle ``latency``: memories are
written, counters move and the orders are loaded into a two-entry output buffer (the first order
is valid on ``o`` in cycle ``latency + 1``). The next event is taken in the cycle after the
commit, so evaluations run at one per ``latency + 1`` cycles. An event that emits orders
commits only when the output buffer is empty; nothing is ever dropped for back-pressure. Fills
commit in cycle ``fill_latency`` (their symbol is known from the UserRefNum table in cycle 2),
control requests in ``ctl_latency`` (a write of ``spread_bps``, ``band_bps`` or
``min_edge_bps`` also stores the parameter's scale, :data:`~.pricing.SCALES`), kill sweep steps
in ``kill_latency``.

Time. The throttle of step 9 measures ``cycle`` (the free-running counter input) in the cycle an
event is taken; ``cycle - last >= refresh_cycles`` is computed on 32 bits (wraps after 2**32
cycles, 27 s at 156.25 MHz; the model's unbounded integers agree until then). Orders carry
``stamp``: the ``tob`` record's stamp, the ``cycle`` a ``trading`` event was taken, or the
``cycle`` in which ``kill`` rose.

Kill switch. A rising edge of ``kill`` (``kill`` high, low the cycle before) blocks every input
from that cycle on; once the event in flight has committed the quoter sweeps every locate in
ascending order, cancelling live orders bid then ask (one ``pull_kill`` per symbol that had
any). Events taken while ``kill`` is high are pulled (``pull_kill``). So the model's
``set_kill(True, c)`` sits between the events taken before cycle ``c`` and those after it.

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

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sim.models.pricing import QuoteParams
from .book import top_of_book_layout
from .orders import fill_layout, order_layout
from .pricing import SCALES, Pipeline, Staged, product, quote_datapath
from .quoterplan import EventKind, decide
from .quoterstate import (
    COUNTERS,
    PARAM_FIELDS,
    Field,
    account_layout,
    bbo_layout,
    counter_layout,
    ctl_layout,
    live_layout,
    meta_layout,
    param_word,
    params_layout,
    ref_layout,
    scales_layout,
    scales_word,
    trading_layout,
)
from .sweep import reset_sweep

__all__ = ["Quoter", "EventKind"]  # EventKind: from .quoterplan


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
        Terms summed per pipeline stage in the multipliers' adder trees (2 or 3): 3 saves cycles,
        2 is faster logic.

    Ports
    -----
    tob: in stream of :data:`~.book.top_of_book_layout`. trading: in stream of
    :data:`~.quoterstate.trading_layout`. fill: in stream of :data:`~.orders.fill_layout`.
    ctl: in stream of :data:`~.quoterstate.ctl_layout`; ctl_data: out stream of 64-bit answers.
    kill: level. cycle: the free-running 32-bit cycle counter. o: out stream of
    :data:`~.orders.order_layout`. counters: :data:`~.quoterstate.counter_layout`.
    clearing: the reset sweep is running. latency / fill_latency / ctl_latency / kill_latency:
    the commit cycles (Python attributes, known after construction).
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
        self.latency = None  # known after elaboration
        self.fill_latency = None
        super().__init__(
            {
                "tob": In(stream.Signature(top_of_book_layout)),
                "trading": In(stream.Signature(trading_layout)),
                "fill": In(stream.Signature(fill_layout)),
                "ctl": In(stream.Signature(ctl_layout)),
                "ctl_data": Out(stream.Signature(64)),
                "kill": In(1),
                "cycle": In(32),
                "o": Out(stream.Signature(order_layout)),
                "counters": Out(counter_layout),
                "clearing": Out(1),
            }
        )

    def elaborate(self, platform):  # noqa: PLR0915 - one datapath, read top to bottom
        m = Module()
        lb = self.locate_bits
        bank_bits = self.ref_bits - 1
        clear_bits = max(lb, bank_bits, 1)

        # ------------------------------------------------------------ reset sweep
        clearing, clear_addr = reset_sweep(m, 1 << clear_bits)
        m.d.comb += self.clearing.eq(clearing)
        clear_symbols = clearing & (clear_addr >> lb == 0)
        clear_refs = clearing & (clear_addr >> bank_bits == 0)

        # ------------------------------------------------------------ memories
        addr = Signal(lb)  # state/params read address of this cycle
        cur = Signal(lb)  # the address of the data the read ports show
        m.d.sync += cur.eq(addr)

        def memory(name, shape, depth, read_addr, init=()):
            # not transparent: an event is taken no earlier than the cycle after the last
            # commit, so a read never meets a write of the same cycle; the read data is
            # registered (block RAM clock-to-out is most of a cycle)
            mem = Memory(shape=shape, depth=depth, init=list(init))
            m.submodules[name] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += rp.addr.eq(read_addr)
            held = Signal(shape, name=f"{name}_held")
            m.d.sync += held.eq(rp.data)
            return wp, held

        params_mem = {}
        for name, (width, is_signed) in PARAM_FIELDS.items():
            shape = signed(width) if is_signed else width
            params_mem[name] = memory(f"param_{name}", shape, self.symbols, addr)
        account_wp, account_rp = memory("account", account_layout, self.symbols, addr)
        live_ports = [memory(f"live_{s}", live_layout, self.symbols, addr) for s in ("bid", "ask")]
        meta_wp, meta_rp = memory("meta", meta_layout, self.symbols, addr)
        bbo_wp, bbo_rp = memory("bbo", bbo_layout, self.symbols, addr)
        scales_wp, scales_rp = memory("scales", scales_layout, self.symbols, addr)
        depth = 2  # the memories' read data (held) is valid from this cycle of an event
        ref_addr = Signal(max(bank_bits, 1))
        ref_ports = [
            memory(f"refs{b}", ref_layout, 1 << bank_bits, ref_addr[:bank_bits]) for b in (0, 1)
        ]

        params = Signal(params_layout)
        for name, (_, rp) in params_mem.items():
            m.d.comb += getattr(params, "tick100" if name == "tick" else name).eq(rp)
        account, meta, bbo_mem, scales = account_rp, meta_rp, bbo_rp, scales_rp
        live = [rp for _, rp in live_ports]

        # ------------------------------------------------------------ event registers
        busy = Signal()
        kind = Signal(EventKind)
        step = Signal(range(64))
        ev_locate = Signal(16)
        ev_bbo = Signal(bbo_layout)
        ev_stamp = Signal(32)
        ev_cycle = Signal(32)
        ev_kill = Signal()
        ev_state = Signal(8)
        ev_fill = Signal(fill_layout)
        ev_ctl = Signal(ctl_layout)
        with m.If(busy):
            m.d.sync += step.eq(Mux(step == 63, step, step + 1))

        # ------------------------------------------------------------ kill switch
        kill_q = Signal()
        m.d.sync += kill_q.eq(self.kill)
        rise = self.kill & ~kill_q
        pending, sweeping = Signal(), Signal()
        pending_cycle, kill_cycle = Signal(32), Signal(32)
        sweep_locate = Signal(lb)

        # ------------------------------------------------------------ output buffer
        slot = [Signal(order_layout, name=f"slot{k}") for k in (0, 1)]
        slot_valid = [Signal(name=f"slot{k}_valid") for k in (0, 1)]
        m.d.comb += [self.o.valid.eq(slot_valid[0]), self.o.payload.eq(slot[0])]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [slot[0].eq(slot[1]), slot_valid[0].eq(slot_valid[1])]
            m.d.sync += slot_valid[1].eq(0)
        room = ~slot_valid[0] & ~slot_valid[1]
        resp_valid = Signal()
        resp = Signal(64)
        m.d.comb += [self.ctl_data.valid.eq(resp_valid), self.ctl_data.payload.eq(resp)]
        with m.If(self.ctl_data.ready):
            m.d.sync += resp_valid.eq(0)

        # ------------------------------------------------------------ arithmetic
        is_tob = kind == EventKind.TOB
        book = Signal(bbo_layout)
        m.d.comb += book.eq(Mux(is_tob, ev_bbo.as_value(), bbo_mem.as_value()))
        dp = quote_datapath(
            m,
            params,
            scales,
            book.bid_px,
            book.ask_px,
            book.mid,
            account.position,
            account.cash,
            depth=depth,
            arity=self.adder_arity,
        )

        pipe = Pipeline(m, "fill")
        traded = product(
            pipe,
            Staged(ev_fill.quantity, 1),
            Staged(ev_fill.price, 1),
            arity=self.adder_arity,
            name="traded",
        )
        fill_sell = Signal()
        signed_qty = Mux(fill_sell, -ev_fill.quantity, ev_fill.quantity)
        # the fill's symbol is known from the UserRefNum table (held) in cycle 2, its account
        # (held) from cycle 4
        account_depth = depth + 2
        pos_sum = pipe.reg(
            account.position + signed_qty, Staged(0, account_depth), shape=signed(34)
        )
        cash_sum = pipe.reg(
            Mux(fill_sell, account.cash + traded.value, account.cash - traded.value),
            Staged(0, account_depth),
            traded,
            shape=signed(66),
        )
        # a parameter write stores the scale (parameter x reciprocal) of the three scaled fields
        ctl_scale = product(
            pipe,
            Staged(ev_ctl.value[:16], 1),
            Staged(Const(SCALES["half"].factor), 0),
            arity=self.adder_arity,
            name="scale",
        )
        assert len({sc.factor for sc in SCALES.values()}) == 1
        # decisions are registered (the plan) and carried out one cycle later
        self.eval_latency = dp.depth + 1
        self.fill_latency = max(pos_sum.depth, cash_sum.depth) + 1
        self.ctl_latency = max(ctl_scale.depth, depth) + 1
        self.kill_latency = depth + 1
        self.latency = self.eval_latency

        # ------------------------------------------------------------ commit conditions
        needs_room = (
            (kind == EventKind.TOB) | (kind == EventKind.TRADING) | (kind == EventKind.KILL)
        )
        latency = Signal(range(64))
        with m.Switch(kind):
            with m.Case(EventKind.TOB, EventKind.TRADING):
                m.d.comb += latency.eq(self.eval_latency)
            with m.Case(EventKind.FILL):
                m.d.comb += latency.eq(self.fill_latency)
            with m.Case(EventKind.CTL):
                m.d.comb += latency.eq(self.ctl_latency)
            with m.Default():
                m.d.comb += latency.eq(self.kill_latency)
        ctl_read = (kind == EventKind.CTL) & ~ev_ctl.write
        commit = busy & (step >= latency) & (~needs_room | room) & ~(ctl_read & resp_valid)
        # the next event is taken the cycle after a commit, when its writes are done
        free = ~clearing & ~busy

        # ------------------------------------------------------------ taking events
        take_kill = free & (pending | sweeping)
        open_inputs = free & ~rise & ~pending & ~sweeping
        take_ctl = open_inputs & self.ctl.valid
        take_fill = open_inputs & ~self.ctl.valid & self.fill.valid
        take_trading = open_inputs & ~self.ctl.valid & ~self.fill.valid & self.trading.valid
        take_tob = (
            open_inputs & ~self.ctl.valid & ~self.fill.valid & ~self.trading.valid & self.tob.valid
        )
        m.d.comb += [
            self.ctl.ready.eq(open_inputs),
            self.fill.ready.eq(open_inputs & ~self.ctl.valid),
            self.trading.ready.eq(open_inputs & ~self.ctl.valid & ~self.fill.valid),
            self.tob.ready.eq(
                open_inputs & ~self.ctl.valid & ~self.fill.valid & ~self.trading.valid
            ),
        ]
        take = take_kill | take_ctl | take_fill | take_trading | take_tob

        fill_lookup = busy & (kind == EventKind.FILL) & (step == depth)
        bank = ev_fill.user_ref[0]
        entry = Signal(ref_layout)
        m.d.comb += entry.eq(Mux(bank, ref_ports[1][1].as_value(), ref_ports[0][1].as_value()))
        in_locate = Mux(
            take_kill,
            sweep_locate,
            Mux(
                take_ctl,
                self.ctl.payload.locate,
                Mux(take_trading, self.trading.payload.locate, self.tob.payload.locate),
            ),
        )
        with m.If(take):
            m.d.comb += addr.eq(in_locate[:lb])
        with m.Elif(fill_lookup):
            m.d.comb += addr.eq(entry.locate[:lb])
        with m.Else():
            m.d.comb += addr.eq(cur)
        m.d.comb += ref_addr.eq(self.fill.payload.user_ref[1:])

        with m.If(take):
            m.d.sync += [busy.eq(1), step.eq(1), ev_cycle.eq(self.cycle), ev_kill.eq(self.kill)]
        with m.Elif(commit):
            m.d.sync += busy.eq(0)
        with m.If(take_kill):
            m.d.sync += [kind.eq(EventKind.KILL), ev_locate.eq(sweep_locate)]
            m.d.sync += sweep_locate.eq(sweep_locate + 1)
            last = sweep_locate == self.symbols - 1
            m.d.sync += sweeping.eq(~last)
            with m.If(~sweeping):
                m.d.sync += [pending.eq(0), kill_cycle.eq(pending_cycle)]
        with m.If(rise):
            m.d.sync += [pending.eq(1), pending_cycle.eq(self.cycle)]
        with m.If(take_ctl):
            m.d.sync += [kind.eq(EventKind.CTL), ev_ctl.eq(self.ctl.payload)]
            m.d.sync += ev_locate.eq(self.ctl.payload.locate)
        with m.If(take_fill):
            m.d.sync += [kind.eq(EventKind.FILL), ev_fill.eq(self.fill.payload)]
        with m.If(take_trading):
            p = self.trading.payload
            m.d.sync += [kind.eq(EventKind.TRADING), ev_locate.eq(p.locate), ev_state.eq(p.state)]
        with m.If(take_tob):
            p = self.tob.payload
            m.d.sync += [kind.eq(EventKind.TOB), ev_locate.eq(p.locate), ev_stamp.eq(p.stamp)]
            m.d.sync += [
                ev_bbo.bid_px.eq(p.bid_px),
                ev_bbo.bid_sz.eq(p.bid_sz),
                ev_bbo.ask_px.eq(p.ask_px),
                ev_bbo.ask_sz.eq(p.ask_sz),
                ev_bbo.stale.eq(p.stale),
                ev_bbo.mid.eq((p.bid_px + p.ask_px) >> 1),
            ]
        ev_entry = Signal(ref_layout)  # the table answers in cycle 1; later reads move on
        with m.If(fill_lookup):
            m.d.sync += [fill_sell.eq(entry.side), ev_locate.eq(entry.locate), ev_entry.eq(entry)]

        # ------------------------------------------------------------ decisions, plan
        next_ref = Signal(33, init=self.first_user_ref_num)
        inputs = SimpleNamespace(
            lb=lb,
            bank_bits=bank_bits,
            kind=kind,
            ev_locate=ev_locate,
            ev_stamp=ev_stamp,
            ev_cycle=ev_cycle,
            ev_kill=ev_kill,
            ev_state=ev_state,
            ev_fill=ev_fill,
            ev_ctl=ev_ctl,
            ev_entry=ev_entry,
            live=live,
            meta=meta,
            params=params,
            account=account,
            scales=scales,
            book=book,
            dp=dp,
            is_tob=is_tob,
            kill_cycle=kill_cycle,
            pos_sum=pos_sum,
            cash_sum=cash_sum,
            ctl_scale=ctl_scale,
            next_ref=next_ref,
        )
        plan = decide(m, inputs)
        counts, orders, order_valid = plan.counts, plan.orders, plan.order_valid
        new_live, live_write = plan.new_live, plan.live_write
        new_meta, meta_write = plan.new_meta, plan.meta_write
        new_account, account_write = plan.new_account, plan.account_write
        ref_write, ref_data, ref_index = plan.ref_write, plan.ref_data, plan.ref_index
        param_write, param_value = plan.param_write, plan.param_value
        new_scales, scales_write = plan.new_scales, plan.scales_write
        advance, answer_valid, answer_word = plan.advance, plan.answer_valid, plan.answer_word
        bbo_write, write_field = plan.bbo_write, plan.write_field

        # ------------------------------------------------------------ commit
        with m.If(commit):
            for name in COUNTERS:
                counter = getattr(self.counters, name)
                m.d.sync += counter.eq(counter + counts[name])
            m.d.sync += next_ref.eq(next_ref + advance)
            with m.If(answer_valid):
                m.d.sync += [resp_valid.eq(1), resp.eq(answer_word)]
        with m.If(commit & needs_room):
            first = Mux(order_valid[0], orders[0].as_value(), orders[1].as_value())
            m.d.sync += [
                slot[0].eq(first),
                slot_valid[0].eq(order_valid[0] | order_valid[1]),
                slot[1].eq(orders[1]),
                # sides set here, not as comb constants: Icarus and Verilator never evaluate a
                # combinational process that reads no signal
                slot[0].side.eq(~order_valid[0]),
                slot[1].side.eq(1),
                slot_valid[1].eq(order_valid[0] & order_valid[1]),
            ]
        write_addr = Mux(clearing, clear_addr[:lb], cur)
        for s, (wp, _) in enumerate(live_ports):
            m.d.comb += [
                wp.addr.eq(write_addr),
                wp.data.eq(Mux(clearing, 0, new_live[s].as_value())),
                wp.en.eq(clear_symbols | (commit & live_write[s])),
            ]
        reset_meta = Signal(meta_layout)
        m.d.comb += reset_meta.state.eq(ord("T"))
        m.d.comb += [
            meta_wp.addr.eq(write_addr),
            meta_wp.data.eq(Mux(clearing, reset_meta.as_value(), new_meta.as_value())),
            meta_wp.en.eq(clear_symbols | (commit & meta_write)),
            account_wp.addr.eq(write_addr),
            account_wp.data.eq(Mux(clearing, 0, new_account.as_value())),
            account_wp.en.eq(clear_symbols | (commit & account_write)),
            bbo_wp.addr.eq(write_addr),
            bbo_wp.data.eq(Mux(clearing, 0, ev_bbo.as_value())),
            bbo_wp.en.eq(clear_symbols | (commit & bbo_write)),
            scales_wp.addr.eq(write_addr),
            scales_wp.data.eq(Mux(clearing, scales_word(self.default), new_scales.as_value())),
            scales_wp.en.eq(clear_symbols | (commit & scales_write)),
        ]
        for name, (wp, _) in params_mem.items():
            number = Field[name.upper()]
            m.d.comb += [
                wp.addr.eq(write_addr),
                wp.data.eq(Mux(clearing, param_word(self.default, name), param_value)),
                wp.en.eq(clear_symbols | (commit & param_write & (write_field == number))),
            ]
        for b, (wp, _) in enumerate(ref_ports):
            m.d.comb += [
                wp.addr.eq(Mux(clearing, clear_addr, ref_index[b])),
                wp.data.eq(Mux(clearing, 0, ref_data[b].as_value())),
                wp.en.eq(clear_refs | (commit & ref_write[b])),
            ]
        return m
