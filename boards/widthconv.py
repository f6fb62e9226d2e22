"""8-bit MAC domain <-> 64-bit core stream, with the clock-domain crossings.

Receive: :class:`RxPacker` packs :class:`~.mac.MacRx` bytes into 8-byte beats (lane ``i`` =
``i``-th byte, ``keep`` contiguous from lane 0, only the last beat partial), a
:class:`~.framebuffer.FrameBuffer` forgets frames the MAC marked bad, and an ``AsyncFIFO``
carries whole good frames into the core clock domain. :class:`RxCrossing` is the three together.

Transmit: :class:`TxCrossing` carries the core's beats into the MAC clock domain through an
``AsyncFIFO`` together with one token per complete frame, and :class:`TxUnpacker` hands a frame
to :class:`~.mac.MacTx` byte by byte only once its token has arrived, so the MAC, which needs a
byte every cycle once it starts, never runs dry because the core paused mid-frame. Each of the
two FIFOs is read through a :class:`ReadRegister`, so neither FIFO's read enable depends on the
other's level: that path would cross both FIFOs and the unpacker in one MAC clock. A
:class:`SkidBuffer` on each side (core beats in, MAC bytes out) puts registers between the
crossing and the core's ``ready``, and between the unpacker and the MAC's ready and FCS input.
"""

from amaranth.hdl import DomainRenamer, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out
from tick2quote.hdl.layouts import BEAT_BYTES, beat_layout

from .framebuffer import FrameBuffer, marked_beat_layout
from .mac import rx_byte_layout, tx_byte_layout

__all__ = ["RxPacker", "TxUnpacker", "ReadRegister", "SkidBuffer", "RxCrossing", "TxCrossing"]


def _check_depth(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two of at least {minimum}, not {value!r}")


class RxPacker(wiring.Component):
    """Packs MAC bytes into beats (``sync`` domain).

    A full beat is held until the next byte shows it is not the frame's last, so ``last`` is
    exact even for frames whose length is a multiple of eight. The frame's ``end`` beat turns
    into ``last`` (and ``drop`` unless ``ok``) on its final data beat; a frame with no data
    bytes produces nothing.

    Attributes
    ----------
    i : In(stream.Signature(rx_byte_layout, always_ready=True))
    o : Out(stream.Signature(marked_beat_layout, always_ready=True))
    """

    i: In(stream.Signature(rx_byte_layout, always_ready=True))
    o: Out(stream.Signature(marked_beat_layout, always_ready=True))

    def elaborate(self, platform) -> Module:
        m = Module()
        acc = Signal(8 * BEAT_BYTES)
        count = Signal(range(BEAT_BYTES + 1))
        first = Signal(init=1)
        keep = Signal(BEAT_BYTES)
        out = self.o.payload

        with m.Switch(count):
            for n in range(BEAT_BYTES + 1):
                with m.Case(n):
                    m.d.comb += keep.eq((1 << n) - 1)

        m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & ~self.i.payload.end):
            with m.If(count == BEAT_BYTES):
                m.d.sync += [
                    self.o.valid.eq(1),
                    out.beat.data.eq(acc),
                    out.beat.keep.eq(keep),
                    out.beat.first.eq(first),
                    out.beat.last.eq(0),
                    out.drop.eq(0),
                    first.eq(0),
                    acc.eq(self.i.payload.data),
                    count.eq(1),
                ]
            with m.Else():
                m.d.sync += [
                    acc.word_select(count[:3], 8).eq(self.i.payload.data),
                    count.eq(count + 1),
                ]
        with m.If(self.i.valid & self.i.payload.end):
            with m.If(count != 0):
                m.d.sync += [
                    self.o.valid.eq(1),
                    out.beat.data.eq(acc),
                    out.beat.keep.eq(keep),
                    out.beat.first.eq(first),
                    out.beat.last.eq(1),
                    out.drop.eq(~self.i.payload.ok),
                ]
            m.d.sync += [count.eq(0), first.eq(1), acc.eq(0)]
        return m


