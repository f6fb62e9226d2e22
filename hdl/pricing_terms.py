"""Per-symbol quote terms that do not depend on the book, kept in memory next to the parameters.

The quote arithmetic (:mod:`.pricing_quote`) multiplies the book's mid by per-symbol
coefficients and adds per-symbol offsets; everything that depends only on a symbol's
parameters and account (position, cash) is computed here, once, when a fill or a parameter write
changes it, and stored (:data:`terms_layout`). :func:`terms_of` is the definition in Python
integers (also the reset value, with the default parameters and an empty account);
:func:`terms_datapath` computes the same words in gateware.

The terms (``M`` is the mid, ``s`` the skew, ``qs, rs = divmod(s, 100)``, ``F = 2**33 // 100``):

``skew``
    ``s = (position * skew_num) >> skew_shift`` clamped to ``+-S_MAX`` (``2**38``). Clamping is
    exact: beyond ``2**38`` one side is band-rejected either way, the other is pinned to the
    book (``ask - tick`` or ``bid + tick``), and the spread is so wide (``> 2**37``) that the
    min-edge test cannot fire, with or without the clamp.
``a_h``, ``a_bd``, ``a_e``
    ``floor(p * 2**33 / 20000)`` of ``spread_bps`` (the half spread ``M * spread // 20000``
    from ``M * a_h >> 33``, off by at most one), ``floor(p * 2**32 / 10000)`` of ``band_bps``
    and ``floor(p * 2**32 / 5000)`` of ``min_edge_bps`` (same, shift 32).
``a_bh``, ``a_ah``
    ``floor((20000 -+ spread_bps) * 2**33 / 2_000_000)``: the bid's and the ask's quotient by
    100 of ``M -+ M * spread / 20000``.
``off_bh``, ``off_bt``, ``off_ah``, ``off_at``
    the offsets of the four quotient approximations of :mod:`.pricing_quote` (bid / ask, half
    spread above / below one tick): ``rs * (F + 1) + qs * 2**33``, the same plus ``2**33``,
    ``(98 - rs) * F - qs * 2**33`` (``-(F + 1) - qs * 2**33`` for ``rs == 99``) and
    ``(99 - rs) * F - (qs - 1) * 2**33``.
``bid_qty``, ``ask_qty``
    step 8 of quoting.md: the sizes each side would quote.
``headroom``
    ``cash + max_loss`` (the loss test is ``headroom + position * M < 0``).
"""

from __future__ import annotations

from amaranth.hdl import Const, Mux, Signal, Value, signed
from amaranth.lib import data

from ..sim.models.pricing import QuoteParams
from .pricing import Pipeline, Staged, floor_divide, product, scaled_floor

__all__ = [
    "S_MAX",
    "QUOTE_SHIFT",
    "EDGE_SHIFT",
    "F_LO",
    "A_T",
    "terms_layout",
    "terms_of",
    "terms_word",
    "terms_datapath",
]

