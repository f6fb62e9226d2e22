"""SoupBinTCP header scan: a beat's packet headers found for every lane the first could start at.

A SoupBinTCP datagram is a run of packets ``Length (2, big-endian) | Packet Type (1) | ...``;
where the first header of a beat starts depends on the packets before it, so a parser that
walks the headers of a beat one after another puts that walk on the loop from one beat's state
to the next. :class:`HeaderScan` takes the walk off that loop: from the beat alone it walks the
headers from *every* lane the first could start at (lanes 0 to 7, and -1 for a length whose
first byte ended the previous beat), registers the outcome of each walk, and leaves the parser
only a pick by the start it knows.

Every lane is first tested as a header on its own (its length, whether the packet ends in the
beat, what it would count as); a walk is then a one-hot lane vector moved from each header to
the next (a packet is at least 3 bytes long, so at most 3 headers start in one beat).
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import BEAT_BYTES, payload_beat_layout

__all__ = ["START_LANES", "HeaderScan", "walk_layout"]

#: Lanes a beat's first header can start at: -1 (the length's first byte was the previous
#: beat's last) to 7.
START_LANES = range(-1, BEAT_BYTES)

_RUNS_ON = 16 + 1  # bytes of a packet still to come after its first beat: up to 2**16 + 1

#: The outcome of the walk from one start lane: ``long_at`` (one-hot over :data:`START_LANES`)
#: is the header whose packet runs past the beat (not on the last beat), with its ``length``,
#: ``rest`` (bytes still to come after this beat; ``rest_at`` the same one-hot when at most 8)
#: and ``want`` (the appendage length the message of interest has in a packet of that length);
#: ``straddle``: the beat ends with a length's first byte; ``zero``: a length of 0; the counts
#: of packets that ``skipped`` (complete, not the message of interest), ``malformed`` (complete
#: packets of that message but too short, and lengths of 0) and ``truncated`` (cut by the end
#: of the datagram).
walk_layout = data.StructLayout(
    {
        "long_at": len(START_LANES),
        "long": 1,
        "straddle": 1,
        "zero": 1,
        "skipped": 2,
        "malformed": 2,
        "truncated": 2,
        "length": 16,
        "rest": _RUNS_ON,
        "rest_at": BEAT_BYTES + 1,
        "want": 16,
    }
)


def lane_flags(keep):
    """``(is_low, is_high, within)`` of a beat with contiguous ``keep``: the lowest and highest
    valid lane one-hot, and per lane of :data:`START_LANES` (plus 8) whether it is at or below
    the highest valid lane."""
    is_low = {k: keep[k] & ~keep[:k].any() if k else keep[0] for k in range(BEAT_BYTES)}
    is_high = {k: keep[k] & ~keep[k + 1 :].any() for k in range(BEAT_BYTES)}
    within = {k: keep[max(k, 0) :].any() for k in START_LANES}
    within[BEAT_BYTES] = Const(0)
    return is_low, is_high, within


def at_most(value, bound: int):
    """``value <= bound`` for a small constant ``bound`` (under 16), without a carry chain."""
    if bound < 0:
        return Const(0)
    return (value[4:] == 0) & (value[:4] <= bound)


def beyond_beat(is_high, value, origin: int):
    """Whether ``origin + value`` (a byte offset from lane 0) lies past the beat's highest valid
    lane + 1, i.e. a packet ending there does not end in this beat."""
    fits = Cat(*(is_high[h] & at_most(value, h + 1 - origin) for h in range(BEAT_BYTES)))
    return ~fits.any()


class HeaderScan(wiring.Component):
    """Walks a beat's SoupBinTCP headers from every start lane; the outcomes, registered.

    Parameters
    ----------
    message_type : int
        The message type of interest (the byte after an 'S' packet's type), e.g. ``ord("E")``.
    message_size : int
        Its size without appendage: ``want`` is ``length - 1 - message_size``.

    Attributes
    ----------
    valid : In(1)
        ``beat`` is taken this cycle.
    beat : In(payload_beat_layout)
        The payload beat (contiguous ``keep``).
    out_valid : Out(1)
        ``out_beat`` and ``walks`` are those of a beat taken two cycles before.
    out_beat : Out(payload_beat_layout)
    out_low, out_high : Out(8)
        Its lowest and highest valid lane, one-hot.
    walks : Out(data.ArrayLayout(walk_layout, 9))
        The walk from start lane ``k`` at index ``k + 1``.
    """

    def __init__(self, *, message_type: int, message_size: int):
        self._message_type = message_type
        self._message_size = message_size
        super().__init__(
            {
                "valid": In(1),
                "beat": In(payload_beat_layout),
                "out_valid": Out(1),
                "out_beat": Out(payload_beat_layout),
                "out_low": Out(BEAT_BYTES),
                "out_high": Out(BEAT_BYTES),
                "walks": Out(data.ArrayLayout(walk_layout, len(START_LANES))),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        beat = self.beat
        lanes = [beat.data[8 * k : 8 * k + 8] for k in range(BEAT_BYTES)]
        last_lane = Signal(8)  # lane 7 of the beat before
        with m.If(self.valid):
            m.d.sync += last_lane.eq(lanes[BEAT_BYTES - 1])
        _, is_high, within = lane_flags(beat.keep)

        def byte_at(pos: int):
            if pos < 0:
                return last_lane
            return lanes[pos] if pos < BEAT_BYTES else Const(0, 8)

        # Stage 1: every lane tested as a header on its own, registered.
        lengths, rests, rest_ats, wants, outcome, follows = {}, {}, {}, {}, {}, {}
        for k in START_LANES:
            length = Signal(16, name=f"length_in{k}")
            lengths[k] = Signal(16, name=f"length_at{k}")
            rests[k] = Signal(_RUNS_ON, name=f"rest_at{k}")
            wants[k] = Signal(16, name=f"want_at{k}")
            rest_ats[k] = Signal(BEAT_BYTES + 1, name=f"rest_lane_at{k}")
            m.d.comb += length.eq(Cat(byte_at(k + 1), byte_at(k)))
            m.d.sync += [
                rest_ats[k].eq(
                    Cat(*(length == BEAT_BYTES - 2 - k + r for r in range(BEAT_BYTES + 1)))
                ),
                lengths[k].eq(length),
                rests[k].eq(k + 2 - BEAT_BYTES + length),
                wants[k].eq(length - (1 + self._message_size)),
            ]
            typed = (byte_at(k + 2) == ord("S")) & (byte_at(k + 3) == self._message_type)
            both = within[k + 1]  # the length's second byte is in the beat
            empty = length == 0
            fits = Signal(name=f"fits_at{k}")
            complete = Signal(name=f"complete_at{k}")
            runs_on = Signal(name=f"runs_on_at{k}")
            m.d.comb += [
                fits.eq(~beyond_beat(is_high, length, k + 2)),
                complete.eq(both & ~empty & fits),
                runs_on.eq(both & ~empty & ~fits),
            ]
            executed = typed & (length >= 2)
            flags = {
                "skipped": complete & ~executed,
                "malformed": complete & executed,  # the message is never this short
                "zero": both & empty,
                "straddle": ~both & ~beat.last,
                "truncated": (~both | runs_on) & beat.last,
                "long": runs_on & ~beat.last,
            }
            outcome[k] = {}
            for name, value in flags.items():
                outcome[k][name] = Signal(name=f"{name}_at{k}")
                m.d.sync += outcome[k][name].eq(value)
            # the next header, one-hot (none when this packet runs past the beat)
            follows[k] = {}
            for e in START_LANES:
                if e >= k + 3:
                    follows[k][e] = Signal(name=f"follows_at{k}_to{e}")
                    m.d.sync += follows[k][e].eq(complete & (length == e - k - 2) & within[e])
        present = Signal(len(START_LANES))  # a first header can start at the lane
        m.d.sync += present.eq(Cat(*(within[k] for k in START_LANES)))

        # Stage 2: the walk from every start lane, registered.
        for s in START_LANES:
            walk = self.walks[s + 1]
            heads = [{k: present[s + 1] if k == s else Const(0) for k in START_LANES}]
            for j in range(2):
                prev, step = heads[-1], {}
                for e in START_LANES:
                    step[e] = Signal(name=f"walk{s}_head{j + 1}_at{e}")
                    terms = [prev[k] & follows[k][e] for k in START_LANES if e in follows[k]]
                    m.d.comb += step[e].eq(Cat(Const(0), *terms).any())
                heads.append(step)
            header = {}
            for k in START_LANES:
                header[k] = Signal(name=f"walk{s}_header_at{k}")
                m.d.comb += header[k].eq(Cat(*(h[k] for h in heads)).any())

            def found(name, header=header, s=s):
                bits = Signal(len(START_LANES), name=f"walk{s}_{name}")
                m.d.comb += bits.eq(Cat(*(header[k] & outcome[k][name] for k in START_LANES)))
                return list(bits)

            long_at = found("long")

            def pick(values, long_at=long_at):
                word = Const(0, len(values[0]))
                for k, hit in zip(START_LANES, long_at):
                    word = word | (values[k] & hit.replicate(len(word)))
                return word

            zero = Cat(*found("zero")).any()
            m.d.sync += [
                walk.long_at.eq(Cat(*long_at)),
                walk.long.eq(Cat(*long_at).any()),
                walk.straddle.eq(Cat(*found("straddle")).any()),
                walk.zero.eq(zero),
                walk.skipped.eq(sum(found("skipped"))),
                walk.malformed.eq(sum(found("malformed")) + zero),
                walk.truncated.eq(sum(found("truncated"))),
                walk.length.eq(pick(lengths)),
                walk.rest.eq(pick(rests)),
                walk.rest_at.eq(pick(rest_ats)),
                walk.want.eq(pick(wants)),
            ]
        valid_1, beat_1 = Signal(), Signal.like(self.beat)
        m.d.sync += [
            valid_1.eq(self.valid),
            beat_1.eq(beat),
            self.out_valid.eq(valid_1),
            self.out_beat.eq(beat_1),
        ]
        low_1, high_1, _ = lane_flags(beat_1.keep)
        m.d.sync += [
            self.out_low.eq(Cat(*low_1.values())),
            self.out_high.eq(Cat(*high_1.values())),
        ]
        return m
