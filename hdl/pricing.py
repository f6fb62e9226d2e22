"""Exact pipelined integer arithmetic for the quoter: products, constant divisions, the quote.

The quoter evaluates one event at a time and holds its inputs (event registers and block-RAM
read data) for the whole evaluation, so the datapath here is a tree of registers with no
enables: every register settles to the right value a fixed number of cycles after the inputs
appear. :class:`Staged` values carry that number (their *depth*: valid from that cycle on,
counting the cycle the inputs appear as 1); the quoter commits at the deepest output's depth.

Products (:func:`product`) are split into 17-bit limbs (the top limb keeps the sign), so every
partial product is one signed 18 x 18 multiplier (an ECP5 ``MULT18X18D``); the partial products
are registered and summed by a registered adder tree, ``arity`` terms per level.

Division by a constant (:func:`floor_divide`): the divisor's powers of two become a shift; an odd
rest ``d`` becomes a multiplication by ``M = ceil(2**k / d)`` and a shift by ``k``, where ``k``
is the smallest with ``x_max * e < 2**k`` (``e = M*d - 2**k``). That makes it exact for every
``0 <= x <= x_max``: write ``x = q*d + r`` with ``0 <= r < d``; then
``x*M / 2**k = q + (r + x*e / 2**k) / d`` and ``0 <= r + x*e/2**k < r + 1 <= d``, so the floor
is ``q``. (:func:`magic` computes ``M`` and ``k``; the tests also check the boundary values.)

:func:`quote_datapath` is steps 2-8 of ``docs/quoting.md`` plus the loss test of step 1, bit
for bit as :func:`tick2quote.sim.models.pricing.price`. Two range facts keep it narrow:

- ``r - half`` is clamped to ``[-2**37, 2**32]`` and ``r + half`` to ``[0, 2**37]`` before
  rounding to the tick. Above ``2**32`` the bid is clamped to ``ask - tick`` anyway, below 0 the
  ask to ``bid + tick``; beyond ``+-2**37`` the side is band-rejected either way (``mid + band <
  2**35``) and the spread exceeds ``2**36``, so ``spread * 10000 >= 2**49 > 2 * min_edge * mid``
  and the min-edge test cannot fire either way. Every result is therefore the model's.
- Deviation: a price ``>= 2**32`` (possible when ``mid + band`` exceeds it) does not fit the
  32-bit order price, so it is band-rejected; the model would quote it. Below
  ``mid < 2**32 / 7.5535`` (any band) the two cannot differ.
- Steps 2, 6 and 7 take one product each: ``spread_bps``, ``band_bps`` and ``min_edge_bps``
  are stored pre-multiplied by a reciprocal (:data:`SCALES`, :func:`reciprocal`), so
  ``mid * p // d`` is ``(mid * scale) >> k``. Step 7 ``(ask_q - bid_q) * 10000 < 2 *
  min_edge_bps * mid`` is ``ask_q - bid_q < ceil(min_edge_bps * mid / 5000)``, exact for every
  integer difference; the ceiling is the quotient plus "the remainder is not 0", read from the
  product's low ``k`` bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Const, Mux, Signal, Value, signed, unsigned

__all__ = [
    "LIMB",
    "Staged",
    "Pipeline",
    "Scale",
    "SCALES",
    "magic",
    "reciprocal",
    "product",
    "floor_divide",
    "quote_datapath",
]

#: Width of a multiplier limb: 17 unsigned bits fit a signed 18 x 18 multiplier.
LIMB = 17
_MID_MAX = 2**32 - 1
_U16_MAX = 2**16 - 1
#: Clamp bounds of ``r - half`` and ``r + half`` (see the module documentation).
BID_LOW, BID_HIGH = -(2**37), 2**32
ASK_LOW, ASK_HIGH = 0, 2**37
#: A multiple of 100 at least ``2**37``: biases the signed values to round into non-negatives.
BIAS = -(-(2**37) // 100) * 100


@dataclass(frozen=True)
class Staged:
    """A value and the cycle from which it is valid (its depth)."""

    value: Value
    depth: int


class Pipeline:
    """Makes named registers in ``m``'s sync domain; counts them for unique names."""

    def __init__(self, m, prefix: str):
        self.m, self.prefix, self.count = m, prefix, 0

    def reg(self, expr, *sources: Staged, shape=None, name: str = "r") -> Staged:
        """Register ``expr`` (which reads ``sources``): one deeper than the deepest source."""
        self.count += 1
        expr = Value.cast(expr)
        sig = Signal(shape if shape is not None else expr.shape(), name=f"{self.prefix}_{name}")
        self.m.d.sync += sig.eq(expr)
        return Staged(sig, max((s.depth for s in sources), default=0) + 1)


