"""Stimulus and expected results for the gateware feed handler (:mod:`tick2quote.hdl.feedhandler`).

Frames are built with scapy (independently of the project's codecs) around MoldUDP64 packets
from the project's encoder, or read from real captures. :func:`expect` runs them through the
reference models (:class:`~.models.ingress.IngressModel` then
:class:`~.models.parser.ParserModel`) and says, for every event, which frame beat holds the last
byte of its message (the gateware stamps the event with the cycle that beat was taken).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..hdl.framefilter import FILTER_COUNTERS
from ..hdl.moldparser import MOLD_COUNTERS
from ..host.capture import read_frames
from ..host.protocol import itch, moldudp64
from .feed import FeedConfig, generate
from .models.ingress import IngressConfig, IngressModel, filter_frame, split_blocks
from .models.parser import ITCH_KINDS, BookEvent, ParserModel

__all__ = [
    "GROUP",
    "PORT",
    "SESSION",
    "Expected",
    "expect",
    "scapy_frame",
    "session_frames",
    "capture_frames",
    "corner_frames",
    "hw_config",
]

GROUP, PORT = "233.54.12.111", 26477
SESSION = b"TESTSESS01"
OMI = Path("/work/shared/data/omi")
MAX_PAYLOAD = 1472  # 1500-byte IPv4 datagram: a 1514-byte frame (1518 with an 802.1Q tag)


def scapy_frame(payload: bytes, *, vlan: int | None = None, options: int = 0, dst=GROUP,
                dport=PORT, **ip) -> bytes:  # fmt: skip
    """An Ethernet II / [802.1Q] / IPv4 (``options`` NOPs) / UDP frame built by scapy."""
    from scapy.all import IP, UDP, Dot1Q, Ether, IPOption_NOP

    eth = Ether(dst="01:00:5e:36:0c:6f", src="00:11:22:33:44:55")
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    opts = {"options": [IPOption_NOP()] * options} if options else {}
    udp = UDP(sport=4000, dport=dport)
    return bytes(eth / IP(src="10.1.2.3", dst=dst, **opts, **ip) / udp / payload)


def _packets(messages: list[bytes], rng: random.Random, first: int, max_payload: int):
    """MoldUDP64 packets of consecutive sequence numbers, random sizes up to ``max_payload``."""
    out, seq, pos = [], first, 0
    while pos < len(messages):
        want = rng.choice([1, 2, 3, rng.randint(1, 40), 1000])
        group, size = [], 20
        while pos < len(messages) and len(group) < want:
            if size + 2 + len(messages[pos]) > max_payload:
                break
            group.append(messages[pos])
            size += 2 + len(messages[pos])
            pos += 1
        room = max_payload - size - 2
        if want == 1000 and room >= 7:  # fill the frame to its maximum with an unknown type
            group.append(b"Z" + bytes(room - 1))
        out.append(moldudp64.encode(moldudp64.Packet(SESSION, seq, group)))
        seq += len(group)
    return out


def session_frames(seed: int, count: int, *, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """A synthetic session's messages in frames of every header shape (tag or not, 0-40 bytes of
    IPv4 options: the payload starts at lane 2 or 6), some full-size (1514 bytes, 1518 with
    a tag, padded with an unknown-type message)."""
    rng = random.Random(seed)
    messages = [itch.encode_message(r) for r in generate(FeedConfig(seed=seed, messages=count))]
    frames = []
    for n, packet in enumerate(_packets(messages, rng, 1, max_payload)):
        vlan = 141 if n % 2 else None
        options = 0 if len(packet) > max_payload - 40 else rng.choice([0, 1, 2, 3, 10])
        frames.append(scapy_frame(packet, vlan=vlan, options=options))
    return frames


def capture_frames(renumber: bool) -> tuple[list[bytes], bool]:
    """Every frame of the real Nasdaq ITCH captures (802.1Q-tagged). With ``renumber`` each
    frame's MoldUDP64 session and sequence number are rewritten into one consecutive stream (the
    anonymised captures all carry sequence 0). Returns the frames and whether a zero IPv4
    checksum must be allowed (the anonymised captures have one)."""
    frames = []
    next_seq = 1
    for path in sorted(OMI.glob("*Itch*.pcap")):
        for _ts, frame, _offset in read_frames(path):
            frame = bytearray(frame)
            result = filter_frame(bytes(frame), IngressConfig(allow_zero_checksum=True))
            if renumber and result.payload is not None:
                at = result.offset
                count = int.from_bytes(frame[at + 18 : at + 20], "big")
                frame[at : at + 10] = SESSION
                frame[at + 10 : at + 18] = next_seq.to_bytes(8, "big")
                next_seq += count
            frames.append(bytes(frame))
    return frames, True


def _garbage_message(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.3:  # a book type with a wrong length
        t = rng.choice("AFECXDUSRHP")
        body = bytearray(rng.randbytes(rng.choice([7, 8, 11, 12, 19, 30, itch.SIZES[t] + 1])))
        body[0] = ord(t)
        return bytes(body)
    if roll < 0.6:  # an unknown type
        body = bytearray(rng.randbytes(rng.randint(7, 60)))
        body[0] = rng.choice([b for b in range(256) if chr(b) not in itch.SIZES])
        return bytes(body)
    t = rng.choice(sorted(itch.SIZES))  # a known type with random bytes
    body = bytearray(rng.randbytes(itch.SIZES[t]))
    body[0] = ord(t)
    if t in "AFP":
        body[19] = ord(rng.choice("BS"))
    return bytes(body)


def corner_frames(seed: int, count: int = 120) -> list[bytes]:
    """Malformed and awkward traffic: random message types and lengths (7 .. 60 bytes, so
    message ends fall on every lane), short blocks, count mismatches, overruns, frames cut short,
    gaps, duplicates and overlaps (A/B copies), heartbeats, end of session, a session change,
    bad checksums and other filter drops."""
    rng = random.Random(seed)
    frames, seq, session = [], 1, SESSION
    for _ in range(count):
        msgs = [_garbage_message(rng) for _ in range(rng.randint(1, 12))]
        payload = moldudp64.encode(moldudp64.Packet(session, seq, msgs))
        roll = rng.random()
        advance = len(msgs)
        if roll < 0.05:
            payload = moldudp64.encode(moldudp64.Packet(session, seq, [], 0))
            advance = 0
        elif roll < 0.07:  # end of session, then a new one
            payload = moldudp64.encode(moldudp64.Packet(session, seq + 3, [], 0xFFFF))
            session, seq, advance = bytes(rng.choice(b"ABCDEFGH") for _ in range(10)), 1, 0
        elif roll < 0.12:  # a short block somewhere
            cut = 20 + sum(2 + len(m) for m in msgs[: rng.randrange(len(msgs))])
            payload = payload[:cut] + rng.randint(0, 6).to_bytes(2, "big") + payload[cut:]
        elif roll < 0.16:  # the count disagrees
            payload = payload[:18] + rng.randint(1, 20).to_bytes(2, "big") + payload[20:]
        elif roll < 0.20:  # the UDP payload ends inside a message
            payload = payload[: rng.randint(21, len(payload) - 1)]
        elif roll < 0.24:
            seq += rng.randint(1, 5)  # a gap
            payload = moldudp64.encode(moldudp64.Packet(session, seq, msgs))
        elif roll < 0.30:
            seq -= rng.randint(0, 3)  # a duplicate / overlap
            payload = moldudp64.encode(moldudp64.Packet(session, max(seq, 1), msgs))
        elif roll < 0.31:
            session = bytes(rng.choice(b"ABCDEFGH") for _ in range(10))
        seq = max(seq, 1) + advance
        frame = scapy_frame(payload, vlan=rng.choice([None, 7]), options=rng.randint(0, 10))
        roll = rng.random()
        if roll < 0.06:
            frame = frame[: rng.randint(1, len(frame) - 1)]
        elif roll < 0.08:
            frame = scapy_frame(payload, chksum=0x1234)
        elif roll < 0.10:
            frame = scapy_frame(payload, dport=PORT + 1)
        elif roll < 0.12:
            frame = frame + bytes(rng.randint(1, 20))  # padding
        frames.append(frame)
    return frames


def hw_config(config: IngressConfig) -> dict:
    """The feed handler's configuration inputs for a model configuration (tables of 4)."""
    import ipaddress

    out = {"allow_zero_checksum": int(config.allow_zero_checksum), "groups": [], "ports": []}
    for ip in sorted(config.dst_ips or ()):
        out["groups"].append(int(ipaddress.IPv4Address(ip)))
    for port in sorted(config.dst_ports or ()):
        out["ports"].append(port)
    if config.session is not None:
        out["session"] = int.from_bytes(config.session, "little")
    return out


