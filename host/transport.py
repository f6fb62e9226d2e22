"""How the host reaches a device: the abstract :class:`Transport` and its UDP implementation.

A device (a board, the device twin, or the in-process
:class:`~tick2quote.host.modeldevice.ModelDevice`) speaks on five channels, each carrying whole
UDP payloads in the device's own byte formats:

============  =========  ======================================================================
channel       direction  payload
============  =========  ======================================================================
``feed``      to device  one MoldUDP64 packet (:mod:`.protocol.moldudp64`)
``tick``      to device  40-byte tick records, back to back (:mod:`.protocol.tick`)
``control``   both       one control request / its response (:mod:`.protocol.control`), only
                         through :meth:`Transport.request`
``orders``    both       from the device: one SoupBinTCP ``'U'`` packet with one OUCH 5.0 order
                         (:mod:`.protocol.ouch`); to the device: SoupBinTCP ``'S'`` packets from
                         the exchange (Order Executed and the rest)
``tob``       from       one 40-byte top-of-book record (:mod:`.protocol.tobfeed`)
============  =========  ======================================================================

A transport moves bytes only; :class:`~tick2quote.host.device.Device` gives them meaning. Every
transport counts what it sent and received per channel and what went wrong
(:class:`TransportCounters`).

Arrival times. Each received :class:`Datagram` carries ``t_ns`` and ``clock``: ``"kernel"``
(the kernel's ``SO_TIMESTAMPNS`` arrival stamp, ``CLOCK_REALTIME`` ns, compare with
:func:`time.time_ns`), ``"user"`` (``time.perf_counter_ns`` after the receive returned) or
``"model"`` (``time.perf_counter_ns`` when an in-process model produced it). See
:mod:`.latency` for the receive-stamp rules.
"""

from __future__ import annotations

import abc
import select
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .latency import enable_rx_timestamps, recv_with_timestamp

__all__ = [
    "CHANNELS",
    "SEND_CHANNELS",
    "RECEIVE_CHANNELS",
    "Datagram",
    "TransportCounters",
    "DeviceTimeout",
    "Transport",
    "UdpTransport",
]

#: Every channel a device speaks on.
CHANNELS = ("feed", "tick", "control", "orders", "tob")
#: Channels :meth:`Transport.send` accepts (control goes through :meth:`Transport.request`).
SEND_CHANNELS = ("feed", "tick", "orders")
#: Channels :meth:`Transport.recv` serves.
RECEIVE_CHANNELS = ("orders", "tob")
#: The request_id of a control request or response: bytes 4 .. 7 of both.
_REQUEST_ID = slice(4, 8)
_MAX_DATAGRAM = 65535
#: Other names of channels: the twin's roles (``sim.twin``) call the order port ``order``.
_ALIASES = {"order": "orders"}


@dataclass(frozen=True)
class Datagram:
    """One payload received on ``channel`` with its arrival time (see the module docs)."""

    channel: str
    payload: bytes
    t_ns: int
    clock: str
    address: tuple | None = None


@dataclass
class TransportCounters:
    """What a transport did.

    ``sent`` / ``received``: datagrams per channel (control requests and retries count as sent,
    matched responses as received). ``unexpected``: datagrams dropped because they came from an
    address other than the device. ``stray``: control responses that matched no outstanding
    request (late answers to a retried request, duplicates, garbage). ``retries``: control
    requests sent again after a timeout. ``timeouts``: requests given up
    (:class:`DeviceTimeout`).
    """

    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    unexpected: int = 0
    stray: int = 0
    retries: int = 0
    timeouts: int = 0


class DeviceTimeout(TimeoutError):
    """The device did not answer a control request.

    ``address`` and ``port`` name where the request went, ``elapsed`` the seconds waited in
    all and ``attempts`` how many times it was sent.
    """

    def __init__(self, address: str, port: int, elapsed: float, attempts: int, request_id: int):
        super().__init__(
            f"no answer from {address}:{port} to control request {request_id} after "
            f"{elapsed:.3f} s ({attempts} attempt{'s' if attempts != 1 else ''})"
        )
        self.address, self.port = address, port
        self.elapsed, self.attempts, self.request_id = elapsed, attempts, request_id


