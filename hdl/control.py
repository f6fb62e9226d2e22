"""The control plane: a guarded register read/write protocol over UDP.

:class:`ControlPlane` watches every Ethernet frame reaching the device, takes the control
requests addressed to it, checks who sent them, executes them on a register file built from a
:class:`~.regmap.RegisterMap`, and sends one response frame back to the requester's MAC, IP and
port. The protocol itself (request and response layouts, opcodes, status codes) is specified in
:mod:`tick2quote.host.protocol.control`; the field lists below must match it (the tests check).

Each frame is stored (its first 72 bytes are all a request needs), checked the cycle after its
last beat and classified a cycle later, in this order; it counts once in ``frames`` and once
under the first that holds:

``ignored``
    shorter than 34 bytes, not untagged IPv4/UDP, or not to the device's IP address (not
    control traffic at all: the feed, ARP, ...);
``truncated``
    the frame ends before its IPv4/UDP headers or before the IPv4 datagram does;
``malformed``
    IPv4 options, a fragment, a bad header checksum or inconsistent lengths;
``wrong_port``
    a UDP destination port other than ``control_port``;
``not_peer``
    a source address that no enabled peer entry holds;
``malformed``
    (again) a UDP payload that is not exactly one request, or a wrong magic or version;
``bad_token``
    a token other than the session token;
``busy``
    a good request while the previous one is still being answered;
``accepted``
    executed and answered.

Nothing but ``accepted`` changes a register or sends anything. The guard registers (session
token, device IP and MAC, control port, peer table) live at the reserved addresses ``0x00 ..
0xff`` and are written like any other register, by an accepted request only.
"""

from __future__ import annotations

import ipaddress
import operator
from functools import reduce

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import beat_layout
from .regmap import RegisterMap, between, window_signature

__all__ = [
    "CONTROL_MAGIC",
    "CONTROL_VERSION",
    "OPCODES",
    "STATUSES",
    "REQUEST_FIELDS",
    "RESPONSE_FIELDS",
    "GUARD_COUNTERS",
    "RESERVED_END",
    "ControlPlane",
    "guard_registers",
    "identity_layout",
]

CONTROL_MAGIC = b"T2"
CONTROL_VERSION = 1
OPCODES = {"READ": 1, "WRITE": 2}
STATUSES = {
    "OK": 0,
    "BAD_OPCODE": 1,
    "BAD_ADDRESS": 2,
    "READ_ONLY": 3,
    "INVALID_VALUE": 4,
    "BAD_COUNT": 5,
}
#: Request fields ``(name, bytes)`` in wire order (the UDP payload of a request).
REQUEST_FIELDS = (
    ("magic", 2),
    ("version", 1),
    ("opcode", 1),
    ("request_id", 4),
    ("token", 8),
    ("address", 4),
    ("value", 8),
)
#: Response header fields ``(name, bytes)``; ``count`` 8-byte values follow.
RESPONSE_FIELDS = (
    ("magic", 2),
    ("version", 1),
    ("opcode", 1),
    ("request_id", 4),
    ("status", 1),
    ("count", 1),
    ("reserved", 2),
    ("address", 4),
)
#: Frame counters: every frame counts in ``frames`` and once more; ``refused`` and
#: ``responses`` count responses (``refused``: those with a status other than OK).
GUARD_COUNTERS = (
    "frames",
    "ignored",
    "truncated",
    "malformed",
    "wrong_port",
    "not_peer",
    "bad_token",
    "busy",
    "accepted",
    "refused",
    "responses",
)
#: The device's own addresses (big-endian integers), from the guard registers.
identity_layout = data.StructLayout({"ip": 32, "mac": 48})
#: Addresses below this are the control plane's own.
RESERVED_END = 0x100
_PEER_BASE, _COUNTER_BASE = 0x10, 0x40
_REQUEST_SIZE = sum(size for _, size in REQUEST_FIELDS)
_PAYLOAD_AT = 42  # untagged Ethernet 14 + IPv4 20 + UDP 8
_RX_BEATS = 9  # frame bytes 0 .. 71 hold every header and the request
_GROUP = 4  # the read multiplexer ORs 16 addresses, then the groups (registered)
_SETTLED = 3  # cycles from a change of the address or a register to a valid decode


