"""The quote arithmetic of one book change in four registered stages, bit for bit the model.

:func:`quote_datapath` is steps 2-8 of ``docs/quoting.md`` and the loss test of step 1, exactly
:func:`tick2quote.sim.models.pricing.price`, from a mid ``M`` and a symbol's stored terms
(:mod:`.pricing_terms`). Its inputs are registers that hold still while the event is evaluated
(valid from cycle 1); its outputs are registers valid from cycle :data:`DEPTH` (5), where the
quoter decides. Nothing here divides: every quotient is an approximation by one product with a
stored coefficient, corrected exactly with a few low-order bits.

Approximate, then correct. With ``A = floor(c * 2**K / d)`` stored per symbol, ``Q0 = (M * A +
B) >> K`` is ``floor(x / d)`` or one less, for ``x = M * c + ...`` (the error of ``A`` times
``M < 2**32``, plus that of ``B``, stays below ``2**K``). Which one is read from low bits only:
``x - d * Q0`` lies in ``[0, 2d)``, so it is known modulo a power of two above ``2d`` from the
low bits of ``x`` (a multiplier's low partial product) and of ``Q0``. For the half spread ``H =
M * spread // 20000``: ``H0 = M * a_h >> 33``, ``H = H0 + c_h`` with ``c_h = ((t >> 5) - 625 *
H0 mod 2**11) >= 625``, ``t = M * spread`` (``20000 = 32 * 625``). The band ``M * band //
10000`` and the min-edge bound ``ceil(M * min_edge / 5000)`` work the same way (shift 32).

Rounding to the tick without dividing. For ``tick`` 100 the bid is ``100 * floor((r - half) /
100)`` with ``r = M - skew``. The quotient is approximated directly from ``M``: when ``half = H``
(``t >= 2_000_000``) ``(r - H) / 100`` is within 0.01 above ``(M * (20000 - spread) / 20000 -
skew) / 100``, approximated by ``(M * a_bh - off_bh) >> 33`` from below by less than 0.99; the
floor is therefore right or one less, and ``d = (r - H) - 100 * Q0`` in ``[0, 200)`` says which,
from ``r``, ``H`` and ``Q0`` modulo 256. When ``half = tick`` the coefficient is ``2**33 //
100`` (:data:`~.pricing_terms.A_T`) and the offset ``off_bt``; the ask uses ``a_ah``,
``off_ah`` / ``off_at`` with ``ceil``. For ``tick`` 1 the bid is ``r - H0 - 1`` or ``r - H0``
(``r - 1`` when ``H0 = 0``). So each side has two candidate prices, ``base`` and ``base +
tick``, chosen late by the correction bits.

Stages (cycle numbers from the event's inputs, which are valid in cycle 1):

1. every product's 18 x 18 partial products (ECP5 ``MULT18X18D``), ``r = M - skew``, the book
   caps ``ask - tick`` and ``bid + tick``;
2. the sums of partial products: ``H0``, ``t >= 20000 * tick`` (which half applies), the four
   quotient approximations, the band and edge approximations, half of the loss sum;
3. the bases (``100 * Q0`` or ``r -+ H0``), the correction residues (8 and 11 bits), the band
   limits ``M -+ band`` for both band candidates, the loss sign;
4. the correction bits; each side's candidate compared with its cap (step 5), zero, ``2**32``,
   both band limits and the live order's price, then the candidate chosen; the min-edge bound.

Step 7 (``ask - bid < edge_bound``) is one subtraction of stage-4 registers
(:attr:`QuoteOutputs.edge`), left to the decision cycle. Deviation (as before): a price ``>=
2**32`` (only possible with ``mid + band >= 2**32``) is band-rejected; the model would quote it.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Mux, Signal, Value, signed, unsigned

from .pricing_terms import A_T, EDGE_SHIFT, QUOTE_SHIFT, offsets

__all__ = ["DEPTH", "QuoteOutputs", "quote_datapath"]

#: The cycle from which :func:`quote_datapath`'s outputs are valid (inputs valid in cycle 1).
DEPTH = 5
_PX = signed(42)  # every price-sized value: -2**41 .. 2**41 - 1


@dataclass(frozen=True)
class QuoteOutputs:
    """What :func:`quote_datapath` computes (registers, valid from cycle :data:`DEPTH`).

    ``bid_px`` / ``ask_px`` are the step-5 prices (before rejection), ``bid_reject`` /
    ``ask_reject`` step 6, ``bid_same`` / ``ask_same`` whether the price equals the given live
    price, ``edge`` step 7 (combinational, one subtraction), ``loss`` the loss test. With the
    ``gates`` of :func:`quote_datapath`: ``ok`` (per side: not rejected and gated),
    ``keep`` (per side: same price and gated) and ``go`` (gated and no loss), for the decision.
    """

    bid_px: Value
    ask_px: Value
    bid_reject: Value
    ask_reject: Value
    bid_same: Value
    ask_same: Value
    edge: Value
    loss: Value
    ok: tuple
    keep: tuple
    go: Value


class _Stages:
    def __init__(self, m):
        self.m = m

    def reg(self, expr, shape=None, name="r"):
        expr = Value.cast(expr)
        sig = Signal(shape if shape is not None else expr.shape(), name=f"qd_{name}")
        self.m.d.sync += sig.eq(expr)
        return sig


def _split(value: Value, low_bits: int) -> tuple[Value, Value]:
    """A value as (low limb, high limb); the high limb keeps the value's sign."""
    value = Value.cast(value)
    high = value[low_bits:]
    if value.shape().signed:
        high = high.as_signed()
    return value[:low_bits], high


