"""The quoter's decisions: every effect of one event, as a *plan* the commit registers.

A plan (:func:`plan_layout`) holds the counter increments, up to two orders, and the words to
write to the per-symbol memories (:data:`~.quoterstate.STATE`) and to the UserRefNum table, the
UserRefNums issued and a control read's answer. :func:`evaluation_plan` decides a book change
(``TOB``) or a trading-state change (``TRADING``) from registered flags and the stage-4 quote
(:mod:`.pricing_quote`) in one cycle: it is built twice, for "the spread passes the min-edge
test" and for "it does not", and the real test (one subtraction) picks one late.
:func:`event_plan` decides the other events (``KILL`` sweep steps, fills, control requests),
which have time to spare, into a register.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Mux, Signal
from amaranth.lib import data, enum

from .orders import OrderKind, order_layout
from .pricing_terms import terms_layout
from .quoterstate import (
    COUNTERS,
    PARAM_FIELDS,
    Field,
    account_layout,
    bbo_layout,
    live_layout,
    meta_layout,
    params_layout,
    ref_layout,
)

__all__ = [
    "EventKind",
    "PULL_ORDER",
    "plan_layout",
    "evaluation_inputs",
    "evaluation_plan",
    "event_plan",
    "control_write",
    "first_pull",
]

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)
#: Pull reasons in the model's order (``pull_<reason>`` counters).
PULL_ORDER = ("kill", "disabled", "halted", "stale", "empty", "crossed", "loss")


class EventKind(enum.Enum, shape=3):
    """What the quoter is processing."""

    TOB = 0
    TRADING = 1
    FILL = 2
    CTL = 3
    KILL = 4


def plan_layout(locate_bits: int, bank_bits: int) -> data.StructLayout:
    """Every effect of one event (see the module documentation)."""
    return data.StructLayout(
        {
            "counts": data.StructLayout({name: 2 for name in COUNTERS}),
            "orders": data.ArrayLayout(order_layout, 2),
            "order_valid": 2,
            "locate": locate_bits,
            "live_write": 2,
            "live": data.ArrayLayout(live_layout, 2),
            "meta_write": 1,
            "meta": meta_layout,
            "account_write": 1,
            "account": account_layout,
            "terms_write": 1,
            "terms": terms_layout,
            "params_write": 1,
            "params": params_layout,
            "bbo_write": 1,
            "bbo": bbo_layout,
            "ref_write": 2,
            "ref_index": data.ArrayLayout(max(bank_bits, 1), 2),
            "ref": data.ArrayLayout(ref_layout, 2),
            "advance": 2,
            "answer_valid": 1,
            "answer": 64,
        }
    )


def _cancel_all(m, p, live, last, stamp) -> Signal:
    """Cancel every live order of the plan's symbol (registered plan ``p``); returns "there
    was one"."""
    for s in (0, 1):
        m.d.sync += [
            p.orders[s].kind.eq(OrderKind.CANCEL),
            p.orders[s].user_ref.eq(live[s].ref),
            p.orders[s].stamp.eq(stamp),
        ]
        with m.If(live[s].valid):
            m.d.sync += [p.order_valid[s].eq(1), p.live_write[s].eq(1)]
    anyone = live[0].valid | live[1].valid
    with m.If(anyone):
        m.d.sync += [
            p.counts.cancel.eq(live[0].valid + live[1].valid),
            p.meta_write.eq(1),
            p.meta.sent_any.eq(1),
            p.meta.last.eq(last),
        ]
    return anyone


