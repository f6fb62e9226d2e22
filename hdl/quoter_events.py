"""The quoter's slower events: fills and control requests (and kill sweep steps), their plan.

A fill changes a symbol's position and cash, a parameter write its parameters; either changes
its book-independent terms (:mod:`.pricing_terms`). :func:`event_datapath` computes, from the
evaluation registers of :mod:`.quoter` (held still while the event is evaluated, valid from cycle
1), the exact new position and cash (``quantity * price`` as registered partial products), the
new parameters of a valid write, then the new terms from either, and registers the event's plan
(:func:`~.quoterplan.event_plan`). It returns the plan register and the commit cycles of a
control request and of a fill.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Mux, Signal, Value, signed

from .pricing import Pipeline, Staged, product
from .pricing_terms import terms_datapath
from .quoterplan import EventKind, control_write, event_plan
from .quoterstate import live_layout, params_layout

__all__ = ["event_datapath"]

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)


def _clamp(value, bounds):
    low, high = bounds
    return Mux(value < low, low, Mux(value > high, high, value))


def event_datapath(m, kind, ev, *, locate_ok, kill_cycle, layout, arity):
    """The registered plan of a ``FILL``, ``CTL`` or ``KILL`` event (see the module docs).

    ``ev`` has the evaluation registers ``locate``, ``params``, ``account``, ``live`` (bid,
    ask), ``meta``, ``fill``, ``entry`` (the fill's UserRefNum table entry) and ``ctl``.
    Returns ``(plan, ctl_latency, fill_latency)``: the plan is valid from those cycles on.
    """
    params, account, fill = ev.params, ev.account, ev.fill
    # fills: position and cash, exact, then clamped
    pipe = Pipeline(m, "fill")
    sell = ev.entry.side
    traded = product(pipe, Staged(fill.quantity, 0), Staged(fill.price, 0), arity=arity)
    qty_signed = Mux(sell, -fill.quantity, fill.quantity)
    pos_sum = pipe.reg(account.position + qty_signed, shape=signed(34), name="pos")
    cash_sum = pipe.reg(
        Mux(sell, account.cash + traded.value, account.cash - traded.value),
        traded,
        shape=signed(66),
        name="cash",
    )
    new_pos = pipe.reg(_clamp(pos_sum.value, _I32), pos_sum, shape=signed(32), name="npos")
    new_cash = pipe.reg(_clamp(cash_sum.value, _I64), cash_sum, shape=signed(64), name="ncash")
    fill_depth = max(new_pos.depth, new_cash.depth)

    # the fill's checks, registered (so the plan is little logic)
    def reg(expr, name, shape=None):
        sig = Signal(shape if shape is not None else Value.cast(expr).shape(), name=name)
        m.d.sync += sig.eq(expr)
        return sig

    entry = ev.entry
    mine = Mux(entry.side, ev.live[1].as_value(), ev.live[0].as_value())
    mine = reg(mine, "fill_mine", live_layout)
    pos_v, cash_v = pos_sum.value, cash_sum.value

    # control requests: validity and the new parameters; then the terms of either
    ctl_valid, ctl_params, answer = control_write(m, ev.ctl, params, account)
    ctl_valid = reg(ctl_valid, "ctl_valid_r")
    is_fill = kind == EventKind.FILL
    t_pos = Signal(signed(32), name="terms_pos")
    t_params = Signal(params_layout, name="terms_params")
    m.d.sync += [
        t_pos.eq(Mux(is_fill, new_pos.value, account.position)),
        t_params.eq(Mux(is_fill, params.as_value(), ctl_params.as_value())),
    ]
    new_terms, terms_depth = terms_datapath(m, t_params, t_pos, arity=arity)
    decided = SimpleNamespace(
        kind=kind,
        locate=ev.locate,
        locate_ok=locate_ok,
        kill_cycle=kill_cycle,
        live=ev.live,
        meta=ev.meta,
        entry=entry,
        known=reg(entry.valid & (entry.ref == fill.user_ref), "fill_known"),
        mine=mine,
        own=reg(mine.valid & (mine.ref == fill.user_ref), "fill_own"),
        remaining=reg(mine.open - fill.quantity, "fill_remaining", signed(34)),
        new_position=new_pos.value,
        new_cash=new_cash.value,
        position_saturated=reg((pos_v < _I32[0]) | (pos_v > _I32[1]), "fill_pos_sat"),
        cash_saturated=reg((cash_v < _I64[0]) | (cash_v > _I64[1]), "fill_cash_sat"),
        ctl=ev.ctl,
        ctl_ok=reg(ctl_valid.bit_select(ev.ctl.field.as_value(), 1), "ctl_ok_r"),
        new_params=ctl_params,
        answer=reg(answer, "ctl_answer_r"),
        terms=new_terms,
    )
    plan = event_plan(m, decided, layout)
    # inputs valid in cycle 1; the terms' inputs in 2 (control) or fill_depth + 2 (fill); the
    # plan register one cycle after the terms
    return plan, 2 + terms_depth + 1, fill_depth + 2 + terms_depth + 1