def _offsets(fields) -> dict[str, tuple[int, int]]:
    out, pos = {}, 0
    for name, size in fields:
        out[name] = (pos, size)
        pos += size
    return out


_REQUEST_AT = {n: (_PAYLOAD_AT + off, size) for n, (off, size) in _offsets(REQUEST_FIELDS).items()}
_RESPONSE_SIZE = sum(size for _, size in RESPONSE_FIELDS)


def _ip(value) -> int:
    return int(ipaddress.IPv4Address(value))


def _be(value, size: int):
    """``size`` low bytes of ``value`` in wire order (most significant byte first)."""
    value = Value.cast(value)
    if len(value) < 8 * size:
        value = Cat(value, Const(0, 8 * size - len(value)))
    return Cat(*[value[8 * (size - 1 - k) : 8 * (size - k)] for k in range(size)])


def guard_registers(regmap: RegisterMap, *, ip, mac: int, port: int, token: int, peers) -> None:
    """Add the control plane's own registers (reserved addresses) to ``regmap``."""
    regmap.add("session_token", 0x00, 64, "wo", reset=token, doc="request token (write-only)")
    regmap.add("device_ip", 0x01, 32, reset=_ip(ip), doc="the device's IPv4 address")
    regmap.add("device_mac", 0x02, 48, reset=mac, doc="source MAC of responses")
    regmap.add("control_port", 0x03, 16, reset=port, rule=between(1, 65535), doc="UDP port")
    for k, peer in enumerate(peers):
        reset = (1 << 32 | _ip(peer)) if peer is not None else 0
        regmap.add(f"peer{k}", _PEER_BASE + k, 33, reset=reset, doc="bit 32 enable, 31..0 IPv4")
    regmap.counters(_COUNTER_BASE, GUARD_COUNTERS, doc="control plane frame counter")


def _check_parameters(regmap, peers, peer_slots, max_read, counter_width) -> None:
    if not isinstance(peer_slots, int) or not 1 <= peer_slots <= 16:
        raise ValueError(f"peer_slots must be an integer in 1 .. 16, not {peer_slots!r}")
    if len(peers) > peer_slots:
        raise ValueError(f"{len(peers)} peers given for {peer_slots} peer slots")
    if not isinstance(max_read, int) or not 1 <= max_read <= 32:
        raise ValueError(f"max_read must be an integer in 1 .. 32, not {max_read!r}")
    if not isinstance(counter_width, int) or not 1 <= counter_width <= 64:
        raise ValueError(f"counter_width must be an integer in 1 .. 64, not {counter_width!r}")
    for name, reg in regmap.registers.items():
        if reg.address < RESERVED_END:
            raise ValueError(f"register {name} at {reg.address:#x} is in the reserved range")
    for name, win in regmap.windows.items():
        if win.base < RESERVED_END:
            raise ValueError(f"window {name} at {win.base:#x} is in the reserved range")


