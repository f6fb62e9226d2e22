"""The control protocol: register reads and writes over UDP (the device's only way in).

Transport
=========
One request per UDP datagram, sent to the device's IPv4 address and control port (register
``control_port``, default 21554 = 0x5432), untagged Ethernet, IPv4 without options. Every
integer is unsigned big-endian unless said otherwise. The device answers an accepted request
with exactly one datagram, from the address and port the request was sent to, to the MAC,
address and port it came from. It answers nothing else, ever: a request it does not accept is
dropped without a word (and counted), so a sender cannot probe what was wrong with it.

Request (28 bytes, the whole UDP payload)
-----------------------------------------
====== ========== ==== =============================================================
offset field      size meaning
====== ========== ==== =============================================================
0      magic      2    ``b"T2"``
2      version    1    1
3      opcode     1    1 READ, 2 WRITE
4      request_id 4    any value; echoed in the response
8      token      8    the session token (register ``session_token``)
16     address    4    register address (a word address: one 64-bit register each)
20     value      8    READ: how many consecutive registers (1 .. ``max_read``);
                       WRITE: the value (two's complement for a signed register)
====== ========== ==== =============================================================

Response (16 bytes, then ``count`` values of 8 bytes)
-----------------------------------------------------
====== ========== ==== =============================================================
offset field      size meaning
====== ========== ==== =============================================================
0      magic      2    ``b"T2"``
2      version    1    1
3      opcode     1    the request's opcode with bit 7 set (0x81, 0x82)
4      request_id 4    the request's
8      status     1    see below
9      count      1    number of 8-byte values that follow (0 unless status is OK)
10     reserved   2    0
12     address    4    the request's address
16     values     8 n  READ: registers ``address .. address + n - 1``; WRITE: the value
                       the register holds after the write (a read-back)
====== ========== ==== =============================================================

Status codes: 0 ``OK``; 1 ``BAD_OPCODE`` (nothing done); 2 ``BAD_ADDRESS`` (an address in the
range names no register; nothing written, no value returned); 3 ``READ_ONLY`` (a write to a
counter or status register); 4 ``INVALID_VALUE`` (a write whose value does not fit the register
or breaks its rule; the register keeps its value); 5 ``BAD_COUNT`` (a READ of 0 or more than
``max_read`` registers).

Who is answered
===============
The device accepts a request only when all of these hold, checked in this order; the first that
fails names the counter the frame is dropped under:

1. untagged IPv4/UDP to the device's address (``device_ip``), else ``ignored``;
2. the frame holds its headers and its whole datagram, else ``truncated``;
3. no IPv4 options, not a fragment, a good header checksum, consistent lengths, else
   ``malformed``;
4. destination port ``control_port``, else ``wrong_port``;
5. a source address held by an enabled entry of the peer table (``peer0`` ..; bit 32 enables,
   bits 31..0 are the address), else ``not_peer``;
6. a 28-byte payload with the right magic and version, else ``malformed``;
7. the right token, else ``bad_token``;
8. no earlier request still being answered, else ``busy``.

Each frame counts in ``frames`` and in exactly one of those counters or ``accepted``;
``responses`` counts responses sent and ``refused`` those whose status was not OK. The token,
peer table, device address, MAC and control port are registers like any other, set at build
time and changed by accepted WRITEs only; a change applies from the next request on (a response
always leaves from the address and port its request was sent to). The token is write-only: it
reads as 0.

Register map
============
Every address holds one register of 1 .. 64 bits, read and written as one 64-bit value (so a
read of a 64-bit counter is atomic). Access is ``ro`` (counters, status), ``rw`` or ``wo``.
A write is accepted when the value fits the register's width (as a signed number for a signed
register) and passes its rule (``one_of``, ``between`` or ``nonzero``). Reads of a signed
register are sign-extended. Addresses ``0x00 .. 0xff`` belong to the control plane: 0x00
``session_token``, 0x01 ``device_ip``, 0x02 ``device_mac``, 0x03 ``control_port``, 0x10..
``peer<k>``, 0x40.. the frame counters. Per-symbol parameters live in windows:
``address = base + locate * stride + field index``.

The device publishes its map as JSON (the gateware's ``describe()``): ``{"registers": {name:
{address, width, access, signed, reset, rule, doc}}, "windows": {name: {base, symbols, stride,
fields: [{name, index, width, signed, reset, rule}]}}, "max_read": n, "version": 1}``.
:class:`RegisterClient` works from it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import FieldValueError, LengthError, TruncatedError
from .fields import Format, raw, uint

__all__ = [
    "MAGIC",
    "VERSION",
    "DEFAULT_PORT",
    "Opcode",
    "Status",
    "REQUEST",
    "RESPONSE_HEADER",
    "Request",
    "Response",
    "encode_request",
    "decode_request",
    "encode_response",
    "decode_response",
    "accepts",
    "RegisterError",
    "RegisterClient",
    "EndpointModel",
]

MAGIC = b"T2"
VERSION = 1
DEFAULT_PORT = 0x5432
VALUE_SIZE = 8
_MASK64 = (1 << 64) - 1


class Opcode(IntEnum):
    """Request opcodes; a response carries ``opcode | 0x80``."""

    READ = 1
    WRITE = 2


class Status(IntEnum):
    """Response status codes."""

    OK = 0
    BAD_OPCODE = 1
    BAD_ADDRESS = 2
    READ_ONLY = 3
    INVALID_VALUE = 4
    BAD_COUNT = 5


REQUEST = Format(
    "ControlRequest",
    [
        raw("magic", 2),
        uint("version", 1),
        uint("opcode", 1),
        uint("request_id", 4),
        uint("token", 8),
        uint("address", 4),
        uint("value", 8),
    ],
)
RESPONSE_HEADER = Format(
    "ControlResponseHeader",
    [
        raw("magic", 2),
        uint("version", 1),
        uint("opcode", 1),
        uint("request_id", 4),
        uint("status", 1),
        uint("count", 1),
        uint("reserved", 2),
        uint("address", 4),
    ],
)


@dataclass(frozen=True)
class Request:
    """A control request; ``value`` is the count for READ, the value for WRITE (0 .. 2**64-1)."""

    opcode: int
    request_id: int
    token: int
    address: int
    value: int


@dataclass(frozen=True)
class Response:
    """A decoded response; ``opcode`` is the request's (bit 7 cleared; an :class:`Opcode`
    unless the status is ``BAD_OPCODE``)."""

    opcode: int
    request_id: int
    status: Status
    address: int
    values: tuple[int, ...] = field(default=())


def encode_request(request: Request) -> bytes:
    """The 28-byte UDP payload of ``request``."""
    return REQUEST.encode(
        magic=MAGIC,
        version=VERSION,
        opcode=request.opcode,
        request_id=request.request_id,
        token=request.token,
        address=request.address,
        value=request.value,
    )


def decode_request(payload: bytes) -> Request:
    """Decode a request payload; raises :class:`TruncatedError`, :class:`LengthError` or
    :class:`FieldValueError` (wrong magic or version) with the offending offset."""
    rec = REQUEST.decode(payload, exact=True)
    _check_preamble(rec)
    return Request(rec.opcode, rec.request_id, rec.token, rec.address, rec.value)


def encode_response(response: Response) -> bytes:
    """The UDP payload of ``response`` (header, then the values)."""
    header = RESPONSE_HEADER.encode(
        magic=MAGIC,
        version=VERSION,
        opcode=int(response.opcode) | 0x80,
        request_id=response.request_id,
        status=int(response.status),
        count=len(response.values),
        reserved=0,
        address=response.address,
    )
    return header + b"".join(v.to_bytes(VALUE_SIZE, "big") for v in response.values)


def decode_response(payload: bytes) -> Response:
    """Decode a response payload.

    Raises :class:`TruncatedError` for a payload shorter than its header or its values,
    :class:`LengthError` for bytes beyond them, and :class:`FieldValueError` for a wrong magic
    or version, an opcode without bit 7 or unknown, an unknown status, or values with a status
    other than OK. Every error carries the byte offset of the problem.
    """
    rec = RESPONSE_HEADER.decode(payload)
    _check_preamble(rec)
    at = RESPONSE_HEADER.offsets
    if not rec.opcode & 0x80:
        raise FieldValueError(f"response opcode 0x{rec.opcode:02x} lacks bit 7", at["opcode"])
    opcode = rec.opcode & 0x7F
    if opcode not in set(Opcode) and rec.status != Status.BAD_OPCODE:
        raise FieldValueError(f"opcode 0x{opcode:02x} is unknown", at["opcode"])
    if rec.status not in set(Status):
        raise FieldValueError(f"status {rec.status} is unknown", at["status"])
    if rec.status != Status.OK and rec.count:
        raise FieldValueError(f"{Status(rec.status).name} response with values", at["count"])
    end = RESPONSE_HEADER.size + VALUE_SIZE * rec.count
    if len(payload) < end:
        raise TruncatedError(f"response of {rec.count} values needs {end} bytes", len(payload))
    if len(payload) > end:
        raise LengthError(f"{len(payload) - end} bytes after the response", end)
    values = tuple(
        int.from_bytes(payload[pos : pos + VALUE_SIZE], "big")
        for pos in range(RESPONSE_HEADER.size, end, VALUE_SIZE)
    )
    if opcode in set(Opcode):
        opcode = Opcode(opcode)
    return Response(opcode, rec.request_id, Status(rec.status), rec.address, values)


def _check_preamble(rec) -> None:
    if rec.magic != MAGIC:
        raise FieldValueError(f"magic {bytes(rec.magic)!r} is not {MAGIC!r}", 0)
    if rec.version != VERSION:
        raise FieldValueError(f"version {rec.version} is not {VERSION}", 2)


def _signed(raw_value: int, bits: int = 64) -> int:
    raw_value &= (1 << bits) - 1
    return raw_value - (1 << bits) if raw_value >> (bits - 1) else raw_value


def accepts(entry: Mapping, value: int) -> bool:
    """Whether the device accepts a write of ``value`` (a Python int, negative allowed for a
    signed register) to the register or field described by ``entry`` (from the map's JSON)."""
    width, signed = entry["width"], entry.get("signed", False)
    if signed:
        if not -(1 << (width - 1)) <= value < (1 << (width - 1)):
            return False
    elif not 0 <= value < (1 << width):
        return False
    rule = entry.get("rule", {"kind": "any"})
    kind, bounds = rule["kind"], rule.get("values", [])
    if kind == "one_of":
        return value in bounds
    if kind == "between":
        return bounds[0] <= value <= bounds[1]
    if kind == "nonzero":
        return value != 0
    return True


class RegisterError(Exception):
    """The device answered with a status other than OK."""

    def __init__(self, status: Status, address: int, what: str = ""):
        super().__init__(f"{status.name} at {what or ''}{'@' if what else ''}{address:#x}")
        self.status = status
        self.address = address


class RegisterClient:
    """Reads and writes the device's registers by name.

    Parameters
    ----------
    description:
        The register map as the device publishes it (see the module documentation).
    exchange:
        Sends one request payload and returns the response payload (a transport's job; it
        raises on a timeout, since the device is silent on any request it does not accept).
    token:
        The session token.
    """

    def __init__(self, description: Mapping, exchange: Callable[[bytes], bytes], token: int):
        self.description = description
        self.exchange = exchange
        self.token = token
        self._next_id = 1

    def address(self, name: str) -> int:
        """The address of register ``name``."""
        return self.description["registers"][name]["address"]

    def field_address(self, window: str, locate: int, name: str) -> tuple[int, Mapping]:
        """Address and description of parameter ``name`` of symbol ``locate`` in ``window``."""
        win = self.description["windows"][window]
        if not 0 <= locate < win["symbols"]:
            raise ValueError(f"locate must be in 0 .. {win['symbols'] - 1}, not {locate!r}")
        entry = next((f for f in win["fields"] if f["name"] == name), None)
        if entry is None:
            raise KeyError(f"window {window} has no field {name!r}")
        return win["base"] + locate * win["stride"] + entry["index"], entry

    def request(self, opcode: int, address: int, value: int) -> Response:
        """Send one request and return the decoded, matching response (any status)."""
        request_id, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        payload = encode_request(Request(opcode, request_id, self.token, address, value))
        response = decode_response(self.exchange(payload))
        if response.request_id != request_id or response.opcode != opcode:
            raise FieldValueError(
                f"response to request {response.request_id} op {response.opcode}, "
                f"expected {request_id} op {opcode}",
                RESPONSE_HEADER.offsets["request_id"],
            )
        return response

    def read_block(self, address: int, count: int) -> tuple[int, ...]:
        """Raw 64-bit values of ``count`` registers from ``address``."""
        response = self.request(Opcode.READ, address, count)
        if response.status != Status.OK:
            raise RegisterError(response.status, address)
        return response.values

    def write_raw(self, address: int, value: int) -> int:
        """Write a raw 64-bit value; returns the raw read-back."""
        response = self.request(Opcode.WRITE, address, value & _MASK64)
        if response.status != Status.OK:
            raise RegisterError(response.status, address)
        return response.values[0]

    def read(self, name: str) -> int:
        """Register ``name`` (negative for a signed register holding a negative value)."""
        entry = self.description["registers"][name]
        value = self.read_block(entry["address"], 1)[0]
        return _signed(value) if entry["signed"] else value

    def write(self, name: str, value: int, *, check: bool = True) -> int:
        """Write register ``name``; returns the read-back. With ``check`` a value the device
        would refuse raises ``ValueError`` before anything is sent."""
        entry = self.description["registers"][name]
        if check and not accepts(entry, value):
            raise ValueError(f"{name} does not accept {value!r} ({entry['rule']})")
        back = self.write_raw(entry["address"], value)
        return _signed(back) if entry["signed"] else back

    def read_param(self, window: str, locate: int, name: str) -> int:
        """Parameter ``name`` of symbol ``locate``."""
        address, entry = self.field_address(window, locate, name)
        value = self.read_block(address, 1)[0]
        return _signed(value) if entry["signed"] else value

    def write_param(self, window: str, locate: int, name: str, value: int, *, check=True) -> int:
        """Write parameter ``name`` of symbol ``locate``; returns the read-back."""
        address, entry = self.field_address(window, locate, name)
        if check and not accepts(entry, value):
            raise ValueError(f"{window}.{name} does not accept {value!r} ({entry['rule']})")
        back = self.write_raw(address, value)
        return _signed(back) if entry["signed"] else back

    def read_all(self, access: str = "ro") -> dict[str, int]:
        """Every register of the given access kind (the counters by default), by name."""
        return {
            name: self.read(name)
            for name, entry in self.description["registers"].items()
            if entry["access"] == access
        }


class EndpointModel:
    """What the device does with a request payload that reached its control port: a reference
    for tests and an in-process stand-in for the device.

    It holds the ``rw``/``wo`` registers and window fields at their reset values; ``ro``
    registers read from :attr:`status` (name -> value, 0 when absent). :meth:`handle` applies
    the peer and token checks (the frame-level checks are the gateware's) and returns the
    response payload, or None for a request the device drops.
    """

    def __init__(self, description: Mapping):
        self.description = description
        self.max_read = description["max_read"]
        self.status: dict[str, int] = {}
        self.values: dict[int, int] = {}  # address -> raw held value
        self._entries: dict[int, tuple[str, Mapping]] = {}
        for name, entry in description["registers"].items():
            self._entries[entry["address"]] = (name, entry)
            if entry["access"] != "ro":
                self.values[entry["address"]] = entry["reset"] & ((1 << entry["width"]) - 1)
        for wname, win in description["windows"].items():
            for locate in range(win["symbols"]):
                for f in win["fields"]:
                    address = win["base"] + locate * win["stride"] + f["index"]
                    self._entries[address] = (f"{wname}.{f['name']}", {**f, "access": "rw"})
                    self.values[address] = f["reset"] & ((1 << f["width"]) - 1)

    def value(self, name: str) -> int:
        """The raw value held by ``rw``/``wo`` register ``name``."""
        return self.values[self.description["registers"][name]["address"]]

    def peers(self) -> set[int]:
        """The enabled peer addresses (as integers)."""
        return {
            v & 0xFFFFFFFF
            for name, e in self.description["registers"].items()
            if name.startswith("peer") and (v := self.values[e["address"]]) >> 32 & 1
        }

    def _read(self, address: int) -> int | None:
        if address not in self._entries:
            return None
        name, entry = self._entries[address]
        if entry["access"] == "ro":
            raw_value = self.status.get(name, 0)
        elif entry["access"] == "wo":
            return 0
        else:
            raw_value = self.values[address]
        if entry.get("signed"):
            return _signed(raw_value, entry["width"]) & _MASK64
        return raw_value

    def handle(self, payload: bytes, src_ip: int) -> bytes | None:
        """The response payload to ``payload`` from ``src_ip``, or None when it is dropped."""
        if src_ip not in self.peers():
            return None
        try:
            req = decode_request(payload)
        except (TruncatedError, LengthError, FieldValueError):
            return None
        if req.token != self.value("session_token"):
            return None
        values: tuple[int, ...] = ()
        if req.opcode == Opcode.READ:
            if not 1 <= req.value <= self.max_read:
                status = Status.BAD_COUNT
            else:
                read = [self._read(req.address + k) for k in range(req.value)]
                status = Status.BAD_ADDRESS if None in read else Status.OK
                values = tuple(read) if status == Status.OK else ()
        elif req.opcode == Opcode.WRITE:
            entry = self._entries.get(req.address, (None, None))[1]
            signed_value = _signed(req.value) if entry and entry.get("signed") else req.value
            if entry is None:
                status = Status.BAD_ADDRESS
            elif entry["access"] == "ro":
                status = Status.READ_ONLY
            elif not accepts(entry, signed_value):
                status = Status.INVALID_VALUE
            else:
                self.values[req.address] = req.value & ((1 << entry["width"]) - 1)
                status, values = Status.OK, (self._read(req.address),)
        else:
            status = Status.BAD_OPCODE
        return encode_response(Response(req.opcode, req.request_id, status, req.address, values))