@dataclass
class Expected:
    """What the feed handler must produce for a list of frames."""

    #: (frame index, beat index of the message's last byte, event without its stamp)
    events: list[tuple[int, int, BookEvent]] = field(default_factory=list)
    #: lane of each event's last message byte in its frame beat
    end_lanes: list[int] = field(default_factory=list)
    #: ``{"filter": {...}, "mold": {...}, "overflow": 0}`` in the gateware's counter names
    counters: dict = field(default_factory=dict)
    #: stale pulses
    stale: int = 0


def expect(
    frames: list[bytes], config: IngressConfig | None = None, counter_width: int = 32
) -> Expected:
    """Run ``frames`` through the reference models (counters wrap at ``counter_width`` bits, as
    the gateware's do)."""
    config = config or IngressConfig()
    ingress = IngressModel(config)
    parser = ParserModel()
    out = Expected()
    for n, frame in enumerate(frames):
        result = filter_frame(frame, config)
        delivered = ingress.frame(frame)
        if not delivered:
            continue
        blocks_end, pos = [], 20
        blocks, _ = split_blocks(result.payload, result.truncated)
        for body in blocks:
            pos += 2 + len(body)
            blocks_end.append(pos - 1)
        first_seq = int.from_bytes(result.payload[10:18], "big")
        for msg in delivered:
            end = result.offset + blocks_end[msg.sequence - first_seq]
            event = parser.message(msg.data, msg.sequence % (1 << 64), 0)
            if event is not None:
                out.events.append((n, end // 8, event))
                out.end_lanes.append(end % 8)
    parsed = set(parser.counters) | {kind.counter for kind in ITCH_KINDS.values()}
    parsed |= {"skipped", "bad_length"}
    mask = (1 << counter_width) - 1
    out.counters = {
        "filter": {name: ingress.counters[name] & mask for name in FILTER_COUNTERS},
        "mold": {
            name: (parser.counters if name in parsed else ingress.counters)[name] & mask
            for name in MOLD_COUNTERS
        },
        "overflow": 0,
    }
    out.stale = ingress.stale_marks
    return out
