"""UdpTransport against small local UDP responders, and the Device over real sockets.

The responders are written here: a control responder whose behaviour each test scripts (answer,
stay silent, answer late, send strays), and :class:`ModelServer`, the reference models behind
UDP sockets (the device's channels on loopback, as the twin serves them).
"""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
from tick2quote.host.device import Device
from tick2quote.host.modeldevice import ModelDevice
from tick2quote.host.protocol import control
from tick2quote.host.transport import DeviceTimeout, UdpTransport
from tick2quote.sim.feed import FeedConfig, generate


def _udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


class Responder:
    """A control port on loopback: ``handle(data, addr, sock)`` is called per datagram."""

    def __init__(self, handle):
        self.sock = _udp()
        self.port = self.sock.getsockname()[1]
        self.handle, self.seen = handle, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            if select.select([self.sock], [], [], 0.02)[0]:
                data, addr = self.sock.recvfrom(65535)
                self.seen.append(data)
                self.handle(data, addr, self.sock)

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _answer(data: bytes, request_id: int | None = None) -> bytes:
    req = control.decode_request(data)
    rid = req.request_id if request_id is None else request_id
    return control.encode_response(
        control.Response(req.opcode, rid, control.Status.OK, req.address, (req.value,))
    )


def _request(request_id: int) -> bytes:
    return control.encode_request(control.Request(control.Opcode.READ, request_id, 0, 0x180, 1))


def test_request_returns_the_matching_response_and_counts_strays():
    def handle(data, addr, sock):
        sock.sendto(b"\x00" * 3, addr)  # garbage
        sock.sendto(_answer(data, request_id=999), addr)  # another request's answer
        sock.sendto(_answer(data), addr)

    responder = Responder(handle)
    with UdpTransport("127.0.0.1", {"control": responder.port}, timeout=0.5) as transport:
        response = control.decode_response(transport.request(_request(7)))
        assert response.request_id == 7
        assert transport.counters.stray == 2
        assert transport.counters.sent["control"] == 1
        assert transport.counters.received["control"] == 1
    responder.close()


def test_silent_device_raises_device_timeout_after_its_retries():
    responder = Responder(lambda data, addr, sock: None)
    transport = UdpTransport("127.0.0.1", {"control": responder.port}, timeout=0.05, retries=2)
    start = time.monotonic()
    with pytest.raises(DeviceTimeout) as info:
        transport.request(_request(5))
    elapsed = time.monotonic() - start
    # three attempts each waited out their timeout (a lower bound: no upper one is asserted)
    assert elapsed >= 0.15 and info.value.elapsed >= 0.15
    assert f"127.0.0.1:{responder.port}" in str(info.value)
    assert info.value.attempts == 3 and info.value.request_id == 5
    assert len(responder.seen) == 3  # every attempt reached the port
    assert transport.counters.timeouts == 1 and transport.counters.retries == 2
    transport.close()
    responder.close()


def test_a_lost_response_is_retried():
    def handle(data, addr, sock):
        if len(responder.seen) > 1:  # the first request goes unanswered
            sock.sendto(_answer(data), addr)

    responder = Responder(handle)
    with UdpTransport("127.0.0.1", {"control": responder.port}, timeout=0.05) as transport:
        assert control.decode_response(transport.request(_request(11))).request_id == 11
        assert transport.counters.retries == 1 and transport.counters.stray == 0
    responder.close()


def test_a_late_response_is_counted_stray_not_taken_for_the_next():
    held = []

    def handle(data, addr, sock):
        rid = control.decode_request(data).request_id
        if rid == 1 and len(responder.seen) == 2:  # the retry: answer the first attempt now,
            sock.sendto(_answer(data), addr)  # and keep the retry's own answer for later
            held.append(_answer(data))
        elif rid == 2:  # the late answer reaches the next request first
            sock.sendto(held.pop(), addr)
            sock.sendto(_answer(data), addr)

    responder = Responder(handle)
    with UdpTransport("127.0.0.1", {"control": responder.port}, timeout=0.05) as transport:
        assert control.decode_response(transport.request(_request(1))).request_id == 1
        assert transport.counters.retries == 1 and transport.counters.stray == 0
        assert control.decode_response(transport.request(_request(2))).request_id == 2
        assert transport.counters.stray == 1 and transport.counters.retries == 1
    responder.close()


