"""The order action the quoter emits and the egress turns into OUCH 5.0: :data:`order_layout`.

One record per OUCH message, mirroring :class:`tick2quote.sim.models.quoter.Order`:

``kind``
    an :class:`OrderKind`.
``locate``
    the symbol's Stock Locate.
``side``
    0 buy, 1 sell.
``user_ref``
    the UserRefNum of the message: the new order's for an Enter or a Replace, the live order's
    for a Cancel.
``orig_ref``
    a Replace's original UserRefNum (0 otherwise).
``quantity``, ``price``
    shares and ``Price(4)``; both 0 for a Cancel (quantity 0 cancels the whole order).
``stamp``
    the ingress cycle stamp of the event that caused the order; the egress writes it into the
    ClOrdID and subtracts it from the cycle its first byte leaves to measure tick-to-quote.
"""

from amaranth.lib import data, enum

__all__ = ["OrderKind", "order_layout", "fill_layout"]


class OrderKind(enum.Enum, shape=2):
    """Which OUCH 5.0 message an order action becomes."""

    ENTER = 0  #: Enter Order ('O')
    REPLACE = 1  #: Replace Order ('U')
    CANCEL = 2  #: Cancel Order ('X')


#: One order action (see the module documentation).
order_layout = data.StructLayout(
    {
        "kind": OrderKind,
        "locate": 16,
        "side": 1,
        "user_ref": 32,
        "orig_ref": 32,
        "quantity": 32,
        "price": 32,
        "stamp": 32,
    }
)

#: One fill from an OUCH 5.0 Order Executed message: UserRefNum, shares and ``Price(4)``.
#: OUCH prices are signed 64-bit on the wire; a fill whose price does not fit 32 unsigned bits
#: is refused by the fill parser and counted.
fill_layout = data.StructLayout({"user_ref": 32, "quantity": 32, "price": 32})
