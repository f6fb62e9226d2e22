"""MoldUDP64 message splitter: one packet stream in, one realigned stream per message out.

The input is a MoldUDP64 packet (the UDP payload) on an 8-byte beat stream starting at lane 0.
The splitter takes the 20-byte header apart, then follows the 2-byte big-endian length prefixes
and sends each message on ``o`` realigned so that its byte 0 (the ITCH type byte) sits at lane 0
of its first beat.

Datapath
--------
A two-beat window (the previous accepted beat and the current one) feeds one 8:1 byte-lane
rotation per output lane. A message that starts at lane ``a`` of some beat keeps ``a`` for its
whole life: every output beat is ``prev[a:8] ++ cur[0:a]`` (a spanning beat) or ``cur[a:a+k]``
(a beat inside the current input beat), so the rotation select is a register, never a shifter
over the packed vector. Each output beat is registered once: the output beat holding a
message's last byte is valid in the cycle after the input beat holding that byte is accepted.

Throughput
----------
At most one output beat leaves per cycle, and one input beat is taken per cycle unless that beat
completes two output beats. This happens when a message's tail fits in the same input beat as
the byte that completes its previous output beat (a message of ``L`` bytes has ``ceil(L / 8)``
output beats but may span fewer input beats), or for messages of 1-5 bytes that end in the beat
where they start. The splitter then holds the input beat for one more cycle rather than buffer
the extra output beat, which would break the one-cycle latency. Messages of 6 bytes or more
that start right after one ending in the same beat, prefixes split across two beats and
prefixes in the last two lanes never cost a cycle.

Timing
------
Post-route on an ECP5-85 (speed 6, out of context) this block reaches about 33 MHz, short of the
156.25 MHz core clock. The long path is one step's decision chain: message end lane (from
``remaining``) -> next prefix byte mux -> length compares -> hold/step -> ``i.ready`` and the
enables of every register. Closing timing needs the end lane and "ends in the next beat"
precomputed into registers one beat early, and a skid buffer so that ``i.ready`` comes from a
register.

Malformed packets
-----------------
- A packet that ends inside a message: the bytes present are sent and the message's last beat
  carries ``truncated``. A message whose prefix arrived but none of whose bytes did is not
  sent. Either way, and for a packet ending inside a length prefix, the packet's status says
  ``truncated``.
- A length prefix of 0: splitting stops, the rest of the packet is dropped, the status says
  ``zero_length``.
- A packet shorter than the header: no header record, the status says ``short``.
- The status' ``count_mismatch`` compares the messages sent (a truncated one included) with the
  header's count (0 for a heartbeat, count 0, or an end of session, count 0xFFFF).

The input's ``first`` flag is not used: packets are delimited by ``last`` alone.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import (
    BEAT_BYTES,
    MOLD_HEADER_SIZE,
    beat_layout,
    message_layout,
    mold_header_layout,
    mold_header_offsets,
    packet_status_layout,
)

__all__ = ["MessageSplitter"]

_B = BEAT_BYTES
_HEADER_BEATS, _HEADER_LANES = divmod(MOLD_HEADER_SIZE, _B)  # 2 full beats, then 4 lanes


class _Mode(enum.Enum, shape=2):
    HEADER = 0  # taking the full beats of the packet header
    PREFIX = 1  # the next length prefix starts at lane ``p`` of the current beat
    BODY = 2  # inside a message
    DROP = 3  # discarding the rest of a malformed packet


class MessageSplitter(wiring.Component):
    """Splits MoldUDP64 packets into realigned ITCH messages.

    Ports
    -----
    i : In(stream.Signature(beat_layout))
        MoldUDP64 packets, each starting at lane 0 of its first beat and ending at ``last``.
    o : Out(stream.Signature(message_layout))
        The messages, type byte at lane 0, with length, sequence number and ``truncated``.
    header : Out(stream.Signature(mold_header_layout))
        One record per packet as soon as its 20-byte header has been taken.
    status : Out(stream.Signature(packet_status_layout))
        One record per packet when its last beat has been taken (no earlier than its last
        message beat becomes valid).

    All outputs are registered; ``valid`` never depends on ``ready``. When an output holds a
    record that has not been taken and the current step needs it, the input waits.
    """

    i: In(stream.Signature(beat_layout))
    o: Out(stream.Signature(message_layout))
    header: Out(stream.Signature(mold_header_layout))
    status: Out(stream.Signature(packet_status_layout))

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        cur, last = beat.data, beat.last

        def cur_byte(index):
            return cur.word_select(index, 8)

        # Registers, each with a combinational next value that defaults to its present value
        # and is committed when the splitter steps.
        regs = {}

        def reg(name, shape):
            r = Signal(shape, name=name)
            nx = Signal(shape, name=f"{name}_next")
            m.d.comb += nx.eq(r)
            regs[name] = (r, nx)
            return r, nx

        mode, nx_mode = reg("mode", _Mode)
        hdr_beat, nx_hdr_beat = reg("hdr_beat", range(max(_HEADER_BEATS, 2)))
        header_due, nx_header_due = reg("header_due", 1)
        p, nx_p = reg("prefix_lane", range(_B))
        hv, nx_hv = reg("prefix_hi_valid", 1)
        hi, nx_hi = reg("prefix_hi", 8)
        a, nx_a = reg("align", range(_B))
        rem, nx_rem = reg("remaining", 16)
        rem_small, nx_rem_small = reg("remaining_at_most_a_beat", 1)  # rem <= 8, precomputed
        has_prev, nx_has_prev = reg("pending_in_prev", 1)
        first_chunk, nx_first_chunk = reg("first_chunk", 1)
        length, nx_length = reg("length", 16)
        seq, nx_seq = reg("sequence", 64)
        count_exp, nx_count_exp = reg("count_expected", 16)
        msg_count, nx_msg_count = reg("message_count", 16)
        f_trunc, nx_f_trunc = reg("flag_truncated", 1)
        f_zero, nx_f_zero = reg("flag_zero_length", 1)
        prev = Signal(8 * _B)
        hdr_buf = Signal(8 * _B * max(_HEADER_BEATS - 1, 1))

        # Valid bytes in the current beat.
        n = Signal(range(_B + 1))
        for k in range(_B):
            with m.If(beat.keep[k]):
                m.d.comb += n.eq(k + 1)
        n_eff = Signal(range(_B + 1))
        m.d.comb += n_eff.eq(Mux(last, n, _B))

        # What this step does.
        emit = Signal()  # an output beat is formed
        e_align = Signal(range(_B))  # lane of the message's byte 0 in its beats
        e_span = Signal()  # prev[a:8] ++ cur[0:a] rather than cur[a:a+k]
        e_count = Signal(range(_B + 1))
        e_last = Signal()
        e_first = Signal()
        e_trunc = Signal()
        e_length = Signal(16)
        hold = Signal()  # the current beat stays for another step
        hdr_emit = Signal()
        set_trunc = Signal()
        set_zero = Signal()
        set_short = Signal()
        tail = Signal()  # parse what follows a message end (or a prefix start) at tail_p
        tail_p = Signal(range(_B + 1))
        tail_hv = Signal()
        tail_may_emit = Signal()  # no beat emitted yet this step

        # Where an output beat's bytes come from depends on registers only (the message in
        # progress in BODY, else the one whose prefix starts at ``p``), never on this step's
        # decisions, so that the rotation below is not behind them.
        in_body = mode == _Mode.BODY
        next_start = Mux(hv, 1, p + 2)
        m.d.comb += [
            e_align.eq(Mux(in_body, a, next_start)),
            e_span.eq(in_body & has_prev),
            e_first.eq(~in_body | first_chunk),
        ]

        # The header: earlier header beats, the previous beat, then lanes of the current one.
        hdr_bytes = Cat(hdr_buf[: 8 * _B * (_HEADER_BEATS - 1)], prev, cur)
        hdr_fields = {}
        for name, (offset, size) in mold_header_offsets().items():
            wire = [hdr_bytes.word_select(offset + k, 8) for k in range(size)]
            # Text (the session) stays in wire order; numbers are big-endian integers.
            hdr_fields[name] = Cat(*wire) if name == "session" else Cat(*reversed(wire))

        with m.Switch(mode):
            with m.Case(_Mode.HEADER):
                with m.If(last):
                    m.d.comb += set_short.eq(1)
                with m.Elif(hdr_beat == _HEADER_BEATS - 1):
                    m.d.comb += [
                        nx_mode.eq(_Mode.PREFIX),
                        nx_p.eq(_HEADER_LANES),
                        nx_hv.eq(0),
                        nx_header_due.eq(1),
                    ]
                with m.Else():
                    m.d.comb += nx_hdr_beat.eq(hdr_beat + 1)

            with m.Case(_Mode.DROP):
                pass

            with m.Case(_Mode.PREFIX):
                with m.If(header_due & last & (n < _HEADER_LANES)):
                    m.d.comb += set_short.eq(1)
                with m.Else():
                    with m.If(header_due):
                        count = hdr_fields["count"]
                        m.d.comb += [
                            hdr_emit.eq(1),
                            nx_header_due.eq(0),
                            nx_seq.eq(hdr_fields["sequence"]),
                            nx_count_exp.eq(Mux((count == 0) | (count == 0xFFFF), 0, count)),
                        ]
                    m.d.comb += [
                        tail.eq(1),
                        tail_p.eq(p),
                        tail_hv.eq(hv),
                        tail_may_emit.eq(~header_due),
                    ]

            with m.Case(_Mode.BODY):
                # Bytes of the message the current beat holds from its start lane; fewer than
                # ``rem`` only when the packet ends early.
                avail = Signal(signed(5))
                m.d.comb += avail.eq(n_eff - Mux(has_prev, 0, a))
                # Only 4-bit compares here: ``rem_small`` says whether rem fits in 4 bits.
                over = Signal()
                m.d.comb += over.eq(last & (~rem_small | (rem[:4] > avail)))
                rem_here = Signal(range(_B + 1))  # meaningful when ``within``
                m.d.comb += rem_here.eq(Mux(over, Mux(avail < 0, 0, avail), rem[:4]))
                within = Signal()  # the message ends (or is cut) in this input beat
                m.d.comb += within.eq(rem_small | over)
                m.d.comb += [
                    emit.eq(1),
                    e_count.eq(_B),
                    nx_first_chunk.eq(0),
                ]
                with m.If(has_prev):
                    with m.If(within & (rem_here <= a)):  # it ends in this output beat
                        m.d.comb += [
                            e_count.eq(_B - a + rem_here),
                            e_last.eq(1),
                            e_trunc.eq(over),
                            tail.eq(1),
                            tail_p.eq(rem_here),
                        ]
                    with m.Elif(within):  # it ends later in this input beat
                        m.d.comb += [hold.eq(1), nx_has_prev.eq(0), nx_rem.eq(rem - a)]
                    with m.Else():
                        m.d.comb += nx_rem.eq(rem - _B)
                with m.Else():
                    with m.If(within & (rem_here <= _B - a)):  # it ends in this input beat
                        m.d.comb += [
                            e_count.eq(rem_here),
                            e_last.eq(1),
                            e_trunc.eq(over),
                            tail.eq(1),
                            tail_p.eq(a + rem_here),
                        ]
                    with m.Else():  # lane-aligned message (a == 0) going on
                        m.d.comb += nx_rem.eq(rem - _B)

        # What follows a message end (or a prefix start): the next prefix and message.
        left = Signal(signed(6))
        m.d.comb += left.eq(n_eff - tail_p)
        msg_len = Signal(16)
        m.d.comb += msg_len.eq(
            Mux(tail_hv, Cat(cur_byte(0), hi), Cat(cur_byte(tail_p + 1), cur_byte(tail_p)))
        )
        start = Signal(range(_B + 1))  # lane of the next message's byte 0
        m.d.comb += start.eq(Mux(tail_hv, 1, tail_p + 2))
        present = Signal(signed(6))  # its bytes in this beat
        m.d.comb += present.eq(n_eff - start)
        len_small = Signal()  # msg_len < 16: the compares below need only 4 bits
        m.d.comb += len_small.eq(msg_len[4:] == 0)
        m.d.comb += e_length.eq(Mux(in_body, length, msg_len))

        with m.If(tail):
            with m.If(~tail_hv & (left <= 0)):  # nothing left in this beat
                m.d.comb += [nx_mode.eq(_Mode.PREFIX), nx_p.eq(0), nx_hv.eq(0)]
            with m.Elif(left < Mux(tail_hv, 1, 2)):  # prefix cut by the beat's end
                with m.If(last):
                    m.d.comb += set_trunc.eq(1)
                m.d.comb += [
                    nx_mode.eq(_Mode.PREFIX),
                    nx_p.eq(0),
                    nx_hv.eq(1),
                    nx_hi.eq(cur_byte(_B - 1)),
                ]
            with m.Elif(len_small & (msg_len[:4] == 0)):
                m.d.comb += [set_zero.eq(1), nx_mode.eq(_Mode.DROP)]
            with m.Elif(present <= 0):  # the message starts with the next beat
                with m.If(last):
                    m.d.comb += set_trunc.eq(1)
                m.d.comb += [
                    nx_mode.eq(_Mode.BODY),
                    nx_a.eq(0),
                    nx_has_prev.eq(0),
                    nx_rem.eq(msg_len),
                    nx_first_chunk.eq(1),
                    nx_length.eq(msg_len),
                ]
            with m.Elif((len_small & (msg_len[:4] <= _B - start)) | last):  # ends in this beat
                end = Signal(range(2 * _B + 1))
                m.d.comb += end.eq(start + msg_len[:4])
                # Send it now when nothing else was sent this step and no prefix can follow
                # in this beat (so no second message start has to be parsed in one step).
                fits = len_small & (msg_len[:4] <= present)
                with m.If(tail_may_emit & fits & (end >= _B - 1)):
                    m.d.comb += [
                        emit.eq(1),
                        e_count.eq(msg_len),
                        e_last.eq(1),
                        e_trunc.eq(0),
                        nx_mode.eq(_Mode.PREFIX),
                        nx_p.eq(0),
                        nx_hv.eq(end < n_eff),
                        nx_hi.eq(cur_byte(_B - 1)),
                    ]
                    with m.If(last & (end < n_eff)):
                        m.d.comb += set_trunc.eq(1)
                with m.Else():
                    m.d.comb += [
                        hold.eq(1),
                        nx_mode.eq(_Mode.BODY),
                        nx_a.eq(start),
                        nx_has_prev.eq(0),
                        nx_rem.eq(msg_len),
                        nx_first_chunk.eq(1),
                        nx_length.eq(msg_len),
                    ]
            with m.Else():  # it goes on past this beat
                m.d.comb += [
                    nx_mode.eq(_Mode.BODY),
                    nx_a.eq(start),
                    nx_has_prev.eq(1),
                    nx_rem.eq(msg_len - (_B - start)),
                    nx_first_chunk.eq(1),
                    nx_length.eq(msg_len),
                ]

        m.d.comb += nx_rem_small.eq(nx_rem <= _B)
        ends_message = emit & e_last
        with m.If(ends_message):
            m.d.comb += [nx_seq.eq(seq + 1), nx_msg_count.eq(msg_count + 1)]
        m.d.comb += [nx_f_trunc.eq(f_trunc | set_trunc | e_trunc), nx_f_zero.eq(f_zero | set_zero)]

        # A step that takes the packet's last beat finishes the packet.
        finish = Signal()
        m.d.comb += finish.eq(last & ~hold)
        with m.If(finish):
            m.d.comb += [
                nx_mode.eq(_Mode.HEADER),
                nx_hdr_beat.eq(0),
                nx_header_due.eq(0),
                nx_msg_count.eq(0),
                nx_f_trunc.eq(0),
                nx_f_zero.eq(0),
            ]

        o_free = ~self.o.valid | self.o.ready
        hdr_free = ~self.header.valid | self.header.ready
        st_free = ~self.status.valid | self.status.ready
        step = Signal()
        m.d.comb += [
            step.eq(self.i.valid & (~emit | o_free) & (~hdr_emit | hdr_free) & (~finish | st_free)),
            self.i.ready.eq(step & ~hold),
        ]

        with m.If(step):
            for r, nx in regs.values():
                m.d.sync += r.eq(nx)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += prev.eq(cur)
            if _HEADER_BEATS > 1:
                with m.If((mode == _Mode.HEADER) & (hdr_beat < _HEADER_BEATS - 1)):
                    m.d.sync += hdr_buf.word_select(hdr_beat, 8 * _B).eq(cur)

        # The message beat: rotate the two-beat window by the message's start lane.
        window = Cat(
            *(
                Mux(e_span & (lane >= e_align), prev.word_select(lane, 8), cur_byte(lane))
                for lane in range(_B)
            )
        )
        out_data = Cat(*(window.word_select((e_align + j)[:3], 8) for j in range(_B)))
        with m.If(step & emit):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.data.eq(out_data),
                self.o.payload.keep.eq(Cat(*(e_count > j for j in range(_B)))),
                self.o.payload.first.eq(e_first),
                self.o.payload.last.eq(e_last),
                self.o.payload.length.eq(e_length),
                self.o.payload.sequence.eq(seq),
                self.o.payload.truncated.eq(e_trunc),
            ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(step & hdr_emit):
            m.d.sync += self.header.valid.eq(1)
            m.d.sync += [getattr(self.header.payload, k).eq(v) for k, v in hdr_fields.items()]
        with m.Elif(self.header.ready):
            m.d.sync += self.header.valid.eq(0)

        with m.If(step & finish):
            messages = msg_count + ends_message
            m.d.sync += [
                self.status.valid.eq(1),
                self.status.payload.messages.eq(messages),
                self.status.payload.count_mismatch.eq(~set_short & (messages != nx_count_exp)),
                self.status.payload.truncated.eq(f_trunc | set_trunc | e_trunc),
                self.status.payload.zero_length.eq(f_zero | set_zero),
                self.status.payload.short.eq(set_short),
            ]
        with m.Elif(self.status.ready):
            m.d.sync += self.status.valid.eq(0)

        return m
