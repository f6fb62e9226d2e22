"""Per-symbol quote terms that do not depend on the book, kept in memory next to the parameters.

The quote arithmetic (:mod:`.pricing_quote`) multiplies the book's mid by per-symbol
coefficients and adds per-symbol offsets; what depends only on a symbol's parameters and
position is computed here, once, when a fill or a parameter write changes it, and stored
(:data:`terms_layout`). :func:`terms_of` is the definition in Python integers (also the reset
value, with the default parameters and position 0); :func:`terms_datapath` computes the same
words in gateware.

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
``low_b``, ``low_ah``, ``low_at``, ``qs``, ``rs99``
    the offsets of the four quotient approximations of :mod:`.pricing_quote` (bid / ask, half
    spread above / below one tick) are ``rs * (F + 1) + qs * 2**33``, the same plus ``2**33``,
    ``(98 - rs) * F - qs * 2**33`` (``-(F + 1) - qs * 2**33`` for ``rs == 99``) and
    ``(99 - rs) * F - (qs - 1) * 2**33``: each a part in ``[0, 2**33)`` beside a multiple of
    ``2**33``. The three low parts are stored with ``qs`` and ``rs == 99``; :func:`offsets`
    joins them (one small adder each).
``bid_qty``, ``ask_qty``
    step 8 of quoting.md: the sizes each side would quote.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, Value, signed
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
    "offsets",
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
        "low_b": QUOTE_SHIFT,
        "low_ah": QUOTE_SHIFT,
        "low_at": QUOTE_SHIFT,
        "qs": signed(34),
        "rs99": 1,
        "a_h": 35,
        "a_bd": 35,
        "a_e": 36,
        "a_bh": signed(29),
        "a_ah": 29,
        "bid_qty": 32,
        "ask_qty": 32,
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
    return {
        "low_b": rs * _F_HI,
        "low_ah": (98 - rs) * F_LO if rs <= 98 else _ONE - _F_HI,
        "low_at": (99 - rs) * F_LO,
        "qs": qs,
        "rs99": int(rs == 99),
    }


def offsets(terms) -> dict:
    """The four offsets (67-bit signed values) from the stored terms (a view or a dict)."""
    get = terms.__getitem__ if isinstance(terms, dict) else lambda name: getattr(terms, name)
    qs, rs99 = get("qs"), get("rs99")
    if isinstance(qs, int):
        ask = -qs - 1 if rs99 else -qs
        highs = {"bh": qs, "bt": qs + 1, "ah": ask, "at": 1 - qs}
        lows = {"bh": get("low_b"), "bt": get("low_b"), "ah": get("low_ah"), "at": get("low_at")}
        return {f"off_{k}": lows[k] + highs[k] * _ONE for k in highs}
    q = qs.as_signed()
    highs = {"bh": q, "bt": q + 1, "ah": Mux(rs99, -q - 1, -q), "at": 1 - q}
    lows = {"bh": get("low_b"), "bt": get("low_b"), "ah": get("low_ah"), "at": get("low_at")}
    return {f"off_{k}": Cat(lows[k], highs[k][:34]).as_signed() for k in highs}


def terms_of(params: QuoteParams, position: int) -> dict:
    """The terms of a symbol with ``params`` and ``position`` (Python integers)."""
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
    }


def terms_word(params: QuoteParams, position: int = 0) -> int:
    """The stored :data:`terms_layout` word of :func:`terms_of`."""
    word = 0
    for name, value in terms_of(params, position).items():
        fld = terms_layout[name]
        word |= (value & ((1 << fld.width) - 1)) << fld.offset
    return word


def terms_datapath(m, params, position, *, arity: int = 2) -> tuple[dict, int]:
    """:func:`terms_of` in gateware, from inputs held from cycle 1 (depth 0).

    ``params`` is a view with the fields of :data:`~.quoterstate.params_layout`, ``position``
    signed 32 bit. Returns ``(terms, depth)``: a
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
    # every offset is a low part in [0, 2**33) next to a multiple of 2**33: no wide adder
    low_b = pipe.reg(rs_f.value + rs.value, rs_f, rs, shape=QUOTE_SHIFT, name="lowb")
    low_at = pipe.reg(99 * F_LO - rs_f.value, rs_f, shape=QUOTE_SHIFT, name="lowat")
    last = rs.value == 99  # the ask's half is then below 0: -(F + 1) = 2**33 - (F + 1) - 2**33
    low_ah = pipe.reg(
        Mux(last, _ONE - _F_HI, 98 * F_LO - rs_f.value), rs_f, shape=QUOTE_SHIFT, name="lowah"
    )
    offsets_ = {
        "low_b": low_b,
        "low_ah": low_ah,
        "low_at": low_at,
        "qs": qs,
        "rs99": pipe.reg(last, rs, name="rs99"),
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

    # step 8 sizes
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
        **offsets_,
        **coeffs,
        "bid_qty": size(room_b),
        "ask_qty": size(room_a),
    }
    assert set(values) == {name for name, _ in terms_layout}
    depth = max(v.depth for v in values.values())
    out = Signal(terms_layout, name="terms")
    for name, staged in values.items():
        m.d.comb += getattr(out, name).eq(staged.value)
    return out, depth
