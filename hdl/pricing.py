"""Exact pipelined integer arithmetic for the quoter: registered products, constant divisions.

Building blocks of the quoter's slower paths (fills, per-symbol terms: :mod:`.pricing_terms`);
the book-dependent quote arithmetic has its own hand-balanced stages (:mod:`.pricing_quote`).
The values here are computed from inputs that stay put while an event is processed, so every
datapath is a tree of registers with no enables: each register settles to the right value a
fixed number of cycles after the inputs appear. :class:`Staged` values carry that number (their
*depth*: valid from that cycle on, counting the cycle the inputs appear as 1).

Products (:func:`product`) are split into 17-bit limbs (the top limb keeps the sign), so every
partial product is one signed 18 x 18 multiplier (an ECP5 ``MULT18X18D``); the partial products
are registered and summed by a registered adder tree, ``arity`` terms per level.

Division by a constant (:func:`floor_divide`): the divisor's powers of two become a shift; an odd
rest ``d`` becomes a multiplication by ``M = ceil(2**k / d)`` and a shift by ``k``, where ``k``
is the smallest with ``x_max * e < 2**k`` (``e = M*d - 2**k``). That makes it exact for every
``0 <= x <= x_max``: write ``x = q*d + r`` with ``0 <= r < d``; then
``x*M / 2**k = q + (r + x*e / 2**k) / d`` and ``0 <= r + x*e/2**k < r + 1 <= d``, so the floor
is ``q``. (:func:`magic` computes ``M`` and ``k``; the tests also check the boundary values.)
:func:`scaled_floor` is the same argument for ``floor(x * n / d)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Const, Signal, Value, signed, unsigned

__all__ = [
    "LIMB",
    "Staged",
    "Pipeline",
    "magic",
    "scaled",
    "product",
    "floor_divide",
    "scaled_floor",
]

#: Width of a multiplier limb: 17 unsigned bits fit a signed 18 x 18 multiplier.
LIMB = 17


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


def scaled(numerator: int, divisor: int, x_max: int) -> tuple[int, int]:
    """``(M, k)`` with ``floor(x * numerator / divisor) == (x * M) >> k`` for ``0 <= x <= x_max``.

    ``M = ceil(numerator * 2**k / divisor)`` with the smallest ``k`` for which
    ``x_max * e < 2**k`` (``e = M * divisor - numerator * 2**k``): then ``x * M / 2**k`` exceeds
    ``x * numerator / divisor`` by less than ``1 / divisor``, which cannot cross an integer.
    """
    k = 0
    while True:
        mult = -(-(numerator << k) // divisor)
        if x_max * (mult * divisor - (numerator << k)) < (1 << k):
            return mult, k
        k += 1


def scaled_floor(
    pipe: Pipeline, x: Staged, numerator: int, divisor: int, x_max: int, *, arity=2, name="s"
) -> Staged:
    """``floor(x * numerator / divisor)`` for an unsigned ``x <= x_max`` (see :func:`scaled`)."""
    mult, k = scaled(numerator, divisor, x_max)
    prod = product(pipe, x, Staged(Const(mult), 0), arity=arity, name=name)
    bits = (x_max * numerator // divisor).bit_length()
    return Staged(Value.cast(prod.value)[k : k + bits], prod.depth)
