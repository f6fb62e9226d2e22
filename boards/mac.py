"""1 GbE MAC on the GMII side: preamble/SFD, FCS (CRC-32) check and generation, padding, IFG.

Both halves run one byte per clock cycle in the ``sync`` domain (rename it to the RGMII receive
or transmit clock domain in the board top) and know nothing of RGMII; :mod:`.rgmii` turns the
pins into the GMII signals used here.

:class:`MacRx` checks and strips the FCS and emits the frame's bytes four cycles behind the
wire, followed by one ``end`` beat that says whether the frame was good. The receive path
cannot wait (GMII has no flow control), so its output has no ``ready``; a downstream
store-and-forward buffer (:class:`~.widthconv.FrameBuffer`) drops frames whose ``end`` beat is
not ``ok``, so a frame with a bad FCS never reaches the core.

:class:`MacTx` sends frames taken from a byte stream with preamble and SFD, pads them to the
60-byte minimum, appends the FCS and keeps at least ``ifg`` idle bytes between frames.
"""

from amaranth.hdl import Const, DomainRenamer, Module, Signal
from amaranth.lib import crc, data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "PREAMBLE",
    "SFD",
    "MIN_FRAME_BYTES",
    "MIN_IFG_BYTES",
    "rx_byte_layout",
    "tx_byte_layout",
    "rx_counters_layout",
    "MacRx",
    "MacTx",
]

#: Preamble byte (seven of them precede the SFD).
PREAMBLE = 0x55
#: Start-of-frame delimiter.
SFD = 0xD5
#: Smallest frame without its FCS; shorter frames are padded with zeros on transmit.
MIN_FRAME_BYTES = 60
#: Smallest inter-frame gap, in byte times.
MIN_IFG_BYTES = 12
#: Size of the frame check sequence.
FCS_BYTES = 4

#: One byte from :class:`MacRx`; an ``end`` beat carries no data and closes the frame, with
#: ``ok`` set when the FCS matched, the frame had at least 64 bytes with its FCS and the PHY
#: flagged no error.
rx_byte_layout = data.StructLayout({"data": 8, "end": 1, "ok": 1})

#: One byte for :class:`MacTx`; ``last`` marks the frame's last byte (before any padding).
tx_byte_layout = data.StructLayout({"data": 8, "last": 1})


def rx_counters_layout(width: int) -> data.StructLayout:
    """Counters of :class:`MacRx`: ``good``, ``bad_fcs``, ``runt``, ``phy_error`` and
    ``bad_preamble`` frames, each ``width`` bits wide (they wrap)."""
    return data.StructLayout(
        {name: width for name in ("good", "bad_fcs", "runt", "phy_error", "bad_preamble")}
    )


def _ethernet_crc() -> crc.Processor:
    return crc.Processor(crc.catalog.CRC32_ETHERNET(data_width=8))