def _limbs(value: Value) -> list[tuple[Value, int]]:
    n, is_signed = len(value), value.shape().signed
    limbs = []
    for low in range(0, n, LIMB):
        high = min(low + LIMB, n)
        part = value[low:high]
        limbs.append((part.as_signed() if is_signed and high == n else part, low))
    return limbs


def product(pipe: Pipeline, a: Staged, b: Staged, *, arity: int = 2, name="p") -> Staged:
    """``a * b`` exactly, from registered 18 x 18 partial products and an adder tree."""
    va, vb = Value.cast(a.value), Value.cast(b.value)
    any_signed = va.shape().signed or vb.shape().signed
    width = len(va) + len(vb)
    terms = []
    for la, sa in _limbs(va):
        for lb, sb in _limbs(vb):
            terms.append((pipe.reg(la * lb, a, b, name=f"{name}_pp"), sa + sb))
    while len(terms) > 1:
        level = []
        for start in range(0, len(terms), arity):
            group = terms[start : start + arity]
            if len(group) == 1:
                level.append(group[0])
                continue
            base = min(shift for _, shift in group)
            expr = sum(t.value << (shift - base) for t, shift in group)
            shape = signed(width + 1 - base) if any_signed else unsigned(width - base)
            level.append((pipe.reg(expr, *(t for t, _ in group), shape=shape, name=name), base))
        terms = level
    ((total, shift),) = terms
    shape = signed(width) if any_signed else unsigned(width)
    return Staged(_fit(total.value << shift, shape), total.depth)


def _fit(expr, shape) -> Value:
    expr = Value.cast(expr)
    value = expr[: shape.width]
    return value.as_signed() if shape.signed else value