#: The skew is clamped to +-S_MAX (see the module documentation).
S_MAX = 2**38
#: Shift of the half-spread and quotient approximations; band and min-edge use EDGE_SHIFT.
QUOTE_SHIFT = 33
EDGE_SHIFT = 32
#: ``2**33 // 100``; ``A_T`` is the coefficient of ``M / 100`` (half spread of one tick).
F_LO = (1 << QUOTE_SHIFT) // 100
A_T = F_LO
_F_HI = F_LO + 1
#: A multiple of 100 above S_MAX: biases the skew for the division by 100.
_BIAS = -(-S_MAX // 100) * 100
_ONE = 1 << QUOTE_SHIFT
#: Keeps ``20000 - spread_bps`` non-negative for the division (a multiple of 15625).
_BH_BIAS = 3 * 15625

terms_layout = data.StructLayout(
    {
        "skew": signed(40),
        "off_bh": signed(67),
        "off_bt": signed(67),
        "off_ah": signed(67),
        "off_at": signed(67),
        "a_h": 35,
        "a_bd": 35,
        "a_e": 36,
        "a_bh": signed(29),
        "a_ah": 29,
        "bid_qty": 32,
        "ask_qty": 32,
        "headroom": signed(66),
    }
)


def _coefficients(spread: int, band: int, edge: int) -> dict:
    return {
        "a_h": (spread << 28) // 625,
        "a_bd": (band << 28) // 625,
        "a_e": (edge << 29) // 625,
        "a_bh": ((20000 - spread) << 26) // 15625,
        "a_ah": ((20000 + spread) << 26) // 15625,
    }


def _offsets(skew: int) -> dict:
    qs, rs = divmod(skew, 100)
    ask_half = (98 - rs) * F_LO if rs <= 98 else -_F_HI
    return {
        "off_bh": rs * _F_HI + qs * _ONE,
        "off_bt": rs * _F_HI + (qs + 1) * _ONE,
        "off_ah": ask_half - qs * _ONE,
        "off_at": (99 - rs) * F_LO - (qs - 1) * _ONE,
    }


def terms_of(params: QuoteParams, position: int, cash: int) -> dict:
    """The terms of a symbol with ``params``, ``position`` and ``cash`` (Python integers)."""
    skew = (position * params.skew_num) >> params.skew_shift
    skew = max(-S_MAX, min(S_MAX, skew))
    cap = min(params.quote_size, params.max_order_qty)
    inventory = params.max_inventory
    return {
        "skew": skew,
        **_offsets(skew),
        **_coefficients(params.spread_bps, params.band_bps, params.min_edge_bps),
        "bid_qty": min(cap, inventory - position) if position < inventory else 0,
        "ask_qty": min(cap, inventory + position) if position > -inventory else 0,
        "headroom": cash + params.max_loss,
    }


def terms_word(params: QuoteParams, position: int = 0, cash: int = 0) -> int:
    """The stored :data:`terms_layout` word of :func:`terms_of`."""
    word = 0
    for name, value in terms_of(params, position, cash).items():
        fld = terms_layout[name]
        word |= (value & ((1 << fld.width) - 1)) << fld.offset
    return word


def terms_datapath(m, params, position, cash, *, arity: int = 2) -> tuple[dict, int]:
    """:func:`terms_of` in gateware, from inputs held from cycle 1 (depth 0).

    ``params`` is a view with the fields of :data:`~.quoterstate.params_layout`, ``position``
    signed 32 bit, ``cash`` signed 64 bit. Returns ``(terms, depth)``: a
    :data:`terms_layout` signal whose fields are registers, valid ``depth`` cycles after the
    inputs while the inputs stay.
    """
    pipe = Pipeline(m, "terms")

    def src(value) -> Staged:
        return Staged(Value.cast(value), 0)

    p = params
    pos = src(position.as_signed())

    # skew, clamped, then divmod 100 (biased to a non-negative dividend)
    skew_p = product(pipe, pos, src(p.skew_num.as_signed()), arity=arity, name="skewp")
    shifted = pipe.reg(skew_p.value >> p.skew_shift, skew_p, shape=signed(48), name="shifted")
    v = shifted.value
    skew = pipe.reg(
        Mux(v < -S_MAX, -S_MAX, Mux(v > S_MAX, S_MAX, v)), shifted, shape=signed(40), name="s"
    )
    biased = pipe.reg(skew.value + _BIAS, skew, shape=40, name="sb")
    quot = floor_divide(pipe, biased, 100, _BIAS + S_MAX, arity=arity, name="sq")
    hundred = (quot.value << 6) + (quot.value << 5) + (quot.value << 2)
    rs = pipe.reg(biased.value - hundred, biased, quot, shape=7, name="rs")
    qs = pipe.reg(quot.value - _BIAS // 100, quot, shape=signed(34), name="qs")
    rs_f = product(pipe, rs, Staged(Const(F_LO), 0), arity=arity, name="rsf")
    high = pipe.reg(qs.value.as_signed() << QUOTE_SHIFT, qs, shape=signed(67), name="qhigh")
    # the inputs are held, so every register settles: a stage may read any earlier one
    stage = Staged(Const(0), max(rs_f.depth, high.depth))
    low_b = rs_f.value + rs.value
    ask_half = Mux(rs.value == 99, -_F_HI, 98 * F_LO - rs_f.value)
    offsets = {
        "off_bh": pipe.reg(low_b + high.value, stage, shape=signed(67), name="obh"),
        "off_bt": pipe.reg(low_b + high.value + _ONE, stage, shape=signed(67), name="obt"),
        "off_ah": pipe.reg(ask_half - high.value, stage, shape=signed(67), name="oah"),
        "off_at": pipe.reg(
            99 * F_LO - rs_f.value - high.value + _ONE, stage, shape=signed(67), name="oat"
        ),
    }

    # coefficients of the mid, from the parameters alone
    def coefficient(x, x_max, numerator, divisor, name):
        return scaled_floor(pipe, src(x), numerator, divisor, x_max, arity=arity, name=name)

    u16 = 2**16 - 1
    coeffs = {
        "a_h": coefficient(p.spread_bps, u16, 1 << 28, 625, "ah"),
        "a_bd": coefficient(p.band_bps, u16, 1 << 28, 625, "abd"),
        "a_e": coefficient(p.min_edge_bps, u16, 1 << 29, 625, "ae"),
        "a_ah": coefficient(20000 + p.spread_bps, 20000 + u16, 1 << 26, 15625, "aah"),
    }
    bh = coefficient(20000 + _BH_BIAS - p.spread_bps, 20000 + _BH_BIAS, 1 << 26, 15625, "abh")
    coeffs["a_bh"] = pipe.reg(bh.value - (3 << 26), bh, shape=signed(29), name="abhs")

    # step 8 sizes and the loss headroom
    cap = pipe.reg(
        Mux(p.quote_size < p.max_order_qty, p.quote_size, p.max_order_qty), src(0), shape=32
    )
    inv = p.max_inventory
    room_b = pipe.reg(inv - pos.value, pos, shape=signed(34), name="roomb")
    room_a = pipe.reg(inv + pos.value, pos, shape=signed(34), name="rooma")

    def size(room: Staged) -> Staged:
        r = room.value
        return pipe.reg(Mux(r <= 0, 0, Mux(r < cap.value, r, cap.value)), room, cap, shape=32)

    values = {
        "skew": skew,
        **offsets,
        **coeffs,
        "bid_qty": size(room_b),
        "ask_qty": size(room_a),
        "headroom": pipe.reg(cash.as_signed() + p.max_loss, src(0), shape=signed(66), name="hr"),
    }
    assert set(values) == {name for name, _ in terms_layout}
    depth = max(v.depth for v in values.values())
    out = Signal(terms_layout, name="terms")
    for name, staged in values.items():
        m.d.comb += getattr(out, name).eq(staged.value)
    return out, depth