class ControlPlane(wiring.Component):
    """Serves a register map over the control protocol, to configured peers only.

    Parameters
    ----------
    regmap:
        The device's registers and parameter windows; addresses below :data:`RESERVED_END`
        are the control plane's own (see :func:`guard_registers`).
    ip, mac, port, token:
        Reset values of the device IPv4 address (text or int), MAC (int), control UDP port and
        session token.
    peers:
        Source addresses accepted at reset (at most ``peer_slots``).
    peer_slots:
        Entries of the peer table (1 .. 16).
    max_read:
        Most registers one READ may return (1 .. 32).
    counter_width:
        Width of each guard counter (1 .. 64; they wrap).

    Attributes
    ----------
    i : In(stream.Signature(beat_layout))
        Every Ethernet frame reaching the device (FCS stripped); never back-pressured.
    o : Out(stream.Signature(beat_layout))
        Response frames.
    regs : Out(StructLayout)
        The map's ``rw`` registers by name (present when it has any outside the reserved range).
    status : In(StructLayout)
        The map's ``ro`` registers by name (present when it has any outside the reserved range).
    counters : Out(StructLayout)
        :data:`GUARD_COUNTERS`.
    identity : Out(identity_layout)
        The device's IPv4 address and MAC as the guard registers hold them now.
    <window name> : Out(window_signature(window))
        One port per parameter window.
    """

    def __init__(
        self,
        regmap: RegisterMap,
        *,
        ip="192.168.1.2",
        mac: int = 0x02_00_00_00_00_01,
        port: int = 0x5432,
        token: int = 0,
        peers=(),
        peer_slots: int = 4,
        max_read: int = 8,
        counter_width: int = 32,
    ):
        try:
            _check_parameters(regmap, peers, peer_slots, max_read, counter_width)
        except ValueError:
            self._MustUse__silence = True  # a refused component is not an unused one
            raise
        self.user_map = regmap
        self.regmap = RegisterMap()
        guard_registers(
            self.regmap,
            ip=ip,
            mac=mac,
            port=port,
            token=token,
            peers=list(peers) + [None] * (peer_slots - len(peers)),
        )
        for reg in regmap.registers.values():
            self.regmap.registers[reg.name] = reg
        for win in regmap.windows.values():
            self.regmap.windows[win.name] = win
        self.peer_slots, self.max_read, self.counter_width = peer_slots, max_read, counter_width
        members = {
            "i": In(stream.Signature(beat_layout)),
            "o": Out(stream.Signature(beat_layout)),
            "counters": Out(data.StructLayout({n: counter_width for n in GUARD_COUNTERS})),
            "identity": Out(identity_layout),
        }
        rw = {r.name: r.width for r in regmap.registers.values() if r.access != "ro"}
        ro = {r.name: r.width for r in regmap.registers.values() if r.access == "ro"}
        if rw:
            members["regs"] = Out(data.StructLayout(rw))
        if ro:
            members["status"] = In(data.StructLayout(ro))
        for name, win in regmap.windows.items():
            if name in members:
                raise ValueError(f"window name {name!r} clashes with a port of ControlPlane")
            members[name] = Out(window_signature(win))
        super().__init__(members)

    def describe(self) -> dict:
        """The full register map as JSON-ready data, with the protocol limits."""
        return {**self.regmap.describe(), "max_read": self.max_read, "version": CONTROL_VERSION}

    def elaborate(self, platform) -> Module:
        m = Module()
        rx = _Receiver(m, self.i)
        held = {}  # rw/wo register name -> Signal
        for reg in self.regmap.registers.values():
            if reg.access != "ro":
                held[reg.name] = Signal(reg.width, name=f"reg_{reg.name}", init=reg.reset)
                if reg.address >= RESERVED_END:
                    m.d.comb += getattr(self.regs, reg.name).eq(held[reg.name])
        counters = {n: Signal(self.counter_width, name=f"count_{n}") for n in GUARD_COUNTERS}
        m.d.comb += [getattr(self.counters, n).eq(c) for n, c in counters.items()]
        m.d.comb += [
            self.identity.ip.eq(held["device_ip"]),
            self.identity.mac.eq(held["device_mac"]),
        ]

        # A frame counts, and a request is accepted, the cycle after rx.done (its outcome is
        # known then) when the executor was idle at rx.done (and is, then, still).
        verdict = _classify(m, rx, held, self.peer_slots)
        judged, was_idle, idle, accept = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [judged.eq(rx.done), was_idle.eq(idle & ~accept)]
        m.d.comb += accept.eq(judged & verdict["accepted"] & was_idle)
        with m.If(judged):
            m.d.sync += counters["frames"].eq(counters["frames"] + 1)
            busy = verdict["accepted"] & ~was_idle
            for name, sig in verdict.items():
                hit = {"accepted": sig & was_idle, "busy": busy}.get(name, sig)
                with m.If(hit):
                    m.d.sync += counters[name].eq(counters[name] + 1)
        _Executor(self, m, rx, held, counters, accept, idle)
        return m