class TxUnpacker(wiring.Component):
    """Turns beats into bytes for :class:`~.mac.MacTx` (``sync`` domain).

    A frame starts only when a token on ``start`` says it is complete upstream; the token is
    taken with the frame's first beat. Bytes are the beat's lanes in order from lane 0 (always
    sent) up to the lane before the first clear ``keep`` bit above it.

    The beat is held in a shift register: the byte offered is always its low lane, and the
    ``keep`` bits of the lanes still to come shift down beside it, so "this is the beat's last
    byte" is one register bit. Neither the byte nor the load enable of the 64-bit register goes
    through a lane multiplexer or a variable shift.

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
    start : In(stream.Signature(1))
        One token per complete frame waiting on ``i``.
    o : Out(stream.Signature(tx_byte_layout))
    """

    i: In(stream.Signature(beat_layout))
    start: In(stream.Signature(1))
    o: Out(stream.Signature(tx_byte_layout))

    def elaborate(self, platform) -> Module:
        m = Module()
        data = Signal(8 * BEAT_BYTES)  # lane 0 is the byte offered
        later = Signal(BEAT_BYTES - 1)  # keep bits of the lanes after it, nearest first
        beat_last = Signal()  # the beat ends its frame
        have = Signal()  # ``data`` holds bytes still to send
        in_frame = Signal()

        lane_last = Signal()
        m.d.comb += lane_last.eq(~later[0])
        m.d.comb += [
            self.o.valid.eq(have),
            self.o.payload.data.eq(data[:8]),
            self.o.payload.last.eq(lane_last & beat_last),
        ]

        def load():
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [
                    data.eq(self.i.payload.data),
                    later.eq(self.i.payload.keep[1:]),
                    beat_last.eq(self.i.payload.last),
                    have.eq(1),
                ]
            with m.Else():
                m.d.sync += have.eq(0)

        with m.If(~in_frame):
            with m.If(self.start.valid & self.i.valid):
                m.d.comb += self.start.ready.eq(1)
                m.d.sync += in_frame.eq(1)
                load()
        with m.Elif(~have):
            load()
        with m.Elif(self.o.ready):
            with m.If(~lane_last):
                m.d.sync += [data.eq(data >> 8), later.eq(later >> 1)]
            with m.Elif(beat_last):
                m.d.sync += [have.eq(0), in_frame.eq(0)]
            with m.Else():
                load()
        return m


