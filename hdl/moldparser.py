"""MoldUDP64 + ITCH 5.0 parser on the unaligned UDP payload: payload beats in, BookEvents out.

No realignment: a message keeps whatever lane it starts at. The parser tracks the byte position
(``8 * beat + lane`` from the packet's first beat) of the next message's 2-byte length prefix in
a register. In the beat that holds the prefix, one 8:1 lane mux (selected by the prefix lane, a
register) reads the length and one 17-bit add computes the position of the next prefix,
registered: that is the whole per-cycle decision. A prefix in lane 7 is finished with lane 0 of
the next beat. The message ends in the byte before the next prefix, so its end beat and lane are
known a message ahead.

Fields are captured by byte position: the type byte and Stock Locate by a mux on the prefix lane,
and each byte at offset 11 .. 35 (every field an event needs, :mod:`.itchfields`) by a mux on
the message's start lane, enabled in the beat that holds it. In the beat that holds the
message's last byte the event register takes the bytes of that beat straight from the input, so
:attr:`MoldParser.o` is valid **one cycle after the input beat holding the message's last
byte**.

Throughput: one beat every cycle, never stalled. A message block of 7 bytes or more (9 with its
prefix, so every ITCH message) ends at least one beat after its prefix is read, so no beat ever
holds two prefixes; a length below 7 ends the packet's parsing (``short_block``, see the model).

The MoldUDP64 header (session, sequence number, count) is captured the same way from the
payload's start lane and handed to the :class:`~.sequencer.Sequencer`, which decides which
messages are new. Every complete message is reported to the sequencer two cycles after its end
(when every per-packet decision is final) and counted by outcome.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .events import EVENT_FIELDS, BookEvent, EventKind
from .itchfields import (
    ITCH_FIELDS,
    ITCH_SIZES,
    PARSER_OUTCOMES,
    SIDE_KINDS,
    byte_sources,
)
from .layouts import (
    BEAT_BYTES,
    MOLD_HEADER_SIZE,
    mold_header_offsets,
    payload_beat_layout,
    session_config_layout,
)
from .sequencer import SEQUENCER_COUNTERS, Sequencer

__all__ = ["MOLD_COUNTERS", "MoldParser", "mold_counters_layout"]

_B = BEAT_BYTES
_MIN_BLOCK = 7
_TYPES = list(ITCH_FIELDS)
_KINDS = [kind for kind in EventKind if kind is not EventKind.NONE]
#: Packet outcomes (at most one per packet with a whole header).
PACKET_OUTCOMES = ("packet_truncated", "short_block", "overrun", "count_mismatch")
#: Every counter: the sequencer's, the packet outcomes, then the delivered messages by outcome.
MOLD_COUNTERS = (
    SEQUENCER_COUNTERS
    + PACKET_OUTCOMES
    + tuple(kind.name.lower() for kind in _KINDS)
    + PARSER_OUTCOMES
)
_FIELD_OFFSETS = sorted({offset for per in byte_sources().values() for offset in per})
_POS = 17  # byte positions within a packet


def mold_counters_layout(width: int) -> data.StructLayout:
    """One ``width``-bit counter per name in :data:`MOLD_COUNTERS`."""
    return data.StructLayout({name: width for name in MOLD_COUNTERS})


class MoldParser(wiring.Component):
    """Parses MoldUDP64 packets carried unaligned, and turns new ITCH messages into events.

    Parameters
    ----------
    counter_width:
        Width of each counter (they wrap).

    Attributes
    ----------
    i : In(stream.Signature(payload_beat_layout))
        UDP payloads as :class:`~.framefilter.FrameFilter` passes them on (``ready`` is always
        1). Successive packets must be at least 3 cycles apart.
    o : Out(stream.Signature(BookEvent))
        One event per new A F E C X D U S R H P message of its published size, valid for one
        cycle (``o.ready`` is ignored; the feed handler buffers).
    cycle : In(32)
        Free-running cycle counter; its value in the cycle the beat holding the message's last
        byte is on ``i`` becomes the event's ``stamp``.
    session : In(session_config_layout)
        The expected MoldUDP64 session, when enabled.
    stale : Out(1)
        One-cycle pulse on a gap, late join or session change.
    counters : Out(mold_counters_layout(counter_width))
    """

    def __init__(self, counter_width: int = 32):
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
            raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
        self.counter_width = counter_width
        self._sequencer = Sequencer(counter_width)
        super().__init__(
            {
                "i": In(stream.Signature(payload_beat_layout)),
                "o": Out(stream.Signature(BookEvent)),
                "cycle": In(32),
                "session": In(session_config_layout),
                "stale": Out(1),
                "counters": Out(mold_counters_layout(counter_width)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.sequencer = seqr = self._sequencer
        beat = self.i.payload
        take = Signal()
        m.d.comb += [self.i.ready.eq(1), take.eq(self.i.valid)]
        lanes = [beat.data.word_select(k, 8) for k in range(_B)]
        keep = beat.keep
        last = beat.last

        def rotated(select, name):
            """Bytes 0..7 of the beat read from lane ``select`` on (wrapping)."""
            out = []
            for q in range(_B):
                byte = Signal(8, name=f"{name}{q}")
                with m.Switch(select):
                    for k in range(_B):
                        with m.Case(k):
                            m.d.comb += byte.eq(lanes[(k + q) % _B])
                out.append(byte)
            return out

        # Packet state: beat index (of the next beat), start lane.
        active = Signal()
        beat_index = Signal(_POS - 3)  # index of the current beat when it is not ``first``
        beat_index1 = Signal(_POS - 3)  # the same plus one
        start_lane_reg = Signal(3)
        start_lane = Signal(3)
        low_keep = Signal(3)
        for k in reversed(range(_B)):
            with m.If(keep[k]):
                m.d.comb += low_keep.eq(k)
        m.d.comb += start_lane.eq(Mux(beat.first, low_keep, start_lane_reg))
        begin = take & beat.first
        step = take & active & ~beat.first  # a beat after the first of a packet
        with m.If(take):
            m.d.sync += [
                beat_index.eq(Mux(beat.first, 1, beat_index + 1)),
                beat_index1.eq(Mux(beat.first, 2, beat_index1 + 1)),
            ]
            with m.If(beat.first):
                m.d.sync += [start_lane_reg.eq(low_keep), active.eq(~last)]
            with m.Elif(last):
                m.d.sync += active.eq(0)
        header_beat = Mux(beat.first, 0, beat_index)
        in_packet = begin | step

        # MoldUDP64 header, by byte position from the start lane.
        header_bytes = rotated(start_lane, "hdr_lane")
        wrap = [start_lane + q >= _B for q in range(_B)]

        def header_byte(j):
            """(register, captured now) for payload byte j."""
            reg = Signal(8, name=f"hdr_byte{j}")
            now = in_packet & (header_beat == j // _B + wrap[j % _B])
            with m.If(now):
                m.d.sync += reg.eq(header_bytes[j % _B])
            return reg, now

        offsets = mold_header_offsets()
        header = {}
        done = {}
        for name, (offset, size) in offsets.items():
            captured = [header_byte(offset + k) for k in range(size)]
            regs = [reg for reg, _ in captured]
            # text in wire order, numbers big-endian
            header[name] = Cat(*regs) if name == "session" else Cat(*reversed(regs))
            done[name] = Signal(name=f"{name}_done")
            m.d.sync += done[name].eq(captured[-1][1])
        header_done = Signal()  # the count has arrived (this packet has a whole header)
        # The header is whole when its last byte is here (and inside ``keep``).
        last_header_byte = MOLD_HEADER_SIZE - 1
        count_now = Signal()
        m.d.comb += count_now.eq(
            in_packet
            & (header_beat == last_header_byte // _B + wrap[last_header_byte % _B])
            & keep.bit_select((start_lane + last_header_byte)[:3], 1)
        )
        count_done = Signal()
        m.d.sync += count_done.eq(count_now)
        with m.If(begin):
            m.d.sync += header_done.eq(0)
        with m.If(count_now):
            m.d.sync += header_done.eq(1)
        m.d.comb += [
            seqr.session.eq(header["session"]),
            seqr.sequence.eq(header["sequence"]),
            seqr.count.eq(header["count"]),
            seqr.session_done.eq(done["session"]),
            seqr.sequence_done.eq(done["sequence"]),
            seqr.count_done.eq(count_done),
            seqr.config.eq(self.session),
            self.stale.eq(seqr.stale),
        ]
        drop_at_count = Signal()
        with m.If(count_now):
            m.d.sync += drop_at_count.eq(beat.drop)
        m.d.comb += seqr.drop.eq(drop_at_count)

        # Message boundaries.
        prefix_pos = Signal(_POS)
        prefix_lane = prefix_pos[:3]
        prefix_beat = prefix_pos[3:]
        in_message = Signal()  # a message body is open; it ends just before ``prefix_pos``
        split = Signal()  # a prefix's first byte was lane 7 of the previous beat
        split_hi = Signal(8)
        stopped = Signal()  # a short block ended the packet's parsing
        pb = rotated(prefix_lane, "pfx_lane")  # bytes from the prefix on
        prefix_here = step & ~stopped & ~split & (prefix_beat == beat_index)
        end_here = (
            step
            & in_message
            & Mux(prefix_lane != 0, prefix_beat == beat_index, prefix_beat == beat_index1)
        )
        end_lane = (prefix_lane - 1)[:3]
        length = Signal(16)
        m.d.comb += length.eq(Mux(split, Cat(lanes[0], split_hi), Cat(pb[1], pb[0])))
        prefix_whole = (prefix_lane != 7) & (~last | keep.bit_select(prefix_lane + 1, 1))
        prefix_some = ~last | keep.bit_select(prefix_lane, 1)
        parse = Signal()  # a whole prefix is read in this beat
        m.d.comb += parse.eq((prefix_here & prefix_whole) | (step & split))
        # Compares on ``length`` in plain logic (no carry chain): below 7, or exactly 7.
        below_8 = Signal()
        m.d.comb += below_8.eq(length[3:] == 0)
        short = parse & below_8 & (length[:3] != _MIN_BLOCK)
        opens = parse & ~(below_8 & (length[:3] != _MIN_BLOCK))
        ends_at_parse = opens & split & below_8  # 7 bytes after a split prefix
        prefix_cut = last & prefix_here & prefix_some & ~prefix_whole
        with m.If(prefix_here & (prefix_lane == 7) & ~last):
            m.d.sync += [split.eq(1), split_hi.eq(lanes[7])]
        with m.If(step & split):
            m.d.sync += split.eq(0)
        with m.If(opens):
            m.d.sync += prefix_pos.eq(prefix_pos + 2 + length)
        with m.If(short):
            m.d.sync += stopped.eq(1)
        with m.If(end_here):
            m.d.sync += in_message.eq(0)
        with m.If(opens & ~ends_at_parse):
            m.d.sync += in_message.eq(1)
        with m.If(begin):
            m.d.sync += [
                prefix_pos.eq(low_keep + MOLD_HEADER_SIZE),
                in_message.eq(0),
                split.eq(0),
                stopped.eq(0),
            ]

        end_here_complete = end_here & (~last | keep.bit_select(end_lane, 1))
        complete = end_here_complete | (ends_at_parse & (~last | keep[7]))
        index = Signal(16)
        with m.If(complete):
            m.d.sync += index.eq(index + 1)
        with m.If(begin):
            m.d.sync += index.eq(0)
        # ``sequence + index``: the adds are registered (a cycle behind ``index``), and the
        # one-ahead sum is taken when ``index`` has just moved.
        sequence_at = Signal(64)
        sequence_after = Signal(64)
        index_moved = Signal()
        m.d.sync += [
            sequence_at.eq(header["sequence"] + index),
            sequence_after.eq(header["sequence"] + index + 1),
            index_moved.eq(complete),
        ]
        message_sequence = Mux(index_moved, sequence_after, sequence_at)

        # Type and Stock Locate of the message whose prefix is read: bytes 2..4 from the prefix
        # lane, in this beat or (still by the prefix lane's rotation) the next one.
        type_byte = Signal(8)
        locate = Signal(16)
        type_hit = Signal(len(_TYPES))
        held_lane = Signal(3)
        pending = Signal(3)
        hr = rotated(held_lane, "held_lane")
        targets = [type_byte, locate[8:], locate[:8]]
        for i, target in enumerate(targets):
            now = opens & (split | (prefix_lane + 2 + i < _B))
            later = step & pending[i]
            with m.If(now):
                m.d.sync += target.eq(pb[2 + i])
            with m.Elif(later):
                m.d.sync += target.eq(hr[2 + i])
            with m.If(opens):
                m.d.sync += pending[i].eq(~split & (prefix_lane + 2 + i >= _B))
            with m.Elif(step):
                m.d.sync += pending[i].eq(0)
            if i == 0:
                type_value = Mux(now, pb[2], hr[2])
                with m.If(now | later):
                    m.d.sync += type_hit.eq(Cat(*[type_value == ord(t) for t in _TYPES]))
        with m.If(opens):
            m.d.sync += held_lane.eq(prefix_lane)
        size_hit = Signal(len(_TYPES))
        with m.If(opens):
            m.d.sync += size_hit.eq(Cat(*(length == ITCH_SIZES[t] for t in _TYPES)))

        # Field bytes 11..35 of the open message, by its start lane and beat.
        start = Signal(3)  # the open message's first byte lane
        body_beat = Signal(3)  # beats since the one holding its first byte (saturating)
        first_in_next = ~split & (prefix_lane >= _B - 2)  # its first byte is in the next beat
        with m.If(opens):
            m.d.sync += [
                start.eq(Mux(split, 1, prefix_lane + 2)),
                body_beat.eq(Mux(first_in_next, 0, 1)),
            ]
        with m.Elif(step & (body_beat != 7)):
            m.d.sync += body_beat.eq(body_beat + 1)
        fr = rotated(start, "field_lane")
        field_now = {}
        for j in _FIELD_OFFSETS:
            reg = Signal(8, name=f"field_byte{j}")
            here = step & (body_beat == j // _B + (start + (j % _B) >= _B))
            with m.If(here):
                m.d.sync += reg.eq(fr[j % _B])
            field_now[j] = Mux(here, fr[j % _B], reg)

        # The event, straight from this beat's bytes and those captured before.
        book = (type_hit & size_hit).any()
        kind = Signal(EventKind)
        for n, t in enumerate(_TYPES):
            with m.If(type_hit[n]):
                m.d.comb += kind.eq(ITCH_FIELDS[t][0])
        sources = byte_sources()
        values = {"kind": kind, "locate": locate, "sequence": message_sequence,
                  "stamp": self.cycle}  # fmt: skip
        for name, width in EVENT_FIELDS.items():
            if name in values:
                continue
            parts = []
            for b in range(width // 8):
                byte = Const(0, 8)
                for offset, owners in sources.get((name, b), {}).items():
                    hit = Cat(*(type_hit[_TYPES.index(t)] for t in owners)).any()
                    byte = Mux(hit, field_now[offset], byte)
                parts.append(byte)
            values[name] = Cat(*parts)[:width] if name != "side" else None
        side_offset = ITCH_FIELDS["A"][1]["code"]
        values["side"] = (field_now[side_offset] == ord("S")) & Cat(
            *(kind == k for k in SIDE_KINDS)
        ).any()
        k_ok = (index >= seqr.skip) & (index < seqr.count_effective) & seqr.live
        emit = end_here_complete & book & k_ok
        m.d.sync += [
            self.o.valid.eq(emit),
            # loaded every cycle: it only matters with ``valid``, and no enable fans out
            self.o.payload.eq(Cat(*(values[name] for name, _ in BookEvent))),
        ]

        # Report each complete message to the sequencer two cycles after its end.
        # A message of 7 or 8 bytes may end in the beat its type byte arrives in.
        def known(byte):
            return Cat(*(byte == ord(t) for t in _TYPES)).any()

        known_at_end = Mux(step & pending[0], known(hr[2]),
                           Mux(ends_at_parse, known(pb[2]), type_hit.any()))  # fmt: skip
        stage = []
        source = (complete, index, known_at_end, ~ends_at_parse & book, kind)
        for n in range(2):
            regs = (
                Signal(name=f"msg{n}_valid"),
                Signal(16, name=f"msg{n}_index"),
                Signal(name=f"msg{n}_known"),
                Signal(name=f"msg{n}_book"),
                Signal(EventKind, name=f"msg{n}_kind"),
            )
            m.d.sync += [r.eq(v) for r, v in zip(regs, source)]
            stage.append(regs)
            source = regs
        valid, msg_index, known, is_book, msg_kind = stage[-1]
        m.d.comb += [seqr.message_valid.eq(valid), seqr.message_index.eq(msg_index)]
        # ``delivered`` answers the cycle after: keep the message's class one more cycle.
        known_d = Signal()
        book_d = Signal()
        kind_d = Signal(EventKind)
        m.d.sync += [known_d.eq(known), book_d.eq(is_book), kind_d.eq(msg_kind)]
        increments = {}
        delivered = seqr.delivered
        for k in _KINDS:
            increments[k.name.lower()] = delivered & book_d & (kind_d == k)
        increments["skipped"] = delivered & ~known_d
        increments["bad_length"] = delivered & known_d & ~book_d

        # Packet outcome: the last beat's parse state is registered, classified the cycle
        # after, and counted the cycle after that.
        seen = {
            "ended": step & last,
            "header": header_done | count_now,
            "drop": beat.drop,
            "truncated": beat.truncated,
            "parse": parse,
            "below_8": below_8,
            "is_7": length[:3] == _MIN_BLOCK,
            "split": split,
            "end_here": end_here,
            "end_kept": keep.bit_select(end_lane, 1),
            "kept_7": keep[7],
            "in_message": in_message,
            "prefix_cut": prefix_cut,
            "stopped": stopped,
        }
        r = {name: Signal(name=f"last_{name}") for name in seen}
        m.d.sync += [r[name].eq(value) for name, value in seen.items()]
        r_short = r["parse"] & r["below_8"] & ~r["is_7"]
        r_opens = r["parse"] & ~r_short
        r_ends_at_parse = r_opens & r["split"] & r["below_8"]
        incomplete = (
            ~r["stopped"]
            & ~r_short
            & (
                (r["end_here"] & ~r["end_kept"])
                | (r_ends_at_parse & ~r["kept_7"])
                | (r["in_message"] & ~r["end_here"])
                | (r_opens & ~r_ends_at_parse)
                | r["prefix_cut"]
            )
        )
        counted = r["ended"] & r["header"] & ~r["drop"]
        outcome = {name: Signal(name=f"{name}_seen") for name in PACKET_OUTCOMES}
        finished = Signal()
        m.d.sync += [
            finished.eq(counted & ~incomplete & ~r["stopped"] & ~r_short),
            outcome["packet_truncated"].eq(counted & incomplete & r["truncated"]),
            outcome["overrun"].eq(counted & incomplete & ~r["truncated"]),
            outcome["short_block"].eq(counted & (r["stopped"] | r_short)),
        ]
        m.d.comb += outcome["count_mismatch"].eq(finished & (index != seqr.count_effective))
        increments.update(outcome)
        increments.update({name: 0 for name in SEQUENCER_COUNTERS})

        counters = []
        for name in MOLD_COUNTERS:
            if name in SEQUENCER_COUNTERS:
                counters.append(getattr(seqr.counters, name))
                continue
            counter = Signal(self.counter_width, name=f"{name}_count")
            with m.If(increments[name]):
                m.d.sync += counter.eq(counter + 1)
            counters.append(counter)
        m.d.comb += self.counters.eq(Cat(*counters))
        return m