def magic(divisor: int, x_max: int) -> tuple[int, int]:
    """``(M, k)`` with ``x // divisor == (x * M) >> k`` for every ``0 <= x <= x_max``.

    ``divisor`` must be odd and > 1; ``k`` is the smallest for which the proof in the module
    documentation holds.
    """
    if divisor < 3 or divisor % 2 == 0:
        raise ValueError(f"divisor must be odd and at least 3, not {divisor!r}")
    k = divisor.bit_length()
    while True:
        m = -(-(1 << k) // divisor)
        if x_max * (m * divisor - (1 << k)) < (1 << k):
            return m, k
        k += 1


def reciprocal(divisor: int, x_max: int) -> tuple[int, int]:
    """``(C, k)`` with ``x // divisor == (x * C) >> k`` for every ``0 <= x <= x_max``.

    ``C = ceil(2**k / divisor)`` with the smallest ``k`` for which ``x_max * e < 2**k``
    (``e = C * divisor - 2**k``); the proof in the module documentation applies unchanged. It
    also gives the remainder test of :func:`quote_datapath`'s min-edge step: with
    ``P = x * C``, ``x % divisor != 0`` exactly when ``P % 2**k >= ceil(2**k / divisor)``.
    """
    k = 0
    while True:
        c = -(-(1 << k) // divisor)
        if x_max * (c * divisor - (1 << k)) < (1 << k):
            return c, k
        k += 1


@dataclass(frozen=True)
class Scale:
    """A parameter pre-multiplied by a reciprocal: ``mid * p // divisor == (mid * s) >> k``.

    ``s = p * factor`` (``p`` unsigned 16 bit) is computed when the parameter is written and
    stored per symbol, so the quote needs one product of ``mid`` instead of a product and a
    constant division in a chain.
    """

    field: str
    divisor: int
    factor: int
    shift: int

    @property
    def width(self) -> int:
        """Bits of a stored scale ``p * factor``."""
        return (_U16_MAX * self.factor).bit_length()

    def of(self, value: int) -> int:
        """The stored scale of parameter ``value``."""
        return value * self.factor


def _scale(field: str, divisor: int) -> Scale:
    factor, shift = reciprocal(divisor, _MID_MAX * _U16_MAX)
    return Scale(field, divisor, factor, shift)


#: Half spread (``mid * spread_bps // 20000``), band (``mid * band_bps // 10000``) and the
#: min-edge bound (``mid * min_edge_bps / 5000``, see :func:`quote_datapath`).
SCALES = {
    "half": _scale("spread_bps", 20000),
    "band": _scale("band_bps", 10000),
    "edge": _scale("min_edge_bps", 5000),
}


def floor_divide(
    pipe: Pipeline, x: Staged, divisor: int, x_max: int, *, arity: int = 2, name="q"
) -> Staged:
    """``x // divisor`` for an unsigned ``x <= x_max`` (``divisor`` a positive constant)."""
    shift = (divisor & -divisor).bit_length() - 1
    odd = divisor >> shift
    x_max >>= shift
    shifted = Value.cast(x.value)[shift : shift + x_max.bit_length()]
    if odd == 1:
        return Staged(shifted, x.depth)
    m, k = magic(odd, x_max)
    prod = product(pipe, Staged(shifted, x.depth), Staged(Const(m), 0), arity=arity, name=name)
    q_bits = (x_max // odd).bit_length()
    return Staged(Value.cast(prod.value)[k : k + q_bits], prod.depth)


def _times100(q: Value) -> Value:
    return (q << 6) + (q << 5) + (q << 2)


def _clamp(value: Value, low: int, high: int) -> Value:
    return Mux(value < low, low, Mux(value > high, high, value))


@dataclass(frozen=True)
class QuoteOutputs:
    """What :func:`quote_datapath` computes; every field valid from cycle ``depth``."""

    loss: Value
    bid_px: Value
    bid_qty: Value
    ask_px: Value
    ask_qty: Value
    bid_band_reject: Value
    ask_band_reject: Value
    edge_reject: Value
    depth: int


def quote_datapath(
    m, params, scales, bid, ask, mid, position, cash, *, depth: int = 1, arity: int = 2
) -> QuoteOutputs:
    """Steps 2-8 of quoting.md and the loss test, from inputs valid (and held) from ``depth``.

    ``params`` is a view with the fields of :data:`~tick2quote.hdl.quoterstate.params_layout`,
    ``scales`` one with :data:`~tick2quote.hdl.quoterstate.scales_layout` (the symbol's
    :data:`SCALES`); ``bid``/``ask`` are 32-bit prices (``0 < bid < ask`` where the result is
    used), ``mid`` is ``(bid + ask) >> 1``, ``position`` signed 32, ``cash`` signed 64. The
    outputs are the model's ``Pricing`` (quote and rejects) and ``cash + position * mid <
    -max_loss``.
    """
    pipe = Pipeline(m, "px")

    def src(value) -> Staged:
        return Staged(Value.cast(value), depth)

    p = params
    tick = Mux(p.tick100, 100, 1)
    pos, mid = src(position.as_signed()), src(mid)

    # loss: cash + position * mid + max_loss < 0
    pos_mid = product(pipe, pos, mid, arity=arity, name="posmid")
    headroom = pipe.reg(cash.as_signed() + p.max_loss, src(0), shape=signed(66), name="room")
    pnl = pipe.reg(pos_mid.value + headroom.value, pos_mid, headroom, shape=signed(67), name="pnl")
    loss = pnl.value < 0

    # skew and reservation price
    skewed = product(pipe, pos, src(p.skew_num.as_signed()), arity=arity, name="skewp")
    skew = pipe.reg(skewed.value >> p.skew_shift, skewed, shape=signed(48), name="skew")
    reservation = pipe.reg(mid.value - skew.value, mid, skew, shape=signed(50), name="res")

    # half spread, band, min-edge bound: one product of mid with the stored scales each
    def scaled(name: str) -> tuple[Staged, int]:
        sc = SCALES[name]
        prod = product(pipe, mid, src(getattr(scales, name)), arity=arity, name=name)
        return prod, sc.shift

    half_p, half_k = scaled("half")
    half = Staged(Value.cast(half_p.value)[half_k : half_k + 34], half_p.depth)
    band_p, band_k = scaled("band")
    band = Staged(Value.cast(band_p.value)[band_k : band_k + 34], band_p.depth)
    low = pipe.reg(mid.value - band.value, mid, band, shape=signed(35), name="low")
    high = pipe.reg(mid.value + band.value, mid, band, shape=35, name="high")
    # (ask_q - bid_q) * 10000 < 2 * min_edge * mid  <=>  ask_q - bid_q < ceil(min_edge * mid /
    # 5000): the quotient and "the remainder is not 0" from one product (see reciprocal)
    edge_p, edge_k = scaled("edge")
    edge_sc = SCALES["edge"]
    edge_frac = Value.cast(edge_p.value)[:edge_k]
    edge_inexact = edge_frac >= -(-(1 << edge_k) // edge_sc.divisor)
    edge_bound = pipe.reg(
        Value.cast(edge_p.value)[edge_k : edge_k + 34] + edge_inexact,
        edge_p,
        shape=35,
        name="edgeb",
    )

    # steps 3-4: r -+ max(tick, half), clamped, rounded to the tick
    half_v = Mux(half.value < tick, tick, half.value)
    bid_raw = pipe.reg(reservation.value - half_v, reservation, half, shape=signed(51), name="bv")
    ask_raw = pipe.reg(reservation.value + half_v, reservation, half, shape=signed(51), name="av")
    bid_c = pipe.reg(_clamp(bid_raw.value, BID_LOW, BID_HIGH), bid_raw, shape=signed(39))
    ask_c = pipe.reg(_clamp(ask_raw.value, ASK_LOW, ASK_HIGH), ask_raw, shape=signed(39))
    u_max = BIAS + BID_HIGH
    bid_u = pipe.reg(bid_c.value + BIAS, bid_c, shape=39, name="bu")
    ask_u = pipe.reg(BIAS - ask_c.value, ask_c, shape=39, name="au")
    bid_q = floor_divide(pipe, bid_u, 100, u_max, arity=arity, name="bq")
    ask_q = floor_divide(pipe, ask_u, 100, u_max, arity=arity, name="aq")
    bid_floor = pipe.reg(_times100(bid_q.value) - BIAS, bid_q, shape=signed(39), name="bf")
    ask_ceil = pipe.reg(BIAS - _times100(ask_q.value), ask_q, shape=signed(39), name="ac")

    # step 5: never take liquidity
    bid_t = Staged(Mux(p.tick100, bid_floor.value, bid_c.value), bid_floor.depth)
    ask_t = Staged(Mux(p.tick100, ask_ceil.value, ask_c.value), ask_ceil.depth)
    bid_cap = pipe.reg(ask - tick, src(0), shape=signed(34), name="bcap")
    ask_floor = pipe.reg(bid + tick, src(0), shape=34, name="afloor")
    bid_px = pipe.reg(
        Mux(bid_t.value > bid_cap.value, bid_cap.value, bid_t.value), bid_t, shape=signed(39)
    )
    ask_px = pipe.reg(
        Mux(ask_t.value < ask_floor.value, ask_floor.value, ask_t.value), ask_t, shape=signed(39)
    )

    # steps 6-7: band and min edge
    def outside(px: Staged) -> Staged:
        v = px.value
        too_big = v >= 2**32  # cannot be sent in a 32-bit price (the model has no such case)
        return pipe.reg(
            (v <= 0) | too_big | (v < low.value) | (v > high.value), px, low, high, name="out"
        )

    bid_reject, ask_reject = outside(bid_px), outside(ask_px)
    spread_q = pipe.reg(ask_px.value - bid_px.value, ask_px, bid_px, shape=signed(40), name="d")
    edge = pipe.reg(spread_q.value < edge_bound.value, spread_q, edge_bound, name="edge")

    # step 8: sizes
    cap = pipe.reg(
        Mux(p.quote_size < p.max_order_qty, p.quote_size, p.max_order_qty), src(0), shape=32
    )
    inv = p.max_inventory
    room_bid = pipe.reg(inv - pos.value, pos, shape=signed(34), name="roomb")
    room_ask = pipe.reg(inv + pos.value, pos, shape=signed(34), name="rooma")

    def size(room: Staged) -> Staged:
        v = room.value
        return pipe.reg(Mux(v <= 0, 0, Mux(v < cap.value, v, cap.value)), room, cap, shape=32)

    bid_qty, ask_qty = size(room_bid), size(room_ask)

    depth = max(s.depth for s in (pnl, bid_reject, ask_reject, edge, bid_qty, ask_qty))
    bid_ok = ~edge.value & ~bid_reject.value & (bid_qty.value != 0)
    ask_ok = ~edge.value & ~ask_reject.value & (ask_qty.value != 0)
    return QuoteOutputs(
        loss=loss,
        bid_px=Mux(bid_ok, bid_px.value[:32], 0),
        bid_qty=Mux(bid_ok, bid_qty.value, 0),
        ask_px=Mux(ask_ok, ask_px.value[:32], 0),
        ask_qty=Mux(ask_ok, ask_qty.value, 0),
        bid_band_reject=bid_reject.value,
        ask_band_reject=ask_reject.value,
        edge_reject=edge.value,
        depth=depth,
    )
