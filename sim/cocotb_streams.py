"""cocotb bus models for Amaranth stream ports, and a testbench base class.

An Amaranth ``stream.Signature`` member ``x`` becomes the Verilog ports ``x__valid``,
``x__ready`` and ``x__payload`` (one packed vector). :class:`StreamSource` and
:class:`StreamSink` drive and take those ports, packing and unpacking the payload by the fields
of the same ``data.StructLayout`` the gateware declares (so no offset is typed twice). Both take
a pause iterator (from :func:`tick2quote.sim.streams.pause_pattern`): a source inserts an idle
cycle, a sink holds ``ready`` low, on each cycle it says ``True``.

Sampling follows the usual cocotb pattern: after ``RisingEdge`` the values read are those the
edge saw, and writes take effect after it. Each model counts clock edges from its creation;
create them all in the same time step (as :class:`TB` subclasses do) so their cycle numbers
agree.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Mapping

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, RisingEdge

from .streams import pack, unpack

__all__ = ["pack", "unpack", "StreamSource", "StreamSink", "TB"]


def _never() -> Iterator[bool]:
    return itertools.repeat(False)


class _Port:
    def __init__(self, dut, name: str, layout):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout = layout
        self.name = name


class StreamSource(_Port):
    """Drives an input stream port from a queue of payloads (dicts of field values).

    ``accepted`` lists the clock cycle (see :attr:`TB.cycle`) at which each beat was taken.
    """

    def __init__(self, dut, name: str, layout, clock, pause: Iterator[bool] | None = None):
        super().__init__(dut, name, layout)
        self.clock = clock
        self.pause = pause or _never()
        self.queue: deque[dict] = deque()
        self.accepted: list[int] = []
        self.cycle = 0
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0
        self.payload.value = 0
        cocotb.start_soon(self._run())

    def send(self, payload: Mapping[str, int]) -> None:
        """Queue one beat."""
        self.queue.append(dict(payload))
        self._idle.clear()

    async def wait(self) -> None:
        """Wait until every queued beat has been taken."""
        await self._idle.wait()

    async def _run(self) -> None:
        driving = False
        while True:
            await RisingEdge(self.clock)
            self.cycle += 1
            if driving and self.ready.value:
                self.accepted.append(self.cycle)
                driving = False
            if not driving and self.queue and not next(self.pause):
                self.payload.value = pack(self.layout, self.queue.popleft())
                self.valid.value = 1
                driving = True
            elif not driving:
                self.valid.value = 0
                if not self.queue:
                    self._idle.set()


class StreamSink(_Port):
    """Takes beats from an output stream port into :attr:`queue` as ``(cycle, fields)``."""

    def __init__(self, dut, name: str, layout, clock, pause: Iterator[bool] | None = None):
        super().__init__(dut, name, layout)
        self.clock = clock
        self.pause = pause or _never()
        self.queue: deque[tuple[int, dict]] = deque()
        self.cycle = 0
        self._arrived = Event()
        self.ready.value = 0
        cocotb.start_soon(self._run())

    def empty(self) -> bool:
        return not self.queue

    async def recv(self) -> dict:
        """The next beat's fields, waiting for it if needed."""
        return (await self.recv_timed())[1]

    async def recv_timed(self) -> tuple[int, dict]:
        """The next beat as ``(cycle it was taken, fields)``, waiting for it if needed."""
        while not self.queue:
            self._arrived.clear()
            await self._arrived.wait()
        return self.queue.popleft()

    async def _run(self) -> None:
        ready = False
        while True:
            await RisingEdge(self.clock)
            self.cycle += 1
            if ready and self.valid.value:
                word = self.payload.value.to_unsigned()
                self.queue.append((self.cycle, unpack(self.layout, word)))
                self._arrived.set()
            ready = not next(self.pause)
            self.ready.value = int(ready)


class TB:
    """Testbench base: starts the clock on ``dut.clk`` and resets through ``dut.rst``.

    Subclasses add their bus models in ``__init__`` after calling this one. ``period_ns``
    defaults to 6.4 ns (156.25 MHz, the 10 GbE core clock).
    """

    def __init__(self, dut, period_ns: float = 6.4):
        self.dut = dut
        self.clock = dut.clk
        cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())

    async def reset(self, cycles: int = 4) -> None:
        """Hold reset for ``cycles`` clock cycles."""
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.clock)
        self.dut.rst.value = 0
        await RisingEdge(self.clock)

    async def cycles(self, count: int) -> None:
        for _ in range(count):
            await RisingEdge(self.clock)