class _Receiver:
    """Stores the first :data:`_RX_BEATS` beats of every frame, its length and the IPv4 header
    sum; ``done`` is high the cycle after a frame's last beat, while all of them are final."""

    def __init__(self, m: Module, port):
        beat = port.payload
        take = Signal()
        m.d.comb += [port.ready.eq(1), take.eq(port.valid)]
        at_start = Signal(init=1)
        idx_reg = Signal(4)
        idx = Signal(4)
        m.d.comb += idx.eq(Mux(at_start, 0, idx_reg))
        self.done = Signal()
        self.bytes = Signal(8 * 8 * _RX_BEATS)
        self.length = Signal(16)
        self.ip_sum = Signal(20)
        m.d.sync += self.done.eq(take & beat.last)
        with m.If(take):
            m.d.sync += [at_start.eq(beat.last), idx_reg.eq(Mux(idx.all(), idx, idx + 1))]
            count = sum(beat.keep[k] for k in range(8))
            base = Mux(at_start, 0, self.length)
            m.d.sync += self.length.eq(Mux(base[-1], base, base + count))
            for k in range(_RX_BEATS):
                with m.If(idx == k):
                    m.d.sync += self.bytes.word_select(k, 64).eq(beat.data)

        def word(lane):
            return Cat(beat.data.word_select(lane + 1, 8), beat.data.word_select(lane, 8))

        with m.If(take):  # IPv4 header bytes 14 .. 33: beats 1 (lane 6) to 4 (lane 0)
            with m.Switch(idx):
                with m.Case(1):
                    m.d.sync += self.ip_sum.eq(word(6))
                with m.Case(2, 3):
                    m.d.sync += self.ip_sum.eq(self.ip_sum + word(0) + word(2) + word(4) + word(6))
                with m.Case(4):
                    m.d.sync += self.ip_sum.eq(self.ip_sum + word(0))

    def field(self, offset: int, size: int):
        """Frame bytes ``offset .. offset + size`` in wire order (byte k at bits 8k)."""
        return self.bytes[8 * offset : 8 * (offset + size)]

    def number(self, offset: int, size: int):
        """Frame bytes ``offset .. offset + size`` as a big-endian integer."""
        return _be(self.field(offset, size), size)


def _classify(m: Module, rx: _Receiver, held: dict, peer_slots: int) -> dict:
    """One-hot outcome signals of the frame ``rx`` holds, valid the cycle after ``rx.done``
    (its checks are registered)."""
    req = _REQUEST_AT
    version_ihl = rx.number(14, 1)
    total = rx.number(16, 2)
    udp_length = rx.number(38, 2)
    fold1 = Signal(17)
    folded = Signal(16)
    m.d.comb += [fold1.eq(rx.ip_sum[:16] + rx.ip_sum[16:]), folded.eq(fold1[:16] + fold1[16])]
    src_ip = rx.field(26, 4)
    peer_hit = Const(0, 1)
    for k in range(peer_slots):
        entry = held[f"peer{k}"]
        peer_hit = peer_hit | (entry[32] & (_be(entry[:32], 4) == src_ip))
    checks = [
        (
            "ignored",
            (rx.length < 34)
            | (rx.number(12, 2) != 0x0800)
            | (version_ihl[4:] != 4)
            | (rx.number(23, 1) != 17)
            | (rx.field(30, 4) != _be(held["device_ip"], 4)),
        ),
        ("truncated", rx.length < _PAYLOAD_AT),
        (
            "malformed",
            (version_ihl[:4] != 5)
            | (rx.number(20, 2)[:14] != 0)
            | (folded != 0xFFFF)
            | (total != udp_length + 20),
        ),
        ("wrong_port", rx.number(36, 2) != held["control_port"]),
        ("not_peer", ~peer_hit),
        ("truncated", rx.length < 14 + total),
        (
            "malformed",
            (udp_length != 8 + _REQUEST_SIZE)
            | (rx.field(*req["magic"]) != int.from_bytes(CONTROL_MAGIC, "little"))
            | (rx.number(*req["version"]) != CONTROL_VERSION),
        ),
        ("bad_token", rx.field(*req["token"]) != _be(held["session_token"], 8)),
    ]
    result = {name: Signal(name=f"cause_{name}") for name in GUARD_COUNTERS[1:9]}
    earlier = Const(0, 1)
    hits: dict[str, list] = {}
    for name, check in checks:
        hit = Signal(name=f"fail_{name}_{len(hits.get(name, []))}")
        failed = Signal(name=f"check_{name}_{len(hits.get(name, []))}")
        m.d.sync += failed.eq(check)
        m.d.comb += hit.eq(~earlier & failed)
        hits.setdefault(name, []).append(hit)
        earlier = earlier | failed
    for name, sig in result.items():
        m.d.comb += sig.eq(Cat(*hits[name]).any() if name in hits else 0)
    m.d.comb += result["accepted"].eq(~earlier)
    return result