class ReadRegister(wiring.Component):
    """One registered entry after a FIFO's read port: ``o`` and the FIFO's read enable both come
    from the register's own state.

    The FIFO is read only while the register is empty, so an entry passes at most every second
    cycle; that is ample where the consumer spends at least two cycles per entry (a beat feeds
    the MAC for eight cycles; only a frame's last beat is shorter, and the MAC's inter-frame gap
    and preamble follow it). In exchange, the read enable (``r_en``) is ``~o.valid``, and the
    consumer's ``ready`` only steers the register, never the FIFO's pointers.

    Parameters
    ----------
    shape:
        Shape of the entries.

    Attributes
    ----------
    r_data : In(shape)
    r_rdy : In(1)
    r_en : Out(1)
        Connect to the FIFO's read port.
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape):
        super().__init__(
            {
                "r_data": In(shape),
                "r_rdy": In(1),
                "r_en": Out(1),
                "o": Out(stream.Signature(shape)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += self.r_en.eq(~self.o.valid)
        with m.If(~self.o.valid):
            m.d.sync += [self.o.valid.eq(self.r_rdy), self.o.payload.eq(self.r_data)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class SkidBuffer(wiring.Component):
    """A full-rate, two-entry register stage: ``o`` (valid and payload) and ``i.ready`` both come
    from the buffer's own registers.

    An entry offered while ``o`` is held waits in a second register (the skid), and ``i.ready``
    is "the skid is empty", so neither the consumer's ``ready`` nor the producer's ``valid``
    reaches the other side in the same cycle. With ``o.ready`` high it passes an entry every
    cycle, one cycle late.

    Parameters
    ----------
    shape:
        Shape of the entries.

    Attributes
    ----------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform) -> Module:
        m = Module()
        skid = Signal.like(self.i.payload)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class RxCrossing(wiring.Component):
    """MAC bytes in the ``mac_domain`` -> good frames as beats in the ``core_domain``.

    Parameters
    ----------
    mac_domain, core_domain:
        Clock domains of ``i`` and ``o``.
    buffer_depth:
        :class:`~.framebuffer.FrameBuffer` capacity in beats (256 beats hold a 2 KiB frame).
    fifo_depth:
        Depth of the crossing ``AsyncFIFO``, in beats.

    Attributes
    ----------
    i : In(stream.Signature(rx_byte_layout, always_ready=True))
    o : Out(stream.Signature(beat_layout))
    frames, dropped, overflows : Out(32)
        The frame buffer's counters (``mac_domain``).
    """

    def __init__(self, *, mac_domain: str = "mac", core_domain: str = "sync",
                 buffer_depth: int = 256, fifo_depth: int = 16):  # fmt: skip
        _check_depth("buffer_depth", buffer_depth, 4)
        _check_depth("fifo_depth", fifo_depth, 4)
        self.mac_domain, self.core_domain = mac_domain, core_domain
        self.buffer_depth, self.fifo_depth = buffer_depth, fifo_depth
        super().__init__(
            {
                "i": In(stream.Signature(rx_byte_layout, always_ready=True)),
                "o": Out(stream.Signature(beat_layout)),
                "frames": Out(32),
                "dropped": Out(32),
                "overflows": Out(32),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        to_mac = DomainRenamer(self.mac_domain)
        m.submodules.packer = packer = to_mac(RxPacker())
        m.submodules.buffer = buffer = to_mac(FrameBuffer(self.buffer_depth))
        m.submodules.fifo = fifo = AsyncFIFO(
            width=beat_layout.size, depth=self.fifo_depth,
            w_domain=self.mac_domain, r_domain=self.core_domain,
        )  # fmt: skip
        wiring.connect(m, wiring.flipped(self.i), packer.i)
        wiring.connect(m, packer.o, buffer.i)
        m.d.comb += [
            fifo.w_data.eq(buffer.o.payload),
            fifo.w_en.eq(buffer.o.valid),
            buffer.o.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
            self.frames.eq(buffer.frames),
            self.dropped.eq(buffer.dropped),
            self.overflows.eq(buffer.overflows),
        ]
        return m


class TxCrossing(wiring.Component):
    """Beats in the ``core_domain`` -> bytes for :class:`~.mac.MacTx` in the ``mac_domain``.

    Parameters
    ----------
    depth:
        Beats the crossing holds. A frame must fit whole (``8 * depth`` bytes): the MAC side
        starts a frame only once its last beat has been written.
    frames:
        Complete frames that may wait at once.

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
    o : Out(stream.Signature(tx_byte_layout))
    """

    def __init__(self, *, mac_domain: str = "mac", core_domain: str = "sync",
                 depth: int = 256, frames: int = 8):  # fmt: skip
        _check_depth("depth", depth, 4)
        _check_depth("frames", frames, 2)
        self.mac_domain, self.core_domain = mac_domain, core_domain
        self.depth, self.frame_slots = depth, frames
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)),
                "o": Out(stream.Signature(tx_byte_layout)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.beats = beats = AsyncFIFO(
            width=beat_layout.size, depth=self.depth,
            w_domain=self.core_domain, r_domain=self.mac_domain,
        )  # fmt: skip
        m.submodules.tokens = tokens = AsyncFIFO(
            width=1, depth=self.frame_slots, w_domain=self.core_domain, r_domain=self.mac_domain
        )
        to_mac = DomainRenamer(self.mac_domain)
        m.submodules.unpacker = unpacker = to_mac(TxUnpacker())
        m.submodules.beat_register = beat_register = to_mac(ReadRegister(beat_layout))
        m.submodules.token_register = token_register = to_mac(ReadRegister(1))

        # the core's beat and ready leave and enter registers, not the FIFOs' write logic
        to_core = DomainRenamer(self.core_domain)
        m.submodules.beat_in = beat_in = to_core(SkidBuffer(beat_layout))
        wiring.connect(m, wiring.flipped(self.i), beat_in.i)
        written = beat_in.o
        accept = written.valid & written.ready
        m.d.comb += [
            written.ready.eq(beats.w_rdy & tokens.w_rdy),
            beats.w_data.eq(written.payload),
            beats.w_en.eq(written.valid & tokens.w_rdy),
            tokens.w_data.eq(1),
            tokens.w_en.eq(accept & written.payload.last),
        ]
        for fifo, register in ((beats, beat_register), (tokens, token_register)):
            m.d.comb += [
                register.r_data.eq(fifo.r_data),
                register.r_rdy.eq(fifo.r_rdy),
                fifo.r_en.eq(register.r_en),
            ]
        wiring.connect(m, beat_register.o, unpacker.i)
        wiring.connect(m, token_register.o, unpacker.start)
        # the MAC's byte (into its FCS) and its ready leave and enter registers, not the unpacker
        m.submodules.byte_register = byte_register = to_mac(SkidBuffer(tx_byte_layout))
        wiring.connect(m, unpacker.o, byte_register.i)
        wiring.connect(m, byte_register.o, wiring.flipped(self.o))
        return m
