"""Event dispatch: the two parsers' events into the book, the quoter and the egress, in order.

:class:`EventDispatcher` merges the ITCH feed's events and the tick records' events (the feed
first when both have one) and hands each to the book, with two exceptions:

- ``DIRECTORY`` (ITCH 'R') also goes to the order egress (the locate's symbol, for the OUCH
  Symbol field), taken by both in the same cycle;
- ``TRADING`` (ITCH 'H') goes to the quoter instead, which keeps each symbol's trading state
  and re-evaluates its quote. The quoter must see it after every top-of-book update of the
  events before it, so it waits until ``quiet`` says that nothing the book was given has yet
  to reach the quoter.

Nothing is dropped: an event waits until every consumer it needs is ready.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .egress import directory_layout
from .events import BookEvent, EventKind
from .quoterstate import trading_layout

__all__ = ["EventDispatcher"]


class EventDispatcher(wiring.Component):
    """Feed and tick events in; book, quoter trading and egress directory streams out.

    Attributes
    ----------
    feed, tick : In(stream.Signature(BookEvent))
    book : Out(stream.Signature(BookEvent))
    trading : Out(stream.Signature(trading_layout))
    directory : Out(stream.Signature(directory_layout))
    quiet : In(1)
        High while no event given to the book has a top-of-book update still on its way to
        the quoter.
    stale_locate : Out(16), book_stale : In(1)
        The head event's locate, and the book's sticky stale flag of that locate in the same
        cycle: a ``TRADING`` event carries it, so the quoter judges the book as it is now (a
        gap or a recovery since the symbol's last top-of-book update included).
    """

    def __init__(self):
        super().__init__(
            {
                "feed": In(stream.Signature(BookEvent)),
                "tick": In(stream.Signature(BookEvent)),
                "book": Out(stream.Signature(BookEvent)),
                "trading": Out(stream.Signature(trading_layout)),
                "directory": Out(stream.Signature(directory_layout)),
                "quiet": In(1),
                "stale_locate": Out(16),
                "book_stale": In(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        head = Signal(BookEvent)
        head_valid = Signal()
        from_feed = self.feed.valid
        with m.If(from_feed):
            m.d.comb += [head.eq(self.feed.payload), head_valid.eq(1)]
        with m.Else():
            m.d.comb += [head.eq(self.tick.payload), head_valid.eq(self.tick.valid)]
        is_dir = head.kind == EventKind.DIRECTORY
        is_trading = head.kind == EventKind.TRADING
        dir_ok = ~is_dir | self.directory.ready
        m.d.comb += [
            self.book.payload.eq(head),
            self.book.valid.eq(head_valid & ~is_trading & dir_ok),
            self.directory.payload.locate.eq(head.locate),
            self.directory.payload.stock.eq(head.stock),
            self.directory.valid.eq(head_valid & is_dir & self.book.ready),
            self.stale_locate.eq(head.locate),
            self.trading.payload.locate.eq(head.locate),
            self.trading.payload.state.eq(head.code),
            self.trading.payload.stale.eq(self.book_stale),
            self.trading.valid.eq(head_valid & is_trading & self.quiet),
        ]
        taken = (self.book.valid & self.book.ready) | (self.trading.valid & self.trading.ready)
        m.d.comb += [
            self.feed.ready.eq(taken & from_feed),
            self.tick.ready.eq(taken & ~from_feed),
        ]
        return m
