"""Interim core for the board tops: the project's gateware feed handler, no book, no quoting.

The full core (ingress, parser, book, quoter, egress) is not assembled yet. Until it is, the
board tops build with :class:`InterimCore`, which satisfies the same port contract and runs the
real front end, :class:`~tick2quote.hdl.feedhandler.FeedHandler`, on every received frame.

It sends nothing (``tx`` stays idle) and never kills (``kill`` is 0). So that synthesis keeps the
whole front end, every output bit of the feed handler is folded into :attr:`InterimCore.digest`,
a running XOR that the board top shows on an LED. It is a build-and-timing vehicle for the board
layer, not a trading core.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from tick2quote.hdl.feedhandler import FeedHandler
from tick2quote.hdl.layouts import beat_layout

__all__ = ["InterimCore"]


def _fold_outputs(m: Module, component) -> list:
    """Hold every output stream of ``component`` ready and return the bits to fold: each
    output stream's payload while valid, and every other output."""
    bits = []
    for name, member in component.signature.members.items():
        if member.is_port is False or member.flow != Out:
            continue
        value = getattr(component, name)
        if member.is_signature:
            m.d.comb += value.ready.eq(1)
            bits.append(Mux(value.valid, value.payload.as_value().xor(), 0))
        else:
            bits.append(value.as_value().xor() if hasattr(value, "as_value") else value.xor())
    return bits


class InterimCore(wiring.Component):
    """The board tops' core until the full core exists: front end only (see module docs).

    Attributes
    ----------
    rx : In(stream.Signature(beat_layout))
        Frames from the MAC; never back-pressured.
    tx : Out(stream.Signature(beat_layout))
        Always idle.
    kill : Out(1)
        Always 0 (no risk gate yet).
    digest : Out(1)
        Running XOR of every output bit of the feed handler (each stream's payload while valid).
    events : Out(32)
        Frames received.
    """

    rx: In(stream.Signature(beat_layout))
    tx: Out(stream.Signature(beat_layout))
    kill: Out(1)
    digest: Out(1)
    events: Out(32)

    def __init__(self, capacity: int | None = None):
        # ``capacity`` is accepted for the same factory call as the full core; nothing here
        # scales with it.
        self.capacity = capacity
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.front = front = FeedHandler()
        m.d.comb += [self.kill.eq(0), self.tx.valid.eq(0)]
        wiring.connect(m, wiring.flipped(self.rx), front.i)
        cycle = Signal(32)
        m.d.sync += cycle.eq(cycle + 1)
        m.d.comb += front.cycle.eq(cycle)
        fold_now = Signal()
        m.d.comb += fold_now.eq(Cat(*_fold_outputs(m, front)).xor())
        m.d.sync += self.digest.eq(self.digest ^ fold_now)
        with m.If(self.rx.valid & self.rx.payload.last):
            m.d.sync += self.events.eq(self.events + 1)
        return m
