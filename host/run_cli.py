"""``t2q run``: a feed through a device (by default the twin) with the host's simulated exchange,
then a summary of what happened and how fast (glue over :mod:`.run`).

:func:`open_target` opens the device a run talks to (the twin, a device over UDP, or the
in-process model); :func:`summary` is the JSON summary (``--summary-json``) and
:func:`summary_tables` shows it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from .device import Device, Top, to_ns
from .latency import format_table
from .monitor import drop_counters, overload_counters
from .run import DEFAULT_IFG, DEFAULT_RATE, Recorder, RunError, Runner, default_feed, load_feed
from .transport import UdpTransport

__all__ = ["Target", "open_target", "run", "summary", "summary_tables", "order_event", "top_event"]

_RISK = ("pull_loss", "pull_halted", "pull_stale", "band_reject", "edge_reject", "throttled")


# -- targets -------------------------------------------------------------------------------------


@dataclass
class Target:
    """An open device: the :class:`Device`, the host's ``(ip, port)`` its orders and top-of-book
    updates go to (None for the model), and for the twin the running ``twin`` and its ``tap``.
    ``kind`` is ``twin``, ``udp``, ``pcie`` or ``model``; ``name`` the target as given."""

    kind: str
    name: str
    device: Device
    recorder: Recorder
    gateway: tuple[str, int] | None = None
    tob: tuple[str, int] | None = None
    twin: object = None
    tap: object = None

    def close(self) -> dict | None:
        """Close the transport and tap, stop the twin; returns the twin's exit statistics."""
        self.recorder.close()
        if self.tap is not None:
            self.tap.close()
        return self.twin.stop() if self.twin is not None else None

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _local_address(host: str, port: int) -> str:
    """The local IPv4 address this host reaches ``host`` from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return probe.getsockname()[0]


def _udp_target(spec: str, description: dict | None, token: int, ports: dict, timeout: float):
    from .modeldevice import model_description

    address = spec.removeprefix("udp://")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"target must be udp://HOST:PORT (the control port), not {spec!r}")
    if description is None:
        from ..sim.twin import twin_config

        description = model_description(twin_config())
    control, bind = int(port), _local_address(host, int(port))
    probe = UdpTransport(host, {"control": control}, bind_host=bind, timeout=timeout)
    try:
        regs = Device(probe, description, token=token).read_registers(
            ["feed_port0", "tick_port", "order_port"]
        )
    finally:
        probe.close()
    device_ports = {"feed": regs["feed_port0"] & 0xFFFF, "tick": regs["tick_port"]}
    device_ports |= {"orders": regs["order_port"], **{k: v for k, v in ports.items() if v}}
    transport = UdpTransport(
        host, {"control": control, **device_ports}, bind_host=bind, timeout=timeout
    )
    recorder = Recorder(transport)
    device = Device(recorder, description, token=token)
    return Target(
        "udp",
        spec,
        device,
        recorder,
        transport.listen_address("orders"),
        transport.listen_address("tob"),
    )


def _pcie_target(spec: str, description: dict | None, token: int, timeout: float):
    """A card on the PCIe bus (``pcie://0000:01:00.0``), through sysfs and a huge page (see
    :mod:`.pcie_transport` for what the machine needs); orders and top-of-book updates come
    back over the card-to-host ring, so no gateway address is set."""
    from .modeldevice import model_description
    from .pcie_transport import PcieTransport, SysfsBackend

    bdf = spec.removeprefix("pcie://")
    if not re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]", bdf):
        raise ValueError(f"target must be pcie://DOMAIN:BUS:DEVICE.FUNCTION, not {spec!r}")
    if not os.path.isdir(f"/sys/bus/pci/devices/{bdf}"):
        raise ValueError(f"no PCI device {bdf} on this machine (see lspci)")
    if description is None:
        from ..sim.twin import twin_config

        description = model_description(twin_config())
    transport = PcieTransport(SysfsBackend(bdf), timeout=timeout)
    recorder = Recorder(transport)
    return Target("pcie", spec, Device(recorder, description, token=token), recorder)


def open_target(
    spec: str = "twin",
    *,
    ifg: int = DEFAULT_IFG,
    description: dict | None = None,
    token: int = 0,
    ports: dict | None = None,
    timeout: float = 0.2,
) -> Target:
    """Open the device ``spec`` names.

    ``twin``: start the device twin (:class:`~tick2quote.sim.twin.Twin` with its default
    configuration and build cache, bound to loopback, with a tap), ``ifg`` idle cycles between
    frames into its core. ``model``: a :class:`~.modeldevice.ModelDevice` with the twin's
    configuration. ``pcie://BDF``: a card on this machine's PCIe bus. ``udp://HOST:PORT``: a
    device whose control port is ``PORT``, described by ``description`` (default: the register
    map of a core built with the twin's configuration)
    and reached with ``token``; its feed, tick and order ports are read from its registers
    unless ``ports`` names them. ``timeout``: seconds a control request waits per attempt.
    """
    if spec == "model":
        from ..sim.twin import twin_config
        from .modeldevice import ModelDevice

        model = ModelDevice(twin_config())
        recorder = Recorder(model)
        return Target("model", spec, Device(recorder, model.description), recorder)
    if spec.startswith("udp://"):
        return _udp_target(spec, description, token, ports or {}, timeout)
    if spec.startswith("pcie://"):
        return _pcie_target(spec, description, token, timeout)
    if spec != "twin":
        raise ValueError(
            f"target must be 'twin', 'model', udp://HOST:PORT or pcie://BDF, not {spec!r}"
        )
    from ..sim.twin import TapListener, Twin

    tap = TapListener()
    twin = Twin(tap=tap.port, ifg=ifg)
    try:
        twin.start()
        roles = {"control": "control", "feed": "feed", "tick": "tick", "orders": "order"}
        ports = {k: twin.ports[v] for k, v in roles.items()}
        transport = UdpTransport("127.0.0.1", ports, timeout=timeout)
    except BaseException:
        tap.close()
        twin.stop()
        raise
    recorder = Recorder(transport)
    device = Device(recorder, twin.description, token=twin.token)
    gateway, tob = transport.listen_address("orders"), transport.listen_address("tob")
    return Target("twin", spec, device, recorder, gateway, tob, twin, tap)


def order_event(order) -> dict:
    """The ``--json`` object of one order."""
    fields = ("type", "user_ref", "locate", "side", "qty", "price")
    return {"kind": "order", **{k: getattr(order, k) for k in fields}}


def top_event(top: Top) -> dict:
    """The ``--json`` object of one top-of-book update (``seq``: the MoldUDP64 sequence number
    of the message that caused it)."""
    fields = ("locate", "bid_px", "bid_sz", "ask_px", "ask_sz", "stale")
    return {"kind": "bbo", "seq": top.book_sequence, **{k: getattr(top, k) for k in fields}}


def summary(runner: Runner, plots: list[str] | None = None) -> dict:
    """The JSON summary of a finished run (the fields are listed in the README)."""
    c, ex, feed = runner.counters, runner.exchange, runner.feed
    positions, cash = ex.positions(), ex.cash()
    pnl = {s: (cash.get(s, 0) + p * runner.marks.get(s, 0)) / 1e4 for s, p in positions.items()}
    kinds = Counter(o.type for o in runner.orders)
    if runner.device_cycles is not None:
        source, cycles = "tap", runner.device_cycles.summary()
    else:
        source, cycles = "registers", runner.registers
    rt = runner.round_trip.summary()
    seconds = runner.stream_seconds
    drops = {n: c[n] for n in drop_counters(c) + overload_counters(c) if c.get(n)}
    return {
        "target": runner.target.name,
        "feed": {"path": str(feed.path), "format": feed.format, "skipped_frames": feed.skipped},
        "rate": runner.rate,
        "fills_sent": runner.fills,
        "messages": feed.messages,
        "datagrams": len(runner.sent),
        "stream_seconds": seconds,
        "messages_per_s": feed.messages / seconds if seconds > 0 else None,
        "top_of_book_updates": len(runner.tops),
        "stale_updates": sum(t.stale for t in runner.tops),
        "orders": {k: kinds.get(k, 0) for k in "OUX"} | {"total": len(runner.orders)},
        "device_orders": {k: c.get(f"egress_{k}", 0) for k in ("enter", "replace", "cancel")},
        "fills": {
            "executions": ex.counters["executed"],
            "shares": ex.counters["executed_shares"],
            "device_fills": c.get("quoter_fills", 0),
            "device_unknown_fills": c.get("quoter_unknown_fill", 0),
            "device_late_fills": c.get("quoter_late_fill", 0),
        },
        "exchange": dict(ex.counters),
        "positions": positions,
        "cash": cash,
        "marks": runner.marks,
        "pnl_dollars": sum(pnl.values()),
        "pnl_by_symbol": pnl,
        "risk": {k: c.get(f"quoter_{k}", 0) for k in _RISK},
        "gaps": c.get("feed_mold_gaps", 0),
        "stale_marks": c.get("core_stale_marks", 0),
        "drops": drops,
        "device_tick_to_quote": {
            "source": source,
            "clock_hz": runner.clock_hz,
            "cycles": asdict(cycles),
            "ns": asdict(to_ns(cycles, runner.clock_hz)),
            "registers": asdict(runner.registers),
        },
        "host_round_trip": {
            "clock": runner.round_trip_clock,
            "ns": asdict(rt),
            "orders_with_stamp": sum(o.type != "X" for o in runner.orders),
        },
        "twin": runner.twin,
        "host": runner.host_counters(),
        "counters": c,
        "plots": plots or [],
    }


def _positions(positions: dict) -> str:
    open_ = {s: p for s, p in positions.items() if p}
    if not open_:
        return "flat"
    symbol = max(open_, key=lambda s: abs(open_[s]))
    return f"{len(open_)} symbols open, largest {symbol} {open_[symbol]:+,} shares"


def summary_tables(data: dict) -> list:
    """The summary as :mod:`rich` renderables: the run, then the latency distributions."""
    from rich.table import Table

    from .latency import LatencySummary

    table = Table(title=f"t2q run: {data['feed']['path']} -> {data['target']}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    rate = data["messages_per_s"]
    pace = "as fast as possible" if data["rate"] is None else f"paced at {data['rate']:,.0f}/s"
    rows = [
        ("messages sent", f"{data['messages']:,} in {data['datagrams']:,} datagrams"),
        ("messages/s (wall)", f"{rate:,.0f} ({pace})" if rate else "-"),
    ]
    twin = data["twin"]
    if twin:
        sim_ns = twin["cycles"] * 1e9 / data["device_tick_to_quote"]["clock_hz"]
        rows += [
            ("twin cycles", f"{twin['cycles']:,} ({sim_ns / 1e6:,.2f} ms at the core clock)"),
            ("twin cycles/s", f"{twin['cycles_per_s']:,.0f}"),
        ]
    o, d, f = data["orders"], data["device_orders"], data["fills"]
    rows += [
        ("top-of-book updates", f"{data['top_of_book_updates']:,} ({data['stale_updates']} stale)"),
        ("orders O / U / X", f"{o['O']:,} / {o['U']:,} / {o['X']:,}"),
        ("device sent O / U / X", f"{d['enter']:,} / {d['replace']:,} / {d['cancel']:,}"),
        ("fills (exchange)", f"{f['executions']:,} executions, {f['shares']:,} shares"),
        (
            "fills applied by the device",
            f"{f['device_fills']:,} (late {f['device_late_fills']:,}, "
            f"unknown UserRefNum {f['device_unknown_fills']:,})",
        ),
        ("positions (exchange)", _positions(data["positions"])),
        ("PnL (exchange, marked to mid)", f"{data['pnl_dollars']:+,.2f} $"),
        ("gaps / stale marks", f"{data['gaps']} / {data['stale_marks']}"),
        ("drops / overload", ", ".join(f"{k} {v:,}" for k, v in data["drops"].items()) or "none"),
        ("risk (quoter pulls, rejects)", ", ".join(f"{k} {v:,}" for k, v in data["risk"].items())),
    ]
    for name, value in rows:
        table.add_row(name, value)
    lat = data["device_tick_to_quote"]
    rt = data["host_round_trip"]
    summaries = [
        LatencySummary(**{**lat["cycles"], "name": f"device tick-to-quote ({lat['source']})"}),
        LatencySummary(**{**lat["ns"], "name": f"  at {lat['clock_hz'] / 1e6:g} MHz"}),
        LatencySummary(**{**rt["ns"], "name": f"host round trip ({rt['clock']} stamps)"}),
    ]
    if lat["source"] == "tap":
        summaries.insert(2, LatencySummary(**{**lat["registers"], "name": "device registers"}))
    return [table, format_table(summaries, title="Latency (count = samples)")]


def _plots(runner: Runner, path: Path) -> list[str]:
    out = []
    path.parent.mkdir(parents=True, exist_ok=True)
    if runner.round_trip.count:
        out.append(str(runner.round_trip.plot(path)))
    if runner.device_cycles is not None and runner.device_cycles.count:
        device = path.with_name(f"{path.stem}-device{path.suffix}")
        out.append(str(runner.device_cycles.plot(device)))
    return out


def _params(pairs) -> dict:
    """``NAME=VALUE`` pairs as quoting parameters (``true``/``false`` or an integer)."""
    out = {}
    for pair in pairs:
        name, _, value = (part.strip() for part in pair.partition("="))
        try:
            out[name] = value == "true" if value in ("true", "false") else int(value, 0)
        except ValueError:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param") from None
    return out


def _udp_settings(description, twin_build, token, token_file) -> tuple[dict | None, int]:
    """The register description and token a udp:// target is reached with."""
    from .monitor_cli import load_description

    if twin_build:
        description = description or str(Path(twin_build) / "built.json")
        token_file = token_file or str(Path(twin_build) / "token")
    loaded = load_description(description) if description else None
    if token is not None:
        return loaded, int(token, 0)
    if token_file and Path(token_file).exists():
        return loaded, int(Path(token_file).read_text().strip(), 0)
    return loaded, 0


def _feed(path, messages, seed, symbols, out_dir: Path, err):
    """The feed to run: ``path``, or a generated one written to ``out_dir``."""
    from .protocol.errors import DecodeError

    if path is None:
        count = 3000 if messages is None else messages
        path = default_feed(out_dir / "feed.pcap", seed=seed, symbols=symbols, messages=count)
        err.print(f"feed: {count:,} generated order-flow messages, {symbols} symbols, seed {seed}")
        messages = None
    try:
        return load_feed(path, messages=messages)
    except (DecodeError, OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _open(target: str, err, **kwargs):
    """The open target, or a one-line error."""
    from ..sim.twin import TwinError
    from ..sim.twinbuild import TwinBuildError
    from .transport import DeviceTimeout

    if target == "twin":
        err.print(
            "starting the device twin (the first run builds it: a minute or two on two "
            "cores, then cached in build/twin) ..."
        )
    started = time.monotonic()
    try:
        handle = open_target(target, **kwargs)
    except DeviceTimeout as exc:
        raise click.ClickException(f"the device at {target} does not answer: {exc}") from None
    except TwinBuildError as exc:
        hint = "The twin needs a C++ compiler and make (apt-get install g++ make)"
        raise click.ClickException(f"{exc}\n{hint}; --target model runs without.") from None
    except (TwinError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if handle.twin is not None:
        err.print(
            f"twin ready in {time.monotonic() - started:.1f} s (build/twin/"
            f"{handle.twin.build.directory.name}); frames enter its core with "
            f"{kwargs['ifg']} idle cycles between them (--ifg)"
        )
    return handle


# fmt: off
@click.command()
@click.argument("feed", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="twin", show_default=True,
              help="twin, model (the reference models in process), udp://HOST:CONTROL_PORT "
              "or pcie://DOMAIN:BUS:DEVICE.FUNCTION.")
@click.option("--json", "as_json", is_flag=True,
              help="Top-of-book updates and orders as JSON lines on stdout; summary on stderr.")
@click.option("--rate", type=float, default=None,
              help="Messages/s (0: as fast as possible). Default: 5000 for a device, unpaced "
              "for the model.")
@click.option("--messages", type=int, default=None,
              help="Messages of the generated feed (default 3000), or the first N of FEED.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              default="build/run/latency.png", show_default=True,
              help="Host round-trip histogram (PNG); the device's goes next to it (-device).")
@click.option("--summary-json", "summary_path", type=click.Path(dir_okay=False),
              default="build/run/summary.json", show_default=True,
              help="The JSON summary (the generated feed goes next to it).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A quoting parameter for every symbol (e.g. spread_bps=10); repeatable.")
@click.option("--fills/--no-fills", default=True, show_default=True,
              help="Send the exchange's executions back to the device.")
@click.option("--seed", default=7, show_default=True, help="Seed of the generated feed.")
@click.option("--symbols", default=40, show_default=True, help="Symbols of the generated feed.")
@click.option("--ifg", default=DEFAULT_IFG, show_default=True,
              help="Twin: idle cycles between frames into the core (3: 10G line rate).")
@click.option("--description", type=click.Path(exists=True, dir_okay=False),
              help="udp://: the register description (JSON, or a twin build's built.json).")
@click.option("--twin-build", type=click.Path(exists=True, file_okay=False),
              help="udp://: a twin build directory (description and token from it).")
@click.option("--token", default=None, help="udp://: session token (decimal or 0x hex).")
@click.option("--token-file", type=click.Path(dir_okay=False), help="udp://: the token's file.")
@click.option("--feed-port", type=int, default=None, help="udp://: the device's feed port.")
@click.option("--tick-port", type=int, default=None, help="udp://: its tick-record port.")
@click.option("--order-port", type=int, default=None, help="udp://: its OUCH port.")
@click.option("--timeout", default=0.2, show_default=True,
              help="Seconds a control request waits per attempt (3 attempts).")
def run(feed, target, as_json, rate, messages, plot_path, summary_path, params, fills, seed,
        symbols, ifg, description, twin_build, token, token_file, feed_port, tick_port,
        order_port, timeout):
    # fmt: on
    """Stream a feed through a device and measure it: with no FEED, a generated session
    through the device twin.

    FEED may be a pcap of MoldUDP64 frames, an ITCH day file or tick records (.tick). The
    device is configured (kill switch lifted, orders and top-of-book updates sent to this
    host, quoting parameters from --param), the feed streamed at --rate, and a simulated
    exchange answers each order (Accepted / Executed / Canceled, fills back to the device).
    At the end the kill switch pulls every quote and the counters and latency registers are
    read. Prints progress, a summary and latency table; writes the plots and --summary-json.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..sim.twin import TwinError

    width = max(Console().width, 110)
    err = Console(stderr=True, width=width)
    out = err if as_json else Console(width=width)
    kind = target.split("://")[0] if "://" in target else target
    if kind not in DEFAULT_RATE:
        raise click.BadParameter("twin, model, udp://HOST:PORT or pcie://BDF",
                                 param_hint="--target")
    rate = DEFAULT_RATE[kind] if rate is None else (rate or None)
    quoting = _params(params)
    loaded = _feed(feed, messages, seed, symbols, Path(summary_path).parent, err)
    description, token = _udp_settings(description, twin_build, token, token_file)
    ports = {"feed": feed_port, "tick": tick_port, "orders": order_port}
    handle = _open(target, err, ifg=ifg, description=description, token=token, ports=ports,
                   timeout=timeout)
    if rate is not None:
        err.print(f"pacing the feed at {rate:,.0f} messages/s (--rate; 0: as fast as possible), "
                  f"a pace the {'twin' if kind == 'twin' else 'device'} keeps up with: a core "
                  "fed faster than it quotes overflows its feed buffer and marks every symbol "
                  "stale")

    def on_event(event):
        click.echo(json.dumps(top_event(event) if isinstance(event, Top) else order_event(event)))

    columns = (TextColumn("streaming"), BarColumn(), MofNCompleteColumn(), TextColumn("messages"))
    progress = Progress(*columns, console=err, transient=True)
    task = progress.add_task("stream", total=loaded.messages)
    runner = Runner(handle, loaded, params=quoting, rate=rate, fills=fills,
                    on_event=on_event if as_json else None,
                    on_progress=lambda n: progress.update(task, completed=n))
    try:
        with handle, progress:
            runner.run()
    except (RunError, TwinError) as exc:
        raise click.ClickException(str(exc)) from None
    data = summary(runner, _plots(runner, Path(plot_path)))
    path = Path(summary_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    for renderable in summary_tables(data):
        out.print(renderable)
    out.print(f"plots: {', '.join(data['plots']) or 'none (no samples)'}; summary: {path}")
