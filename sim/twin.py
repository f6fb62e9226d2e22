"""The device twin: the whole core, Verilated, served behind UDP sockets on loopback.

A :class:`Twin` builds the core (:mod:`.twinbuild`, cached) and runs it as a native process
that simulates it cycle by cycle with no Python in the loop. The process binds one UDP socket
per *role* on ``host`` (127.0.0.1 unless told otherwise), each on a given port or a free one:

``feed``
    MoldUDP64 packets; each becomes a frame to the feed group and port (``feed_group``,
    ``feed_port``), its destination MAC the group's multicast MAC.
``tick``
    tick records, to the device's IP and ``tick_port``.
``control``
    control requests, to the device's IP and ``control_port``; responses come back from this
    socket.
``order``
    the OUCH port: fills sent here go to the device's IP and ``order_port``, and the orders the
    device sends leave from here (so an exchange answers to the right place).

Every datagram a role's socket receives becomes an untagged Ethernet/IPv4/UDP frame into the
core's ``rx`` stream: source IP and port the real sender's (so the control plane's peer check
sees 127.0.0.1), destination the role's address above with the *configured* core port whatever
the socket's own port, source MAC the gateway's, a correct IPv4 header checksum, UDP checksum 0,
padded to 60 bytes. Frames go in back to back, one 8-byte beat a cycle with ``ifg`` idle cycles
between frames (default 3: a 10G MAC's inter-frame gap and preamble; more paces a feed), queued
while the ``rx`` is busy (frames over 9014 bytes are dropped, ``rx_oversize``). The twin assumes
an ``rx`` that is never back-pressured, as the core's is; a beat the core did not accept counts
``rx_lost``.

Every frame the core sends on ``tx`` is parsed and its UDP payload sent to its destination IP if
that is in 127/8, else to 127.0.0.1, at its destination port, from the role socket whose core
port is the frame's source port (else from the feed socket): top-of-book frames reach
``127.0.0.1:tob_port``, orders ``127.0.0.1:gateway_port`` (unless ``gateway_ip`` is another
loopback address). Frames that are not IPv4/UDP, sends that fail and datagrams the twin could
not take in are dropped and counted (``dropped`` in the statistics); a frame addressed to one of
the twin's own sockets is dropped too (``tx_self_addressed``), never looped back in.

Time: the twin simulates cycles while there is work (frames queued or going in, a frame coming
out of ``tx``) and then ``tail`` more idle cycles (default 100 000, enough for every response
the core makes), after which it blocks in ``poll()`` until a datagram arrives: simulated time does
not pass while the device is idle with nothing pending beyond that tail, so the core's cycle
counter only measures simulated work. While running it polls its sockets every ``poll_cycles``
cycles (default 256). Cycle 0 is the first clock edge after reset; before it reports ready the
twin runs ``warmup`` cycles (long enough for every reset-time memory sweep). Cycles are the
core's own: a frame's cycle is the one at which the core took its first beat.

Output: one JSON line on stdout per event: ``{"event": "ready", "pid", "host", "ports": {role:
port}, "tap", "core": {"ip", "mac", "feed_group", "ports": {role: core port}}, "cycle",
"tail", "poll_cycles", "ifg"}`` once the sockets are bound and the core is out of reset;
``{"event": "stats", ...}`` every second with ``--stats`` and on SIGUSR1; ``{"event": "exit",
...}`` on the way out. A statistics line holds ``cycles`` (simulated since ready), ``wall_s``,
``sim_s`` (wall time spent simulating), ``cpu_s`` (the process's CPU time), ``cycles_per_s``
(cycles / sim_s), ``frames_in``,
``frames_out``, ``bytes_in``, ``bytes_out``, ``datagrams_in``, ``datagrams_out``, ``queued``,
``dropped`` (by reason) and ``dropped_total``, ``tap_errors``. The process ends cleanly on
SIGTERM or SIGINT, and with ``--parent-watch`` when its stdin reaches end of file (the
:class:`Twin` keeps a pipe open there, so a parent that dies takes the twin with it).

The tap (``tap=PORT``): every frame in and out is also sent to ``127.0.0.1:PORT``, in the format
of :mod:`tick2quote.host.protocol.tap`; :class:`TapListener` receives and decodes it.

The default configuration (:func:`twin_config`) is the core's own with ``peers=("127.0.0.1",)``
and small capacities (:data:`SMALL_CAPACITIES`: 64 symbols, a 256 x 4 order table, 8 levels, a
256-entry UserRefNum window) for a quick build; ``full=True`` keeps the core's capacities. The
session token is drawn at random per build cache (:attr:`Twin.token`, file :attr:`Twin.token_path`,
mode 0600).

Speed: the core simulates at roughly 0.5 to 0.7 million cycles a second on one core of the
project's machines, idle or under a paced feed, and 1.1 to 1.4 times that with ``pgo`` (see
:func:`~.twinbuild.build_twin`); a stand-in core of a few registers runs at about 20 million.
The cost is the core's own logic, evaluated every cycle.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping

from ..hdl.coremap import CoreConfig
from ..host.protocol import tap as tap_codec
from ..host.protocol.control import RegisterClient
from .twinbuild import TwinBuild, TwinBuildError, build_twin

__all__ = [
    "ROLES",
    "SMALL_CAPACITIES",
    "TwinError",
    "TwinBuildError",
    "Twin",
    "TapListener",
    "twin_config",
    "warmup_cycles",
    "train",
]

ROLES = ("feed", "tick", "control", "order")
#: Capacities of the default twin: quick to build, enough for a feed of up to 63 symbols.
SMALL_CAPACITIES = {
    "symbols": 64,
    "order_sets": 256,
    "order_ways": 4,
    "ladder_depth": 8,
    "ref_window": 256,
}
_CORE_PORT = {
    "feed": "feed_port",
    "tick": "tick_port",
    "control": "control_port",
    "order": "order_port",
}


class TwinError(RuntimeError):
    """The twin process could not start, died, or did not answer (with its stderr tail)."""


def twin_config(*, full: bool = False, **overrides) -> CoreConfig:
    """The default twin configuration: :class:`CoreConfig` with ``peers=("127.0.0.1",)`` and
    :data:`SMALL_CAPACITIES` (the core's own defaults with ``full``), then ``overrides``."""
    base = {} if full else dict(SMALL_CAPACITIES)
    return CoreConfig(**{"peers": ("127.0.0.1",), **base, **overrides})


def warmup_cycles(config: CoreConfig) -> int:
    """Cycles to run after reset before the twin is ready: a margin over the longest reset-time
    memory sweep of a core built with ``config``."""
    longest = max(
        config.symbols,
        config.order_sets * config.order_ways,
        config.ref_window,
        config.symbols * config.ladder_depth,
    )
    return 4 * longest + 1024


class Twin:
    """A running device twin (see the module documentation); a context manager.

    Parameters
    ----------
    config:
        What the core is built with; None for :func:`twin_config` with a session token drawn
        at random per build cache (:attr:`token`, kept in :attr:`token_path`, mode 0600).
    host:
        Address the role sockets bind to.
    ports:
        Socket port per role (missing or 0: a free one); see :data:`ROLES`.
    tap:
        UDP port on 127.0.0.1 to send the tap to (None: no tap).
    tail, poll_cycles:
        Idle cycles simulated after the last activity; cycles between socket polls.
    ifg:
        Idle cycles between frames into the core (3: back to back at 10G; more paces a feed).
    stats_interval:
        Ask for a statistics line every second (``on_stats`` sees each one).
    core_factory:
        Makes the core from the config (default :class:`tick2quote.hdl.core.Core`).
    pgo:
        Build with a profile of :func:`train` (see :func:`~.twinbuild.build_twin`): a longer
        first build, a faster twin.
    build:
        A ready :class:`~.twinbuild.TwinBuild` to run instead of building.

    Attributes (after :meth:`start`): :attr:`ports` (role -> bound port), :attr:`config`,
    :attr:`token`, :attr:`description` (the register map), :attr:`ready` (the ready line).
    """

    def __init__(
        self,
        config: CoreConfig | None = None,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        tap: int | None = None,
        *,
        tail: int = 100_000,
        poll_cycles: int = 256,
        ifg: int = 3,
        stats_interval: bool = False,
        on_stats: Callable[[dict], None] | None = None,
        core_factory: Callable[[CoreConfig], object] | None = None,
        random_token: bool | None = None,
        pgo: bool = False,
        build: TwinBuild | None = None,
        ready_timeout: float = 60.0,
    ):
        unknown = set(ports or {}) - set(ROLES)
        if unknown:
            raise ValueError(f"ports has unknown roles {sorted(unknown)}; roles are {ROLES}")
        self.random_token = config is None if random_token is None else random_token
        self.config = config if config is not None else twin_config()
        self.host, self.tap = host, tap
        self.requested_ports = {role: int((ports or {}).get(role, 0)) for role in ROLES}
        self.tail, self.poll_cycles, self.stats_interval = tail, poll_cycles, stats_interval
        self.ifg = ifg
        self.on_stats, self.core_factory = on_stats, core_factory
        self.build, self.ready_timeout, self.pgo = build, ready_timeout, pgo
        self.ports: dict[str, int] = {}
        self.ready: dict | None = None
        self.exit_stats: dict | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._stats_seen, self._last_stats = 0, None
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    # ------------------------------------------------------------------ properties
    @property
    def token(self) -> int:
        """The session token the core was built with."""
        return self.config.token

    @property
    def token_path(self):
        """The file holding a randomly drawn token (None otherwise)."""
        return self.build.token_path if self.build else None

    @property
    def description(self) -> dict | None:
        """The core's register map (``describe()``), for :class:`RegisterClient`."""
        return self.build.description if self.build else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id (None before :meth:`start`)."""
        return self._proc.pid if self._proc else None

    def address(self, role: str) -> tuple[str, int]:
        """``(host, port)`` of a role's socket."""
        return (self.ready["host"], self.ports[role])

    # ------------------------------------------------------------------ life cycle
    def command(self) -> list[str]:
        """The twin's command line for the current build and settings."""
        cfg = self.config
        cmd = [str(self.build.binary), "--host", self.host, "--parent-watch"]
        for role in ROLES:
            cmd += [f"--{role}-port", str(self.requested_ports[role])]
            cmd += [f"--core-{role}-port", str(getattr(cfg, _CORE_PORT[role]))]
        cmd += ["--device-ip", cfg.ip, "--device-mac", f"{cfg.mac:012x}"]
        cmd += ["--feed-group", cfg.feed_group, "--src-mac", f"{cfg.gateway_mac:012x}"]
        cmd += ["--tail", str(self.tail), "--poll-cycles", str(self.poll_cycles)]
        cmd += ["--ifg", str(self.ifg)]
        cmd += ["--warmup", str(warmup_cycles(cfg))]
        if self.tap is not None:
            cmd += ["--tap", str(self.tap)]
        if self.stats_interval:
            cmd.append("--stats")
        return cmd

    def start(self) -> Twin:
        """Build (cached), launch and wait for the ready line; raises :class:`TwinError` if the
        process dies or is not ready within ``ready_timeout`` seconds."""
        if self._proc is not None:
            raise TwinError("this twin was already started")
        if self.build is None:
            self.build = build_twin(
                self.config,
                core_factory=self.core_factory,
                random_token=self.random_token,
                pgo=self.pgo,
                train=train,
            )
        self.config = self.build.config
        if not self.build.binary.exists():
            raise TwinError(f"twin program {self.build.binary} does not exist (build it first)")
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the parent, which stops the twin cleanly
        )
        for target, stream in (
            (self._read_stdout, self._proc.stdout),
            (self._read_stderr, self._proc.stderr),
        ):
            thread = threading.Thread(target=target, args=(stream,), daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + self.ready_timeout
        with self._cond:
            while self.ready is None and self._proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        if self.ready is None:
            code = self._proc.poll()
            self._kill()
            what = (
                f"exited with code {code} before it was ready"
                if code is not None
                else f"was not ready within {self.ready_timeout} s"
            )
            raise TwinError(f"the twin {what}{self.stderr_tail()}")
        self.ports = {role: int(self.ready["ports"][role]) for role in ROLES}
        return self

    def stop(self, timeout: float = 10.0) -> dict | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout``) and return its exit
        statistics (None if it was killed or had died)."""
        if self._proc is None:
            return self.exit_stats
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        for thread in self._threads:
            thread.join(5)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream:
                stream.close()
        for sock in self._sockets:
            sock.close()
        return self.exit_stats

    def stats(self, timeout: float = 5.0) -> dict:
        """The current statistics (asks the process for a fresh line)."""
        self._check_alive()
        with self._cond:
            seen = self._stats_seen
        self._proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._stats_seen == seen:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    self._check_alive()
                    raise TwinError(f"twin gave no statistics within {timeout} s")
                self._cond.wait(min(left, 0.1))
            return self._last_stats

    def wait_idle(self, timeout: float = 30.0, interval: float = 0.05) -> dict:
        """Wait until the twin has no work left and has run its idle tail (its cycle count
        stands still), and return the statistics then; raises :class:`TwinError` on timeout."""
        deadline = time.monotonic() + timeout
        last = self.stats()
        while True:
            time.sleep(interval)
            now = self.stats()
            if now["cycles"] == last["cycles"] and not now["queued"]:
                return now
            if time.monotonic() > deadline:
                raise TwinError(f"the twin was still busy after {timeout} s")
            last = now

    def __enter__(self) -> Twin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ clients
    def register_client(self, timeout: float = 1.0, *, token: int | None = None) -> RegisterClient:
        """A :class:`RegisterClient` over a UDP socket to the control role (closed by
        :meth:`stop`), with this twin's token unless ``token`` is given. A request with no
        answer within ``timeout`` raises :class:`TimeoutError`."""
        if self.description is None:
            raise TwinError("this core publishes no register map")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(timeout)
        sock.connect(self.address("control"))

        def exchange(payload: bytes) -> bytes:
            sock.send(payload)
            try:
                return sock.recv(65536)
            except TimeoutError:
                self._check_alive()
                raise TimeoutError(
                    f"no answer from the twin's control socket {self.address('control')} "
                    f"within {timeout} s (the device drops requests it does not accept)"
                ) from None

        client = RegisterClient(self.description, exchange, self.token if token is None else token)
        client.socket = sock
        self._sockets.append(sock)
        return client

    # ------------------------------------------------------------------ internals
    def _read_stdout(self, stream) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._cond:
                kind = event.get("event")
                if kind == "ready":
                    self.ready = event
                elif kind == "stats":
                    self._stats_seen += 1
                    self._last_stats = event
                elif kind == "exit":
                    self.exit_stats = event
                self._cond.notify_all()
            if kind == "stats" and self.on_stats:
                self.on_stats(event)
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self, stream) -> None:
        for line in stream:
            self._stderr.append(line.rstrip("\n"))

    def stderr_tail(self) -> str:
        """The last lines the process wrote on stderr, as a suffix for an error message."""
        for thread in self._threads[1:]:
            thread.join(1)
        return ":\n" + "\n".join(self._stderr) if self._stderr else " (no output on stderr)"

    def _check_alive(self) -> None:
        if self._proc is None:
            raise TwinError("the twin is not started")
        code = self._proc.poll()
        if code is not None:
            how = f"signal {-code}" if code < 0 else f"code {code}"
            raise TwinError(
                f"the twin (pid {self._proc.pid}) exited with {how}{self.stderr_tail()}"
            )

    def _kill(self) -> None:
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.wait()


class TapListener:
    """Receives a twin's tap on ``127.0.0.1``: pass :attr:`port` as the twin's ``tap``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.socket.bind((host, port))
        self.port = self.socket.getsockname()[1]

    def receive(self, count: int, timeout: float = 5.0) -> list[tap_codec.TapRecord]:
        """The next ``count`` tapped frames; raises :class:`TimeoutError` naming how many came
        when fewer arrive within ``timeout`` seconds."""
        out: list[tap_codec.TapRecord] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(out)} of {count} tap records within {timeout} s")
            self.socket.settimeout(left)
            try:
                out.append(tap_codec.decode(self.socket.recv(65536)))
            except TimeoutError:
                continue
        return out

    def close(self) -> None:
        """Close the socket."""
        self.socket.close()

    def __enter__(self) -> TapListener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train(build: TwinBuild, messages: int = 8000) -> dict:
    """Run ``build`` on a representative workload and return its exit statistics: a generated
    feed of ``messages`` order-flow messages on symbols the core quotes, with quoting switched
    on (kill switch off) when the core has a register map, control reads between packets, and
    the idle tail. This is the profile a ``pgo`` build is optimised for."""
    from ..host.protocol import moldudp64
    from .feed import FeedConfig, generate, to_packets

    symbols = max(1, min(50, build.config.symbols - 1))
    packets = to_packets(generate(FeedConfig(seed=11, symbols=symbols, messages=messages)))
    with Twin(build=build, tail=20_000, ifg=32) as twin:
        client = twin.register_client(timeout=5.0) if twin.description else None
        if client is not None:
            client.write("kill_switch", 0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        start = twin.stats()["frames_in"]
        for index, packet in enumerate(packets):
            sock.sendto(moldudp64.encode(packet), twin.address("feed"))
            if client is not None and index % 50 == 0:
                client.read("feed_mold_packets")
        deadline = time.monotonic() + 60
        while twin.stats()["frames_in"] < start + len(packets) and time.monotonic() < deadline:
            time.sleep(0.05)
        sock.close()
        return twin.stop()
