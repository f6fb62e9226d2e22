"""``t2q bench``: the performance table, every figure with how it was measured (glue over
:mod:`.bench`). Prints one table, writes the figures as JSON and the table as a Markdown
section, and can put that section in the README between ``<!-- bench:begin -->`` and
``<!-- bench:end -->``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .bench import BEGIN, END, MODES, PARTS, load_synthesis, run_bench

__all__ = ["bench", "table_rows", "sustained", "markdown", "update_readme"]

Row = tuple[str, str, str, str]


def _ns_text(summary: dict, keys: tuple[str, ...], hz: float | None, label: str) -> str:
    if not hz:
        return ""
    values = " / ".join(f"{summary[k] * 1e9 / hz:.1f}" for k in keys)
    return f"; {values} ns at {label}"


def _cycles(summary: dict | None, data: dict, keys=("min", "p50", "p99", "max")) -> str:
    if not summary or not summary.get("count"):
        return "no samples"
    text = " / ".join(f"{k} {summary[k]}" for k in keys) + f" cycles (n={summary['count']:,})"
    text += _ns_text(summary, keys, data["clock_hz"], "156.25 MHz")
    fmax = data.get("fmax_hz")
    return text + _ns_text(summary, keys, fmax, f"Fmax {fmax / 1e6:.1f} MHz" if fmax else "")


def _rate(per_cycle: float | None, data: dict, unit: str = "messages") -> str:
    if per_cycle is None:
        return "none without an overflow"
    text = f"{per_cycle:.3f} {unit}/cycle = {per_cycle * data['clock_hz'] / 1e6:.1f} M/s "
    text += "at 156.25 MHz"
    if data.get("fmax_hz"):
        text += f", {per_cycle * data['fmax_hz'] / 1e6:.1f} M/s at Fmax"
    return text


def _latency_rows(data: dict) -> list[Row]:
    rows = []
    if "parse" in data:
        p = data["parse"]
        how = (
            "cocotb on Verilator: frame beat holding a message's last byte in -> event valid; "
            f"{p['messages']:,} messages, {p['kinds']} event kinds, message ends on all 8 lanes"
        )
        rows.append(("parse (feed handler)", _cycles(p["latency"], data, ("min", "max")), how))
    if "book" in data:
        b = data["book"]
        how = (
            f"amaranth.sim: event taken -> top-of-book record valid; {b['events']:,} events of a "
            f"generated session back to back (Replace: {b['replace']['max']} cycles)"
        )
        rows.append(("book update", _cycles(b["latency"], data), how))
    if "core" in data:
        c = data["core"]
        how = (
            "cocotb on Verilator, whole core: frame beat holding the message's last byte in -> "
            "first beat of the order frame out, every order checked against the models; "
        )
        load = f"{c['messages']:,} messages, one a frame, 120 idle cycles each"
        rows.append(("tick-to-quote, unloaded", _cycles(c["unloaded"], data), how + load))
        load = "8 messages a frame, 25 idle cycles a message"
        rows.append(("tick-to-quote, loaded", _cycles(c["loaded"], data), how + load))
    twin = data.get("twin", {})
    if twin.get("tick_to_quote"):
        how = (
            "device twin's tap: order frame out - its ClOrdID stamp, Enter and Replace orders "
            "of `t2q run`'s generated feed (paced, with fills)"
        )
        rows.append(("tick-to-quote, device twin", _cycles(twin["tick_to_quote"], data), how))
    return [("latency", *row) for row in rows]


def sustained(data: dict) -> tuple[float | None, str]:
    """The core's sustained messages per cycle and where it comes from: the device twin's sweep
    (frames with real inter-frame gaps) when measured, else the cocotb overload sweep."""
    twin = data.get("twin", {})
    if twin.get("sweep"):
        return twin["sustained_messages_per_cycle"], "device twin"
    if "core" in data:
        return data["core"]["sustained_messages_per_cycle"], "cocotb"
    return None, ""


def _line_rate(data: dict) -> tuple[float, float]:
    """Line-rate messages per second and wire bytes per message of the measured mix."""
    twin = data.get("twin", {})
    if twin.get("line_rate_messages_per_s"):
        return twin["line_rate_messages_per_s"], twin["wire_bytes_per_message"]
    mix = data["mix"]
    return mix["line_rate_messages_per_s"], mix["wire_bytes_per_message"]


def _throughput_rows(data: dict) -> list[Row]:
    rows = []
    line, wire = _line_rate(data)
    twin = data.get("twin", {})
    if twin.get("sweep"):
        gaps = ", ".join(str(s["ifg"]) for s in twin["sweep"])
        value = _rate(twin["sustained_messages_per_cycle"], data)
        if twin["sustained_ifg"] is not None:
            gap = twin["sustained_ifg"]
            value += f" (at {gap} idle cycle{'s' if gap != 1 else ''} between frames"
            value += ", the fastest offered: bound by the input)" if twin["input_bound"] else ")"
        how = (
            f"device twin, the session's {twin['messages']:,} messages unpaced, 8 a frame, at "
            f"{gaps} idle cycles between frames (3: about 10 GbE's preamble and gap): the fastest "
            "with no buffer overflow and no stale mark; messages over the input's busy cycles"
        )
        rows.append(("whole core, sustained", value, how))
    if "core" in data:
        c = data["core"]
        value = _rate(c["sustained_messages_per_cycle"], data)
        if c["input_bound"]:
            value += " (the fastest offered: bound by the input)"
        paces = ", ".join(str(s["pace"]) for s in c["sweep"])
        how = (
            f"cocotb on Verilator: 8-message frames at {paces} idle cycles a message, messages "
            "over the whole run's cycles; the fastest with no overflow and no stale mark"
        )
        rows.append(("whole core, cocotb sweep", value, how))
    best, source = sustained(data)
    if best:
        value = f"{best * data['clock_hz'] / line:.2f} x at 156.25 MHz"
        if data.get("fmax_hz"):
            value += f", {best * data['fmax_hz'] / line:.2f} x at Fmax"
        how = f"sustained messages/s ({source}) over the line's messages/s for the same mix"
        rows.append(("whole core / 10 GbE line rate", value, how))
    value = f"{line / 1e6:.2f} M messages/s ({wire:.1f} bytes on the wire a message)"
    how = (
        "the bench's session, 8 messages a MoldUDP64 packet: each message with its share of "
        "the headers (Ethernet, IPv4, UDP, MoldUDP64), FCS, preamble and inter-frame gap"
    )
    rows.append(("10 GbE line rate, same mix", value, how))
    if "parse" in data:
        how = "input at one beat a cycle, never back-pressured"
        rows.append(("feed handler", _rate(data["parse"]["messages_per_cycle"], data), how))
    if "book" in data:
        how = "events back to back, no back-pressure"
        rows.append(("book", _rate(data["book"]["events_per_cycle"], data, "events"), how))
    return [("throughput", *row) for row in rows]


def _software_rows(data: dict) -> list[Row]:
    s, rows = data["software"], []
    machine = data["machine"]
    how = (
        f"the core run's session continued to {s['messages']:,} messages, from its encoded "
        f"bytes, on this CPU ({machine['cpus']} cores, CPython {machine['python']})"
    )
    rows.append(("itch-book C++ book", f"{s['cpp']['messages_per_s'] / 1e6:.2f} M messages/s", how))
    rate = f"{s['python']['messages_per_s'] / 1e3:.0f} k messages/s"
    rows.append(("Python reference book", rate, how + ", decoding included"))
    best, source = sustained(data)
    if best:
        gateware = best * data["clock_hz"]
        value = (
            f"{gateware / s['cpp']['messages_per_s']:.1f} x C++, "
            f"{gateware / s['python']['messages_per_s']:.0f} x Python"
        )
        how = f"the core's sustained rate ({source}) at 156.25 MHz over each"
        rows.append(("gateware rate over software", value, how))
    agree = "yes" if s["final_state_agrees"] else f"NO, locates {s['disagreeing_symbols'][:5]}"
    value = f"{agree} ({s['symbols_compared']} symbols)"
    rows.append(("C++ and Python books agree", value, "best bid and offer of every symbol at end"))
    return [("software", *row) for row in rows]


def _twin_rows(data: dict) -> list[Row]:
    t = data["twin"]
    speed = f"{t['cycles_per_s'] / 1e3:,.0f} k cycles/s"
    if t.get("unpaced_messages_per_s"):
        speed += f", {t['unpaced_messages_per_s'] / 1e3:,.1f} k messages/s unpaced"
    how = (
        f"{t['messages']:,} messages through `t2q run`'s logic (paced at {t['rate']:,.0f}/s): "
        "cycles over the seconds spent simulating; messages/s: that speed over the "
        f"{t['cycles_per_message']:.1f} cycles a message holds the core's input (frame beats "
        f"and {t['ifg']} idle cycles between frames)"
    )
    rows = [("twin", "device twin speed", speed, how)]
    r = t.get("round_trip_ns") or {}
    value = "no samples"
    if r.get("count"):
        value = " / ".join(f"{k} {r[k] / 1e6:.2f}" for k in ("min", "p50", "p99", "max"))
        value += f" ms (n={r['count']:,})"
    how = (
        f"send of the triggering datagram -> {t['round_trip_clock']} receive stamp of the order; "
        "measures the simulation, not a device"
    )
    rows.append(("twin", "host round trip, loopback", value, how))
    for who, key in (("twin process", "twin_peak_rss_kib"), ("host driver", "host_peak_rss_kib")):
        kib = t.get(key)
        value = f"{kib / 1024:.0f} MiB" if kib else "unknown"
        rows.append(("memory", f"peak RSS, {who}", value, "VmHWM after streaming the twin run"))
    return rows


def _synthesis_rows(data: dict) -> list[Row]:
    synth = data["synthesis"]
    cfg = ", ".join(f"{k} {v}" for k, v in synth.get("config", {}).items())
    value = f"{synth['fmax_mhz']:.1f} MHz (target {synth.get('target_mhz', 156.25):g})"
    how = f"{synth.get('device', 'ECP5')}, post-route (nextpnr); {cfg}"
    rows = [("synthesis", "Fmax, whole core", value, how)]
    usage = ", ".join(f"{k} {u[0]:,} / {u[1]:,}" for k, u in synth.get("usage", {}).items())
    if usage:
        rows.append(("synthesis", "utilisation", usage, "nextpnr's device utilisation report"))
    return rows


def table_rows(data: dict) -> list[Row]:
    """The table: ``(section, figure, value, how it was measured)`` for every figure in
    ``data`` (:func:`~.bench.run_bench`'s result)."""
    rows = _latency_rows(data) + _throughput_rows(data)
    if "software" in data:
        rows += _software_rows(data)
    if "twin" in data:
        rows += _twin_rows(data)
    if data.get("synthesis"):
        rows += _synthesis_rows(data)
    return rows


def markdown(data: dict) -> str:
    """The table as the README's Markdown section (without the markers)."""
    machine = data["machine"]
    lines = [
        f"Measured by `t2q bench --{data['mode']}` on {data['date']} ({machine['cpus']} cores, "
        f"CPython {machine['python']}); cycle figures are simulated, at the 156.25 MHz core "
        "clock" + (" and at the Fmax of the synthesis report" if data.get("fmax_hz") else "") + ".",
        "",
        "| section | figure | value | how it was measured |",
        "|---|---|---|---|",
    ]
    for row in table_rows(data):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def update_readme(path: str | Path, section: str) -> None:
    """Put ``section`` between the bench markers of the README at ``path`` (a "Performance
    table" section with the markers is added at the end when they are missing)."""
    path = Path(path)
    text = path.read_text()
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Performance table\n\n{block}\n"
    path.write_text(text)


@click.command()
@click.option("--short", "mode", flag_value="short", default=True, help="A few minutes (default).")
@click.option("--full", "mode", flag_value="full", help="Every figure at full size (longer).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the figures.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the table.")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False),
              help="Put the table in this README between the bench markers.")  # fmt: skip
