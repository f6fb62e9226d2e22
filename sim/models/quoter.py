"""Reference model of the quote generator and risk gate (docs/quoting.md), bit exact.

:class:`QuoterModel` turns top-of-book changes into OUCH 5.0 actions (:class:`Order`) and keeps
position and cash from fills. The pricing of steps 2-8 lives in :mod:`.pricing`; this module
owns step 1 (pulls), step 9 (dedupe and throttle), the order life cycle and the fills. Where
quoting.md leaves a detail open, the choice is written here and the gateware must match it:

Pulls (step 1)
    Checked in this order; the first that holds is the one counted (``pull_<reason>``):
    ``kill``, ``disabled``, ``halted``, ``stale``, ``empty``, ``crossed``, ``loss``.
    *halted*: the symbol quotes only in trading state ``'T'`` (trading) or ``'Q'`` (quotation
    only); ``'H'``, ``'P'`` and any other value pull (fail safe). *empty*: a missing ``bbo``
    (``None``) or a side whose size or price is 0. *crossed*: ``bid_px >= ask_px``. *loss*:
    ``cash + position * mid < -max_loss`` with the ``mid`` of this book (step 2); not latched, it
    is evaluated afresh at every book change. A pull cancels every live order of the symbol (bid
    first, then ask) and is **never throttled**: risk comes first. A parameter change
    (``enabled = False`` included) acts at the next book change; the kill switch acts at once.

Dedupe (step 9)
    Per side, "the last one sent" is the live order: a side with a live order whose
    ``(price, quantity as sent)`` equals the new quote does nothing; a changed quote is a Replace
    (new UserRefNum, quantity the full new quote); a quote of quantity 0 is a Cancel; a side with
    no live order (never entered, cancelled, or completely filled) and a non-zero quote is an
    Enter. A partial fill does not make the quote differ: the order keeps working its open
    quantity until the quote itself changes. A book change that needs no action counts
    ``unchanged``.

Throttle (step 9)
    An update is sent only if no order was sent for the symbol before, or ``cycle - last >=
    refresh_cycles`` where ``last`` is the cycle of the last orders sent for the symbol (pulls
    and kill cancels included). A suppressed update counts ``throttled`` and is dropped, never
    queued. Cycle numbers come from the caller and must not decrease.

Orders
    An update emits the bid side's order, then the ask side's; the kill switch walks the
    symbols in ascending Stock Locate. UserRefNums start at ``first_user_ref_num`` (1) and
    increase by one per Enter or Replace, across all symbols. If an update needs more numbers
    than remain below ``2**32``, the whole update is dropped (``ref_exhausted``); pulls need
    none and still go out. A Cancel carries quantity 0 and price 0; ``stamp`` is the cycle of
    the causing event.

Fills (OUCH Order Executed)
    Any UserRefNum the quoter has issued (``ref_window`` None), or one of the last ``ref_window``
    issued (a gateware table of that depth), maps to its symbol and side; others count
    ``unknown_fill`` and are ignored. A buy adds ``quantity`` to the position and subtracts
    ``quantity * price`` from cash; a sell the opposite. The position saturates at signed 32 bit
    (``position_saturated``), cash at signed 64 bit (``cash_saturated``), both computed exactly
    then clamped. A fill of the live order reduces its open quantity and removes it at 0; a fill
    beyond the open quantity is applied in full and counts ``overfill``; a fill of a replaced or
    cancelled order (a race with the exchange) is applied and counts ``late_fill``.

Counters (``QuoterModel.counters``; each book change counts one of the outcomes)
    ``evaluations`` (book changes seen); outcomes ``pull_<reason>``, ``unchanged``,
    ``throttled``, ``ref_exhausted`` or ``updates`` (an update sent). Besides: ``band_reject``
    (per side) and ``edge_reject`` whenever steps 6-7 reject, even if the update is then
    unchanged or throttled; ``enter``, ``replace``, ``cancel`` (orders sent, pulls and kill
    included); ``fills``, ``unknown_fill``, ``late_fill``, ``overfill``, ``position_saturated``,
    ``cash_saturated``. The kill switch counts one ``pull_kill`` per symbol it cancels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from .pricing import NO_QUOTE, Pricing, Quote, QuoteParams, price

__all__ = [
    "MAX_USER_REF_NUM",
    "NO_QUOTE",
    "PULL_REASONS",
    "QUOTING_STATES",
    "Order",
    "Quote",
    "QuoteParams",
    "QuoterModel",
]

#: Pull reasons in the order they are checked (step 1); counted as ``pull_<reason>``.
PULL_REASONS = ("kill", "disabled", "halted", "stale", "empty", "crossed", "loss")
#: ITCH trading states in which a symbol may quote.
QUOTING_STATES = ("T", "Q")
MAX_USER_REF_NUM = 2**32 - 1
_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)
_SIDES = ("B", "S")


@dataclass(frozen=True)
class Order:
    """One OUCH 5.0 action the device sends.

    ``kind`` is ``'enter'``, ``'replace'`` or ``'cancel'``; ``orig_user_ref_num`` is set for a
    replace only; a cancel has ``quantity`` 0 and ``price`` 0. ``stamp`` is the ingress cycle of
    the event that caused the order.
    """

    kind: str
    locate: int
    side: str
    user_ref_num: int
    orig_user_ref_num: int | None
    quantity: int
    price: int
    stamp: int


@dataclass
class _LiveOrder:
    user_ref_num: int
    price: int
    sent_qty: int
    open_qty: int


@dataclass
class _Symbol:
    position: int = 0
    cash: int = 0
    live: dict[str, _LiveOrder] = field(default_factory=dict)
    last_sent_cycle: int | None = None


def _clamp(value: int, bounds: tuple[int, int]) -> tuple[int, bool]:
    low, high = bounds
    clamped = min(max(value, low), high)
    return clamped, clamped != value


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if not 0 <= value < 2**bits:
        raise ValueError(f"{name} must be in 0..{2**bits - 1}, not {value!r}")


class QuoterModel:
    """The quoter and risk gate of every symbol (see the module docstring for the rules).

    Parameters
    ----------
    params:
        Parameters per Stock Locate; symbols not listed use ``default``.
    default:
        Parameters of every other symbol (copied).
    first_user_ref_num:
        The first UserRefNum issued (1 in a session; other values let tests reach the end).
    ref_window:
        How many of the latest UserRefNums a fill may name (the depth of the gateware's table);
        ``None`` remembers every one.
    """

    def __init__(
        self,
        params: dict[int, QuoteParams] | None = None,
        default: QuoteParams | None = None,
        *,
        first_user_ref_num: int = 1,
        ref_window: int | None = None,
    ):
        default = default if default is not None else QuoteParams()
        default.validate()
        self._default = replace(default)
        self._params: dict[int, QuoteParams] = {}
        for locate, p in (params or {}).items():
            self.set_params(locate, p)
        _check_uint("first_user_ref_num", first_user_ref_num, 32)
        if first_user_ref_num == 0:
            raise ValueError("first_user_ref_num must be in 1..4294967295, not 0")
        if ref_window is not None:
            _check_uint("ref_window", ref_window, 32)
            if ref_window == 0:
                raise ValueError("ref_window must be None or in 1..4294967295, not 0")
        self._next_ref = first_user_ref_num
        self._ref_window = ref_window
        self._refs: dict[int, tuple[int, str]] = {}
        self._symbols: dict[int, _Symbol] = {}
        self._kill = False
        self.counters: Counter = Counter()

    # -- configuration -------------------------------------------------------------------------

    @property
    def kill(self) -> bool:
        """The global kill switch (change it with :meth:`set_kill`)."""
        return self._kill

    def set_params(self, locate: int, params: QuoteParams) -> None:
        """Give ``locate`` its own parameters (validated, copied), used from its next event."""
        _check_uint("locate", locate, 16)
        params.validate()
        self._params[locate] = replace(params)

    def params(self, locate: int) -> QuoteParams:
        """The parameters ``locate`` quotes with (a copy)."""
        return replace(self._params.get(locate, self._default))

    def set_kill(self, on: bool, cycle: int = 0) -> list[Order]:
        """Set or clear the kill switch; setting it cancels every live order of every symbol.

        Each symbol that had live orders counts one ``pull_kill``. Clearing the switch sends
        nothing: each symbol quotes again at its next book change.
        """
        self._kill = bool(on)
        orders: list[Order] = []
        if self._kill:
            for locate in sorted(self._symbols):
                if self._symbols[locate].live:
                    self.counters["pull_kill"] += 1
                    orders += self._pull(locate, cycle)
        return orders

    # -- state ---------------------------------------------------------------------------------

    def position(self, locate: int) -> int:
        """Shares held in ``locate`` (+ long, - short)."""
        return self._peek(locate).position

    def cash(self, locate: int) -> int:
        """Cash flow of ``locate`` in price units x shares (signed 64 bit, saturating)."""
        return self._peek(locate).cash

    def pnl(self, locate: int, mid: int) -> int:
        """``cash + position * mid``, exact (what the loss limit is checked against)."""
        s = self._peek(locate)
        return s.cash + s.position * mid

    def live(self, locate: int) -> dict[str, tuple[int, int, int]]:
        """Live orders of ``locate``: side -> (UserRefNum, open quantity, price)."""
        live = self._peek(locate).live
        return {side: (o.user_ref_num, o.open_qty, o.price) for side, o in live.items()}

    # -- decisions -----------------------------------------------------------------------------

    def pull_reason(self, locate: int, bbo, trading_state: str = "T") -> str | None:
        """The first pull condition of step 1 that holds, or ``None`` (no side effect)."""
        p = self._params.get(locate, self._default)
        if self._kill:
            return "kill"
        if not p.enabled:
            return "disabled"
        if trading_state not in QUOTING_STATES:
            return "halted"
        if bbo is None:
            return "empty"
        if bbo.stale:
            return "stale"
        if bbo.bid_sz == 0 or bbo.ask_sz == 0 or bbo.bid_px == 0 or bbo.ask_px == 0:
            return "empty"
        if bbo.bid_px >= bbo.ask_px:
            return "crossed"
        mid = (bbo.bid_px + bbo.ask_px) >> 1
        if self.pnl(locate, mid) < -p.max_loss:
            return "loss"
        return None

    def quote(self, locate: int, bbo, trading_state: str = "T") -> Quote | None:
        """The quote the symbol wants for ``bbo`` now (steps 1-8), ``None`` if it must pull.

        Pure: no counter, order or throttle state changes. A quote with both quantities 0
        (min-edge reject, band rejects, size limits) means "nothing in the market".
        """
        if self.pull_reason(locate, bbo, trading_state) is not None:
            return None
        return self._price(locate, bbo).quote

    # -- events --------------------------------------------------------------------------------

    def on_book(self, locate: int, bbo, trading_state: str = "T", cycle: int = 0) -> list[Order]:
        """A top-of-book (or trading state) change of ``locate`` at ingress ``cycle``.

        ``bbo`` has ``bid_px``, ``bid_sz``, ``ask_px``, ``ask_sz`` and ``stale`` (or is
        ``None`` for a symbol with no book). Returns the orders sent, in wire order.
        """
        _check_uint("locate", locate, 16)
        self.counters["evaluations"] += 1
        reason = self.pull_reason(locate, bbo, trading_state)
        if reason is not None:
            self.counters[f"pull_{reason}"] += 1
            return self._pull(locate, cycle)
        pricing = self._price(locate, bbo)
        self.counters["band_reject"] += pricing.bid_band_reject + pricing.ask_band_reject
        self.counters["edge_reject"] += pricing.edge_reject
        return self._update(locate, pricing.quote, cycle)

    def on_fill(self, user_ref_num: int, quantity: int, price: int) -> None:
        """An OUCH Order Executed: ``quantity`` shares of ``user_ref_num`` traded at ``price``."""
        _check_uint("user_ref_num", user_ref_num, 32)
        _check_uint("quantity", quantity, 32)
        owner = self._refs.get(user_ref_num)
        if owner is None or (
            self._ref_window is not None and user_ref_num < self._next_ref - self._ref_window
        ):
            self.counters["unknown_fill"] += 1
            return
        self.counters["fills"] += 1
        locate, side = owner
        s = self._symbol(locate)
        sign = 1 if side == "B" else -1
        s.position, saturated = _clamp(s.position + sign * quantity, _I32)
        self.counters["position_saturated"] += saturated
        s.cash, saturated = _clamp(s.cash - sign * quantity * price, _I64)
        self.counters["cash_saturated"] += saturated
        live = s.live.get(side)
        if live is None or live.user_ref_num != user_ref_num:
            self.counters["late_fill"] += 1
            return
        live.open_qty -= quantity
        if live.open_qty <= 0:
            self.counters["overfill"] += live.open_qty < 0
            del s.live[side]

    # -- internals -----------------------------------------------------------------------------

    def _symbol(self, locate: int) -> _Symbol:
        return self._symbols.setdefault(locate, _Symbol())

    def _peek(self, locate: int) -> _Symbol:
        return self._symbols.get(locate) or _Symbol()

    def _price(self, locate: int, bbo) -> Pricing:
        p = self._params.get(locate, self._default)
        return price(p, self._peek(locate).position, bbo.bid_px, bbo.ask_px)

    def _pull(self, locate: int, cycle: int) -> list[Order]:
        s = self._symbol(locate)
        orders = [self._cancel(locate, side, cycle) for side in _SIDES if side in s.live]
        if orders:
            s.last_sent_cycle = cycle
        return orders

    def _cancel(self, locate: int, side: str, cycle: int) -> Order:
        live = self._symbol(locate).live.pop(side)
        self.counters["cancel"] += 1
        return Order("cancel", locate, side, live.user_ref_num, None, 0, 0, cycle)

    def _update(self, locate: int, quote: Quote, cycle: int) -> list[Order]:
        s = self._symbol(locate)
        wanted = {"B": (quote.bid_px, quote.bid_qty), "S": (quote.ask_px, quote.ask_qty)}
        actions: list[tuple[str, str]] = []
        for side in _SIDES:
            px, qty = wanted[side]
            live = s.live.get(side)
            if live is None:
                if qty:
                    actions.append((side, "enter"))
            elif qty == 0:
                actions.append((side, "cancel"))
            elif (live.price, live.sent_qty) != (px, qty):
                actions.append((side, "replace"))
        if not actions:
            self.counters["unchanged"] += 1
            return []
        refresh = self._params.get(locate, self._default).refresh_cycles
        if s.last_sent_cycle is not None and cycle - s.last_sent_cycle < refresh:
            self.counters["throttled"] += 1
            return []
        needed = sum(kind != "cancel" for _, kind in actions)
        if self._next_ref + needed - 1 > MAX_USER_REF_NUM:
            self.counters["ref_exhausted"] += 1
            return []
        orders = []
        for side, kind in actions:
            if kind == "cancel":
                orders.append(self._cancel(locate, side, cycle))
                continue
            px, qty = wanted[side]
            ref, self._next_ref = self._next_ref, self._next_ref + 1
            self._refs[ref] = (locate, side)
            old = s.live.get(side)
            orig = old.user_ref_num if old is not None else None
            s.live[side] = _LiveOrder(ref, px, qty, qty)
            self.counters[kind] += 1
            orders.append(Order(kind, locate, side, ref, orig, qty, px, cycle))
        s.last_sent_cycle = cycle
        self.counters["updates"] += 1
        return orders
