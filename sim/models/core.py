"""The whole tick-to-quote path as one reference model: frames in, top of book and orders out.

``ingress -> ITCH decode -> book -> quoter``: the composition the gateware core implements. A
sequence gap seen by the ingress marks every symbol of the book stale (the lost messages could
have touched any of them), so no symbol quotes until :meth:`CoreModel.recover` is called after a
rebuild. Messages that cannot be decoded are counted, never applied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ...host.protocol import itch
from ...host.protocol.errors import DecodeError
from .book import BookModel, TopOfBook
from .ingress import IngressConfig, IngressModel
from .parser import ITCH_KINDS
from .quoter import Order, QuoterModel

__all__ = ["CoreModel", "CoreOutput"]


@dataclass
class CoreOutput:
    """What one frame produced: top-of-book changes and orders, in the order they happened."""

    tops: list[TopOfBook] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)


class CoreModel:
    """Reference model of the full core.

    Parameters
    ----------
    ingress, book, quoter:
        The block models; defaults are built when not given.
    """

    def __init__(
        self,
        ingress: IngressModel | None = None,
        book: BookModel | None = None,
        quoter: QuoterModel | None = None,
    ):
        self.ingress = ingress or IngressModel(IngressConfig())
        self.book = book or BookModel()
        self.quoter = quoter or QuoterModel()
        self.counters: Counter = Counter()

    def frame(
        self, frame: bytes, cycle: int = 0, *, stamp_of: Callable[[int], int] | None = None
    ) -> CoreOutput:
        """Process one Ethernet frame (FCS stripped) arriving at ``cycle``; ``stamp_of``, when
        given, maps each message's sequence number to its own stamp instead (the cycle the
        device took the frame beat holding the message's last byte)."""
        was_stale = self.ingress.stale
        delivered = self.ingress.frame(frame)
        if self.ingress.stale and not was_stale:
            self.book.mark_stale(None)
        out = CoreOutput()
        for item in delivered:
            stamp = cycle if stamp_of is None else stamp_of(item.sequence)
            self._message(item.data, item.sequence, stamp, out)
        return out

    def message(self, msg, sequence: int | None = None, cycle: int = 0) -> CoreOutput:
        """Process one already-decoded ITCH record (no ingress)."""
        out = CoreOutput()
        self._apply(msg, sequence, cycle, out)
        return out

    def _message(self, data: bytes, sequence: int, cycle: int, out: CoreOutput) -> None:
        try:
            msg = itch.decode_message(data)
        except itch.UnknownTypeError:
            self.counters["unknown_type"] += 1
            return
        except DecodeError:
            self.counters["bad_message"] += 1
            return
        self._apply(msg, sequence, cycle, out)

    def _apply(self, msg, sequence, cycle: int, out: CoreOutput) -> None:
        if msg.type not in ITCH_KINDS:
            return  # the core's parser skips it (counted there): its book never sees it
        self.counters["messages"] += 1
        if msg.type == "H" and msg.locate >= self.book.max_symbols:
            self.quoter.counters["bad_locate"] += 1  # as the core's quoter: counted, ignored
            return
        top = self.book.apply(msg, sequence)
        if top is not None:
            out.tops.append(top)
        elif msg.type != "H":  # a trading-state change re-evaluates the quote too
            return
        locate = msg.locate
        state = self.book.trading_state(locate)
        out.orders.extend(self.quoter.on_book(locate, self.book.bbo(locate), state, cycle))

    def fill(self, user_ref_num: int, quantity: int, price: int) -> None:
        """An OUCH Order Executed from the exchange."""
        self.quoter.on_fill(user_ref_num, quantity, price)

    def recover(self) -> None:
        """The book was rebuilt after a gap: trust every symbol again."""
        self.ingress.recover()
        self.book.recover(None)
