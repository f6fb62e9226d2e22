"""Store-and-forward frame buffer that forgets frames marked bad at their end.

A receive MAC learns whether a frame is good only after its last byte; the core must never see a
bad frame. :class:`FrameBuffer` writes beats as they arrive, commits a frame when its last beat
is good and rolls the write pointer back otherwise, so the reader only ever sees whole, good
frames. The same buffer serves the 1 GbE path (after :class:`~.widthconv.RxPacker`) and the
10 GbE path (after the vendor MAC, whose bad-frame flag also comes with the last beat).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from tick2quote.hdl.layouts import beat_layout

__all__ = ["marked_beat_layout", "FrameBuffer"]

#: A beat of a frame that may still turn out bad: ``drop`` is read on the ``last`` beat only.
marked_beat_layout = data.StructLayout({"beat": beat_layout, "drop": 1})


class FrameBuffer(wiring.Component):
    """Commit/rollback frame FIFO in one clock domain (``sync``).

    Parameters
    ----------
    depth:
        Capacity in beats, a power of two of at least 4. A frame longer than the free space is
        dropped and counted as ``overflows``.
    counter_width:
        Width of the counters.

    Attributes
    ----------
    i : In(stream.Signature(marked_beat_layout, always_ready=True))
        Frames; never waits. A frame whose ``last`` beat has ``drop`` set is forgotten.
    o : Out(stream.Signature(beat_layout))
        Committed frames, in order, only after their last beat was written.
    frames, dropped, overflows : Out(counter_width)
        Frames committed, frames forgotten because marked bad, frames lost for lack of space.
    """

    def __init__(self, depth: int = 256, counter_width: int = 32):
        if not isinstance(depth, int) or depth < 4 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two of at least 4, not {depth!r}")
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
            raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
        self.depth = depth
        super().__init__(
            {
                "i": In(stream.Signature(marked_beat_layout, always_ready=True)),
                "o": Out(stream.Signature(beat_layout)),
                "frames": Out(counter_width),
                "dropped": Out(counter_width),
                "overflows": Out(counter_width),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        bits = self.depth.bit_length() - 1
        m.submodules.memory = memory = Memory(shape=beat_layout, depth=self.depth, init=[])
        write = memory.write_port()
        read = memory.read_port()

        # Pointers carry one extra bit so that full and empty differ.
        wr_ptr = Signal(bits + 1)
        commit_ptr = Signal(bits + 1)
        rd_ptr = Signal(bits + 1)
        overflowing = Signal()  # the frame being received no longer fits: skip to its end

        beat = self.i.payload.beat
        full = (wr_ptr - rd_ptr)[: bits + 1] == self.depth
        m.d.comb += [write.addr.eq(wr_ptr[:bits]), write.data.eq(beat)]

        with m.If(self.i.valid):
            with m.If(overflowing | full):
                m.d.sync += [wr_ptr.eq(commit_ptr), overflowing.eq(~beat.last)]
                with m.If(beat.last):
                    m.d.sync += self.overflows.eq(self.overflows + 1)
            with m.Else():
                m.d.comb += write.en.eq(1)
                with m.If(~beat.last):
                    m.d.sync += wr_ptr.eq(wr_ptr + 1)
                with m.Elif(self.i.payload.drop):
                    m.d.sync += [wr_ptr.eq(commit_ptr), self.dropped.eq(self.dropped + 1)]
                with m.Else():
                    m.d.sync += [
                        wr_ptr.eq(wr_ptr + 1),
                        commit_ptr.eq(wr_ptr + 1),
                        self.frames.eq(self.frames + 1),
                    ]

        # Read side: the read port's data is the output register; it only moves on a load.
        load = (rd_ptr != commit_ptr) & (~self.o.valid | self.o.ready)
        m.d.comb += [
            read.addr.eq(rd_ptr[:bits]),
            read.en.eq(load),
            self.o.payload.eq(read.data),
        ]
        with m.If(load):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1), self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