def test_binds_loopback_by_default_and_receives_with_arrival_stamps():
    with UdpTransport("127.0.0.1", {"control": 9, "feed": 9}) as transport:
        for channel in ("orders", "tob"):
            assert transport.listen_address(channel)[0] == "127.0.0.1"
        assert transport.control_address()[0] == "127.0.0.1"
        assert transport.recv("tob", 0.01) is None
        device = _udp()
        device.sendto(b"top", transport.listen_address("tob"))
        got = transport.recv("tob", 0.5)
        assert got.payload == b"top" and got.clock in ("kernel", "user") and got.t_ns > 0
        stranger = _udp("127.0.0.2")  # not the device: dropped and counted
        stranger.sendto(b"x", transport.listen_address("orders"))
        assert transport.recv("orders", 0.1) is None
        assert transport.counters.unexpected == 1
        assert transport.counters.received["tob"] == 1
        with pytest.raises(ValueError, match="tick"):
            transport.send("tick", b"")
        device.close()
        stranger.close()


class ModelServer:
    """The reference models behind the device's UDP channels on loopback (roles as the twin
    names them); orders go to 127.0.0.1:``gateway_port``, tops to 127.0.0.1:``tob_port``."""

    def __init__(self, model: ModelDevice):
        self.model = model
        self.socks = {role: _udp() for role in ("feed", "tick", "control", "order")}
        self.ports = {role: s.getsockname()[1] for role, s in self.socks.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        by_sock = {s: role for role, s in self.socks.items()}
        while not self._stop.is_set():
            for sock in select.select(list(by_sock), [], [], 0.02)[0]:
                data, addr = sock.recvfrom(65535)
                role = by_sock[sock]
                if role == "control":
                    try:
                        sock.sendto(self.model.request(data), addr)
                    except DeviceTimeout:
                        pass
                else:
                    self.model.send("orders" if role == "order" else role, data)
                out = {"orders": ("order", "gateway_port"), "tob": ("feed", "tob_port")}
                for channel, (role, port) in out.items():
                    for datagram in self.model.drain(channel):
                        target = ("127.0.0.1", self.model.endpoint.value(port))
                        self.socks[role].sendto(datagram.payload, target)

    def close(self):
        self._stop.set()
        self._thread.join()
        for sock in self.socks.values():
            sock.close()


def test_device_over_udp_gives_what_it_gives_in_process():
    msgs = generate(FeedConfig(seed=8, symbols=6, messages=600))
    local = ModelDevice()
    direct = Device(local, local.description)
    direct.set_kill(False)
    direct.stream_feed(msgs)
    expected = [(o.type, o.user_ref, o.locate, o.side, o.qty, o.price) for o in direct.orders()]
    assert expected

    server = ModelServer(ModelDevice())
    transport = UdpTransport("127.0.0.1", server.ports, timeout=0.5)
    device = Device(transport, server.model.description)
    device.set_gateway(*transport.listen_address("orders"))
    device.set_tob(*transport.listen_address("tob"))
    device.set_kill(False)
    device.stream_feed(msgs)
    got = [(o.type, o.user_ref, o.locate, o.side, o.qty, o.price) for o in device.orders(0.3)]
    assert got == expected
    assert device.read_counters()["egress_enter"] == sum(o[0] == "O" for o in expected)
    assert len(list(device.tops(0.1))) == direct.read_counters()["tob_sent"]
    assert device.counters["tob_lost"] == 0
    transport.close()
    server.close()
