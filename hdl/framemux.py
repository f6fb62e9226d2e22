"""Frame multiplexer: several frame streams onto one transmit port, whole frames at a time.

:class:`FrameMux` grants the port to the first input (in priority order) with a beat ready
when the port is between frames, and keeps it for that input until the beat with ``last`` is
taken. The grant is combinational, so a frame whose first beat arrives while the port is free
leaves in that same cycle (no added latency for the highest-priority sender).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import beat_layout

__all__ = ["FrameMux"]


class FrameMux(wiring.Component):
    """``inputs`` frame streams (index 0 first) onto ``o``.

    Attributes
    ----------
    i : array of In(stream.Signature(beat_layout))
    o : Out(stream.Signature(beat_layout))
    """

    def __init__(self, inputs: int):
        if not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"inputs must be a positive integer, not {inputs!r}")
        self.inputs = inputs
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)).array(inputs),
                "o": Out(stream.Signature(beat_layout)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.inputs
        locked = Signal()
        owner = Signal(n)  # one-hot, while locked
        pick = Signal(n)  # one-hot, the first valid input
        taken = Signal(n)
        for k in reversed(range(n)):
            with m.If(self.i[k].valid):
                m.d.comb += pick.eq(1 << k)
        m.d.comb += taken.eq(Mux(locked, owner, pick))
        payload = 0
        for k in range(n):
            payload = payload | Mux(taken[k], self.i[k].payload.as_value(), 0)
            m.d.comb += self.i[k].ready.eq(taken[k] & self.o.ready)
        m.d.comb += [
            self.o.payload.eq(payload),
            self.o.valid.eq((taken & Cat(*[port.valid for port in self.i])).any()),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [locked.eq(~self.o.payload.last), owner.eq(taken)]
        return m