def _check_channel(channel: str, allowed: tuple[str, ...], what: str) -> None:
    if channel not in allowed:
        raise ValueError(f"{what} channel must be one of {allowed}, not {channel!r}")


class Transport(abc.ABC):
    """The byte pipe to one device; see the module documentation for the channels.

    Subclasses implement :meth:`send`, :meth:`recv`, :meth:`request` and :meth:`close` and keep
    :attr:`counters` up to date. A transport is a context manager that closes itself.
    """

    def __init__(self):
        self.counters = TransportCounters()

    @abc.abstractmethod
    def send(self, channel: str, payload: bytes) -> None:
        """Send one payload to the device on ``channel`` (one of :data:`SEND_CHANNELS`)."""

    @abc.abstractmethod
    def recv(self, channel: str, timeout: float = 0.0) -> Datagram | None:
        """The next payload from the device on ``channel`` (one of :data:`RECEIVE_CHANNELS`),
        waiting at most ``timeout`` seconds; ``None`` when nothing arrived."""

    @abc.abstractmethod
    def request(self, payload: bytes, timeout: float | None = None) -> bytes:
        """Send one control request and return the response with the same request_id.

        Raises :class:`DeviceTimeout` when no matching response arrives in time.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release whatever the transport holds (idempotent)."""

    def drain(self, channel: str) -> Iterator[Datagram]:
        """Every payload already waiting on ``channel``, without blocking."""
        while (item := self.recv(channel, 0.0)) is not None:
            yield item

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _resolve(host: str) -> str:
    """The IPv4 address text of ``host`` (a name or an address)."""
    return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]