def evaluation_inputs(m, ev, is_tob, locate_ok, next_ref):
    """The registered flags :func:`evaluation_plan` decides on, from the evaluation registers.

    ``ev`` has ``locate``, ``stamp``, ``cycle``, ``kill``, ``state`` (a trading event's new
    state), ``book``, ``live``, ``meta``, ``params`` and ``terms``; ``next_ref`` is the
    UserRefNum counter (33 bits). Returns the ``ev`` and ``refs`` arguments of
    :func:`evaluation_plan` (``ev.gates`` go to :func:`~.pricing_quote.quote_datapath`). The
    flags are registers: valid one cycle after their inputs.
    """

    def early(expr, name, shape=None):
        sig = Signal(shape if shape is not None else expr.shape(), name=f"early_{name}")
        m.d.sync += sig.eq(expr)
        return sig

    state = Mux(is_tob, ev.meta.state, ev.state)
    b, terms = ev.book, ev.terms
    reasons = [
        ev.kill,
        ~ev.params.enabled,
        (state != ord("T")) & (state != ord("Q")),
        b.stale,
        (b.bid_sz == 0) | (b.ask_sz == 0) | (b.bid_px == 0) | (b.ask_px == 0),
        b.bid_px >= b.ask_px,
    ]
    elapsed = (ev.cycle - ev.meta.last)[:32]
    qty = [terms.bid_qty, terms.ask_qty]
    flags = SimpleNamespace(
        locate=ev.locate,
        locate_ok=early(locate_ok, "locate_ok"),
        is_tob=is_tob,
        stamp=ev.stamp,
        cycle=ev.cycle,
        state=ev.state,
        book=ev.book,
        live=ev.live,
        meta=ev.meta,
        pulls=early(first_pull(reasons), "pulls"),
        pulled=early(Cat(*reasons).any(), "pulled"),
        stamp_out=early(Mux(is_tob, ev.stamp, ev.cycle), "stamp_out"),
        throttled=early(ev.meta.sent_any & (elapsed < ev.params.refresh_cycles), "throttled"),
        qty=qty,
        qty_nonzero=[early(qty[s] != 0, f"qnz{s}") for s in (0, 1)],
        qty_same=[early(qty[s] == ev.live[s].sent, f"qsame{s}") for s in (0, 1)],
    )
    flags.gates = (
        early(locate_ok & ~Cat(*reasons).any(), "go"),
        flags.qty_nonzero,
        flags.qty_same,
    )
    refs = SimpleNamespace(
        next=next_ref[:32],
        next1=early((next_ref + 1)[:32], "next1"),
        room1=early(next_ref <= 2**32 - 1, "room1", 1),
        room2=early(next_ref <= 2**32 - 2, "room2", 1),
    )
    return flags, refs


