"""Ethernet / 802.1Q / IPv4 / UDP frame filter: frames in, the UDP payload out, unaligned.

The filter reads every header field by its byte position in the frame: the IPv4 header starts at
byte 14, or 18 after an 802.1Q tag, and the UDP header ``4 * IHL`` bytes later, so the UDP header
(and the payload 8 bytes after it) always starts at lane 2 or 6. Each field byte is captured from
a fixed lane in the beat where it arrives, for both tag cases, and the tag flag picks one.

The payload leaves on :attr:`FrameFilter.o` in the frame's own beats, one register stage later:
``keep`` marks its lanes (from its start lane on the ``first`` beat, up to the end the UDP length
gives on the ``last`` beat, so Ethernet padding is stripped). Nothing is realigned.

Checks and counters
-------------------
The checks and their order are those of :mod:`tick2quote.sim.models.ingress` (the reference
model): each frame counts once in :attr:`FrameFilter.counters`, either ``accepted`` or under the
first check it fails (a check whose bytes the frame does not hold counts ``truncated``), plus
``frames``. The count is made 4 cycles after the frame's last beat (the IPv4 checksum pipeline).

The IPv4 header checksum is summed per beat (its 16-bit words sit on even lanes, since the header
starts at an even byte): 4 masked words are added into a register, then accumulated, then folded
with end-around carry, so it is final 3 cycles after the header's last beat.

``o.payload.drop`` says that a header check failed; it is final from the beat holding payload
byte 19 on (the last byte of a MoldUDP64 header; every header field and the checksum are known by
then), which is before anything downstream may act on the payload. ``o.payload.truncated``, on
the ``last`` beat, says the frame ended before the UDP payload did; the payload present is still
passed on, so that messages complete in it can be used (a MAC checked the frame's FCS).

The input is never back-pressured: ``i.ready`` is always 1, and ``o.ready`` is ignored. Frames
are delimited by ``last`` alone (``first`` is not used); only the ``keep`` of a last beat may be
partial.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import (
    BEAT_BYTES,
    MOLD_HEADER_SIZE,
    beat_layout,
    ip_entry_layout,
    payload_beat_layout,
    port_entry_layout,
)

__all__ = ["FILTER_COUNTERS", "FrameFilter", "filter_counters_layout"]

#: Counter names: every frame counts in ``frames`` and in exactly one of the others.
FILTER_COUNTERS = (
    "frames",
    "accepted",
    "truncated",
    "not_ipv4",
    "bad_length",
    "bad_checksum",
    "fragment",
    "not_udp",
    "wrong_dst_ip",
    "wrong_dst_port",
    "short_payload",
)
_CAUSE = {name: n for n, name in enumerate(FILTER_COUNTERS)}
_NONE = 0  # "no cause yet" in the early-cause register (``frames`` is never a cause)

_B = BEAT_BYTES
_POS_BITS = 17  # byte positions in a frame (up to 64 KiB of payload after the headers)
_HEADER_BEATS = 11  # the last header byte of any frame is byte 85 (tag + 60-byte IPv4 header)


def filter_counters_layout(width: int) -> data.StructLayout:
    """One ``width``-bit counter per name in :data:`FILTER_COUNTERS`."""
    return data.StructLayout({name: width for name in FILTER_COUNTERS})


def _check_width(counter_width):
    if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
        raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")


class FrameFilter(wiring.Component):
    """Filters Ethernet frames down to the UDP payloads of the configured feed.

    Parameters
    ----------
    groups, ports:
        Entries of the destination address and destination port tables (1 .. 16 each).
    counter_width:
        Width of each counter (they wrap).

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
        Ethernet frames, FCS stripped, one beat a cycle at most; never back-pressured.
    o : Out(stream.Signature(payload_beat_layout))
        The UDP payload of every frame that passed the header checks so far (see the module
        documentation), one cycle after its input beat; ``o.ready`` is ignored.
    allow_zero_checksum : In(1)
        Accept an IPv4 header checksum of 0 as "not filled in".
    groups : In(ArrayLayout(ip_entry_layout, groups))
        Accepted destination addresses; with no entry enabled, any address is accepted.
    ports : In(ArrayLayout(port_entry_layout, ports))
        Accepted destination ports; with no entry enabled, any port is accepted.
    counters : Out(filter_counters_layout(counter_width))
    """

    def __init__(self, *, groups: int = 4, ports: int = 4, counter_width: int = 32):
        for name, value in (("groups", groups), ("ports", ports)):
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise ValueError(f"{name} must be an integer in 1 .. 16, not {value!r}")
        _check_width(counter_width)
        self.counter_width = counter_width
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)),
                "o": Out(stream.Signature(payload_beat_layout)),
                "allow_zero_checksum": In(1),
                "groups": In(data.ArrayLayout(ip_entry_layout, groups)),
                "ports": In(data.ArrayLayout(port_entry_layout, ports)),
                "counters": Out(filter_counters_layout(counter_width)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        beat = self.i.payload
        take = Signal()
        m.d.comb += [self.i.ready.eq(1), take.eq(self.i.valid)]

        def lane(k):
            return beat.data.word_select(k, 8)

        # Beat index within the frame; a frame starts after a ``last`` beat (and at reset).
        at_start = Signal(init=1)
        idx_reg = Signal(13)
        idx = Signal(13)
        m.d.comb += idx.eq(Mux(at_start, 0, idx_reg))
        with m.If(take):
            m.d.sync += [at_start.eq(beat.last), idx_reg.eq(Mux(idx.all(), idx, idx + 1))]
        # The same index saturated at 31 (past every header byte), and that plus one: small
        # registers for the header logic, with no adder or start select in front of it.
        hdr_idx = Signal(5)
        hdr_idx1 = Signal(5, init=1)
        with m.If(take):
            m.d.sync += [
                hdr_idx.eq(Mux(beat.last, 0, hdr_idx1)),
                hdr_idx1.eq(Mux(beat.last, 1, Mux(hdr_idx1.all(), hdr_idx1, hdr_idx1 + 1))),
            ]
        at_beat = [Signal(name=f"at_beat{k}") for k in range(_HEADER_BEATS + 1)]
        m.d.comb += [hit.eq(take & (hdr_idx == k)) for k, hit in enumerate(at_beat)]

        def capture(pos: int, name: str) -> Signal:
            """A register loaded with frame byte ``pos`` when it arrives."""
            reg = Signal(8, name=name)
            with m.If(at_beat[pos // _B]):
                m.d.sync += reg.eq(lane(pos % _B))
            return reg

        def ip_field(offset: int, size: int, name: str):
            """IPv4 header bytes ``offset ..`` (big-endian), captured for both tag cases."""
            plain = Cat(*reversed([capture(14 + offset + j, f"{name}{j}") for j in range(size)]))
            tagged = Cat(*reversed([capture(18 + offset + j, f"{name}{j}_t") for j in range(size)]))
            return plain, tagged

        ethertype = Cat(capture(13, "ethertype1"), capture(12, "ethertype0"))
        inner_type = Cat(capture(17, "inner_type1"), capture(16, "inner_type0"))
        vlan = Signal()
        with m.If(at_beat[1]):
            m.d.sync += vlan.eq(Cat(lane(5), lane(4)) == 0x8100)
        fields = {}
        for name, offset, size in (
            ("version_ihl", 0, 1),
            ("total", 2, 2),
            ("fragment", 6, 2),
            ("protocol", 9, 1),
            ("checksum", 10, 2),
            ("dst_ip", 16, 4),
        ):
            plain, tagged = ip_field(offset, size, name)
            fields[name] = Signal(8 * size, name=f"ip_{name}")
            m.d.comb += fields[name].eq(Mux(vlan, tagged, plain))
        version, ihl = fields["version_ihl"][4:], fields["version_ihl"][:4]

        # Positions derived from the tag and IHL (registered; they are needed from beat 4 on).
        ip_start = Signal(5)
        ip_end = Signal(7, init=34)  # I + H
        udp_field_beat = Signal(4, init=4)  # beat holding the UDP destination port and length
        udp_field_hi = Signal(init=1)  # those sit in lanes 4-7 (else 0-3)
        payload_beat = Signal(4, init=5)
        payload_lane = Signal(3, init=2)
        m.d.comb += ip_start.eq(Mux(vlan, 18, 14))
        # An IHL below 5 (a frame that is dropped) counts as 5 here, so that no position
        # derived from it (nor from the reset value) falls inside the headers of the next frame.
        m.d.sync += ip_end.eq(ip_start + Cat(Const(0, 2), Mux(ihl < 5, 5, ihl)))
        m.d.sync += [
            udp_field_beat.eq((ip_end + 2) >> 3),
            udp_field_hi.eq((ip_end + 2)[2]),
            payload_beat.eq((ip_end + 8) >> 3),
            payload_lane.eq((ip_end + 8)[:3]),
        ]

        # UDP destination port and length, and the position of the payload's last byte.
        at_udp = Signal()
        m.d.comb += at_udp.eq(take & (hdr_idx == udp_field_beat))  # beat 4 .. 10
        udp_lanes = Mux(udp_field_hi, beat.data[32:64], beat.data[:32])
        dst_port = Signal(16)
        udp_len = Signal(16)
        end_last = Signal(_POS_BITS)  # frame position of the payload's last byte
        with m.If(take & at_start):
            m.d.sync += end_last.eq(-1)
        with m.If(at_udp):
            length_now = Cat(udp_lanes[24:32], udp_lanes[16:24])
            m.d.sync += [
                dst_port.eq(Cat(udp_lanes[8:16], udp_lanes[0:8])),
                udp_len.eq(length_now),
                end_last.eq(ip_end + length_now - 1),
            ]

        # IPv4 header checksum: masked words of each beat, accumulated, folded. The word masks
        # of the next beat are computed a cycle ahead (registered), so that only an AND stands
        # before the adders; the one word whose mask needs this very beat (byte 14 of beat 1:
        # the IPv4 header, or the tag's TCI) is masked with the tag compare of that beat.
        # The masks are computed from registers for each way the next beat can go (the same
        # beat again, the following beat with or without a tag; a new frame masks nothing)
        # and the input's handshake and tag compare pick one.
        tag_now = Cat(lane(5), lane(4)) == 0x8100

        def inside(w, index, tagged):
            pos = Cat(Const(2 * w, 3), index)
            # Every compare is with a constant, then picked by the tag flag; the end of the
            # header comes from ``ip_end`` (fresh from beat 4 on without a tag, from beat 5 with
            # one; at beat 4 with a tag only the word at byte 38 depends on IHL).
            after_start = Mux(tagged, pos >= 18, pos >= 14) | ((index == 1) & (w == 3))
            not_checksum = Mux(tagged, pos != 28, pos != 24)
            before_end = Mux((index == 4) & vlan, Const(w != 3) | (ihl > 5), pos < ip_end)
            return (
                (index < _HEADER_BEATS)
                & after_start
                & not_checksum
                & ((index < 4) | before_end)  # bytes up to 33 are always in the header
            )

        word_mask = Signal(_B // 2)
        at_beat1 = Signal()
        next_tagged = Mux(hdr_idx == 1, tag_now, vlan)
        m.d.sync += at_beat1.eq(Mux(take, ~beat.last & (hdr_idx1 == 1), hdr_idx == 1))
        for w in range(_B // 2):
            advance = Mux(next_tagged, inside(w, hdr_idx1, 1), inside(w, hdr_idx1, 0))
            m.d.sync += word_mask[w].eq(Mux(take, ~beat.last & advance, inside(w, hdr_idx, vlan)))
        words = []
        for w in range(_B // 2):
            use = take & word_mask[w]
            if w == 3:
                use &= ~(at_beat1 & tag_now)
            words.append(Mux(use, Cat(lane(2 * w + 1), lane(2 * w)), 0))
        sum4 = Signal(18)
        sum4_first = Signal()
        acc = Signal(22)
        fold1 = Signal(17)
        fold1_plus1 = Signal(16)  # the second fold's result when it carries
        m.d.sync += [
            sum4.eq(words[0] + words[1] + words[2] + words[3]),
            sum4_first.eq(take & at_start),
            acc.eq(Mux(sum4_first, 0, acc) + sum4),
            fold1.eq(acc[:16] + acc[16:]),
            fold1_plus1.eq(acc[:16] + acc[16:] + 1),
        ]
        folded = Signal(16)
        m.d.comb += folded.eq(Mux(fold1[16], fold1_plus1, fold1[:16]))

        def checksum_wrong(field):
            return ((folded ^ 0xFFFF) != field) & ~(self.allow_zero_checksum & (field == 0))

        checksum_bad = Signal()
        m.d.comb += checksum_bad.eq(checksum_wrong(fields["checksum"]))

        # Header checks, from the captured fields.
        header_len = Cat(Const(0, 2), ihl)
        total_less_header = Signal(16)
        m.d.sync += total_less_header.eq(fields["total"] - header_len)
        ip_ok = _table_match(self.groups, "address", fields["dst_ip"])
        port_ok = _table_match(self.ports, "port", dst_port)
        check = {
            "bad_ethertype": Mux(vlan, inner_type, ethertype) != 0x0800,
            "bad_version": version != 4,
            "bad_ihl": ihl < 5,
            "bad_total": fields["total"] < header_len,
            "fragment": fields["fragment"][:14] != 0,
            "not_udp": fields["protocol"] != 17,
            "bad_udp_length": (udp_len < 8) | (udp_len != total_less_header),
            "wrong_dst_ip": ~ip_ok,
            "wrong_dst_port": ~port_ok,
            "short_payload": udp_len < 8 + MOLD_HEADER_SIZE,
        }
        failed = Signal(len(check))
        m.d.sync += failed.eq(Cat(*check.values()))

        # The payload region and its lanes.
        at_payload_start = Signal()
        at_payload_end = Signal()
        in_payload = Signal()
        m.d.comb += [
            at_payload_start.eq(hdr_idx == payload_beat),  # beat 5 .. 11
            at_payload_end.eq(idx == end_last[3:]),
        ]
        region = at_payload_start | in_payload
        keep = Signal(_B)
        for k in range(_B):
            m.d.comb += keep[k].eq(
                beat.keep[k]
                & region
                & (~at_payload_start | (payload_lane <= k))
                & (~at_payload_end | (k <= end_last[:3]))
            )
        with m.If(take):
            with m.If(beat.last | at_payload_end):
                m.d.sync += in_payload.eq(0)
            with m.Elif(at_payload_start):
                m.d.sync += in_payload.eq(1)
        reached_end = at_payload_end & beat.keep.bit_select(end_last[:3], 1)
        m.d.sync += [
            self.o.valid.eq(take & keep.any()),
            self.o.payload.data.eq(beat.data),
            self.o.payload.keep.eq(keep),
            self.o.payload.first.eq(at_payload_start),
            self.o.payload.last.eq(beat.last | at_payload_end),
            self.o.payload.truncated.eq(beat.last & ~reached_end),
            self.o.payload.drop.eq(failed.any() | checksum_bad),
        ]

        # Frame end: classify (3 cycles later, when the checksum is final) and count.
        self._classify(m, take & beat.last, idx, beat.keep, vlan, check, failed, ip_start,
                       ip_end, end_last, fields["checksum"], checksum_wrong)  # fmt: skip
        return m

    def _classify(self, m, ending, idx, keep, tagged, check, failed_reg, ip_start, ip_end,
                  end_last, checksum_field, checksum_wrong):  # fmt: skip
        count = Signal(range(_B + 1))
        for k in range(_B):
            with m.If(keep[k]):
                m.d.comb += count.eq(k + 1)
        length = Signal(16)  # frame length in bytes, valid the cycle after its last beat
        ended = Signal()
        m.d.sync += [length.eq(Cat(Const(0, 3), idx) + count), ended.eq(ending)]

        def cause(name):
            return _CAUSE[name]

        # The cycle after the frame's end, its length is compared with every header position;
        # the results are registered with the frame's checksum field (the next frame's tag
        # flag may already select another one).
        compares = {
            "below_eth": length < 14,
            "below_tag": tagged & (length < 18),
            "below_ip": length < ip_start + 20,
            "below_ip_end": length < ip_end,
            "below_udp": length < ip_end + 8,
            "below_payload": length <= end_last,
        }
        below = {name: Signal(name=f"class0_{name}") for name in compares}
        valid0 = Signal(name="class0_valid")
        field0 = Signal(16, name="class0_checksum")
        m.d.sync += [below[name].eq(value) for name, value in compares.items()]
        m.d.sync += [valid0.eq(ended), field0.eq(checksum_field)]

        # A cycle later, the checks before the checksum decide ``early``, those after it
        # ``late``, from registers only (``check`` is registered in ``failed``: a frame's
        # fields are final one cycle after its last beat, and the next frame's take two more).
        failed = dict(zip(check, failed_reg))
        early = Signal(4)
        late = Signal(4)
        with m.If(below["below_eth"] | below["below_tag"]):
            m.d.comb += early.eq(cause("truncated"))
        with m.Elif(failed["bad_ethertype"]):
            m.d.comb += early.eq(cause("not_ipv4"))
        with m.Elif(below["below_ip"]):
            m.d.comb += early.eq(cause("truncated"))
        with m.Elif(failed["bad_version"]):
            m.d.comb += early.eq(cause("not_ipv4"))
        with m.Elif(failed["bad_ihl"]):
            m.d.comb += early.eq(cause("bad_length"))
        with m.Elif(below["below_ip_end"]):
            m.d.comb += early.eq(cause("truncated"))
        with m.Elif(failed["bad_total"]):
            m.d.comb += early.eq(cause("bad_length"))
        with m.Else():
            m.d.comb += early.eq(_NONE)
        with m.If(failed["fragment"]):
            m.d.comb += late.eq(cause("fragment"))
        with m.Elif(failed["not_udp"]):
            m.d.comb += late.eq(cause("not_udp"))
        with m.Elif(below["below_udp"]):
            m.d.comb += late.eq(cause("truncated"))
        with m.Elif(failed["bad_udp_length"]):
            m.d.comb += late.eq(cause("bad_length"))
        with m.Elif(failed["wrong_dst_ip"]):
            m.d.comb += late.eq(cause("wrong_dst_ip"))
        with m.Elif(failed["wrong_dst_port"]):
            m.d.comb += late.eq(cause("wrong_dst_port"))
        with m.Elif(failed["short_payload"]):
            m.d.comb += late.eq(cause("short_payload"))
        with m.Elif(below["below_payload"]):
            m.d.comb += late.eq(cause("truncated"))
        with m.Else():
            m.d.comb += late.eq(cause("accepted"))

        # The second stage, while the checksum folds.
        stages = [
            (
                Signal(name="class1_valid"),
                Signal(4, name="class1_early"),
                Signal(4, name="class1_late"),
                Signal(16, name="class1_checksum"),
            )
        ]
        m.d.sync += [r.eq(v) for r, v in zip(stages[0], (valid0, early, late, field0))]
        valid, early_final, late_final, field = stages[-1]
        final = Signal(4)
        m.d.comb += final.eq(
            Mux(early_final != _NONE, early_final,
                Mux(checksum_wrong(field), cause("bad_checksum"), late_final))
        )  # fmt: skip
        # Counted a cycle later still, so that no compare stands before the counters' enables.
        counted = Signal()
        counted_cause = Signal(4)
        m.d.sync += [counted.eq(valid), counted_cause.eq(final)]
        counters = []
        for name in FILTER_COUNTERS:
            counter = Signal(self.counter_width, name=f"{name}_count")
            hit = counted if name == "frames" else counted & (counted_cause == _CAUSE[name])
            with m.If(hit):
                m.d.sync += counter.eq(counter + 1)
            counters.append(counter)
        m.d.comb += self.counters.eq(Cat(*counters))


def _table_match(table, key: str, value):
    """Whether ``value`` is in the enabled entries of ``table`` (any value when none is)."""
    enabled = Cat(*(entry.enable for entry in table))
    hits = Cat(*(entry.enable & (getattr(entry, key) == value) for entry in table))
    return ~enabled.any() | hits.any()
