"""MoldUDP64 + ITCH 5.0 parser on the unaligned UDP payload: payload beats in, BookEvents out.

No realignment: a message keeps whatever lane it starts at. The parser keeps the lane of the
next message's 2-byte length prefix and how many beats ahead it is in registers, with two
registered flags: the prefix is in this beat, or in the next one (so no wide compare stands in
the per-beat decision). In the beat that holds the prefix, every quantity the length decides
(the next prefix's lane and distance, its two flags, the short-block and size compares) is
computed for each of the 8 possible prefix lanes in parallel, straight from the beat's bytes, and
the prefix lane (a register) selects one: that is the whole per-cycle decision. A prefix in lane
7 is finished with lane 0 of the next beat. The message ends in the byte before the next prefix,
so its end beat and lane are known a message ahead.

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
payload's start lane (a register loaded on the first beat; the header bytes of the first beat
are taken in the second from a two-beat window) and handed to the
:class:`~.sequencer.Sequencer`, which decides which messages are new. Every complete message is
reported to the sequencer two cycles after its end (when every per-packet decision is final) and
counted by outcome.
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


def _block_views(m, lanes, split_hi, prefix_lane) -> dict:
    """What a message block's length decides, for the prefix at ``prefix_lane`` (7: split).

    ``lane`` / ``ahead``: the next prefix's lane and beat distance (``ahead`` counts from this
    beat, plus one); ``now`` / ``next``: it is in the next beat / the one after; ``below_8``,
    ``is_7``: the length compares; ``sizes``: the length equals each published ITCH size.
    Computed per lane from the beat's bytes, then selected by the (registered) prefix lane.
    """
    views = []
    for k in range(_B):
        if k < _B - 1:
            length, body_lane = Cat(lanes[k + 1], lanes[k]), k + 2
        else:  # split: the high byte was lane 7 of the previous beat; the body starts at lane 1
            length, body_lane = Cat(lanes[0], split_hi), 1
        next_pos = Signal(_POS, name=f"blk{k}_next")
        m.d.comb += next_pos.eq(length + body_lane)
        # A block is >= 7 bytes when it opens, so the next prefix is at least a beat on.
        views.append(
            {
                "lane": next_pos[:3],
                "ahead": next_pos[3:],
                "now": length < 16 - body_lane,
                "next": (length >= 16 - body_lane) & (length < 24 - body_lane),
                "below_8": length[3:] == 0,
                "is_7": length[:3] == _MIN_BLOCK,
                "sizes": Cat(*(length == ITCH_SIZES[t] for t in _TYPES)),
            }
        )
    out = {}
    for name, value in views[0].items():
        out[name] = Signal(len(value), name=f"blk_{name}")
        with m.Switch(prefix_lane):
            for k in range(_B):
                with m.Case(k):
                    m.d.comb += out[name].eq(views[k][name])
    return out


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

        # Packet state: start lane, and which of the header's beats 1 .. 3 comes next.
        active = Signal()
        start_lane = Signal(3)  # the payload's first lane, from the packet's second beat on
        low_keep = Signal(3)
        for k in reversed(range(_B)):
            with m.If(keep[k]):
                m.d.comb += low_keep.eq(k)
        begin = take & beat.first
        step = take & active & ~beat.first  # a beat after the first of a packet
        header_at = Signal(4)  # one-hot: the next step beat is beat 1, 2 or 3 (bit 0 unused)
        first_data = Signal(8 * _B)  # the packet's first beat
        with m.If(take):
            m.d.sync += header_at.eq(Mux(beat.first, 0b0010, Cat(0, 0, header_at[1:3])))
            with m.If(beat.first):
                m.d.sync += [start_lane.eq(low_keep), active.eq(~last), first_data.eq(beat.data)]
            with m.Elif(last):
                m.d.sync += active.eq(0)

        # MoldUDP64 header, by byte position from the start lane. Nothing is taken in the first
        # beat (its start lane would come from ``keep`` there): the header bytes it holds are
        # taken in the second beat from a two-beat window (first beat, this beat), so every
        # mux select and enable comes from a register. No field ends in the first beat (the
        # session's last byte is payload byte 9), so each field is whole as early as before.
        header_bytes = rotated(start_lane, "hdr_lane")
        window = Cat(first_data, beat.data)
        wrap = [start_lane + q >= _B for q in range(_B)]

        def header_byte(j):
            """(register, captured now) for payload byte j."""
            reg = Signal(8, name=f"hdr_byte{j}")
            q = j % _B
            if j < _B:
                now = step & header_at[1]
                byte = Signal(8, name=f"hdr_window{j}")
                with m.Switch(start_lane):
                    for k in range(_B):
                        with m.Case(k):
                            m.d.comb += byte.eq(window.word_select(k + j, 8))
            else:
                now = step & Mux(wrap[q], header_at[j // _B + 1], header_at[j // _B])
                byte = header_bytes[q]
            with m.If(now):
                m.d.sync += reg.eq(byte)
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
        q_last = last_header_byte % _B
        m.d.comb += count_now.eq(
            step
            & Mux(wrap[q_last], header_at[last_header_byte // _B + 1],
                  header_at[last_header_byte // _B])
            & keep.bit_select((start_lane + q_last)[:3], 1)
        )  # fmt: skip
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

        # Message boundaries: the next length prefix's lane, and how many beats ahead it is.
        # ``prefix_ahead`` is (the prefix's beat - this beat + 1) once the next beat is taken;
        # ``prefix_now`` / ``prefix_next`` say that the prefix is in this beat / the next one,
        # registered, so that no wide compare stands in the per-beat decision.
        prefix_lane = Signal(3)
        prefix_ahead = Signal(_POS - 3)
        prefix_now = Signal()
        prefix_next = Signal()
        in_message = Signal()  # a message body is open; it ends just before the next prefix
        split = Signal()  # a prefix's first byte was lane 7 of the previous beat
        split_hi = Signal(8)
        stopped = Signal()  # a short block ended the packet's parsing
        pb = rotated(prefix_lane, "pfx_lane")  # bytes from the prefix on
        prefix_here = step & ~stopped & ~split & prefix_now
        # ``stopped`` also closes a body opened by the parse that found a short block.
        end_here = step & in_message & ~stopped & Mux(prefix_lane != 0, prefix_now, prefix_next)
        end_lane = (prefix_lane - 1)[:3]
        # Everything the parse decides from the length is computed for each prefix lane in
        # parallel, straight from this beat's bytes, and the prefix lane selects one result at
        # the end (lane 7 stands for a split prefix: ``split`` implies ``prefix_lane == 7``).
        block = _block_views(m, lanes, split_hi, prefix_lane)
        prefix_whole = (prefix_lane != 7) & (~last | keep.bit_select(prefix_lane + 1, 1))
        prefix_some = ~last | keep.bit_select(prefix_lane, 1)
        parse = Signal()  # a whole prefix is read in this beat
        m.d.comb += parse.eq((prefix_here & prefix_whole) | (step & split))
        # The registers that follow the prefix load on ``prefix_load``: a parse, or a prefix
        # the packet's end cuts (the packet ends there, so what they load is never used), so
        # that no ``keep`` or length check stands before their enables.
        prefix_load = Signal()
        m.d.comb += prefix_load.eq((prefix_here & (prefix_lane != 7)) | (step & split))
        below_8 = block["below_8"]
        short = parse & below_8 & ~block["is_7"]
        # 7 bytes after a split prefix (its length is lane 0 and the held byte, no lane mux)
        ends_at_parse = step & split & (split_hi == 0) & (lanes[0] == _MIN_BLOCK)
        prefix_cut = last & prefix_here & prefix_some & ~prefix_whole
        with m.If(prefix_here & (prefix_lane == 7) & ~last):
            m.d.sync += [split.eq(1), split_hi.eq(lanes[7])]
        with m.If(step & split):
            m.d.sync += split.eq(0)
        # A parse that finds a short block sets ``stopped``, so the positions loaded then are
        # never used: loading regardless keeps the length compares off the enables.
        with m.If(prefix_load):
            m.d.sync += [
                prefix_lane.eq(block["lane"]),
                prefix_ahead.eq(block["ahead"]),
                prefix_now.eq(block["now"]),
                prefix_next.eq(block["next"]),
            ]
        with m.Elif(take):
            m.d.sync += [
                prefix_ahead.eq(prefix_ahead - 1),
                prefix_now.eq(prefix_ahead == 2),
                prefix_next.eq(prefix_ahead == 3),
            ]
        with m.If(short):
            m.d.sync += stopped.eq(1)
        with m.If(end_here):
            m.d.sync += in_message.eq(0)
        with m.If(prefix_load & ~(split & (split_hi == 0) & (lanes[0][3:] == 0))):
            m.d.sync += in_message.eq(1)
        first_prefix = low_keep + MOLD_HEADER_SIZE  # beat 2 or 3
        with m.If(begin):
            m.d.sync += [
                prefix_lane.eq(first_prefix[:3]),
                prefix_ahead.eq(first_prefix[3:]),
                prefix_now.eq(0),
                prefix_next.eq(first_prefix[3:] == 2),
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
            now = prefix_load & (split | (prefix_lane + 2 + i < _B))
            later = step & pending[i]
            with m.If(now | later):  # never both: see ``type_load``
                m.d.sync += target.eq(Mux(pending[i], hr[2 + i], pb[2 + i]))
            with m.If(prefix_load):
                m.d.sync += pending[i].eq(~split & (prefix_lane + 2 + i >= _B))
            with m.Elif(step):
                m.d.sync += pending[i].eq(0)
            if i == 0:
                # The type compares load on any beat holding a prefix or a held type byte,
                # with no length or ``keep`` check before the enable: a load that was not a
                # parse (a prefix the packet's end cuts) is never read by an event. A
                # held type byte and a parse never share a beat (a block is >= 7 bytes).
                type_value = Mux(pending[0], hr[2], pb[2])
                type_load = prefix_load | (step & pending[0])
                with m.If(type_load):
                    m.d.sync += type_hit.eq(Cat(*[type_value == ord(t) for t in _TYPES]))
        with m.If(prefix_load):
            m.d.sync += held_lane.eq(prefix_lane)
        size_hit = Signal(len(_TYPES))
        with m.If(prefix_load):
            m.d.sync += size_hit.eq(block["sizes"])

        # Field bytes 11..35 of the open message, by its start lane and beat.
        start = Signal(3)  # the open message's first byte lane
        # Beats since the one holding its first byte, one-hot (saturating at bit 7), and for
        # each lane ``c`` whether ``start + c`` wraps into the next beat: registered, so that
        # each field byte's "in this beat" is one small LUT.
        body_beat = Signal(8)
        wraps = Signal(_B)
        first_in_next = ~split & (prefix_lane >= _B - 2)  # its first byte is in the next beat
        start_next = Mux(split, 1, prefix_lane + 2)[:3]
        with m.If(prefix_load):
            m.d.sync += [
                start.eq(start_next),
                body_beat.eq(Mux(first_in_next, 0b01, 0b10)),
                wraps.eq(Cat(*(start_next + c >= _B for c in range(_B)))),
            ]
        with m.Elif(step):
            m.d.sync += body_beat.eq(Cat(0, body_beat[:6], body_beat[6] | body_beat[7]))
        fr = rotated(start, "field_lane")
        field_now = {}
        field_at = {}  # byte j is in this beat (only used with ``step``)
        for j in _FIELD_OFFSETS:
            reg = Signal(8, name=f"field_byte{j}")
            field_at[j] = Signal(name=f"field_at{j}")
            beat_index = j // _B
            m.d.comb += field_at[j].eq(
                Mux(wraps[j % _B], body_beat[beat_index + 1], body_beat[beat_index])
            )
            with m.If(step & field_at[j]):
                m.d.sync += reg.eq(fr[j % _B])
            field_now[j] = Mux(field_at[j], fr[j % _B], reg)

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
        # The side byte is compared with 'S' in every lane first, then picked like its byte.
        side_offset = ITCH_FIELDS["A"][1]["code"]
        sell_lane = Cat(*(lane == ord("S") for lane in lanes))
        sell_here = Signal()
        with m.Switch(start):
            for k in range(_B):
                with m.Case(k):
                    m.d.comb += sell_here.eq(sell_lane[(k + side_offset) % _B])
        side_kind = Cat(
            *(type_hit[n] for n, t in enumerate(_TYPES) if ITCH_FIELDS[t][0] in SIDE_KINDS)
        ).any()
        values["side"] = side_kind & Mux(
            field_at[side_offset], sell_here, field_now[side_offset] == ord("S")
        )
        # ``index < count_effective`` without the heartbeat / end-of-session select before
        # the compare (a count of 0 admits no index anyway).
        count = header["count"]
        count_special = (count == 0) | (count == 0xFFFF)  # a heartbeat or end of session
        k_ok = (index >= seqr.skip) & (index < count) & (count != 0xFFFF) & seqr.live
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
            "is_7": block["is_7"],
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
        # ``index`` is final here too (the last beat's message, if any, has moved it).
        finished = counted & ~incomplete & ~r["stopped"] & ~r_short
        m.d.sync += [
            outcome["count_mismatch"].eq(finished & Mux(count_special, index != 0, index != count)),
            outcome["packet_truncated"].eq(counted & incomplete & r["truncated"]),
            outcome["overrun"].eq(counted & incomplete & ~r["truncated"]),
            outcome["short_block"].eq(counted & (r["stopped"] | r_short)),
        ]
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