def _times(s: _Stages, a: Value, b: Value, low_bits: int, name: str) -> tuple:
    """Registered partial products of ``a * b``: ``a`` split at ``low_bits`` (``b`` whole or at
    ``low_bits`` too). Returns ``(concat, cross, shift)``: ``a * b == concat + (cross << shift)``
    once the two cross products are added (``cross`` is a pair)."""
    a0, a1 = _split(a, low_bits)
    b0, b1 = _split(b, low_bits)
    pp00 = s.reg(a0 * b0, name=f"{name}00")
    pp01 = s.reg(a0 * b1, name=f"{name}01")
    pp10 = s.reg(a1 * b0, name=f"{name}10")
    pp11 = s.reg(a1 * b1, name=f"{name}11")
    concat = Cat(pp00, pp11)  # pp00 fills its 2 * low_bits bits exactly
    if pp11.shape().signed:
        concat = concat.as_signed()
    return concat, (pp01, pp10), low_bits


def _sum(parts, *extra) -> Value:
    concat, (x, y), shift = parts
    total = concat + (x << shift) + (y << shift)
    for term in extra:
        total = total + term
    return total


def _equal(a, b) -> Value:
    """``a == b`` as two ordered compares (carry chains, faster than a wide equality tree)."""
    return ~(a < b) & ~(b < a)


def _times100(q: Value) -> Value:
    return (q << 6) + (q << 5) + (q << 2)


def _residue(bits: int, *terms) -> Value:
    """The sum of ``(sign, value)`` terms modulo ``2**bits``, as a balanced tree."""
    vals = [(v if sign > 0 else -v) for sign, v in terms]
    vals = [
        Value.cast(v)[:bits] if isinstance(v, Value) else Const(v % (1 << bits), bits) for v in vals
    ]
    while len(vals) > 1:
        vals = [
            (vals[i] + vals[i + 1])[:bits] if i + 1 < len(vals) else vals[i]
            for i in range(0, len(vals), 2)
        ]
    return vals[0]


def _minus625(bits: int, x: Value, q: Value) -> Value:
    """``(x - 625 * q) mod 2**bits``; 625 = 512 + 64 + 32 + 16 + 1."""
    q = Value.cast(q)[:bits]
    return _residue(bits, (1, x), (-1, q), (-1, q << 4), (-1, q << 5), (-1, q << 6), (-1, q << 9))


