"""Reference model of the ingress: frame filter, MoldUDP64 sequencing, A/B arbitration.

Frames go through :meth:`IngressModel.frame` (Ethernet as a MAC hands it over, FCS stripped),
or MoldUDP64 payloads straight through :meth:`IngressModel.packet`. Out come the ITCH messages
to apply, each with its sequence number, every message exactly once, in sequence order.

Frame filter (each refusal drops the frame and counts its cause, plus ``dropped``):

=================  ==================================================================
``truncated``      the frame ends inside a header, the IPv4 options or the IPv4 datagram
``bad_length``     IHL below 5, IPv4 total length below its header, or UDP length not
                   matching the IPv4 length
``not_ipv4``       EtherType (after an optional 802.1Q tag) not IPv4, or IP version not 4
``bad_checksum``   IPv4 header checksum wrong (0 is accepted with ``allow_zero_checksum``)
``fragment``       an IPv4 fragment (MF set or a fragment offset)
``not_udp``        IP protocol not UDP
``wrong_dst_ip``   destination address not in :attr:`IngressConfig.dst_ips`
``wrong_dst_port`` UDP destination port not in :attr:`IngressConfig.dst_ports`
``bad_mold``       the payload is not a well-formed MoldUDP64 packet (short header, a
                   message block running past the end, or a block count that disagrees
                   with the header)
=================  ==================================================================

Sequencing (``expected`` is the next expected sequence number; every accepted packet moves it
to ``sequence + count``, never backwards):

- The first packet of a stream sets ``expected`` to its own sequence number. If that is above 1
  the stream was joined late: ``late_join`` is counted and :attr:`~IngressModel.stale` set.
- ``sequence > expected``: a **gap**. ``gaps`` += 1, ``gap_messages`` += the missing count,
  ``stale`` is set and the packet's messages are still delivered.
- ``sequence + count <= expected``: a **duplicate** (the other copy of an A/B pair); its
  messages are dropped and counted in ``duplicates``.
- ``sequence < expected < sequence + count``: an **overlap**; only the messages from
  ``expected`` on are delivered, the others count as ``duplicates``.
- A heartbeat (count 0) carries the next sequence number: counted ``heartbeats``; above
  ``expected`` it is a gap like any other.
- End of session (count 0xFFFF) also carries the next sequence number (a gap if above
  ``expected``). The first one counts ``end_of_session`` and ends the session; repeats count
  ``end_of_session_repeats``. After the end, a packet of that session with new messages is
  dropped as ``after_end``; older ones are still plain duplicates.
- Sessions: with :attr:`IngressConfig.session` set, packets of any other session are dropped as
  ``wrong_session``. Otherwise the first session seen is adopted, and a packet of a different
  session is a **session change**: ``session_changes`` += 1, ``stale`` is set (the book must be
  rebuilt for the new stream) and tracking restarts at that packet, which is delivered whole.
  The session just left is remembered, so a late copy of its packets from the other line is
  dropped as ``old_session`` instead of switching back.

:attr:`~IngressModel.stale` stays set until :meth:`IngressModel.recover`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tick2quote.host.protocol import moldudp64
from tick2quote.host.protocol.errors import (
    ChecksumError,
    DecodeError,
    LengthError,
    TruncatedError,
)
from tick2quote.host.protocol.ethernet import NotUdpError, decode_udp_frame

__all__ = ["IngressConfig", "IngressMessage", "IngressModel"]


@dataclass
class IngressConfig:
    """What the ingress accepts.

    ``dst_ips`` are 4-byte IPv4 addresses and ``dst_ports`` UDP ports; ``None`` accepts any.
    ``session`` is the expected 10-byte MoldUDP64 session (``None`` adopts the first seen).
    ``allow_zero_checksum`` accepts an IPv4 header checksum of 0 (captures made with checksum
    offload or anonymised); a live wire should leave it off.
    """

    dst_ips: frozenset[bytes] | None = None
    dst_ports: frozenset[int] | None = None
    session: bytes | None = None
    allow_zero_checksum: bool = False

    def __post_init__(self):
        if self.session is not None and len(self.session) != 10:
            raise ValueError(f"session must be 10 bytes, not {self.session!r}")
        if self.dst_ips is not None:
            bad = [ip for ip in self.dst_ips if len(ip) != 4]
            if bad:
                raise ValueError(f"dst_ips must be 4-byte IPv4 addresses, not {bad!r}")
        if self.dst_ports is not None:
            bad = [p for p in self.dst_ports if not 0 <= p <= 0xFFFF]
            if bad:
                raise ValueError(f"dst_ports must be 0 .. 65535, not {bad!r}")


@dataclass(frozen=True, slots=True)
class IngressMessage:
    """One ITCH message to apply: its MoldUDP64 sequence number and raw bytes (no prefix)."""

    sequence: int
    data: bytes


def drop_cause(err: DecodeError) -> str:
    """The counter name for a frame that :func:`decode_udp_frame` refused with ``err``."""
    if isinstance(err, ChecksumError):
        return "bad_checksum"
    if isinstance(err, NotUdpError):
        if err.reason.startswith("IPv4 fragment"):
            return "fragment"
        if err.reason.startswith("IP protocol"):
            return "not_udp"
        return "not_ipv4"
    if isinstance(err, TruncatedError):
        return "truncated"
    if isinstance(err, LengthError):
        return "bad_length"
    return "malformed"


class IngressModel:
    """Frame filter and MoldUDP64 sequencer; see the module docs for every rule."""

    def __init__(self, config: IngressConfig | None = None):
        self.config = IngressConfig() if config is None else config
        #: Frames, packets, delivered ``messages`` and every drop or sequence event by name.
        self.counters: Counter = Counter()
        #: The session being followed (``None`` until one is configured or adopted).
        self.session: bytes | None = self.config.session
        #: Next expected sequence number (``None`` before the first packet of a stream).
        self.expected: int | None = None
        #: Set on a gap, a late join or a session change: every symbol is untrustworthy.
        self.stale = False
        #: Whether the current session has sent its end-of-session packet.
        self.ended = False
        #: Log of sequence events: ``("gap", expected, got)``, ``("late_join", got)``,
        #: ``("session_change", old, new)``, ``("end_of_session", sequence)``.
        self.events: list[tuple] = []
        self._previous_session: bytes | None = None

    def recover(self) -> None:
        """Clear :attr:`stale` (after the book has been rebuilt)."""
        self.stale = False

    def _drop(self, cause: str) -> list[IngressMessage]:
        self.counters[cause] += 1
        self.counters["dropped"] += 1
        return []

    def frame(self, frame: bytes) -> list[IngressMessage]:
        """One Ethernet frame (FCS stripped) in, the messages to apply out.

        Never raises on bad input: a frame that is not for us, or is malformed, is dropped
        and counted by cause.
        """
        self.counters["frames"] += 1
        config = self.config
        try:
            udp = decode_udp_frame(frame, allow_zero_checksum=config.allow_zero_checksum)
        except DecodeError as err:
            return self._drop(drop_cause(err))
        if config.dst_ips is not None and udp.dst_ip not in config.dst_ips:
            return self._drop("wrong_dst_ip")
        if config.dst_ports is not None and udp.dst_port not in config.dst_ports:
            return self._drop("wrong_dst_port")
        return self.packet(udp.payload)

    def packet(self, payload: bytes) -> list[IngressMessage]:
        """One MoldUDP64 UDP payload in, the messages to apply out (never raises on bad input)."""
        self.counters["packets"] += 1
        try:
            pkt = moldudp64.decode(payload)
        except DecodeError:
            return self._drop("bad_mold")
        if not self._follow_session(pkt.session):
            return []
        counters = self.counters
        seq, count = pkt.sequence, pkt.count
        if self.expected is None:
            self.expected = seq
            if seq > 1:
                counters["late_join"] += 1
                self.events.append(("late_join", seq))
                self.stale = True
        expected = self.expected
        if pkt.is_end_of_session or pkt.is_heartbeat:
            if seq > expected:
                self._gap(expected, seq)
                self.expected = seq
            if pkt.is_heartbeat:
                counters["heartbeats"] += 1
            elif self.ended:
                counters["end_of_session_repeats"] += 1
            else:
                counters["end_of_session"] += 1
                self.events.append(("end_of_session", seq))
                self.ended = True
            return []
        end = seq + count
        if end <= expected:
            counters["duplicate_packets"] += 1
            counters["duplicates"] += count
            return []
        if self.ended:
            return self._drop("after_end")
        if seq > expected:
            self._gap(expected, seq)
            skip = 0
        else:
            skip = expected - seq
            if skip:
                counters["overlaps"] += 1
                counters["duplicates"] += skip
        self.expected = end
        counters["messages"] += count - skip
        messages = pkt.messages
        return [IngressMessage(seq + k, messages[k]) for k in range(skip, count)]

    def _follow_session(self, session: bytes) -> bool:
        """Whether a packet of ``session`` is processed; handles adoption and changes."""
        if session == self.session:
            return True
        if self.session is None:
            self.session = session
            return True
        if self.config.session is not None:
            self._drop("wrong_session")
            return False
        if session == self._previous_session:
            self._drop("old_session")
            return False
        self.counters["session_changes"] += 1
        self.events.append(("session_change", self.session, session))
        self._previous_session = self.session
        self.session = session
        self.expected = None
        self.ended = False
        self.stale = True
        return True

    def _gap(self, expected: int, got: int) -> None:
        self.counters["gaps"] += 1
        self.counters["gap_messages"] += got - expected
        self.events.append(("gap", expected, got))
        self.stale = True