class _Executor:
    """Executes an accepted request on the register file and sends its response frame."""

    def __init__(self, plane: ControlPlane, m, rx, held, counters, accept, idle):
        self.plane, self.m, self.held, self.counters = plane, m, held, counters
        max_read = plane.max_read
        source_mac = Signal(48)  # frame bytes 0 .. 7 may belong to the next frame at accept
        with m.If(rx.done):
            m.d.sync += source_mac.eq(rx.field(6, 6))
        value = rx.number(*_REQUEST_AT["value"])
        # The request, latched on acceptance (wire-order fields are kept as they came).
        latch = {
            "opcode": rx.number(*_REQUEST_AT["opcode"]),
            "request_id": rx.field(*_REQUEST_AT["request_id"]),
            "address": rx.number(*_REQUEST_AT["address"]),
            "value": value,
            "count_ok": (value != 0) & (value <= max_read),  # a count a READ may ask for
            "peer_mac": source_mac,
            "peer_ip": rx.field(26, 4),
            "own_ip": rx.field(30, 4),
            "peer_port": rx.field(34, 2),
            "own_port": rx.field(36, 2),
        }
        job = {name: Signal(len(v), name=f"job_{name}") for name, v in latch.items()}
        with m.If(accept):
            m.d.sync += [job[name].eq(v) for name, v in latch.items()]
        cur = Signal(33)  # the register being read or written (past 2**32 - 1: unmapped)
        status = Signal(8)
        count = Signal(range(max_read + 1))  # values in the response
        index = Signal(range(max_read + 1))
        values = Array(Signal(64, name=f"value{k}") for k in range(max_read))  # wire order
        ip_sum = Signal(20)
        beat = Signal(range(max_read + 9))
        ip_part = Signal(20)  # the response's IPv4 header sum but for its values (steady)
        ips = [_be(job[k][h : h + 16], 2) for k in ("own_ip", "peer_ip") for h in (0, 16)]
        m.d.sync += ip_part.eq(sum(ips, Const(0x4500 + 0x4011 + 28 + _RESPONSE_SIZE, 20)))
        final = Signal()  # ``beat`` is the response's last: 7 header beats, count + 1 more
        # Bit k: k + 1 cycles since ``cur`` or a register last changed (cleared then); the
        # decode is valid once all _SETTLED are set.
        settle = Signal(_SETTLED)
        m.d.sync += settle.eq(Cat(1, settle[:-1]))
        ready = settle[-1]
        mapped, writable, valid, read_value = self._decode(cur, job["value"])
        self._writer(job["value"])

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                with m.If(accept):
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.sync += [cur.eq(job["address"]), index.eq(0), count.eq(0), settle.eq(0)]
                with m.Switch(job["opcode"]):
                    with m.Case(OPCODES["READ"]):
                        with m.If(~job["count_ok"]):
                            m.d.sync += status.eq(STATUSES["BAD_COUNT"])
                            m.next = "PREPARE"
                        with m.Else():
                            m.d.sync += [status.eq(STATUSES["OK"]), count.eq(job["value"])]
                            m.next = "READ"
                    with m.Case(OPCODES["WRITE"]):
                        m.next = "WRITE"
                    with m.Default():
                        m.d.sync += status.eq(STATUSES["BAD_OPCODE"])
                        m.next = "PREPARE"
            with m.State("WRITE"):
                refusal = Mux(~mapped, STATUSES["BAD_ADDRESS"], STATUSES["READ_ONLY"])
                refusal = Mux(mapped & writable, STATUSES["INVALID_VALUE"], refusal)
                with m.If(ready & mapped & writable & valid):
                    m.d.sync += [strobe.eq(hit) for strobe, hit in self.strobes]
                    m.d.sync += [status.eq(STATUSES["OK"]), count.eq(1)]
                    m.next = "COMMIT"
                with m.Elif(ready):
                    m.d.sync += status.eq(refusal)
                    m.next = "PREPARE"
            with m.State("COMMIT"):  # the write lands; then read back what the register holds
                m.d.sync += settle.eq(0)
                m.next = "READ"
            with m.State("READ"):  # one register per settled decode of ``cur``
                with m.If(ready & ~mapped):
                    m.d.sync += [status.eq(STATUSES["BAD_ADDRESS"]), count.eq(0)]
                    m.next = "PREPARE"
                with m.Elif(ready):
                    m.d.sync += [values[index].eq(_be(read_value, 8)), index.eq(index + 1)]
                    m.d.sync += [cur.eq(cur + 1), settle.eq(0)]
                    with m.If(index + 1 == count):
                        m.next = "PREPARE"
            with m.State("PREPARE"):
                m.d.sync += [ip_sum.eq(ip_part + 8 * count), beat.eq(0), final.eq(0)]
                m.next = "SEND"
            with m.State("SEND"):
                header = self._header(job, status, count, ip_sum)
                o = plane.o
                after = beat - 7  # values sit from beat 7 on, 2 bytes late
                carry = Mux(beat == 7, header[448:464], values[after - 1][48:64])
                m.d.comb += [o.valid.eq(1), o.payload.first.eq(beat == 0)]
                with m.If(beat < 7):
                    m.d.comb += [o.payload.data.eq(header.word_select(beat[:3], 64))]
                    m.d.comb += o.payload.keep.eq(0xFF)
                with m.Elif(~final):
                    m.d.comb += [
                        o.payload.data.eq(Cat(carry, values[after][:48])),
                        o.payload.keep.eq(0xFF),
                    ]
                with m.Else():  # the last 2 bytes (padded to the 60-byte minimum frame)
                    m.d.comb += [
                        o.payload.data.eq(carry),
                        o.payload.keep.eq(Mux(count == 0, 0x0F, 0x03)),
                        o.payload.last.eq(1),
                    ]
                with m.If(o.ready):
                    m.d.sync += [beat.eq(beat + 1), final.eq(beat + 1 == 7 + count)]
                    with m.If(final):
                        m.d.sync += counters["responses"].eq(counters["responses"] + 1)
                        with m.If(status != STATUSES["OK"]):
                            m.d.sync += counters["refused"].eq(counters["refused"] + 1)
                        m.next = "IDLE"

    def _header(self, job, status, count, ip_sum):
        """The 58 header bytes of the response frame, in wire order."""
        held = self.held
        fold1 = ip_sum[:16] + ip_sum[16:]
        checksum = ~(fold1[:16] + fold1[16])[:16]
        total = 20 + 8 + _RESPONSE_SIZE + 8 * count
        response = {
            "magic": Const(int.from_bytes(CONTROL_MAGIC, "little"), 16),
            "version": Const(CONTROL_VERSION, 8),
            "opcode": _be(job["opcode"] | 0x80, 1),
            "request_id": job["request_id"],
            "status": status[:8],
            "count": _be(count, 1),
            "reserved": Const(0, 16),
            "address": _be(job["address"], 4),
        }
        header = Cat(
            job["peer_mac"],
            _be(held["device_mac"], 6),
            _be(Const(0x0800, 16), 2),
            _be(Const(0x4500, 16), 2),
            _be(total, 2),
            Const(0, 32),  # identification, flags and fragment offset
            _be(Const(0x4011, 16), 2),  # TTL 64, protocol UDP
            _be(checksum, 2),
            job["own_ip"],
            job["peer_ip"],
            job["own_port"],
            job["peer_port"],
            _be(total - 20, 2),
            Const(0, 16),  # no UDP checksum
            *[response[name] for name, _ in RESPONSE_FIELDS],
        )
        assert len(header) == 8 * (_PAYLOAD_AT + _RESPONSE_SIZE)
        return header

    def _decode(self, cur, value):
        """``mapped``, ``writable``, ``valid`` (for a write of ``value``) and the 64-bit value
        read at ``cur``, valid :data:`_SETTLED` cycles after ``cur`` or a register last changed.

        Registered in stages: one hit flag per register (``cur`` names it), the word of each
        group of ``2**_GROUP`` addresses, then their OR. Window ports get ``locate`` / ``field``
        from registers (``rdata`` follows a cycle later, the window contract) and the field's
        word is latched from ``rdata``. A word is a value with ``mapped``, ``writable`` and
        ``valid`` above it, or zero.
        """
        m, plane = self.m, self.plane
        oks = {}  # registered: a write of ``value`` fits a width and rule
        items = [r for r in plane.regmap.registers.values() if r.access != "ro"]
        for item in items + [f for w in plane.regmap.windows.values() for f in w.fields]:
            key = (item.width, item.signed, item.rule)
            if key not in oks:
                oks[key] = Signal(name=f"write_ok{len(oks)}")
                m.d.sync += oks[key].eq(item.valid_hdl(value))

        def ok(item):
            return oks[item.width, item.signed, item.rule]

        def word(source, signed, writable, valid):  # the value sign- or zero-extended
            fill = Value.cast(source)[-1] if signed else Const(0, 1)
            wide = Cat(source, fill.replicate(64 - len(Value.cast(source))))
            return Cat(wide, Const(1, 1), Const(writable, 1), valid)

        groups: dict[int, list] = {}
        for reg in plane.regmap.registers.values():
            groups.setdefault(reg.address >> _GROUP, []).append(reg)
        span = max(_GROUP, max(groups).bit_length() + _GROUP)
        in_span = cur[span:] == 0
        self.hits, self.inside, words = {}, {}, []
        for g, members in groups.items():
            upper = in_span & (cur[_GROUP:span] == g)
            held, terms = Signal(67, name=f"group{g:x}_word"), []
            for reg in members:
                hit = self.hits[reg.name] = Signal(name=f"at_{reg.name}")
                m.d.sync += hit.eq(upper & (cur[:_GROUP] == reg.address % (1 << _GROUP)))
                ro = reg.access == "ro"
                valid = Const(0, 1) if ro else ok(reg)
                terms.append(Mux(hit, word(self._source(reg), reg.signed, not ro, valid), 0))
            m.d.sync += held.eq(reduce(operator.or_, terms))
            words.append(held)
        gathered = Signal(67)
        m.d.sync += gathered.eq(reduce(operator.or_, words))
        words = [gathered]
        for win in plane.regmap.windows.values():
            port = getattr(plane, win.name)
            shift = win.stride.bit_length() - 1
            offset = (cur - win.base)[:33]
            inside = Signal(name=f"{win.name}_inside")
            locate = Signal.like(port.locate, name=f"{win.name}_locate")
            field = Signal.like(port.field, name=f"{win.name}_field")
            m.d.sync += [
                inside.eq((cur >= win.base) & (cur < win.end)),
                locate.eq(offset[shift:]),
                field.eq(offset[:shift] if shift else 0),
            ]
            m.d.comb += [port.locate.eq(locate), port.field.eq(field), port.wdata.eq(value)]
            held = Signal(67, name=f"{win.name}_word")
            m.d.sync += held.eq(0)
            with m.If(inside), m.Switch(field):
                for index, f in enumerate(win.fields):
                    with m.Case(index):
                        m.d.sync += held.eq(word(port.rdata[: f.width], f.signed, 1, ok(f)))
            self.inside[win.name] = inside
            words.append(held)
        result = Signal(67)
        m.d.comb += result.eq(reduce(operator.or_, words))
        return result[64], result[65], result[66], result[:64]

    def _source(self, reg):
        """What a read of register ``reg`` returns (raw bits; write-only reads as 0)."""
        if reg.access != "ro":
            return self.held[reg.name] if reg.access == "rw" else Const(0, 1)
        status = self.plane.status
        return self.counters[reg.name] if reg.name in self.counters else getattr(status, reg.name)

    def _writer(self, value):
        """One write strobe per ``rw`` / ``wo`` register and window (with the hit flag that
        sets it): a write of ``value`` lands the cycle after its strobe is set."""
        m, plane = self.m, self.plane
        self.strobes = []
        for reg in plane.regmap.registers.values():
            if reg.access != "ro":
                strobe = Signal(name=f"write_{reg.name}")
                self.strobes.append((strobe, self.hits[reg.name]))
                with m.If(strobe):
                    m.d.sync += self.held[reg.name].eq(value[: reg.width])
        for win in plane.regmap.windows.values():
            strobe = Signal(name=f"write_{win.name}")
            m.d.comb += getattr(plane, win.name).we.eq(strobe)
            self.strobes.append((strobe, self.inside[win.name]))
        m.d.sync += [strobe.eq(0) for strobe, _ in self.strobes]