def quote_datapath(m, book, params, terms, account, live_prices, gates=None) -> QuoteOutputs:
    """Steps 2-8 and the loss test for one book (see the module documentation).

    ``book`` has ``bid_px``, ``ask_px`` (32 bit) and ``mid`` (``(bid + ask) >> 1``);
    ``params`` has ``tick100``, ``spread_bps``, ``band_bps``, ``min_edge_bps``, ``max_loss``;
    ``terms`` is a :data:`~.pricing_terms.terms_layout` view, ``account`` has ``position``
    (signed 32) and ``cash`` (signed 64), ``live_prices`` the two
    live orders' prices (for ``bid_same`` / ``ask_same``), ``gates`` (optional) three
    single bits and two pairs folded into the last stage's registers for the decision:
    ``(go, (ok_bid, ok_ask), (keep_bid, keep_ask))``. All of them must hold still from cycle 1
    to cycle :data:`DEPTH`. Meaningful only for ``0 < bid < ask`` (else the quoter pulls and
    ignores the outputs).
    """
    if gates is None:
        gates = (Const(1), (Const(1), Const(1)), (Const(1), Const(1)))
    go_gate, ok_gate, keep_gate = gates
    s = _Stages(m)
    tick100 = params.tick100
    tick = Mux(tick100, 100, 1)
    mid = book.mid
    # ------------------------------------------------------------------ stage 1
    h_pp = _times(s, mid, terms.a_h, 18, "h")
    bh_pp = _times(s, mid, terms.a_bh, 17, "bh")
    ah_pp = _times(s, mid, terms.a_ah, 18, "ah")
    t_pp = _times(s, mid, Const(A_T, 27), 18, "tq")
    bd_pp = _times(s, mid, terms.a_bd, 18, "bd")
    e_pp = _times(s, mid, terms.a_e, 18, "e")
    pnl_pp = _times(s, account.position.as_signed(), mid, 17, "pnl")
    sp0 = s.reg(mid[:18] * params.spread_bps, name="t0")
    sp1 = s.reg(mid[18:] * params.spread_bps, name="t1")
    bd_low = s.reg((mid[:18] * params.band_bps)[:15], name="ubd")
    e_low = s.reg((mid[:18] * params.min_edge_bps)[:14], name="ue")
    r1 = s.reg(mid - terms.skew, _PX, "r1")
    mid1 = s.reg(mid, name="mid1")
    cap_b = s.reg(book.ask_px - tick, _PX, "capb")  # bid <= ask - tick
    cap_bt = s.reg(book.ask_px - 2 * tick, _PX, "capbt")  # the same for base + tick
    floor_a = s.reg(book.bid_px + tick, _PX, "flra")  # ask >= bid + tick
    floor_at = s.reg(book.bid_px, _PX, "flrat")
    live_b = s.reg(live_prices[0], _PX, "lb")
    live_bt = s.reg(live_prices[0] - tick, _PX, "lbt")
    live_a = s.reg(live_prices[1], _PX, "la")
    live_at = s.reg(live_prices[1] - tick, _PX, "lat")
    # the loss test's cash + max_loss, and the four quotient offsets (low part and a multiple
    # of 2**33: one small adder each)
    headroom1 = s.reg(account.cash.as_signed() + params.max_loss, signed(66), "hr1")
    offset = {name: s.reg(v, signed(67), name) for name, v in offsets(terms).items()}
    # every stage reads only the previous one's registers (one new book per cycle would work)
    tick100_2 = s.reg(tick100, name="tk2")
    # ------------------------------------------------------------------ stage 2
    sh = QUOTE_SHIFT
    h0 = s.reg(_sum(h_pp)[sh : sh + 34], name="h0")
    # the half spread is H (not the tick) for tick 100: M * spread >= 20000 * 100
    big = s.reg(sp0 + (sp1 << 18) >= 2_000_000, name="big")
    t_low = s.reg(sp0[5:16], name="tlow")
    q_bh = s.reg(_sum(bh_pp, -offset["off_bh"]) >> sh, signed(36), "qbh")
    q_bt = s.reg(_sum(t_pp, -offset["off_bt"]) >> sh, signed(36), "qbt")
    q_ah = s.reg(_sum(ah_pp, offset["off_ah"]) >> sh, signed(36), "qah")
    q_at = s.reg(_sum(t_pp, offset["off_at"]) >> sh, signed(36), "qat")
    band0 = s.reg(_sum(bd_pp)[EDGE_SHIFT : EDGE_SHIFT + 35], name="band0")
    edge0 = s.reg(_sum(e_pp)[EDGE_SHIFT : EDGE_SHIFT + 36], name="edge0")
    bd_low2 = s.reg(bd_low[4:15], name="ubd2")
    e_low2 = s.reg(e_low, name="ue2")
    pnl_concat, (pnl_x, pnl_y), pnl_shift = pnl_pp
    pnl_a = s.reg(pnl_concat + (pnl_x << pnl_shift), signed(67), "pnla")
    pnl_b = s.reg((pnl_y << pnl_shift) + headroom1, signed(67), "pnlb")
    r2 = s.reg(r1, name="r2")
    r2m1 = s.reg(r1 - 1, _PX, "r2m1")
    # the mid with the small constants of the band limits folded in, so that every stage-3
    # sum has two operands (one carry chain): mid -+ c -+ j * tick, c, j in (0, 1)
    tick2 = Mux(tick100_2, 100, 1)
    mid_lo = [[s.reg(mid1 - c - j * tick2, _PX, f"mlo{c}{j}") for j in (0, 1)] for c in (0, 1)]
    mid_hi = [[s.reg(mid1 + c - j * tick2, _PX, f"mhi{c}{j}") for j in (0, 1)] for c in (0, 1)]
    # and for the caps' own band test: bound -+ (mid + c)
    bound_lo = {
        n: [s.reg(b - mid1 + c, _PX, f"{n}lo{c}") for c in (0, 1)]
        for n, b in (("cap", cap_b), ("flr", floor_a))
    }
    bound_hi = {
        n: [s.reg(mid1 + c - b, _PX, f"{n}hi{c}") for c in (0, 1)]
        for n, b in (("cap", cap_b), ("flr", floor_a))
    }
    tick100_3 = s.reg(tick100_2, name="tk3")
    # ------------------------------------------------------------------ stage 3
    tick100, tick = tick100_3, Mux(tick100_3, 100, 1)
    base_b = s.reg(
        Mux(tick100, Mux(big, _times100(q_bh), _times100(q_bt)), r2m1 - h0), _PX, "baseb"
    )
    base_a = s.reg(Mux(tick100, Mux(big, _times100(q_ah), _times100(q_at)), r2 + h0), _PX, "basea")
    res_bh = _residue(8, (1, r2), (-1, h0), (-1, _times100(q_bh)))
    res_bt = _residue(8, (1, r2), (-1, 100), (-1, _times100(q_bt)))
    res_ah = _residue(8, (1, r2), (1, h0), (1, 99), (-1, _times100(q_ah)))
    res_at = _residue(8, (1, r2), (1, 199), (-1, _times100(q_at)))
    # the correction residues, registered (compared in stage 4, beside the wide compares)
    res_b = s.reg(Mux(big, res_bh, res_bt), name="resb")
    res_a = s.reg(Mux(big, res_ah, res_at), name="resa")
    y_h = s.reg(_minus625(11, t_low, h0), name="yh")
    y_bd = s.reg(_minus625(11, bd_low2, band0), name="ybd")
    y_e = s.reg(_minus625(11, e_low2[3:14], edge0), name="ye")
    e_rem = s.reg(e_low2[:3] != 0, name="erem")
    h0_zero = s.reg(h0 == 0, name="h0zero")
    big3 = s.reg(big, name="big3")
    edge3 = s.reg(edge0, name="edge3")
    # band limits for band = band0 and band0 + 1, also less one tick (for base + tick)
    lows = [s.reg(mid_lo[c][0] - band0, _PX, f"lo{c}") for c in (0, 1)]
    highs = [s.reg(mid_hi[c][0] + band0, _PX, f"hi{c}") for c in (0, 1)]
    lows_t = [s.reg(mid_lo[c][1] - band0, _PX, f"lot{c}") for c in (0, 1)]
    highs_t = [s.reg(mid_hi[c][1] + band0, _PX, f"hit{c}") for c in (0, 1)]
    loss = s.reg((pnl_a + pnl_b) < 0, name="loss")
    tick100_4 = s.reg(tick100_3, name="tk4")
    # the caps and the live prices, from stage 1 to stage 4; the caps' own rejects (step 6)
    # and live-price equality, registered in stage 3
    cap_b2, floor_a2, live_b2, live_a2 = (
        s.reg(v, _PX, f"{n}2")
        for n, v in zip(("capb", "flra", "lb", "la"), (cap_b, floor_a, live_b, live_a))
    )

    def bound_reject(bound, n, c):
        outside = (
            (bound <= 0)
            | (bound >= 2**32)
            | (bound_lo[n][c] + band0 < 0)  # bound < mid - band - c
            | (bound_hi[n][c] + band0 < 0)  # bound > mid + band + c
        )
        return s.reg(outside, name=f"{n}rej{c}")

    cap_rej = [bound_reject(cap_b2, "cap", c) for c in (0, 1)]
    floor_rej = [bound_reject(floor_a2, "flr", c) for c in (0, 1)]
    cap_same = s.reg(_equal(cap_b2, live_b2), name="capsame")
    floor_same = s.reg(_equal(floor_a2, live_a2), name="flrsame")
    cap_b, floor_a, live_b, live_a = (
        s.reg(v, _PX, f"{n}3")
        for n, v in zip(("capb", "flra", "lb", "la"), (cap_b2, floor_a2, live_b2, live_a2))
    )
    cap_bt, floor_at, live_bt, live_at = (
        s.reg(s.reg(v, _PX, f"{n}2"), _PX, f"{n}3")
        for n, v in zip(("capbt", "flrat", "lbt", "lat"), (cap_bt, floor_at, live_bt, live_at))
    )
    # ------------------------------------------------------------------ stage 4
    tick100, tick = tick100_4, Mux(tick100_4, 100, 1)
    # the correction bits (small compares, beside the wide ones below)
    c_h = y_h >= 625  # the half spread is H0 + 1
    c_bd = y_bd >= 625  # the band is band0 + 1
    plus = big3 & c_h  # the half spread is H0 + 1 and applies
    sel_b = Mux(tick100, (res_b > 100) | ((res_b == 100) & ~plus), ~c_h & ~h0_zero)
    sel_a = Mux(tick100, (res_a >= 100) | ((res_a == 99) & plus), c_h | h0_zero)
    edge_k = ((y_e != 0) | e_rem) + ((y_e > 625) | ((y_e == 625) & e_rem))
    edge_bound = s.reg(edge3 + edge_k, unsigned(37), "ebound")  # ceil(M * min_edge / 5000)

    def side(base, sel, bound, bound_t, beyond, live, live_t, bound_rej, bound_same, name):
        """Candidate ``base`` or ``base + tick``, then capped by ``bound`` (``beyond`` tells
        whether a price passes the cap); rejects and live-price equality of the result."""
        plus_tick = base + tick
        capped = [beyond(base, bound), beyond(base, bound_t)]
        zero_t = [Const(0), -tick]
        top_t = [Const(2**32), 2**32 - tick]

        def cand_reject(j, kk):
            lo = (lows, lows_t)[j][kk]
            hi = (highs, highs_t)[j][kk]
            return (base <= zero_t[j]) | (base >= top_t[j]) | (base < lo) | (base > hi)

        reject = {(j, kk): cand_reject(j, kk) for j in (0, 1) for kk in (0, 1)}
        same = [_equal(base, live), _equal(base, live_t)]
        hit = Mux(sel, capped[1], capped[0])
        price = Mux(hit, bound, Mux(sel, plus_tick, base))
        # every flag is one compare; the selects (sel, c_bd) are early, hit is a compare
        rej_c = Mux(
            sel,
            Mux(c_bd, reject[1, 1], reject[1, 0]),
            Mux(c_bd, reject[0, 1], reject[0, 0]),
        )
        rej = (hit & Mux(c_bd, bound_rej[1], bound_rej[0])) | (~hit & rej_c)
        eq = (hit & bound_same) | (~hit & Mux(sel, same[1], same[0]))
        k = 0 if name == "bid" else 1
        return (
            s.reg(price, _PX, f"{name}px"),
            s.reg(rej, name=f"{name}rej"),
            s.reg(eq, name=f"{name}same"),
            s.reg(~rej & ok_gate[k], name=f"{name}ok"),
            s.reg(eq & keep_gate[k], name=f"{name}keep"),
        )

    bid_px, bid_rej, bid_same, bid_ok, bid_keep = side(
        base_b, sel_b, cap_b, cap_bt, lambda v, b: v > b, live_b, live_bt, cap_rej, cap_same, "bid"
    )
    ask_px, ask_rej, ask_same, ask_ok, ask_keep = side(
        base_a,
        sel_a,
        floor_a,
        floor_at,
        lambda v, b: v < b,
        live_a,
        live_at,
        floor_rej,
        floor_same,
        "ask",
    )
    loss4 = s.reg(loss, name="loss4")
    go = s.reg(go_gate & ~loss, name="go")
    # ------------------------------------------------------------------ decision cycle
    edge = (ask_px - bid_px - edge_bound) < 0
    return QuoteOutputs(
        bid_px=bid_px,
        ask_px=ask_px,
        bid_reject=bid_rej,
        ask_reject=ask_rej,
        bid_same=bid_same,
        ask_same=ask_same,
        edge=edge,
        loss=loss4,
        ok=(bid_ok, ask_ok),
        keep=(bid_keep, ask_keep),
        go=go,
    )