class UdpTransport(Transport):
    """A device reached over UDP/IPv4: a board, or the device twin on loopback.

    Parameters
    ----------
    device_host:
        The device's IPv4 address (or a name resolving to one).
    ports:
        The device's UDP port per channel: ``control`` (required), ``feed``, ``tick`` and
        ``orders`` (the device's order port, where fills go; ``order`` is accepted too, the
        twin's name for it). A channel without a port cannot be sent on.
    bind_host:
        The local address every socket binds to (loopback by default: nothing is exposed).
    listen:
        Local ports for ``orders`` (the gateway address the device sends orders to) and ``tob``
        (where its top-of-book feed arrives); 0 or absent picks an ephemeral port, see
        :meth:`listen_address`.
    timeout, retries:
        Default wait per attempt (seconds) and extra attempts of a control request.
    tob_group:
        A multicast group to join for the top-of-book feed (on the ``bind_host`` interface);
        ``None`` receives it unicast.
    rcvbuf:
        Receive buffer asked of the kernel for the orders and tob sockets (bytes), so bursts
        wait there until read.

    Datagrams on ``orders``/``tob`` and control responses from any host other than
    ``device_host`` are dropped and counted ``unexpected``. Fills leave from the ``orders``
    socket, so the device sees them come from the gateway address it sends orders to.
    """

    def __init__(
        self,
        device_host: str,
        ports: Mapping[str, int],
        *,
        bind_host: str = "127.0.0.1",
        listen: Mapping[str, int] | None = None,
        timeout: float = 0.2,
        retries: int = 2,
        tob_group: str | None = None,
        rcvbuf: int = 4 << 20,
    ):
        super().__init__()
        ports = {_ALIASES.get(name, name): port for name, port in ports.items()}
        for name in ports:
            _check_channel(name, ("feed", "tick", "control", "orders"), "device port")
        if "control" not in ports:
            raise ValueError("ports must name the device's control port")
        for name in listen or {}:
            _check_channel(name, RECEIVE_CHANNELS, "listen")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, not {retries!r}")
        self.device_host = _resolve(device_host)
        self.ports = dict(ports)
        self.timeout, self.retries = timeout, retries
        self._sockets: list[socket.socket] = []
        self._control = self._socket(bind_host, 0)
        self._tx = self._socket(bind_host, 0)
        self._rx: dict[str, socket.socket] = {}
        listen = dict(listen or {})
        for channel in RECEIVE_CHANNELS:
            group = tob_group if channel == "tob" else None
            sock = self._socket("" if group else bind_host, listen.get(channel, 0))
            if group:
                membership = struct.pack(
                    "4s4s", socket.inet_aton(group), socket.inet_aton(_resolve(bind_host))
                )
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            enable_rx_timestamps(sock)
            self._rx[channel] = sock

    def _socket(self, host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sockets.append(sock)
        try:
            sock.bind((host, port))
        except OSError:
            self.close()
            raise
        return sock

    def listen_address(self, channel: str) -> tuple[str, int]:
        """The ``(address, port)`` the ``orders`` or ``tob`` socket is bound to."""
        _check_channel(channel, RECEIVE_CHANNELS, "listen")
        return self._rx[channel].getsockname()[:2]

    def control_address(self) -> tuple[str, int]:
        """The local ``(address, port)`` control requests leave from (the device's peer)."""
        return self._control.getsockname()[:2]

    def _port(self, channel: str) -> int:
        try:
            return self.ports[channel]
        except KeyError:
            raise ValueError(f"no device port given for channel {channel!r}") from None

    def send(self, channel: str, payload: bytes) -> None:
        _check_channel(channel, SEND_CHANNELS, "send")
        sock = self._rx["orders"] if channel == "orders" else self._tx
        sock.sendto(payload, (self.device_host, self._port(channel)))
        self.counters.sent[channel] += 1

    def recv(self, channel: str, timeout: float = 0.0) -> Datagram | None:
        _check_channel(channel, RECEIVE_CHANNELS, "receive")
        sock = self._rx[channel]
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = max(deadline - time.monotonic(), 0.0)
            if not select.select([sock], [], [], remaining)[0]:
                return None
            data, address, t_ns, clock = recv_with_timestamp(sock, _MAX_DATAGRAM)
            if address[0] != self.device_host:
                self.counters.unexpected += 1
                continue
            self.counters.received[channel] += 1
            return Datagram(channel, data, t_ns, clock, address)

    def request(
        self, payload: bytes, timeout: float | None = None, retries: int | None = None
    ) -> bytes:
        """Send one control request and return the response with the same request_id.

        Each attempt waits ``timeout`` seconds (default :attr:`timeout`); after ``retries``
        further attempts (default :attr:`retries`) it raises :class:`DeviceTimeout`. Responses
        with another request_id are counted ``stray`` and skipped. A retried WRITE is applied
        again by the device, which is harmless: it writes the same value.
        """
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        port = self._port("control")
        request_id = bytes(payload[_REQUEST_ID])
        start = time.monotonic()
        for attempt in range(retries + 1):
            if attempt:
                self.counters.retries += 1
            self._control.sendto(payload, (self.device_host, port))
            self.counters.sent["control"] += 1
            response = self._await_response(request_id, port, time.monotonic() + timeout)
            if response is not None:
                self.counters.received["control"] += 1
                return response
        self.counters.timeouts += 1
        raise DeviceTimeout(
            self.device_host,
            port,
            time.monotonic() - start,
            retries + 1,
            int.from_bytes(request_id, "big"),
        )

    def _await_response(self, request_id: bytes, port: int, deadline: float) -> bytes | None:
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([self._control], [], [], remaining)[0]:
                return None
            data, address = self._control.recvfrom(_MAX_DATAGRAM)
            if address[:2] != (self.device_host, port):
                self.counters.unexpected += 1
            elif data[_REQUEST_ID] != request_id or len(data) < _REQUEST_ID.stop:
                self.counters.stray += 1
            else:
                return data
        return None

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