@click.option("--synth-json", type=click.Path(exists=True, dir_okay=False),
              help="Fmax and utilisation from `bench_core --synth-only --synth-json`.")  # fmt: skip
@click.option("--part", "parts", multiple=True, type=click.Choice(PARTS),
              help="Measure only these parts (repeatable; default: all).")  # fmt: skip
@click.option("--log", default="build/bench/sim.log", show_default=True,
              type=click.Path(dir_okay=False), help="The simulators' output.")  # fmt: skip
def bench(mode, json_path, md_path, readme, synth_json, parts, log):
    """Measure the performance table: gateware, software books and the device twin, side by
    side in one run."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    try:
        synthesis = load_synthesis(synth_json)
    except (ValueError, json.JSONDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    data = run_bench(
        MODES[mode],
        parts=parts or PARTS,
        synthesis=synthesis,
        on_step=lambda part: console.print(f"[dim]measuring {part} ..."),
        log=Path(log),
    )
    data["rows"] = table_rows(data)
    table = Table(title=f"Performance table ({mode})", show_lines=True)
    for name in ("section", "figure", "value", "how it was measured"):
        table.add_column(name, overflow="fold")
    for row in data["rows"]:
        table.add_row(*row)
    Console().print(table)
    section = markdown(data)
    for path, text in ((json_path, json.dumps(data, indent=2) + "\n"), (md_path, section)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    if readme:
        update_readme(readme, section)
