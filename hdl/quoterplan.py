"""The quoter's decisions: what one event does, registered as a plan the commit carries out.

:func:`decide` builds, from an event's held inputs (event registers, the symbol's memories read
and the arithmetic of :mod:`.pricing`), every effect of the event as combinational logic:
counter increments, up to two orders, the new live orders, meta, account, scales and parameter
words, UserRefNum table writes, the read answer. These are registered every cycle into the
*plan*; the quoter (:mod:`.quoter`) commits an event one cycle after its inputs settle and
reads only the plan registers, so no decision logic sits in front of a memory write.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Mux, Signal, signed
from amaranth.lib import enum

from .orders import OrderKind, order_layout
from .pricing import SCALES
from .quoterstate import (
    COUNTERS,
    PARAM_FIELDS,
    Field,
    account_layout,
    live_layout,
    meta_layout,
    ref_layout,
    scales_layout,
)

__all__ = ["EventKind", "decide"]

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)


class EventKind(enum.Enum, shape=3):
    """What the quoter is processing."""

    TOB = 0
    TRADING = 1
    FILL = 2
    CTL = 3
    KILL = 4


def decide(m, ev) -> SimpleNamespace:  # noqa: PLR0915 - one decision table, read top to bottom
    """Every effect of the event described by ``ev``, registered (see the module documentation).

    ``ev`` carries: ``lb``, ``bank_bits`` (address widths), ``kind`` (:class:`EventKind`), the
    event registers ``ev_locate``, ``ev_stamp``, ``ev_cycle``, ``ev_kill``, ``ev_state``,
    ``ev_fill``, ``ev_ctl``, ``ev_entry``, the held memory words ``live`` (bid, ask), ``meta``,
    ``params``, ``account``, ``scales``, the ``book``, the quote arithmetic ``dp``, ``is_tob``,
    ``kill_cycle``, the fill sums ``pos_sum``, ``cash_sum``, the parameter scale ``ctl_scale``
    and the UserRefNum counter ``next_ref``. Returns the plan registers by name.
    """
    (
        lb,
        bank_bits,
        kind,
        ev_locate,
        ev_stamp,
        ev_cycle,
        ev_kill,
        ev_state,
        ev_fill,
        ev_ctl,
        ev_entry,
        live,
        meta,
        params,
        account,
        scales,
        book,
        dp,
        is_tob,
        kill_cycle,
        pos_sum,
        cash_sum,
        ctl_scale,
        next_ref,
    ) = (
        ev.lb,
        ev.bank_bits,
        ev.kind,
        ev.ev_locate,
        ev.ev_stamp,
        ev.ev_cycle,
        ev.ev_kill,
        ev.ev_state,
        ev.ev_fill,
        ev.ev_ctl,
        ev.ev_entry,
        ev.live,
        ev.meta,
        ev.params,
        ev.account,
        ev.scales,
        ev.book,
        ev.dp,
        ev.is_tob,
        ev.kill_cycle,
        ev.pos_sum,
        ev.cash_sum,
        ev.ctl_scale,
        ev.next_ref,
    )
    locate_ok = (ev_locate >> lb) == 0
    counts = {name: Signal(2, name=f"count_{name}") for name in COUNTERS}
    orders = [Signal(order_layout, name=f"order_{s}") for s in ("bid", "ask")]
    order_valid = [Signal(name=f"order_{s}_valid") for s in ("bid", "ask")]
    new_live = [Signal(live_layout, name=f"new_live_{s}") for s in ("bid", "ask")]
    live_write = [Signal(name=f"live_write_{s}") for s in ("bid", "ask")]
    new_meta = Signal(meta_layout)
    meta_write = Signal()
    new_account = Signal(account_layout)
    account_write = Signal()
    ref_write = [Signal(name=f"ref_write{b}") for b in (0, 1)]
    ref_data = [Signal(ref_layout, name=f"ref_data{b}") for b in (0, 1)]
    ref_index = [Signal(max(bank_bits, 1), name=f"ref_index{b}") for b in (0, 1)]
    param_write = Signal()
    param_value = Signal(64)
    new_scales = Signal(scales_layout)
    scales_write = Signal()
    advance = Signal(2)  # UserRefNums the event issues
    answer_valid = Signal()
    answer_word = Signal(64)
    m.d.comb += [new_meta.eq(meta), new_scales.eq(scales)]

    stamp = Mux(is_tob, ev_stamp, Mux(kind == EventKind.KILL, kill_cycle, ev_cycle))
    for s in (0, 1):
        m.d.comb += [
            orders[s].locate.eq(ev_locate),
            orders[s].stamp.eq(stamp),
            orders[s].user_ref.eq(live[s].ref),
            orders[s].kind.eq(OrderKind.CANCEL),
            new_live[s].eq(0),
        ]

    def cancel_all():
        for s in (0, 1):
            with m.If(live[s].valid):
                m.d.comb += [order_valid[s].eq(1), live_write[s].eq(1)]
        with m.If(live[0].valid | live[1].valid):
            m.d.comb += [
                counts["cancel"].eq(live[0].valid + live[1].valid),
                meta_write.eq(1),
                new_meta.sent_any.eq(1),
                new_meta.last.eq(Mux(kind == EventKind.KILL, kill_cycle, ev_cycle)),
            ]

    evaluate = (kind == EventKind.TOB) | (kind == EventKind.TRADING)
    with m.If(evaluate & ~locate_ok):
        m.d.comb += counts["bad_locate"].eq(1)
    with m.Elif(evaluate):
        state = Mux(kind == EventKind.TRADING, ev_state, meta.state)
        with m.If(kind == EventKind.TRADING):
            m.d.comb += [meta_write.eq(1), new_meta.state.eq(ev_state)]
        m.d.comb += counts["evaluations"].eq(1)
        empty = (book.bid_sz == 0) | (book.ask_sz == 0) | (book.bid_px == 0) | (book.ask_px == 0)
        reasons = [
            ("kill", ev_kill),
            ("disabled", ~params.enabled),
            ("halted", (state != ord("T")) & (state != ord("Q"))),
            ("stale", book.stale),
            ("empty", empty),
            ("crossed", book.bid_px >= book.ask_px),
            ("loss", dp.loss),
        ]
        with m.If(Cat(cond for _, cond in reasons).any()):
            for k, (name, cond) in enumerate(reasons):
                earlier = Cat(c for _, c in reasons[:k]).any() if k else Const(0)
                m.d.comb += counts[f"pull_{name}"].eq(cond & ~earlier)
            cancel_all()
        with m.Else():
            m.d.comb += [
                counts["band_reject"].eq(dp.bid_band_reject + dp.ask_band_reject),
                counts["edge_reject"].eq(dp.edge_reject),
            ]
            wanted = [(dp.bid_px, dp.bid_qty), (dp.ask_px, dp.ask_qty)]
            enter = [~live[s].valid & (wanted[s][1] != 0) for s in (0, 1)]
            cancel = [live[s].valid & (wanted[s][1] == 0) for s in (0, 1)]
            change = [
                live[s].valid
                & (wanted[s][1] != 0)
                & ((live[s].price != wanted[s][0]) | (live[s].sent != wanted[s][1]))
                for s in (0, 1)
            ]
            acts = [enter[s] | cancel[s] | change[s] for s in (0, 1)]
            needs = [enter[s] | change[s] for s in (0, 1)]
            elapsed = (ev_cycle - meta.last)[:32]
            throttled = meta.sent_any & (elapsed < params.refresh_cycles)
            needed = needs[0] + needs[1]
            exhausted = (next_ref + needed) > (1 << 32)
            with m.If(~(acts[0] | acts[1])):
                m.d.comb += counts["unchanged"].eq(1)
            with m.Elif(throttled):
                m.d.comb += counts["throttled"].eq(1)
            with m.Elif(exhausted):
                m.d.comb += counts["ref_exhausted"].eq(1)
            with m.Else():
                m.d.comb += [
                    counts["updates"].eq(1),
                    counts["enter"].eq(enter[0] + enter[1]),
                    counts["replace"].eq(change[0] + change[1]),
                    counts["cancel"].eq(cancel[0] + cancel[1]),
                    meta_write.eq(1),
                    new_meta.sent_any.eq(1),
                    new_meta.last.eq(ev_cycle),
                ]
                m.d.comb += advance.eq(needed)
                refs = [next_ref[:32], (next_ref + needs[0])[:32]]
                for s in (0, 1):
                    with m.If(acts[s]):
                        m.d.comb += [order_valid[s].eq(1), live_write[s].eq(1)]
                    with m.If(needs[s]):
                        bank_of = refs[s][0]
                        m.d.comb += [
                            orders[s].kind.eq(Mux(enter[s], OrderKind.ENTER, OrderKind.REPLACE)),
                            orders[s].user_ref.eq(refs[s]),
                            orders[s].orig_ref.eq(Mux(enter[s], 0, live[s].ref)),
                            orders[s].price.eq(wanted[s][0]),
                            orders[s].quantity.eq(wanted[s][1]),
                            new_live[s].valid.eq(1),
                            new_live[s].ref.eq(refs[s]),
                            new_live[s].price.eq(wanted[s][0]),
                            new_live[s].sent.eq(wanted[s][1]),
                            new_live[s].open.eq(wanted[s][1]),
                        ]
                        for b in (0, 1):
                            with m.If(bank_of == b):
                                m.d.comb += [
                                    ref_write[b].eq(1),
                                    ref_index[b].eq(refs[s][1:]),
                                    ref_data[b].valid.eq(1),
                                    ref_data[b].ref.eq(refs[s]),
                                    ref_data[b].locate.eq(ev_locate),
                                    ref_data[b].side.eq(s),
                                ]

    with m.If(kind == EventKind.KILL):
        with m.If(live[0].valid | live[1].valid):
            m.d.comb += counts["pull_kill"].eq(1)
        cancel_all()

    with m.If(kind == EventKind.FILL):
        known = ev_entry.valid & (ev_entry.ref == ev_fill.user_ref)
        with m.If(~known):
            m.d.comb += counts["unknown_fill"].eq(1)
        with m.Else():
            pos_v, cash_v = pos_sum.value, cash_sum.value
            pos_sat = (pos_v < _I32[0]) | (pos_v > _I32[1])
            cash_sat = (cash_v < _I64[0]) | (cash_v > _I64[1])
            m.d.comb += [
                counts["fills"].eq(1),
                counts["position_saturated"].eq(pos_sat),
                counts["cash_saturated"].eq(cash_sat),
                account_write.eq(1),
                new_account.position.eq(
                    Mux(pos_v < _I32[0], _I32[0], Mux(pos_v > _I32[1], _I32[1], pos_v))
                ),
                new_account.cash.eq(
                    Mux(cash_v < _I64[0], _I64[0], Mux(cash_v > _I64[1], _I64[1], cash_v))
                ),
            ]
            side = ev_entry.side
            mine = Signal(live_layout)
            m.d.comb += mine.eq(Mux(side, live[1].as_value(), live[0].as_value()))
            with m.If(~mine.valid | (mine.ref != ev_fill.user_ref)):
                m.d.comb += counts["late_fill"].eq(1)
            with m.Else():
                remaining = Signal(signed(34))
                m.d.comb += remaining.eq(mine.open - ev_fill.quantity)
                m.d.comb += counts["overfill"].eq(remaining < 0)
                for s in (0, 1):
                    with m.If(side == s):
                        m.d.comb += live_write[s].eq(1)
                        with m.If(remaining > 0):
                            m.d.comb += [new_live[s].eq(mine), new_live[s].open.eq(remaining)]

    with m.If(kind == EventKind.CTL):
        field = ev_ctl.field
        value = ev_ctl.value
        signed_value = value.as_signed()
        checks = {
            Field.TICK: (value == 1) | (value == 100),
            Field.SKEW_NUM: (signed_value >= -(2**15)) & (signed_value < 2**15),
            Field.SKEW_SHIFT: value < 32,
            Field.BAND_BPS: (value >= 1) & (value < 2**16),
            Field.ENABLED: value < 2,
            Field.MAX_LOSS: Const(1),
        }
        ok = Signal()
        with m.Switch(field):
            for f in Field:
                with m.Case(f):
                    if f in (Field.POSITION, Field.CASH):
                        m.d.comb += ok.eq(~ev_ctl.write)
                    elif f in checks:
                        m.d.comb += ok.eq(~ev_ctl.write | checks[f])
                    else:
                        width = PARAM_FIELDS[f.name.lower()][0]
                        m.d.comb += ok.eq(~ev_ctl.write | (value >> width == 0))
        ok_all = ok & locate_ok
        with m.If(~ok_all):
            m.d.comb += counts["bad_ctl"].eq(1)
        with m.If(ev_ctl.write & ok_all):
            m.d.comb += [
                param_write.eq(1),
                param_value.eq(Mux(field == Field.TICK, value == 100, value)),
            ]
            for name, scale in SCALES.items():
                with m.If(field == Field[scale.field.upper()]):
                    m.d.comb += [
                        scales_write.eq(1),
                        getattr(new_scales, name).eq(ctl_scale.value),
                    ]
        with m.If(~ev_ctl.write):
            answer = Signal(64)
            with m.Switch(field):
                for f in Field:
                    with m.Case(f):
                        if f == Field.POSITION:
                            m.d.comb += answer.eq(account.position)
                        elif f == Field.CASH:
                            m.d.comb += answer.eq(account.cash)
                        elif f == Field.TICK:
                            m.d.comb += answer.eq(Mux(params.tick100, 100, 1))
                        else:
                            m.d.comb += answer.eq(getattr(params, f.name.lower()))
            m.d.comb += [answer_valid.eq(1), answer_word.eq(Mux(ok_all, answer, 0))]

    # ------------------------------------------------------------ plan
    # every decision above is registered; the commit reads only these registers
    def planned(sig, name):
        reg = Signal(sig.shape(), name=f"plan_{name}")
        m.d.sync += reg.eq(sig)
        return reg

    def plan_pair(sigs, name):
        return [planned(sig, f"{name}{k}") for k, sig in enumerate(sigs)]

    counts = {name: planned(sig, name) for name, sig in counts.items()}
    orders, order_valid = plan_pair(orders, "order"), plan_pair(order_valid, "order_valid")
    new_live, live_write = plan_pair(new_live, "live"), plan_pair(live_write, "live_write")
    new_meta, meta_write = planned(new_meta, "meta"), planned(meta_write, "meta_write")
    new_account = planned(new_account, "account")
    account_write = planned(account_write, "account_write")
    ref_write, ref_data = plan_pair(ref_write, "ref_write"), plan_pair(ref_data, "ref_data")
    ref_index = plan_pair(ref_index, "ref_index")
    param_write, param_value = planned(param_write, "param"), planned(param_value, "value")
    new_scales, scales_write = planned(new_scales, "scales"), planned(scales_write, "scales_w")
    advance = planned(advance, "advance")
    answer_valid, answer_word = planned(answer_valid, "answer_v"), planned(answer_word, "answer")
    bbo_write = planned(is_tob & locate_ok, "bbo_write")
    write_field = planned(ev_ctl.field, "field")
    return SimpleNamespace(
        counts=counts,
        orders=orders,
        order_valid=order_valid,
        new_live=new_live,
        live_write=live_write,
        new_meta=new_meta,
        meta_write=meta_write,
        new_account=new_account,
        account_write=account_write,
        ref_write=ref_write,
        ref_data=ref_data,
        ref_index=ref_index,
        param_write=param_write,
        param_value=param_value,
        new_scales=new_scales,
        scales_write=scales_write,
        advance=advance,
        answer_valid=answer_valid,
        answer_word=answer_word,
        bbo_write=bbo_write,
        write_field=write_field,
        locate_ok=locate_ok,
    )