def evaluation_plan(m, ev, q, refs, layout, zero) -> Signal:
    """The plan of a ``TOB`` or ``TRADING`` event, decided in the cycle ``q`` is valid.

    ``ev`` holds the event's registers: ``locate``, ``locate_ok``, ``is_tob``, ``stamp``,
    ``cycle``, ``state`` (the trading state to store), ``book`` (:data:`~.quoterstate.bbo_layout`),
    ``live`` (bid, ask), ``meta``, and early registered flags: ``pulls`` (one-hot first pull
    reason before ``loss``, in :data:`PULL_ORDER`), ``pulled`` (any of them), ``stamp_out``
    (the orders' stamp), ``throttled``, ``qty`` (the two sizes), ``qty_nonzero``,
    ``qty_same`` (size equals the live order's). ``q`` is the
    :class:`~.pricing_quote.QuoteOutputs` computed with the gates of
    :func:`evaluation_inputs`; ``refs`` has ``next``, ``next1`` (``next + 1``),
    ``room1`` and ``room2`` (one / two UserRefNums left). ``zero`` is an all-zero plan computed
    from a signal (not a constant): every bit of the plan is then driven by a process that reads
    signals. (Icarus and Verilator never evaluate a combinational process that reads no signal,
    so constant bits would stay unknown.)
    """
    live, meta = ev.live, ev.meta
    go = q.go  # locate_ok and no pull: the quote decides
    pull_cancel = ev.locate_ok & ~q.go  # a pull cancels every live order
    price = [q.bid_px[:32], q.ask_px[:32]]
    reject = [q.bid_reject, q.ask_reject]
    keep = q.keep  # the live order stays (same price, same size)
    lv = [live[s].valid for s in (0, 1)]

    def decide(edge: bool) -> Signal:
        """The whole plan as flat logic: control bits first, then one select per field."""
        p = Signal(layout, name=f"eval_plan_{int(edge)}")
        ok = [Const(0) if edge else q.ok[s] for s in (0, 1)]
        needs = [ok[s] & (~lv[s] | ~keep[s]) for s in (0, 1)]  # enter or replace
        acts = [needs[s] | (lv[s] & ~ok[s]) for s in (0, 1)]
        exhausted = (needs[0] & needs[1] & ~refs.room2) | ((needs[0] ^ needs[1]) & ~refs.room1)
        acting = go & (acts[0] | acts[1])
        update = acting & ~ev.throttled & ~exhausted
        sends = [update & needs[s] for s in (0, 1)]
        cancels = [(update & lv[s] & ~ok[s]) | (pull_cancel & lv[s]) for s in (0, 1)]
        ref = [refs.next, Mux(needs[0], refs.next1, refs.next)]
        sent = update | (pull_cancel & (lv[0] | lv[1]))
        counts = p.counts
        m.d.comb += p.eq(zero)
        m.d.comb += [
            counts.bad_locate.eq(~ev.locate_ok),
            counts.evaluations.eq(ev.locate_ok),
            counts.unchanged.eq(go & ~(acts[0] | acts[1])),
            counts.throttled.eq(acting & ev.throttled),
            counts.ref_exhausted.eq(acting & ~ev.throttled & exhausted),
            counts.updates.eq(update),
            counts.band_reject.eq(Mux(go, reject[0] + reject[1], 0)),
            counts.edge_reject.eq(go if edge else 0),
            counts.enter.eq((sends[0] & ~lv[0]) + (sends[1] & ~lv[1])),
            counts.replace.eq((sends[0] & lv[0]) + (sends[1] & lv[1])),
            counts.cancel.eq(cancels[0] + cancels[1]),
            counts.pull_loss.eq(pull_cancel & ~ev.pulled),
            p.advance.eq(sends[0] + sends[1]),
            p.locate.eq(ev.locate),
            p.bbo_write.eq(ev.is_tob & ev.locate_ok),
            p.bbo.eq(ev.book),
            p.meta_write.eq(ev.locate_ok & (~ev.is_tob | sent)),
            p.meta.sent_any.eq(meta.sent_any | sent),
            p.meta.last.eq(Mux(sent, ev.cycle, meta.last)),
            p.meta.state.eq(Mux(ev.is_tob, meta.state, ev.state)),
        ]
        for k, name in enumerate(PULL_ORDER[:-1]):
            m.d.comb += getattr(counts, f"pull_{name}").eq(pull_cancel & ev.pulls[k])
        for s in (0, 1):
            order = p.orders[s]
            m.d.comb += [
                p.order_valid[s].eq(sends[s] | cancels[s]),
                p.live_write[s].eq(sends[s] | cancels[s]),
                order.locate.eq(ev.locate),  # the side is set with the output slot
                order.stamp.eq(ev.stamp_out),
                order.kind.eq(
                    Mux(sends[s], Mux(lv[s], OrderKind.REPLACE, OrderKind.ENTER), OrderKind.CANCEL)
                ),
                order.user_ref.eq(Mux(sends[s], ref[s], live[s].ref)),
                order.orig_ref.eq(Mux(sends[s] & lv[s], live[s].ref, 0)),
                order.price.eq(Mux(sends[s], price[s], 0)),
                order.quantity.eq(Mux(sends[s], ev.qty[s], 0)),
                p.live[s].valid.eq(sends[s]),
                p.live[s].ref.eq(Mux(sends[s], ref[s], 0)),
                p.live[s].price.eq(Mux(sends[s], price[s], 0)),
                p.live[s].sent.eq(Mux(sends[s], ev.qty[s], 0)),
                p.live[s].open.eq(Mux(sends[s], ev.qty[s], 0)),
            ]
        # the two UserRefNums of an update are consecutive: one per table bank
        for b in (0, 1):
            side = Mux(sends[0] & (ref[0][0] == b), 0, 1)
            this = Mux(side, ref[1], ref[0])
            m.d.comb += [
                p.ref_write[b].eq((sends[0] & (ref[0][0] == b)) | (sends[1] & (ref[1][0] == b))),
                p.ref_index[b].eq(this[1:]),
                p.ref[b].valid.eq(1),
                p.ref[b].ref.eq(this),
                p.ref[b].locate.eq(ev.locate),
                p.ref[b].side.eq(side),
            ]
        return p

    passes, fails = decide(False), decide(True)
    chosen = Signal(layout, name="eval_plan")
    m.d.comb += chosen.eq(Mux(q.edge, fails.as_value(), passes.as_value()))
    return chosen


