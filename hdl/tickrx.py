"""Tick records over UDP: frames in, 40-byte records realigned to lane 0 out.

:class:`TickReceiver` takes every frame reaching the device and passes on the UDP payload of
those addressed to the device's tick-record port, cut into 40-byte records for the
:class:`~.tickparser.TickParser` (5 full beats each, ``last`` on the fifth).

Accepted frames are untagged IPv4 without options (IHL 5), not fragmented, with a good header
checksum, protocol UDP, destination the device's address and port. All of these sit in frame
bytes 12 .. 39, so the frame is judged with its beat 4, before the first payload beat leaves:
nothing of a refused frame ever reaches the output. The payload starts at byte 42 (lane 2 of
beat 5); output beat ``k`` is frame bytes ``42 + 8k .. 49 + 8k``, built from lanes 2..7 of one
beat and lanes 0..1 of the next, so it leaves one cycle after the frame beat with its last
byte (a payload ending in lanes 2..7 of the frame's last beat leaves in a flush cycle after
it). The UDP length bounds the payload (Ethernet padding is cut off); a record cut short by the
end of the payload leaves with ``last`` on its last beat and ``keep`` on its bytes, so the
parser counts it (``framing``).

Counters: every frame counts once in ``frames`` and once in ``accepted`` or ``ignored`` (not
for this port at all: too short, not IPv4/UDP, another address or port) or ``malformed`` (IPv4
options, a fragment, a bad checksum, a UDP length below 8) or ``truncated`` (accepted, but the
frame ended before the UDP length said); ``overflow`` counts beats lost to a full buffer
(their record then counts as ``framing`` in the parser). The input is never back-pressured.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import BEAT_BYTES, beat_layout

__all__ = ["TICKRX_COUNTERS", "TickReceiver", "tickrx_counters_layout"]

TICKRX_COUNTERS = ("frames", "accepted", "ignored", "malformed", "truncated", "overflow")
#: One 32-bit counter per name in :data:`TICKRX_COUNTERS`.
tickrx_counters_layout = data.StructLayout({name: 32 for name in TICKRX_COUNTERS})

_PAYLOAD_BEAT = 5  # the payload starts at lane 2 of beat 5 (byte 42)
_RECORD_BEATS = 5


def _be16(beat, lane):
    return Cat(beat.word_select(lane + 1, 8), beat.word_select(lane, 8))


class TickReceiver(wiring.Component):
    """Frames in, tick records out (see the module documentation).

    Parameters
    ----------
    depth:
        Beats the output buffer holds while the parser is back-pressured.

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
        Every Ethernet frame (FCS stripped); ``ready`` is always 1.
    o : Out(stream.Signature(beat_layout))
        Records: payload beats realigned to lane 0, ``last`` every 5 beats and at the end.
    address : In(32)
        The device's IPv4 address.
    port : In(16)
        The tick-record UDP port.
    counters : Out(tickrx_counters_layout)
    """

    def __init__(self, depth: int = 64):
        self.depth = depth
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)),
                "o": Out(stream.Signature(beat_layout)),
                "address": In(32),
                "port": In(16),
                "counters": Out(tickrx_counters_layout),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: PLR0915 - one frame walk, top to bottom
        m = Module()
        m.submodules.buffer = buf = fifo.SyncFIFOBuffered(width=beat_layout.size, depth=self.depth)
        m.d.comb += [
            self.i.ready.eq(1),
            self.o.valid.eq(buf.r_rdy),
            self.o.payload.eq(buf.r_data),
            buf.r_en.eq(self.o.ready),
        ]
        beat = self.i.payload
        take = self.i.valid
        data_ = beat.data

        index = Signal(range(_PAYLOAD_BEAT + 2))  # beat of the frame, saturating at 6
        in_frame = Signal()  # a beat of this frame was taken before
        idx = Mux(in_frame, index, 0)
        with m.If(take):
            m.d.sync += [
                in_frame.eq(~beat.last),
                index.eq(Mux(idx == _PAYLOAD_BEAT + 1, idx, idx + 1)),
            ]

        # Header checks, one beat at a time (beats 1 .. 4 hold bytes 8 .. 39).
        ignored = Signal()
        malformed = Signal()
        wrong_port = Signal()
        csum = Signal(20)
        total_length = Signal(16)
        udp_length = Signal(16)
        full = beat.keep == (1 << BEAT_BYTES) - 1

        def word(lane):
            return _be16(data_, lane)

        with m.If(take):
            with m.Switch(idx):
                with m.Case(0):
                    m.d.sync += [ignored.eq(~full), malformed.eq(0)]
                with m.Case(1):  # ethertype 12..13, version/IHL 14
                    m.d.sync += [
                        ignored.eq(ignored | ~full | (word(4) != 0x0800) | (data_[52:56] != 4)),
                        malformed.eq(data_[48:52] != 5),
                        csum.eq(word(6)),
                    ]
                with m.Case(2):  # total length 16..17, flags 20..21, protocol 23
                    m.d.sync += [
                        ignored.eq(ignored | ~full | (data_.word_select(7, 8) != 17)),
                        malformed.eq(malformed | (word(4)[:14] != 0)),
                        csum.eq(csum + word(0) + word(2) + word(4) + word(6)),
                        total_length.eq(word(0)),
                    ]
                with m.Case(3):  # checksum 24..25, source 26..29, destination 30..31
                    m.d.sync += [
                        ignored.eq(ignored | ~full | (word(6) != self.address[16:])),
                        csum.eq(csum + word(0) + word(2) + word(4) + word(6)),
                    ]
                with m.Case(4):  # destination 32..33, ports 34..37, UDP length 38..39
                    m.d.sync += [
                        ignored.eq(ignored | ~full | (word(0) != self.address[:16])),
                        wrong_port.eq(word(4) != self.port),
                        csum.eq(csum + word(0)),
                        udp_length.eq(word(6)),
                    ]

        # Judged after beat 4 (valid from the cycle beat 5 is taken on).
        fold1 = Signal(17)
        folded = Signal(16)
        m.d.comb += [fold1.eq(csum[:16] + csum[16:]), folded.eq(fold1[:16] + fold1[16])]
        broken = Signal()
        bad = Signal()  # malformed, or for another port (judged only when well-formed)
        m.d.comb += [
            broken.eq(
                malformed
                | (folded != 0xFFFF)
                | (udp_length < 8)
                | (total_length != udp_length + 20)
            ),
            bad.eq(broken | wrong_port),
        ]

        # Output: output beat k is frame bytes 42 + 8k .. 49 + 8k (lanes 2..7 of one beat, lanes
        # 0..1 of the next); it leaves as the second of them is taken, or in a flush cycle
        # after the frame's last beat when that beat holds payload bytes beyond lane 1.
        remaining = Signal(16)  # payload bytes not yet sent
        prev = Signal(64)
        with m.If(take):
            m.d.sync += prev.eq(data_)
        sending = Signal()  # this frame was accepted and its payload is being sent
        rec_beat = Signal(range(_RECORD_BEATS))
        rec_first = Signal()
        flush = Signal()
        flush_bytes = Signal(4)
        lanes = Signal(4)
        m.d.comb += lanes.eq(sum(beat.keep[k] for k in range(BEAT_BYTES)))
        with m.If(take & (idx == _PAYLOAD_BEAT)):
            m.d.sync += [
                remaining.eq(udp_length - 8),
                sending.eq(~ignored & ~bad & ~beat.last),
                rec_beat.eq(0),
                rec_first.eq(1),
            ]

        out = Signal(beat_layout)
        push = Signal()
        emit_now = Signal()
        avail = Signal(4)
        word_out = Signal(64)
        frame_end = Signal()  # this emission is the frame's final one
        flush_next = take & beat.last & (lanes > 2)
        with m.If(flush):
            m.d.comb += [
                emit_now.eq(1),
                avail.eq(flush_bytes),
                word_out.eq(prev[16:]),
                frame_end.eq(1),
            ]
        with m.Elif(take & sending & (idx > _PAYLOAD_BEAT)):
            m.d.comb += [
                emit_now.eq(1),
                avail.eq(Mux(lanes >= 2, 8, 6 + lanes)),
                word_out.eq(Cat(prev[16:], data_[:16])),
                frame_end.eq(beat.last & ~flush_next),
            ]
        send = Signal(4)
        m.d.comb += send.eq(Mux(remaining < avail, remaining, avail))
        ends = remaining <= avail
        rec_last = rec_beat == _RECORD_BEATS - 1
        m.d.comb += [
            push.eq(emit_now & (remaining != 0)),
            out.data.eq(word_out),
            out.keep.eq(Mux(send[3], 0xFF, (Const(1, 9) << send[:3]) - 1)),
            out.first.eq(rec_first),
            out.last.eq(ends | rec_last | frame_end),
        ]
        with m.If(push):
            m.d.sync += [
                remaining.eq(remaining - send),
                rec_beat.eq(Mux(out.last, 0, rec_beat + 1)),
                rec_first.eq(out.last),
            ]
        # A frame whose payload starts in its last beat (beat 5) flushes too.
        start_flush = take & beat.last & (idx == _PAYLOAD_BEAT) & ~ignored & ~bad & (lanes > 2)
        will_flush = (take & sending & (idx > _PAYLOAD_BEAT) & flush_next) | start_flush
        m.d.sync += flush.eq(will_flush)
        with m.If(take & beat.last):
            m.d.sync += [flush_bytes.eq(lanes - 2), sending.eq(0)]
        with m.If(start_flush):  # remaining is loaded above in the same cycle
            m.d.sync += [rec_beat.eq(0), rec_first.eq(1)]
        overflow = push & ~buf.w_rdy
        m.d.comb += [buf.w_en.eq(push), buf.w_data.eq(out)]

        # Counters: each frame once, after its final emission (so truncation is known).
        status = Signal(4)  # one-hot: accepted, ignored, malformed
        with m.If(take & beat.last):
            with m.If((idx < _PAYLOAD_BEAT) | ignored):
                m.d.sync += status.eq(0b010)
            with m.Elif(broken):
                m.d.sync += status.eq(0b100)
            with m.Elif(wrong_port):
                m.d.sync += status.eq(0b010)
            with m.Else():
                m.d.sync += status.eq(0b001)
        done = Signal()
        m.d.sync += done.eq((take & beat.last & ~will_flush) | flush)
        counters = self.counters
        with m.If(done):
            m.d.sync += counters.frames.eq(counters.frames + 1)
            with m.If(status[1]):
                m.d.sync += counters.ignored.eq(counters.ignored + 1)
            with m.If(status[2]):
                m.d.sync += counters.malformed.eq(counters.malformed + 1)
            with m.If(status[0] & (remaining != 0)):
                m.d.sync += counters.truncated.eq(counters.truncated + 1)
            with m.Elif(status[0]):
                m.d.sync += counters.accepted.eq(counters.accepted + 1)
        with m.If(overflow):
            m.d.sync += counters.overflow.eq(counters.overflow + 1)
        return m
