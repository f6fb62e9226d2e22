"""Quote pricing: the per-symbol parameters and the pure calculation of steps 2-8 of quoting.md.

Everything here is integer arithmetic on Python ints (exact, unbounded); the gateware reproduces
it bit for bit with signals wide enough never to overflow. Prices are ITCH price units
(1/10 000 dollar), sizes are shares.

Choices this module makes where quoting.md leaves a detail open (the gateware must match):

- ``floor_to_tick`` / ``ceil_to_tick`` round towards minus / plus infinity, also for negative
  values (``floor_to_tick(-150, 100) == -200``). A negative result is then band-rejected.
- The skew ``(position * skew_num) >> skew_shift`` is an arithmetic shift, i.e. a floor
  division by ``2**skew_shift``: ``(-3 * 1) >> 1 == -2``.
- Step 5 is applied literally: ``min(bid_q, ask - tick)`` with the book's ask, not re-rounded.
  Book prices on the tick grid keep the clamped quote on the grid.
- Step 6 keeps a price equal to ``mid - band`` or ``mid + band`` (the band is inclusive) and
  rejects a price ``<= 0``. A rejected side is quoted as price 0, quantity 0.
- Step 7 compares the two step-5 prices, whether or not step 6 rejected a side; a spread that is
  too narrow quotes nothing on either side (price 0, quantity 0).
- A side that is not quoted, for whatever reason, is always ``(price 0, quantity 0)``, so two
  :class:`Quote` values are equal exactly when they would put the same orders in the market.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["TICKS", "QuoteParams", "Quote", "Pricing", "floor_to_tick", "ceil_to_tick", "price"]

#: The price increments a symbol may use (100 = one cent, 1 = sub-penny).
TICKS = (1, 100)

_U16 = (0, 2**16 - 1)
_U32 = (0, 2**32 - 1)
_U64 = (0, 2**64 - 1)
# name -> (inclusive range, meaning of the width); ``tick`` and ``enabled`` are checked apart.
_RANGES = {
    "spread_bps": _U16,
    "skew_num": (-(2**15), 2**15 - 1),
    "skew_shift": (0, 31),
    "quote_size": _U32,
    "max_order_qty": _U32,
    "max_inventory": _U32,
    "min_edge_bps": _U16,
    "band_bps": (1, 2**16 - 1),
    "max_loss": _U64,
    "refresh_cycles": _U32,
}


def floor_to_tick(value: int, tick: int) -> int:
    """The largest multiple of ``tick`` that is ``<= value`` (also for negative values)."""
    return value // tick * tick


def ceil_to_tick(value: int, tick: int) -> int:
    """The smallest multiple of ``tick`` that is ``>= value`` (also for negative values)."""
    return -(-value // tick) * tick


@dataclass
class QuoteParams:
    """How one symbol (Stock Locate) is quoted; the register set of quoting.md.

    Every field is checked by :meth:`validate`, which runs at construction and whenever the
    quoter is given the parameters. Widths (all inclusive):

    - ``tick``: 1 or 100.
    - ``spread_bps``, ``min_edge_bps``: unsigned 16 bit. ``band_bps``: 1 .. 65535 (a band of 0
      would reject every quote, so it is refused as a configuration mistake).
    - ``skew_num``: signed 16 bit; ``skew_shift``: 0 .. 31.
    - ``quote_size``, ``max_order_qty``, ``max_inventory``, ``refresh_cycles``: unsigned 32 bit.
      A size of 0 is allowed and means "quote nothing on that account".
    - ``max_loss``: unsigned 64 bit. The default, ``2**63 - 1``, is effectively no limit.
    - ``enabled``: a bool.
    """

    tick: int = 100
    spread_bps: int = 20
    skew_num: int = 0
    skew_shift: int = 0
    quote_size: int = 100
    max_order_qty: int = 1000
    max_inventory: int = 1000
    min_edge_bps: int = 0
    band_bps: int = 500
    max_loss: int = 2**63 - 1
    refresh_cycles: int = 0
    enabled: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``TypeError`` for a field of the wrong type, ``ValueError`` for one out of range.

        The message names the field, the allowed values and the value given, e.g.
        ``"tick must be 1 or 100, not 5"``.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "enabled":
                if not isinstance(value, bool):
                    raise TypeError(f"enabled must be a bool, not {value!r}")
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{f.name} must be an int, not {value!r}")
            if f.name == "tick":
                if value not in TICKS:
                    raise ValueError(f"tick must be 1 or 100, not {value!r}")
                continue
            low, high = _RANGES[f.name]
            if not low <= value <= high:
                raise ValueError(f"{f.name} must be in {low}..{high}, not {value!r}")


@dataclass(frozen=True)
class Quote:
    """A two-sided quote; a side with quantity 0 is not quoted (and then has price 0)."""

    bid_px: int
    bid_qty: int
    ask_px: int
    ask_qty: int


#: Quote nothing on either side.
NO_QUOTE = Quote(0, 0, 0, 0)


@dataclass(frozen=True)
class Pricing:
    """The result of steps 2-8 with what was rejected on the way (for the counters)."""

    quote: Quote
    mid: int
    bid_band_reject: bool
    ask_band_reject: bool
    edge_reject: bool


def price(params: QuoteParams, position: int, bid: int, ask: int) -> Pricing:
    """Steps 2-8 of quoting.md for a book ``bid < ask`` (both sides present) and a position.

    The caller has already checked every pull condition of step 1; this function assumes
    ``0 < bid < ask`` and is pure.
    """
    tick = params.tick
    mid = (bid + ask) >> 1  # step 2
    half = max(tick, mid * params.spread_bps // 20000)
    reservation = mid - ((position * params.skew_num) >> params.skew_shift)  # step 3
    bid_q = floor_to_tick(reservation - half, tick)  # step 4
    ask_q = ceil_to_tick(reservation + half, tick)
    bid_q = min(bid_q, ask - tick)  # step 5
    ask_q = max(ask_q, bid + tick)
    band = mid * params.band_bps // 10000  # step 6

    def outside(px: int) -> bool:
        return px <= 0 or px < mid - band or px > mid + band

    bid_band_reject = outside(bid_q)
    ask_band_reject = outside(ask_q)
    edge_reject = (ask_q - bid_q) * 10000 < 2 * params.min_edge_bps * mid  # step 7
    if edge_reject:
        return Pricing(NO_QUOTE, mid, bid_band_reject, ask_band_reject, True)
    cap = min(params.quote_size, params.max_order_qty)  # step 8
    inventory = params.max_inventory
    bid_qty = min(cap, inventory - position) if position < inventory else 0
    ask_qty = min(cap, inventory + position) if position > -inventory else 0
    if bid_band_reject or bid_qty == 0:
        bid_q, bid_qty = 0, 0
    if ask_band_reject or ask_qty == 0:
        ask_q, ask_qty = 0, 0
    quote = Quote(bid_q, bid_qty, ask_q, ask_qty)
    return Pricing(quote, mid, bid_band_reject, ask_band_reject, False)
