"""Layouts of the quoter (:mod:`.quoter`): ports, per-symbol memories, counters.

Per symbol (Stock Locate) the quoter keeps, each in its own block-RAM-shaped memory with one
write port and one registered read port (:data:`STATE`, read through :mod:`.quoter_cache`):

- ``params``: every :class:`~tick2quote.sim.models.pricing.QuoteParams` field
  (:data:`params_layout`);
- ``account``: position (signed 32) and cash (signed 64);
- ``terms``: the book-independent quote terms of :mod:`.pricing_terms`, rewritten with the
  account or a parameter;
- ``live_bid`` / ``live_ask``: the live order of each side (:data:`live_layout`);
- ``meta``: whether an order was ever sent, the cycle of the last one, the trading state;
- ``bbo``: the last top of book seen (zeros for a symbol never seen: an empty book).

The UserRefNum table (``ref_window`` entries, :data:`ref_layout`) is two banks by the number's
lowest bit, so the two numbers an update issues (consecutive) are written in one cycle.
"""

from __future__ import annotations

from amaranth.hdl import signed
from amaranth.lib import data, enum

from ..sim.models.pricing import QuoteParams
from .pricing_terms import terms_layout, terms_word

__all__ = [
    "Field",
    "PARAM_FIELDS",
    "params_layout",
    "ctl_layout",
    "trading_layout",
    "live_layout",
    "meta_layout",
    "bbo_layout",
    "account_layout",
    "lookahead_layout",
    "STATE",
    "state_reset",
    "ref_layout",
    "COUNTERS",
    "counter_layout",
    "param_word",
    "params_word",
]


class Field(enum.Enum, shape=4):
    """Field numbers of the control port: every QuoteParams field, then the account state."""

    TICK = 0
    SPREAD_BPS = 1
    SKEW_NUM = 2
    SKEW_SHIFT = 3
    QUOTE_SIZE = 4
    MAX_ORDER_QTY = 5
    MAX_INVENTORY = 6
    MIN_EDGE_BPS = 7
    BAND_BPS = 8
    MAX_LOSS = 9
    REFRESH_CYCLES = 10
    ENABLED = 11
    POSITION = 12  #: read only: signed 32, sign-extended to 64 bits
    CASH = 13  #: read only: signed 64


#: QuoteParams field name -> (stored width, signed); ``tick`` is stored as one bit "tick is 100".
PARAM_FIELDS = {
    "tick": (1, False),
    "spread_bps": (16, False),
    "skew_num": (16, True),
    "skew_shift": (5, False),
    "quote_size": (32, False),
    "max_order_qty": (32, False),
    "max_inventory": (32, False),
    "min_edge_bps": (16, False),
    "band_bps": (16, False),
    "max_loss": (64, False),
    "refresh_cycles": (32, False),
    "enabled": (1, False),
}
assert list(PARAM_FIELDS) == [f.name.lower() for f in Field][:12]

params_layout = data.StructLayout(
    {
        ("tick100" if name == "tick" else name): (signed(w) if s else w)
        for name, (w, s) in PARAM_FIELDS.items()
    }
)

#: Control request: ``write`` a field (``value``, signed fields as 64-bit two's complement) or
#: read it (the answer comes on ``ctl_data``).
ctl_layout = data.StructLayout({"write": 1, "locate": 16, "field": Field, "value": 64})
#: A trading state change (the ITCH 'H' state byte).
trading_layout = data.StructLayout({"locate": 16, "state": 8, "stale": 1})
live_layout = data.StructLayout({"valid": 1, "ref": 32, "price": 32, "sent": 32, "open": 32})
meta_layout = data.StructLayout({"sent_any": 1, "last": 32, "state": 8})
bbo_layout = data.StructLayout(
    {"bid_px": 32, "bid_sz": 32, "ask_px": 32, "ask_sz": 32, "stale": 1, "unknown": 1}
)
account_layout = data.StructLayout({"position": signed(32), "cash": signed(64)})
ref_layout = data.StructLayout({"valid": 1, "ref": 32, "locate": 16, "side": 1})
#: Optional hint: the locate of a top of book that will come soon (see :class:`.quoter.Quoter`).
lookahead_layout = data.StructLayout({"valid": 1, "locate": 16})

#: The per-symbol memories, by name.
STATE = {
    "params": params_layout,
    "account": account_layout,
    "terms": terms_layout,
    "live_bid": live_layout,
    "live_ask": live_layout,
    "meta": meta_layout,
    "bbo": bbo_layout,
}

#: The model's counters, then ``bad_locate`` (an event for a locate >= ``symbols``, ignored)
#: and ``bad_ctl`` (a refused control request).
COUNTERS = (
    "evaluations",
    "pull_kill",
    "pull_disabled",
    "pull_halted",
    "pull_stale",
    "pull_empty",
    "pull_crossed",
    "pull_loss",
    "unchanged",
    "throttled",
    "ref_exhausted",
    "updates",
    "band_reject",
    "edge_reject",
    "enter",
    "replace",
    "cancel",
    "fills",
    "unknown_fill",
    "late_fill",
    "overfill",
    "position_saturated",
    "cash_saturated",
    "bad_locate",
    "bad_ctl",
)
counter_layout = data.StructLayout({name: 32 for name in COUNTERS})


def param_word(params: QuoteParams, name: str) -> int:
    """The stored value of one field of ``params`` (``tick`` as "is 100", signed as 2's c.)."""
    value = getattr(params, name)
    width, _ = PARAM_FIELDS[name]
    if name == "tick":
        return int(value == 100)
    return int(value) & ((1 << width) - 1)


def params_word(params: QuoteParams) -> int:
    """The stored :data:`params_layout` word of ``params``."""
    word = 0
    for name, fld in params_layout:
        word |= param_word(params, "tick" if name == "tick100" else name) << fld.offset
    return word


def state_reset(default: QuoteParams) -> dict:
    """The word every symbol's memories hold after reset, by memory name."""
    meta = meta_layout["state"].offset
    return {
        "params": params_word(default),
        "account": 0,
        "terms": terms_word(default),
        "live_bid": 0,
        "live_ask": 0,
        "meta": ord("T") << meta,
        "bbo": 0,
    }