class MacRx(wiring.Component):
    """GMII receive half of the MAC.

    Parameters
    ----------
    counter_width:
        Width of each counter in :attr:`counters`.

    Attributes
    ----------
    rx_dv, rx_er, rxd : In
        GMII receive signals, sampled every ``sync`` cycle.
    o : Out(stream.Signature(rx_byte_layout, always_ready=True))
        The frame's bytes without preamble, SFD and FCS, then one ``end`` beat. Never waits.
    counters : Out(:func:`rx_counters_layout`)
        One count per frame, by outcome. A frame with several faults counts once, in the order
        ``phy_error``, ``runt``, ``bad_fcs``. ``bad_preamble`` counts bursts whose first bytes
        are neither preamble nor SFD (they are ignored up to the end of the burst).
    """

    def __init__(self, counter_width: int = 32):
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
            raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
        self.counter_width = counter_width
        super().__init__(
            {
                "rx_dv": In(1),
                "rx_er": In(1),
                "rxd": In(8),
                "o": Out(stream.Signature(rx_byte_layout, always_ready=True)),
                "counters": Out(rx_counters_layout(counter_width)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.crc = fcs = _ethernet_crc()

        delay = Signal(8 * FCS_BYTES)  # the last four bytes: held back until they prove not FCS
        held = Signal(range(FCS_BYTES + 1))
        length = Signal(11)  # saturates at 2047: only compared with 64
        error = Signal()

        m.d.sync += self.o.valid.eq(0)
        m.d.comb += fcs.data.eq(self.rxd)

        def count(name):
            field = getattr(self.counters, name)
            m.d.sync += field.eq(field + 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.rx_dv):
                    with m.If(self.rxd == SFD):
                        m.d.comb += fcs.start.eq(1)
                        m.d.sync += [held.eq(0), length.eq(0), error.eq(self.rx_er)]
                        m.next = "DATA"
                    with m.Elif(self.rxd == PREAMBLE):
                        m.next = "PREAMBLE"
                    with m.Else():
                        count("bad_preamble")
                        m.next = "DISCARD"
            with m.State("PREAMBLE"):
                with m.If(~self.rx_dv):
                    count("bad_preamble")
                    m.next = "IDLE"
                with m.Elif(self.rxd == SFD):
                    m.d.comb += fcs.start.eq(1)
                    m.d.sync += [held.eq(0), length.eq(0), error.eq(self.rx_er)]
                    m.next = "DATA"
                with m.Elif(self.rxd != PREAMBLE):
                    count("bad_preamble")
                    m.next = "DISCARD"
            with m.State("DISCARD"):
                with m.If(~self.rx_dv):
                    m.next = "IDLE"
            with m.State("DATA"):
                with m.If(self.rx_dv):
                    m.d.comb += fcs.valid.eq(1)
                    m.d.sync += [
                        delay.eq(self.rxd.as_unsigned() << 24 | delay >> 8),
                        error.eq(error | self.rx_er),
                    ]
                    with m.If(length != 2047):
                        m.d.sync += length.eq(length + 1)
                    with m.If(held == FCS_BYTES):
                        m.d.sync += [
                            self.o.valid.eq(1),
                            self.o.payload.data.eq(delay[:8]),
                            self.o.payload.end.eq(0),
                            self.o.payload.ok.eq(0),
                        ]
                    with m.Else():
                        m.d.sync += held.eq(held + 1)
                with m.Else():
                    runt = length < MIN_FRAME_BYTES + FCS_BYTES
                    m.d.sync += [
                        self.o.valid.eq(1),
                        self.o.payload.end.eq(1),
                        self.o.payload.ok.eq(fcs.match_detected & ~runt & ~error),
                    ]
                    with m.If(error):
                        count("phy_error")
                    with m.Elif(runt):
                        count("runt")
                    with m.Elif(~fcs.match_detected):
                        count("bad_fcs")
                    with m.Else():
                        count("good")
                    m.next = "IDLE"
        return m


class MacTx(wiring.Component):
    """GMII transmit half of the MAC.

    Parameters
    ----------
    ifg:
        Idle byte times between the last FCS byte of one frame and the first preamble byte of
        the next (at least :data:`MIN_IFG_BYTES`); exactly this many when the next frame waits.
    counter_width:
        Width of the counters.

    Attributes
    ----------
    i : In(stream.Signature(tx_byte_layout))
        Frames, one byte a beat, without FCS. Once a frame's first byte is taken the MAC needs a
        byte every cycle; a missing one (``valid`` low) is an underrun: the frame is ended with
        ``tx_er`` so the link partner discards it, and the rest of it is taken and dropped.
    tx_en, tx_er, txd : Out
        GMII transmit signals (registered).
    frames, underruns : Out(counter_width)
        Frames sent completely, and frames cut short by an underrun.
    """

    def __init__(self, *, ifg: int = MIN_IFG_BYTES, counter_width: int = 32):
        if not isinstance(ifg, int) or not MIN_IFG_BYTES <= ifg <= 255:
            raise ValueError(
                f"ifg must be an integer in {MIN_IFG_BYTES} .. 255 byte times, not {ifg!r}"
            )
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
            raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
        self.ifg = ifg
        super().__init__(
            {
                "i": In(stream.Signature(tx_byte_layout)),
                "tx_en": Out(1),
                "tx_er": Out(1),
                "txd": Out(8),
                "frames": Out(counter_width),
                "underruns": Out(counter_width),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.crc = fcs = _ethernet_crc()

        count = Signal(8)  # preamble byte, FCS byte or idle byte index
        length = Signal(range(MIN_FRAME_BYTES + 1))  # saturates at 60: only padding needs it

        m.d.sync += [self.tx_en.eq(0), self.tx_er.eq(0), self.txd.eq(0)]

        def send(byte, *, crc_too=False):
            m.d.sync += [self.tx_en.eq(1), self.txd.eq(byte)]
            if crc_too:
                m.d.comb += [fcs.valid.eq(1), fcs.data.eq(byte)]
                with m.If(length != MIN_FRAME_BYTES):
                    m.d.sync += length.eq(length + 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    m.d.comb += fcs.start.eq(1)
                    m.d.sync += [count.eq(0), length.eq(0)]
                    m.next = "PREAMBLE"
            with m.State("PREAMBLE"):
                with m.If(count == 7):
                    send(SFD)
                    m.next = "DATA"
                with m.Else():
                    send(PREAMBLE)
                    m.d.sync += count.eq(count + 1)
            with m.State("DATA"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    send(self.i.payload.data, crc_too=True)
                    with m.If(self.i.payload.last):
                        m.d.sync += count.eq(0)
                        with m.If(length + 1 < MIN_FRAME_BYTES):
                            m.next = "PAD"
                        with m.Else():
                            m.next = "FCS"
                with m.Else():
                    m.d.sync += [self.tx_en.eq(1), self.tx_er.eq(1)]
                    m.d.sync += self.underruns.eq(self.underruns + 1)
                    m.next = "DRAIN"
            with m.State("PAD"):
                send(Const(0, 8), crc_too=True)
                with m.If(length + 1 == MIN_FRAME_BYTES):
                    m.next = "FCS"
            with m.State("FCS"):
                send(fcs.crc.word_select(count[:2], 8))
                m.d.sync += count.eq(count + 1)
                with m.If(count == FCS_BYTES - 1):
                    m.d.sync += [count.eq(0), self.frames.eq(self.frames + 1)]
                    m.next = "GAP"
            with m.State("DRAIN"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & self.i.payload.last):
                    m.d.sync += count.eq(0)
                    m.next = "GAP"
            with m.State("GAP"):
                # The IDLE cycle that follows is the last idle byte before a waiting frame.
                m.d.sync += count.eq(count + 1)
                with m.If(count == self.ifg - 2):
                    m.next = "IDLE"
        return m


def in_domain(component: wiring.Component, domain: str) -> wiring.Component:
    """``component`` with its ``sync`` domain renamed to ``domain``."""
    return DomainRenamer(domain)(component)