def event_plan(m, ev, layout) -> Signal:  # noqa: PLR0915 - one decision table per kind
    """The registered plan of a ``KILL``, ``FILL`` or ``CTL`` event from its settled registers
    (valid one cycle after them).

    The decision goes straight into the plan register. (As a combinational signal, the fields
    every kind copies, the locate and the meta word, become Verilog blocks of their own that
    read only evaluation registers; Icarus runs such a block only when one of its inputs
    changes, so they stayed unknown while ``ev.locate`` kept its initial value, and the first
    memory writes for locate 0 went to an unknown address.)

    ``ev`` holds: ``kind``, ``locate``, ``locate_ok``, ``kill_cycle``, ``live`` (bid, ask),
    ``meta``; for a fill ``entry`` (its UserRefNum table entry), ``known`` (the entry is the
    fill's), ``mine`` (the live order of the entry's side), ``own`` (it is the filled order),
    ``remaining`` (its open quantity less the fill's), ``new_position`` / ``new_cash``
    (clamped) and ``position_saturated`` / ``cash_saturated``; for a control request ``ctl``
    (the payload), ``ctl_ok``, ``new_params`` (the parameters after a valid write) and
    ``answer`` (a read's); ``terms`` (the terms of the new account or parameters).
    """
    # no reset: every bit is assigned every cycle and read only under a reset-held valid (a
    # reset here joins the plan's data logic in the registers' LSR, across the die)
    p = Signal(layout, name="slow_plan", reset_less=True)
    kind, live = ev.kind, ev.live
    m.d.sync += p.eq(0)
    m.d.sync += [p.locate.eq(ev.locate), p.meta.eq(ev.meta)]
    for s in (0, 1):
        m.d.sync += p.orders[s].locate.eq(ev.locate)  # the side is set with the output slot

    with m.If(kind == EventKind.KILL):
        with m.If(_cancel_all(m, p, live, ev.kill_cycle, ev.kill_cycle)):
            m.d.sync += p.counts.pull_kill.eq(1)

    with m.If(kind == EventKind.FILL):
        with m.If(~ev.known):
            m.d.sync += p.counts.unknown_fill.eq(1)
        with m.Else():
            m.d.sync += [
                p.counts.fills.eq(1),
                p.counts.position_saturated.eq(ev.position_saturated),
                p.counts.cash_saturated.eq(ev.cash_saturated),
                p.account_write.eq(1),
                p.account.position.eq(ev.new_position),
                p.account.cash.eq(ev.new_cash),
                p.terms_write.eq(1),
                p.terms.eq(ev.terms),
            ]
            with m.If(~ev.own):
                m.d.sync += p.counts.late_fill.eq(1)
            with m.Else():
                m.d.sync += p.counts.overfill.eq(ev.remaining < 0)
                for s in (0, 1):
                    with m.If(ev.entry.side == s):
                        m.d.sync += p.live_write[s].eq(1)
                        with m.If(ev.remaining > 0):
                            m.d.sync += [p.live[s].eq(ev.mine), p.live[s].open.eq(ev.remaining)]

    with m.If(kind == EventKind.CTL):
        ok_all = ev.ctl_ok & ev.locate_ok
        with m.If(~ok_all):
            m.d.sync += p.counts.bad_ctl.eq(1)
        with m.If(ev.ctl.write & ok_all):
            m.d.sync += [
                p.params_write.eq(1),
                p.params.eq(ev.new_params),
                p.terms_write.eq(1),
                p.terms.eq(ev.terms),
            ]
        with m.If(~ev.ctl.write):
            m.d.sync += [p.answer_valid.eq(1), p.answer.eq(Mux(ok_all, ev.answer, 0))]
    return p


def control_write(m, ctl, params, account) -> tuple[Signal, Signal, Signal]:
    """``(valid, new_params, answer)`` of control request ``ctl`` for ``params``, ``account``.

    ``valid``: one bit per :class:`Field` number (16), set when a request for that field is
    acceptable: a read of any field, or a write of a value the model accepts
    (``QuoteParams.validate``) to a writable field (the request is valid when the bit of its
    field is set; computed for every field at once so the choice can be registered apart).
    ``new_params``: ``params`` with the field written (for a valid write); ``answer``: the
    field's value (for a read).
    """
    field, value = ctl.field, ctl.value
    signed_value = value.as_signed()
    checks = {
        Field.TICK: (value == 1) | (value == 100),
        Field.SKEW_NUM: (signed_value >= -(2**15)) & (signed_value < 2**15),
        Field.SKEW_SHIFT: value < 32,
        Field.BAND_BPS: (value >= 1) & (value < 2**16),
        Field.ENABLED: value < 2,
        Field.MAX_LOSS: Const(1),
        Field.POSITION: Const(0),
        Field.CASH: Const(0),
    }
    valid = Signal(16, name="ctl_valid")
    for f in Field:
        if f in checks:
            check = checks[f]
        else:
            check = value >> PARAM_FIELDS[f.name.lower()][0] == 0
        m.d.comb += valid[f.value].eq(~ctl.write | check)
    new = Signal(params_layout, name="ctl_params")
    answer = Signal(64, name="ctl_answer")
    m.d.comb += new.eq(params)
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
                if f in (Field.POSITION, Field.CASH):
                    continue
                target = "tick100" if f == Field.TICK else f.name.lower()
                stored = (value == 100) if f == Field.TICK else value
                m.d.comb += getattr(new, target).eq(stored)
    return valid, new, answer


def first_pull(reasons):
    """One-hot: the first of ``reasons`` (conditions in :data:`PULL_ORDER` order) that holds."""
    bits = []
    for k, cond in enumerate(reasons):
        earlier = Cat(*reasons[:k]).any() if k else Const(0)
        bits.append(cond & ~earlier)
    return Cat(*bits)
