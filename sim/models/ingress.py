"""Reference model of the ingress: frame filter, cut-through MoldUDP64 parsing and sequencing.

Frames go through :meth:`IngressModel.frame` (Ethernet as a MAC hands it over, FCS stripped),
or MoldUDP64 payloads straight through :meth:`IngressModel.packet`. Out come the ITCH messages
to apply, each with its sequence number, every message at most once, in sequence order. The
rules are those a cut-through gateware feed handler (:mod:`tick2quote.hdl.feedhandler`) can
follow: it acts on each message as its last byte arrives, so it cannot take back what a frame or
packet delivered before a later fault shows up.

Frame filter
------------
Checks run in this order; the first that fails decides the frame's one counter (a check whose
bytes the frame does not hold counts ``truncated``):

====================  =====================================================================
``truncated``         the frame ends inside the Ethernet header or 802.1Q tag
``not_ipv4``          EtherType (after an optional 802.1Q tag) not IPv4
``truncated``         the frame ends inside the fixed 20-byte IPv4 header
``not_ipv4``          IP version not 4
``bad_length``        IHL below 5
``truncated``         the frame ends inside the IPv4 options
``bad_length``        IPv4 total length below the IPv4 header length
``bad_checksum``      IPv4 header checksum wrong (0 is accepted with ``allow_zero_checksum``)
``fragment``          an IPv4 fragment (MF set or a fragment offset)
``not_udp``           IP protocol not UDP
``truncated``         the frame ends inside the UDP header
``bad_length``        UDP length below 8, or not the IPv4 total length minus its header
``wrong_dst_ip``      destination address not in :attr:`IngressConfig.dst_ips`
``wrong_dst_port``    UDP destination port not in :attr:`IngressConfig.dst_ports`
``short_payload``     UDP payload shorter than a MoldUDP64 header (20 bytes)
``truncated``         the frame ends inside the UDP payload: the payload present is still
                      parsed, and the messages complete in it are delivered (the MAC checked the
                      frame's FCS, so their bytes are right)
``accepted``          otherwise
====================  =====================================================================

Ethernet padding after the UDP datagram is ignored. ``frames`` counts every frame.

MoldUDP64 packet
----------------
Every packet with a whole header counts ``packets``, and at most one of:

- ``packet_truncated``: the frame ended inside a length prefix or a message;
- ``short_block``: a length below 7 (0 included; no ITCH message is that short): parsing
  stops there, the rest of the packet is ignored;
- ``overrun``: a message runs past the end of the UDP payload;
- ``count_mismatch``: otherwise, the number of messages is not the header's count (0 for a
  heartbeat, count 0, and an end of session, count 0xFFFF).

Only the complete messages before such a fault, and only the first ``count`` of them, are ever
delivered; message ``k`` of a packet (from 0) has sequence number ``sequence + k``.

Sequencing
----------
``expected`` is the next expected sequence number; it only moves forward, and moves past a
message only when that message is delivered:

- The first packet of a stream sets ``expected`` to its own sequence number. If that is above 1
  the stream was joined late: ``late_join`` is counted and :attr:`~IngressModel.stale` set.
- ``sequence > expected``: a **gap**. ``gaps`` += 1, ``gap_messages`` += the missing count,
  ``stale`` is set, ``expected`` jumps to ``sequence`` and the packet's messages are delivered.
- ``sequence + count <= expected``: a **duplicate packet** (the other copy of an A/B pair);
  ``duplicate_packets`` += 1 and each of its messages counts in ``duplicates``.
- ``sequence < expected < sequence + count``: an **overlap**; ``overlaps`` += 1, only the
  messages from ``expected`` on are delivered, the others count as ``duplicates``.
- A heartbeat (count 0) carries the next sequence number: counted ``heartbeats``; above
  ``expected`` it is a gap like any other.
- End of session (count 0xFFFF) also carries the next sequence number (a gap if above
  ``expected``). The first one counts ``end_of_session`` and ends the session; repeats count
  ``end_of_session_repeats``. After the end, a packet of that session that is not a duplicate
  is dropped whole as ``after_end``.
- Sessions: with :attr:`IngressConfig.session` set, packets of any other session are dropped as
  ``wrong_session``. Otherwise the first session seen is adopted, and a packet of a different
  session is a **session change**: ``session_changes`` += 1, ``stale`` is set (the book must be
  rebuilt for the new stream) and tracking restarts at that packet. The session just left is
  remembered, so a late copy of its packets from the other line is dropped as ``old_session``
  instead of switching back.

A packet cut short delivers its complete messages and leaves ``expected`` after the last one
delivered, so the next packet shows a gap and the book goes stale. ``messages`` counts the
messages delivered. :attr:`~IngressModel.stale` stays set until :meth:`IngressModel.recover`;
:attr:`~IngressModel.stale_marks` counts the packets that set it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tick2quote.host.protocol.ethernet import ipv4_checksum

__all__ = [
    "FILTER_CAUSES",
    "PACKET_OUTCOMES",
    "IngressConfig",
    "IngressMessage",
    "FilterResult",
    "filter_frame",
    "split_blocks",
    "IngressModel",
]

#: Every frame counts in exactly one of these (plus ``frames``).
FILTER_CAUSES = (
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
#: Faults of a packet with a whole header (at most one each).
PACKET_OUTCOMES = ("packet_truncated", "short_block", "overrun", "count_mismatch")

_HEADER = 20
_MIN_BLOCK = 7
_HEARTBEAT, _END_OF_SESSION = 0, 0xFFFF


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


@dataclass(frozen=True)
class FilterResult:
    """What the frame filter made of a frame: its counter, and the UDP payload passed on
    (``None`` when nothing is; cut short when ``truncated``) and its offset in the frame."""

    cause: str
    payload: bytes | None = None
    truncated: bool = False
    #: Where the payload starts in the frame.
    offset: int = 0


def _u16(frame: bytes, pos: int) -> int:
    return int.from_bytes(frame[pos : pos + 2], "big")


def filter_frame(frame: bytes, config: IngressConfig) -> FilterResult:
    """Classify one frame by the rules in the module documentation (never raises)."""
    n = len(frame)
    if n < 14:
        return FilterResult("truncated")
    ethertype, ip = _u16(frame, 12), 14
    if ethertype == 0x8100:
        if n < 18:
            return FilterResult("truncated")
        ethertype, ip = _u16(frame, 16), 18
    if ethertype != 0x0800:
        return FilterResult("not_ipv4")
    if n < ip + 20:
        return FilterResult("truncated")
    if frame[ip] >> 4 != 4:
        return FilterResult("not_ipv4")
    header_len = 4 * (frame[ip] & 0xF)
    if header_len < 20:
        return FilterResult("bad_length")
    if n < ip + header_len:
        return FilterResult("truncated")
    total = _u16(frame, ip + 2)
    if total < header_len:
        return FilterResult("bad_length")
    header = frame[ip : ip + header_len]
    checksum = _u16(header, 10)
    zero_ok = config.allow_zero_checksum and checksum == 0
    if not zero_ok and ipv4_checksum(header[:10] + b"\0\0" + header[12:]) != checksum:
        return FilterResult("bad_checksum")
    if _u16(frame, ip + 6) & 0x3FFF:
        return FilterResult("fragment")
    if frame[ip + 9] != 17:
        return FilterResult("not_udp")
    udp = ip + header_len
    if n < udp + 8:
        return FilterResult("truncated")
    udp_len = _u16(frame, udp + 4)
    if udp_len < 8 or udp_len != total - header_len:
        return FilterResult("bad_length")
    if config.dst_ips is not None and frame[ip + 16 : ip + 20] not in config.dst_ips:
        return FilterResult("wrong_dst_ip")
    if config.dst_ports is not None and _u16(frame, udp + 2) not in config.dst_ports:
        return FilterResult("wrong_dst_port")
    if udp_len - 8 < _HEADER:
        return FilterResult("short_payload")
    end = udp + udp_len
    payload = frame[udp + 8 : end]
    if n < end:
        return FilterResult("truncated", payload, truncated=True, offset=udp + 8)
    return FilterResult("accepted", payload, offset=udp + 8)


def split_blocks(payload: bytes, truncated: bool = False) -> tuple[list[bytes], str | None]:
    """The complete message blocks of a MoldUDP64 payload (header included in ``payload``),
    and the fault that ended them (one of :data:`PACKET_OUTCOMES` but ``count_mismatch``, or
    ``None``)."""
    blocks, pos = [], _HEADER
    while pos < len(payload):
        if pos + 2 > len(payload):
            return blocks, "packet_truncated" if truncated else "overrun"
        length = _u16(payload, pos)
        if length < _MIN_BLOCK:
            return blocks, "short_block"
        if pos + 2 + length > len(payload):
            return blocks, "packet_truncated" if truncated else "overrun"
        blocks.append(payload[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return blocks, None


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
        #: Packets that set :attr:`stale` (the gateware's ``stale`` pulses).
        self.stale_marks = 0
        #: Whether the current session has sent its end-of-session packet.
        self.ended = False
        #: Log of sequence events: ``("gap", expected, got)``, ``("late_join", got)``,
        #: ``("session_change", old, new)``, ``("end_of_session", sequence)``.
        self.events: list[tuple] = []
        self._previous_session: bytes | None = None
        self._marked = False

    def recover(self) -> None:
        """Clear :attr:`stale` (after the book has been rebuilt)."""
        self.stale = False

    def _mark_stale(self) -> None:
        self.stale = True
        self._marked = True

    def frame(self, frame: bytes) -> list[IngressMessage]:
        """One Ethernet frame (FCS stripped) in, the messages to apply out (never raises)."""
        self.counters["frames"] += 1
        result = filter_frame(bytes(frame), self.config)
        self.counters[result.cause] += 1
        if result.payload is None or len(result.payload) < _HEADER:
            return []
        return self._packet(result.payload, result.truncated)

    def packet(self, payload: bytes, truncated: bool = False) -> list[IngressMessage]:
        """One MoldUDP64 UDP payload in (``truncated``: its frame was cut short), the messages
        to apply out (never raises on bad input)."""
        if len(payload) < _HEADER:
            self.counters["short_payload"] += 1
            return []
        return self._packet(bytes(payload), truncated)

    def _packet(self, payload: bytes, truncated: bool) -> list[IngressMessage]:
        # A packet marks the book stale at most once (a session change and a late join may
        # come together).
        self._marked = False
        try:
            return self._sequence(payload, truncated)
        finally:
            self.stale_marks += self._marked

    def _sequence(self, payload: bytes, truncated: bool) -> list[IngressMessage]:
        counters = self.counters
        counters["packets"] += 1
        session = payload[:10]
        seq = int.from_bytes(payload[10:18], "big")
        count = _u16(payload, 18)
        blocks, fault = split_blocks(payload, truncated)
        announced = 0 if count in (_HEARTBEAT, _END_OF_SESSION) else count
        if fault is None and len(blocks) != announced:
            fault = "count_mismatch"
        if fault is not None:
            counters[fault] += 1
        if not self._follow_session(session):
            return []
        if self.expected is None:
            self.expected = seq
            if seq > 1:
                counters["late_join"] += 1
                self.events.append(("late_join", seq))
                self._mark_stale()
        expected = self.expected
        if announced == 0:
            if seq > expected:
                self._gap(expected, seq)
                self.expected = seq
            if count == _HEARTBEAT:
                counters["heartbeats"] += 1
            elif self.ended:
                counters["end_of_session_repeats"] += 1
            else:
                counters["end_of_session"] += 1
                self.events.append(("end_of_session", seq))
                self.ended = True
            return []
        usable = blocks[:announced]
        if seq + announced <= expected:
            counters["duplicate_packets"] += 1
            counters["duplicates"] += len(usable)
            return []
        if self.ended:
            counters["after_end"] += 1
            return []
        if seq > expected:
            self._gap(expected, seq)
            self.expected = seq
            skip = 0
        else:
            skip = expected - seq
            if skip:
                counters["overlaps"] += 1
        out = []
        for k, body in enumerate(usable):
            if k < skip:
                counters["duplicates"] += 1
                continue
            out.append(IngressMessage(seq + k, body))
            self.expected = seq + k + 1
        counters["messages"] += len(out)
        return out

    def _follow_session(self, session: bytes) -> bool:
        """Whether a packet of ``session`` is processed; handles adoption and changes."""
        if session == self.session:
            return True
        if self.session is None:
            self.session = session
            return True
        if self.config.session is not None:
            self.counters["wrong_session"] += 1
            return False
        if session == self._previous_session:
            self.counters["old_session"] += 1
            return False
        self.counters["session_changes"] += 1
        self.events.append(("session_change", self.session, session))
        self._previous_session = self.session
        self.session = session
        self.expected = None
        self.ended = False
        self._mark_stale()
        return True

    def _gap(self, expected: int, got: int) -> None:
        self.counters["gaps"] += 1
        self.counters["gap_messages"] += got - expected
        self.events.append(("gap", expected, got))
        self._mark_stale()
