"""The performance table: every figure measured side by side in one run (``t2q bench``).

Each part measures with the project's own bench modules and says how:

``latency``
    gateware latency in cycles from simulation: the feed handler's parse latency
    (:mod:`tick2quote.sim.bench_parse`, cocotb on Verilator), the book's update latency
    (:mod:`tick2quote.sim.bench_book`, amaranth.sim) and the whole core's tick-to-quote, unloaded
    and loaded (:mod:`tick2quote.sim.bench_core`, cocotb on Verilator, every order checked
    against the reference models), as min / p50 / p99 / max with sample counts, in ns at the
    156.25 MHz core clock and at the Fmax of a synthesis report when one is given;
``throughput``
    the core's sustained messages per cycle (the fastest rate of an overload sweep at which no
    buffer overflowed and no symbol went stale: the twin's, below, and the cocotb bench's), in
    messages per second at the core clock and at Fmax, against 10 GbE line rate for the same
    message mix (:func:`wire_bytes`: the bytes a message takes on the wire, its share of the
    Ethernet, IPv4, UDP and MoldUDP64 headers, FCS, preamble and inter-frame gap included);
``software``
    the same generated session (same seed and symbols, longer) through itch-book's C++ book
    engine and through the project's Python reference book (:class:`~tick2quote.sim.models.
    book.BookModel`, decoding included) on this machine's CPU, in the same run: messages per
    second, the gateware's rate as a ratio of each, and whether both books end in the same
    state (best bid and offer of every symbol);
``twin``
    the session through the device twin with ``t2q run``'s logic (:class:`~.run.Runner`) in a
    child process, paced: simulated cycles and messages per second, tick-to-quote from the tap,
    host round trips on loopback, and the peak RSS of the twin and of the host driver process;
    then unpaced at several idle gaps between frames: the core's sustained messages per cycle
    (the fastest gap with no buffer overflow and no stale mark) with real inter-frame gaps.

Every part uses the same generated session (:func:`_session`: seed 7, 12 symbols, the one
:mod:`tick2quote.sim.bench_core` quotes), each as long as its mode says.

No figure is asserted: the table reports what this machine did. :func:`run_bench` returns
the JSON-ready figures; :mod:`.bench_cli` makes the table, the Markdown and the README section.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .latency import LatencyRecorder

__all__ = [
    "CORE_CLOCK_HZ",
    "LINE_RATE_BPS",
    "Mode",
    "MODES",
    "PARTS",
    "wire_bytes",
    "measure_parse",
    "measure_book",
    "measure_core",
    "measure_software",
    "measure_twin",
    "load_synthesis",
    "run_bench",
]

CORE_CLOCK_HZ = 156_250_000
LINE_RATE_BPS = 10_000_000_000
#: Bytes of a frame on the wire around the UDP payload: preamble and SFD 8, Ethernet header 14,
#: IPv4 20, UDP 8, FCS 4, inter-frame gap 12; a frame (header to FCS) is at least 64 bytes.
PREAMBLE, ETHERNET, IPV4, UDP, FCS, IFG, MIN_FRAME = 8, 14, 20, 8, 4, 12, 64
MOLD_HEADER = 20
PARTS = ("parse", "book", "core", "software", "twin")
_SEED, _SYMBOLS = 7, 12  # the session of sim.bench_core (seed and feed symbols)
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Mode:
    """How much each part measures: messages of the parse, book and core runs, the cocotb
    overload sweep's idle cycles per message (``paces``), messages of the software books and of
    the twin runs, and the twin sweep's idle cycles between frames (``gaps``; 3 is 10 GbE's
    preamble and inter-frame gap, 20 bytes, in 8-byte beats)."""

    name: str
    parse: int
    book: int
    core: int
    paces: tuple[int, ...]
    software: int
    twin: int
    gaps: tuple[int, ...] = ()


MODES = {
    "short": Mode(
        "short",
        parse=2000,
        book=600,
        core=300,
        paces=(0, 10, 20),
        software=60_000,
        twin=1000,
        gaps=(0, 3, 16, 32, 64),
    ),
    "full": Mode(
        "full",
        parse=20_000,
        book=3000,
        core=3000,
        paces=(0, 5, 10, 15, 20),
        software=500_000,
        twin=3000,
        gaps=(0, 1, 2, 3, 8, 16, 32, 48, 64),
    ),
}


# -- helpers -------------------------------------------------------------------------------------


def _summary(samples: Sequence[int], name: str) -> dict:
    rec = LatencyRecorder(name, "cycles", highest=1 << 32)
    rec.record_all(samples)
    s = rec.summary()
    return {"count": s.count, "min": s.min, "p50": s.p50, "p99": s.p99, "max": s.max}


def _ns(summary: dict, hz: float | None) -> dict | None:
    if not hz or not summary.get("count"):
        return None
    keys = ("min", "p50", "p99", "max")
    return {k: round(summary[k] * 1e9 / hz, 1) for k in keys if summary.get(k) is not None}


@contextlib.contextmanager
def _quiet(log: Path | None) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so the simulators'
    output too) to ``log`` while the block runs."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _session(messages: int) -> list:
    from ..sim.feed import FeedConfig, generate

    return generate(FeedConfig(seed=_SEED, symbols=_SYMBOLS, messages=messages))


def wire_bytes(messages: Sequence, per_packet: int = 8) -> dict:
    """Bytes on a 10 GbE wire per message of ``messages`` packed ``per_packet`` to a MoldUDP64
    packet, one packet a frame: the message and its length prefix, plus its share of the
    MoldUDP64 header, UDP, IPv4 and Ethernet headers, FCS (padding to 64 bytes), preamble and
    inter-frame gap. Also the messages per second that fill the line."""
    from ..host.protocol import itch

    total = frames = 0
    for start in range(0, len(messages), per_packet):
        batch = messages[start : start + per_packet]
        payload = MOLD_HEADER + sum(2 + len(itch.encode_message(m)) for m in batch)
        frame = max(ETHERNET + IPV4 + UDP + payload + FCS, MIN_FRAME)
        total += PREAMBLE + frame + IFG
        frames += 1
    per_message = total / len(messages)
    body = sum(len(itch.encode_message(m)) for m in messages) / len(messages)
    return {
        "per_packet": per_packet,
        "messages": len(messages),
        "mean_message_bytes": round(body, 2),
        "wire_bytes_per_message": round(per_message, 2),
        "line_rate_messages_per_s": LINE_RATE_BPS / 8 / per_message,
    }


# -- the parts -----------------------------------------------------------------------------------


def measure_parse(messages: int) -> dict:
    """Parse latency (frame beat with the message's last byte in -> event out) and the feed
    handler's sustained messages per cycle, cocotb on Verilator."""
    from ..sim.bench_parse import measure

    r = measure("verilator", messages)
    lows = [v[0] for v in r["latency"].values()]
    highs = [v[1] for v in r["latency"].values()]
    count = sum(v[2] for v in r["latency"].values())
    return {
        "latency": {"count": count, "min": min(lows), "max": max(highs)},
        "kinds": len(r["latency"]),
        "messages_per_cycle": r["messages"] / r["cycles"],
        "messages": r["messages"],
        "cycles": r["cycles"],
    }


def measure_book(messages: int) -> dict:
    """Book update latency (event in -> top-of-book record out) per kind, amaranth.sim."""
    from ..sim.bench_book import measure_timing

    r = measure_timing(messages)
    samples = [v for values in r["samples"].values() for v in values]
    return {
        "latency": _summary(samples, "book update"),
        "replace": _summary(r["samples"].get("U", []), "replace"),
        "events_per_cycle": r["events_per_cycle"],
        "events": r["events"],
    }


def measure_core(messages: int, paces: Sequence[int]) -> dict:
    """The whole core on Verilator (cocotb): tick-to-quote unloaded (one message a frame, 120
    idle cycles a message) and loaded (8 messages a frame, 25 idle cycles a message), orders
    checked against the reference models; then the overload sweep (8 messages a frame, ``paces``
    idle cycles a message, unchecked)."""
    from ..sim import bench_core
    from ..sim.harness import COCOTB_TEST_DIR

    sys.path.insert(0, str(COCOTB_TEST_DIR))
    unloaded = bench_core.run(messages, pace=120, per_packet=1, check=True)
    loaded = bench_core.run(messages, pace=25, per_packet=8, check=True)
    sweep = []
    for pace in paces:
        r = bench_core.run(messages, pace=pace, per_packet=8, check=False)
        c = r["counters"]
        sweep.append({
            "pace": pace,
            "messages_per_cycle": r["messages"] / r["cycles"],
            "feed_overflow": c["feed_overflow"],
            "stale_marks": c["core_stale_marks"],
            "orders": r["orders"],
            "model_orders": r["model_orders"],
        })  # fmt: skip
    clean = [s for s in sweep if not s["feed_overflow"] and not s["stale_marks"]]
    best = max(clean, key=lambda s: s["messages_per_cycle"], default=None)
    fastest = max(s["messages_per_cycle"] for s in sweep) if sweep else None
    return {
        "unloaded": _summary(unloaded["latencies"], "unloaded"),
        "loaded": _summary(loaded["latencies"], "loaded"),
        "sweep": sweep,
        "sustained_messages_per_cycle": best["messages_per_cycle"] if best else None,
        "input_bound": best is not None and best["messages_per_cycle"] == fastest,
        "messages": messages,
    }


def measure_software(messages: int) -> dict:
    """The session through itch-book's C++ engine and the Python reference book, timed on this
    CPU from the same encoded bytes; whether both end in the same best bid and offer."""
    import numpy as np
    from itch_book._core import Session

    from ..host.protocol import itch
    from ..sim.models.book import BookModel

    session = _session(messages)
    data = itch.encode_blocks(session)
    buffer = np.frombuffer(data, dtype=np.uint8)
    cpp = Session(tables=["bbo"], depth=0, symbols=[])
    start = time.perf_counter()
    cpp.feed(buffer)
    cpp_s = time.perf_counter() - start
    stats = cpp.stats()
    model = BookModel(max_symbols=1024)
    start = time.perf_counter()
    decoded = itch.decode_blocks(data)
    for seq, msg in enumerate(decoded, start=1):
        model.apply(msg, seq)
    py_s = time.perf_counter() - start
    bbo = cpp.take_bbo()
    final: dict[int, tuple] = {}
    columns = [bbo[k].tolist() for k in ("locate", "bid_px", "bid_sz", "ask_px", "ask_sz")]
    for locate, *top in zip(*columns):
        final[locate] = tuple(top)
    disagree = [
        locate
        for locate, top in final.items()
        if (lambda b: (b.bid_px, b.bid_sz, b.ask_px, b.ask_sz))(model.bbo(locate)) != top
    ]
    return {
        "messages": len(session),
        "cpp": {
            "seconds": cpp_s,
            "messages_per_s": len(session) / cpp_s,
            "decoded": stats["messages"],
        },  # fmt: skip
        "python": {"seconds": py_s, "messages_per_s": len(session) / py_s},
        "symbols_compared": len(final),
        "final_state_agrees": not disagree and stats["messages"] == len(session),
        "disagreeing_symbols": disagree,
    }


def measure_twin(messages: int, gaps: Sequence[int] = (), timeout: float = 900.0) -> dict:
    """A generated feed through the device twin, run by ``t2q run``'s logic in a child process
    (so its peak RSS is the host driver's own), then unpaced at each of ``gaps`` idle cycles
    between frames; see :func:`_twin_child`."""
    code = (
        "from tick2quote.host.bench import _twin_child; "
        f"_twin_child({int(messages)}, {[int(g) for g in gaps]!r})"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"the twin run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def _peak_rss_kib(pid: int | str = "self") -> int | None:
    """VmHWM (peak resident set) of a process, KiB (None when unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _input_cycles(tapped, feed_port: int, ifg: int) -> int:
    """Cycles the feed's frames hold the core's input: their beats and the idle gap after."""
    from .protocol import tap

    return sum(
        -(-len(record.frame) // 8) + ifg
        for record in tapped
        if record.direction == tap.IN and _udp_port(record.frame) == feed_port
    )


def _twin_child(messages: int, gaps: Sequence[int] = ()) -> None:
    """In a child process: stream the bench's generated session through the twin paced (fills
    on; speed, tap latency, round trips, memory), then unpaced at each of ``gaps`` idle cycles
    between frames (fills off; offered rate, buffer overflows, stale marks); print the figures
    as one JSON line."""
    import tempfile

    from .run import DEFAULT_IFG, Runner, default_feed, load_feed
    from .run_cli import open_target

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feed.pcap"
        feed = load_feed(default_feed(path, seed=_SEED, symbols=_SYMBOLS, messages=messages))
    with open_target("twin") as target:
        runner = Runner(target, feed, rate=5000.0).run()
        twin_rss = _peak_rss_kib(target.twin.pid)
        feed_port = target.twin.config.feed_port
    twin = runner.twin or {}
    sim_s = twin.get("sim_s") or 0.0
    per_message = _input_cycles(runner.tapped, feed_port, DEFAULT_IFG) / feed.messages
    sweep = []
    for gap in gaps:
        with open_target("twin", ifg=gap) as target:
            run = Runner(target, feed, rate=None, fills=False).run()
        cycles = _input_cycles(run.tapped, feed_port, gap)
        sweep.append({
            "ifg": gap,
            "messages_per_cycle": feed.messages / cycles,
            "feed_overflow": run.counters["feed_overflow"],
            "stale_marks": run.counters["core_stale_marks"],
            "orders": len(run.orders),
        })  # fmt: skip
    clean = [s for s in sweep if not s["feed_overflow"] and not s["stale_marks"]]
    best = max(clean, key=lambda s: s["messages_per_cycle"], default=None)
    wire = sum(
        PREAMBLE + max(ETHERNET + IPV4 + UDP + len(d.payload) + FCS, MIN_FRAME) + IFG
        for d in feed.datagrams
    )
    out = {
        "messages": feed.messages,
        "cycles": twin.get("cycles"),
        "sim_s": sim_s,
        "cycles_per_s": twin.get("cycles_per_s"),
        "cycles_per_message": per_message,
        "unpaced_messages_per_s": twin["cycles_per_s"] / per_message if per_message else None,
        "ifg": DEFAULT_IFG,
        "tick_to_quote": _recorder_summary(runner.device_cycles),
        "round_trip_ns": _recorder_summary(runner.round_trip),
        "round_trip_clock": runner.round_trip_clock,
        "rate": 5000.0,
        "twin_peak_rss_kib": twin_rss,
        "host_peak_rss_kib": _peak_rss_kib(),
        "sweep": sweep,
        "sustained_messages_per_cycle": best["messages_per_cycle"] if best else None,
        "sustained_ifg": best["ifg"] if best else None,
        "input_bound": best is not None and best["ifg"] == min(gaps),
        "wire_bytes_per_message": wire / feed.messages,
        "line_rate_messages_per_s": LINE_RATE_BPS / 8 / (wire / feed.messages),
    }
    print(json.dumps(out))


def _udp_port(frame: bytes) -> int | None:
    """The UDP destination port of an untagged IPv4 frame (None for anything else)."""
    if len(frame) < 38 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    at = 14 + 4 * (frame[14] & 0x0F)
    return int.from_bytes(frame[at + 2 : at + 4], "big")


def _recorder_summary(recorder) -> dict | None:
    if recorder is None:
        return None
    s = recorder.summary()
    return {"count": s.count, "min": s.min, "p50": s.p50, "p99": s.p99, "max": s.max}


def load_synthesis(path: str | Path | None) -> dict | None:
    """Figures of an out-of-context build written by ``python -m tick2quote.sim.bench_core
    --synth-only --synth-json PATH`` (``fmax_mhz`` at least); None without a path."""
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    if not isinstance(data.get("fmax_mhz"), (int, float)):
        raise ValueError(f"{path}: no fmax_mhz figure")
    return data


# -- the whole table -----------------------------------------------------------------------------


def run_bench(
    mode: Mode,
    *,
    parts: Sequence[str] = PARTS,
    synthesis: dict | None = None,
    on_step: Callable[[str], None] | None = None,
    log: Path | None = None,
) -> dict:
    """Measure ``parts`` (of :data:`PARTS`) at ``mode``'s sizes and return every figure (the
    table is :func:`tick2quote.host.bench_cli.table_rows`); the simulators' output goes to
    ``log``."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; the parts are {PARTS}")
    fmax = synthesis["fmax_mhz"] * 1e6 if synthesis else None
    data = {
        "mode": mode.name,
        "sizes": {k: v for k, v in vars(mode).items() if k != "name"},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },  # fmt: skip
        "date": time.strftime("%Y-%m-%d"),
        "clock_hz": CORE_CLOCK_HZ,
        "fmax_hz": fmax,
        "synthesis": synthesis,
    }
    measures = {
        "parse": lambda: measure_parse(mode.parse),
        "book": lambda: measure_book(mode.book),
        "core": lambda: measure_core(mode.core, mode.paces),
        "software": lambda: measure_software(mode.software),
        "twin": lambda: measure_twin(mode.twin, mode.gaps),
    }
    for part in PARTS:
        if part in parts:
            if on_step:
                on_step(part)
            with _quiet(log):
                data[part] = measures[part]()
    data["mix"] = wire_bytes(_session(mode.core), per_packet=8)
    return data
