"""MoldUDP64 sequencer: session check, gap / duplicate / overlap decisions, per message.

The rules are those of :mod:`tick2quote.sim.models.ingress` (the reference model). The header
fields arrive from :class:`~.moldparser.MoldParser` as registers with a pulse each, in wire order
(session, sequence number, count). Everything 64 bits wide is decided ahead of the messages:

- the cycle after ``sequence_done``, the sequence number is compared with the next expected one
  (registered): whether it is a gap, and ``skip``, the index of the first message not yet seen
  (saturated to 17 bits);
- two cycles after ``count_done`` the packet is *committed*: counters, session adoption or
  change, end of session, and ``expected`` moved to the sequence number on a gap;
- per message, the decision is two short compares, ``skip <= index < count``, plus ``live``
  (right session, session not ended, frame not dropped): the parser uses the same outputs to
  decide whether an event leaves, and reports each complete message on ``message`` so that the
  sequencer counts it and moves ``expected`` past each delivered one.

Every message must end at least one cycle after ``sequence_done``, and be reported on
``message`` no earlier than two cycles after ``count_done``: a MoldUDP64 message block of at least
7 bytes (9 with its prefix) always ends after the header, so the parser's two-stage message
report meets both.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import session_config_layout

__all__ = ["SEQUENCER_COUNTERS", "Sequencer", "sequencer_counters_layout"]

#: Counter names (see :mod:`tick2quote.sim.models.ingress` for each).
SEQUENCER_COUNTERS = (
    "packets",
    "messages",
    "heartbeats",
    "end_of_session",
    "end_of_session_repeats",
    "gaps",
    "gap_messages",
    "late_join",
    "session_changes",
    "wrong_session",
    "old_session",
    "after_end",
    "duplicate_packets",
    "duplicates",
    "overlaps",
)

_SKIP_ALL = (1 << 17) - 1


def sequencer_counters_layout(width: int) -> data.StructLayout:
    """One ``width``-bit counter per name in :data:`SEQUENCER_COUNTERS`."""
    return data.StructLayout({name: width for name in SEQUENCER_COUNTERS})


class Sequencer(wiring.Component):
    """Follows one MoldUDP64 session and decides which messages are new.

    Attributes
    ----------
    session, sequence, count : In
        The packet's header fields (session in wire order), each valid from its ``*_done``
        pulse until the next packet's.
    session_done, sequence_done, count_done : In(1)
        One-cycle pulses: the field has just become valid.
    drop : In(1)
        The frame filter's verdict on the packet, valid from ``count_done`` until the next
        packet's: the packet is ignored.
    config : In(session_config_layout)
        The expected session (when enabled).
    skip : Out(17)
        Index of the packet's first new message (``0x1FFFF``: none is new).
    count : Out(16)
        Messages the header announces (0 for a heartbeat or end of session).
    live : Out(1)
        The packet's new messages are delivered (right session, not ended, not dropped).
    message_valid, message_index : In
        One complete message of the current packet, and its index (its sequence number is
        ``sequence + index``).
    delivered : Out(1)
        The message reported the cycle before was delivered.

    ``expected`` moves past a delivered message the cycle after ``delivered``.
    stale : Out(1)
        One-cycle pulse on a gap, a late join or a session change.
    counters : Out(sequencer_counters_layout(counter_width))
    """

    def __init__(self, counter_width: int = 32):
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
            raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
        self.counter_width = counter_width
        super().__init__(
            {
                "session": In(80),
                "sequence": In(64),
                "count": In(16),
                "session_done": In(1),
                "sequence_done": In(1),
                "count_done": In(1),
                "drop": In(1),
                "config": In(session_config_layout),
                "skip": Out(17),
                "count_effective": Out(16),
                "live": Out(1),
                "message_valid": In(1),
                "message_index": In(16),
                "delivered": Out(1),
                "stale": Out(1),
                "counters": Out(sequencer_counters_layout(counter_width)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        inc = {name: Signal(name=f"{name}_inc") for name in SEQUENCER_COUNTERS}
        gap_amount = Signal(self.counter_width)

        # State kept across packets.
        current = Signal(80)
        current_valid = Signal()
        previous = Signal(80)
        previous_valid = Signal()
        expected = Signal(64)
        expected_valid = Signal()
        ended = Signal()

        # Session compares, the cycle after the session arrives.
        config = self.config
        same_current = Signal()
        same_previous = Signal()
        same_config = Signal()
        with m.If(self.session_done):
            m.d.sync += [
                same_current.eq(self.session == current),
                same_previous.eq(self.session == previous),
                same_config.eq(self.session == config.session),
            ]
        session_ok = Mux(
            config.enable, same_config, ~current_valid | same_current | ~previous_valid
            | ~same_previous
        )  # fmt: skip
        change = ~config.enable & current_valid & ~same_current & ~(previous_valid & same_previous)

        # Sequence compares, the cycle after the sequence number arrives.
        seq = self.sequence
        tracking = Signal()  # an expected number applies to this packet
        gap = Signal()
        skip = Signal(17)
        late = Signal()
        ended_now = Signal()
        ok = Signal()
        with m.If(self.sequence_done):
            ahead = expected - seq
            m.d.sync += [
                ok.eq(session_ok),
                tracking.eq(expected_valid & ~change),
                gap.eq(expected_valid & ~change & (seq > expected)),
                skip.eq(
                    Mux(
                        ~expected_valid | change | (seq >= expected),
                        0,
                        Mux(ahead[17:].any(), _SKIP_ALL, ahead[:17]),
                    )
                ),  # fmt: skip
                late.eq(seq > 1),
                ended_now.eq(ended & ~change),
                gap_amount.eq(seq - expected),
            ]

        # The count, and the per-message decision inputs.
        count = self.count
        special = (count == 0) | (count == 0xFFFF)
        dropped = self.drop
        # ``count_effective <= skip``, with the heartbeat / end-of-session select beside the
        # compare rather than before it.
        duplicate_packet = special | (count <= skip) | (skip == _SKIP_ALL)
        m.d.comb += [
            self.skip.eq(skip),
            self.count_effective.eq(Mux(special, 0, count)),
            self.live.eq(ok & ~ended_now & ~dropped),
        ]

        # Commit, two cycles after the count arrived, from compares registered the cycle before.
        count_seen = Signal()
        commit = Signal()
        heartbeat = Signal()
        is_special = Signal()
        is_duplicate = Signal()
        m.d.sync += [
            count_seen.eq(self.count_done & ~self.drop),
            commit.eq(count_seen),
            heartbeat.eq(count == 0),
            is_special.eq(special),
            is_duplicate.eq(duplicate_packet),
        ]
        stale = Signal()
        with m.If(commit):
            m.d.comb += inc["packets"].eq(1)
            with m.If(config.enable & ~same_config):
                m.d.comb += inc["wrong_session"].eq(1)
            with m.Elif(~config.enable & current_valid & ~same_current & previous_valid
                        & same_previous):  # fmt: skip
                m.d.comb += inc["old_session"].eq(1)
            with m.Else():
                with m.If(~config.enable & (~current_valid | change)):
                    m.d.sync += [current.eq(self.session), current_valid.eq(1)]
                with m.If(change):
                    m.d.sync += [previous.eq(current), previous_valid.eq(1), ended.eq(0)]
                    m.d.comb += [inc["session_changes"].eq(1), stale.eq(1)]
                with m.If(~tracking):
                    m.d.sync += [expected.eq(seq), expected_valid.eq(1)]
                    with m.If(late):
                        m.d.comb += [inc["late_join"].eq(1), stale.eq(1)]
                with m.If(is_special):
                    with m.If(gap):
                        m.d.sync += expected.eq(seq)
                        m.d.comb += [inc["gaps"].eq(1), stale.eq(1)]
                    with m.If(heartbeat):
                        m.d.comb += inc["heartbeats"].eq(1)
                    with m.Elif(ended_now):
                        m.d.comb += inc["end_of_session_repeats"].eq(1)
                    with m.Else():
                        m.d.comb += inc["end_of_session"].eq(1)
                        m.d.sync += ended.eq(1)
                with m.Elif(is_duplicate):
                    m.d.comb += inc["duplicate_packets"].eq(1)
                with m.Elif(ended_now):
                    m.d.comb += inc["after_end"].eq(1)
                with m.Elif(gap):
                    m.d.sync += expected.eq(seq)
                    m.d.comb += [inc["gaps"].eq(1), stale.eq(1)]
                with m.Elif(skip != 0):
                    m.d.comb += inc["overlaps"].eq(1)
        m.d.comb += inc["gap_messages"].eq(inc["gaps"])
        m.d.sync += self.stale.eq(stale)

        # Each complete message: delivered or a duplicate (decided, then applied a cycle later,
        # so that no compare stands before the 64-bit ``expected`` register).
        count_late = Signal(16)  # the count, a cycle late (messages come 2 cycles after it)
        m.d.sync += count_late.eq(self.count_effective)
        index = self.message_index
        within = index < count_late
        deliver = self.message_valid & self.live & (index >= skip) & within
        # Messages come at least two cycles after the count: ``is_duplicate`` is final by then.
        duplicate = (
            self.message_valid & ~dropped & ok & within & (index < skip)
            & ~(ended_now & ~is_duplicate)
        )  # fmt: skip
        after = Signal(64)
        duplicated = Signal()
        m.d.sync += [
            self.delivered.eq(deliver),
            duplicated.eq(duplicate),
            after.eq(seq + index + 1),
        ]
        with m.If(self.delivered):
            m.d.sync += expected.eq(after)
            m.d.comb += inc["messages"].eq(1)
        m.d.comb += inc["duplicates"].eq(duplicated)

        counters = []
        for name in SEQUENCER_COUNTERS:
            counter = Signal(self.counter_width, name=f"{name}_count")
            step = gap_amount if name == "gap_messages" else 1
            counted = Signal(name=f"{name}_counted")  # a cycle late: no enable fans out far
            m.d.sync += counted.eq(inc[name])
            with m.If(counted):
                m.d.sync += counter.eq(counter + step)
            counters.append(counter)
        m.d.comb += self.counters.eq(Cat(*counters))
        return m
