"""The decoded market event every parser emits and the book consumes: :data:`BookEvent`.

One layout for both inputs of the core: the ITCH 5.0 message parser (:mod:`.parser`) and the
tick-record parser (:mod:`.tickparser`) emit the same :data:`BookEvent` stream, so the book does
not care which feed it is fed from.

Field conventions (every field a parser does not set is 0):

``kind``
    an :class:`EventKind`.
``locate``
    ITCH Stock Locate, or the tick record's ``symbol_id``.
``order_ref``
    the order reference (for ``REPLACE`` the original one; for ``TRADE`` the ITCH order
    reference or the tick record's trade id).
``new_ref``
    the new order reference of a ``REPLACE``.
``side``
    0 buy / bid, 1 sell / ask. For ITCH ``ADD`` and ``TRADE`` it is 1 exactly when the side byte
    is ``'S'``; the raw side byte is kept in ``code`` so that a consumer can refuse any byte
    other than ``'B'`` / ``'S'``.
``shares``
    shares added, executed, cancelled, replaced or traded.
``price``
    ``Price(4)``: the order price, or for ``EXECUTE_PRICE`` the execution price.
``stock``
    the 8 ASCII bytes of the symbol (``ADD``, ``TRADE``, ``DIRECTORY``, ``TRADING``): byte ``i``
    in wire order is ``stock[8*i : 8*i+8]``, the same lane order as the stream datapath.
``code``
    ``SYSTEM``: the event code; ``TRADING``: the trading state; ``EXECUTE_PRICE``: the
    printable flag; ``ADD`` / ``TRADE``: the raw side byte (``'B'`` / ``'S'``).
``sequence``
    the MoldUDP64 sequence number of the message (tick records: the record's own sequence).
``stamp``
    the free-running cycle counter in the cycle the message's last byte was accepted.
"""

from amaranth.lib import data, enum

__all__ = ["EventKind", "BookEvent", "EVENT_FIELDS"]


class EventKind(enum.Enum, shape=4):
    """What a :data:`BookEvent` reports."""

    #: No event: the reset value, never emitted.
    NONE = 0
    #: ITCH ``A`` / ``F`` Add Order; tick record type 1.
    ADD = 1
    #: ITCH ``E`` Order Executed.
    EXECUTE = 2
    #: ITCH ``C`` Order Executed with Price.
    EXECUTE_PRICE = 3
    #: ITCH ``X`` Order Cancel; tick record type 2 (cancel ``volume`` shares).
    CANCEL = 4
    #: ITCH ``D`` Order Delete.
    DELETE = 5
    #: ITCH ``U`` Order Replace; tick record type 3 (modify, the reference is kept).
    REPLACE = 6
    #: ITCH ``S`` System Event.
    SYSTEM = 7
    #: ITCH ``R`` Stock Directory.
    DIRECTORY = 8
    #: ITCH ``H`` Stock Trading Action.
    TRADING = 9
    #: ITCH ``P`` Trade (non-cross); tick record type 4.
    TRADE = 10


#: Field name -> width in bits of every field after ``kind``, in layout order.
EVENT_FIELDS: dict[str, int] = {
    "locate": 16,
    "order_ref": 64,
    "new_ref": 64,
    "side": 1,
    "shares": 32,
    "price": 32,
    "stock": 64,
    "code": 8,
    "sequence": 64,
    "stamp": 32,
}

#: The decoded event layout (see the module documentation for each field).
BookEvent = data.StructLayout({"kind": EventKind, **EVENT_FIELDS})
