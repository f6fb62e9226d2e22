"""``t2q bench``: the cheapest parts of the performance table at tiny sizes (the book in
amaranth.sim, the software books, the device twin), checked for structure and for figures that
agree with each other and with independent computations. No wall-clock figure is asserted."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from tick2quote.host import bench
from tick2quote.host.bench_cli import markdown, table_rows, update_readme
from tick2quote.host.cli import main
from tick2quote.host.protocol import itch

TINY = bench.Mode(
    "tiny", parse=0, book=150, core=0, paces=(), software=3000, twin=200, gaps=(3, 40)
)


@pytest.fixture(scope="module")
def data():
    return bench.run_bench(TINY, parts=("book", "software", "twin"))


def _ordered(summary: dict) -> None:
    assert summary["count"] > 0
    assert summary["min"] <= summary["p50"] <= summary["p99"] <= summary["max"]


def test_wire_bytes_match_frames_built_by_scapy():
    messages = [
        itch.make("A", locate=1, order_ref=k, side="B", shares=100, stock="ABC", price=10000)
        for k in range(10)
    ] + [itch.make("D", locate=1, order_ref=3)]
    for per_packet in (1, 4, 8):
        wire = 0
        for start in range(0, len(messages), per_packet):
            blocks = itch.encode_blocks(messages[start : start + per_packet])
            payload = bytes(20) + blocks  # MoldUDP64 header, then the blocks
            frame = len(Ether() / IP() / UDP() / payload) + 4  # + FCS
            wire += 8 + max(frame, 64) + 12  # preamble, minimum frame, inter-frame gap
        got = bench.wire_bytes(messages, per_packet)
        assert got["wire_bytes_per_message"] == round(wire / len(messages), 2)
        assert got["line_rate_messages_per_s"] == pytest.approx(1.25e9 * len(messages) / wire)
    one = bench.wire_bytes(messages[:1], 1)
    assert one["wire_bytes_per_message"] == 8 + 14 + 20 + 8 + 20 + 2 + 36 + 4 + 12


def test_book_latency_is_ordered_and_the_rate_possible(data):
    book = data["book"]
    _ordered(book["latency"])
    _ordered(book["replace"])
    assert book["replace"]["count"] < book["latency"]["count"]
    assert 0 < book["events_per_cycle"] <= 1
    assert book["events"] >= TINY.book


def test_software_books_agree_on_the_same_stream(data):
    sw = data["software"]
    assert sw["final_state_agrees"] and sw["disagreeing_symbols"] == []
    assert sw["cpp"]["decoded"] == sw["messages"] >= TINY.software
    assert 0 < sw["symbols_compared"] <= 12
    for engine in ("cpp", "python"):
        assert sw[engine]["seconds"] > 0
        assert sw[engine]["messages_per_s"] == pytest.approx(sw["messages"] / sw[engine]["seconds"])


def test_twin_figures_are_consistent(data):
    twin = data["twin"]
    assert twin["messages"] >= TINY.twin and twin["cycles"] > 0
    assert twin["cycles_per_s"] == pytest.approx(twin["cycles"] / twin["sim_s"], rel=1e-6)
    # the feed's frames hold the core's input at least one beat plus the gap per datagram
    assert twin["cycles_per_message"] > twin["ifg"] / 8
    _ordered(twin["tick_to_quote"])
    _ordered(twin["round_trip_ns"])
    assert twin["round_trip_ns"]["count"] <= twin["tick_to_quote"]["count"]
    assert twin["twin_peak_rss_kib"] > 0 and twin["host_peak_rss_kib"] > 0
    assert twin["line_rate_messages_per_s"] == pytest.approx(
        1.25e9 / twin["wire_bytes_per_message"]
    )
    fast, slow = twin["sweep"]
    assert (fast["ifg"], slow["ifg"]) == (3, 40)
    assert 0 < slow["messages_per_cycle"] < fast["messages_per_cycle"] < 1
    clean = [s for s in twin["sweep"] if not s["feed_overflow"] and not s["stale_marks"]]
    best = max((s["messages_per_cycle"] for s in clean), default=None)
    assert twin["sustained_messages_per_cycle"] == best


def test_table_has_every_measured_figure_with_how(data):
    rows = table_rows(data)
    sections = {row[0] for row in rows}
    assert sections == {"latency", "throughput", "software", "twin", "memory"}
    assert all(len(row) == 4 and all(cell.strip() for cell in row) for row in rows)
    figures = {row[1] for row in rows}
    for name in ("book update", "10 GbE line rate, same mix", "itch-book C++ book",
                 "Python reference book", "C++ and Python books agree", "device twin speed",
                 "host round trip, loopback", "peak RSS, twin process"):  # fmt: skip
        assert name in figures, name
    agree = next(row for row in rows if row[1] == "C++ and Python books agree")
    assert agree[2].startswith("yes")
    text = markdown(data)
    assert text.count("\n| ") == len(rows) + 1  # the header and one line a figure


def test_fmax_from_a_synthesis_report_converts_cycles(data):
    synth = {"fmax_mhz": 125.0, "target_mhz": 156.25, "usage": {"TRELLIS_COMB": [40000, 83640]}}
    rows = table_rows({**data, "synthesis": synth, "fmax_hz": 125e6})
    book = next(row for row in rows if row[1] == "book update")
    latency = data["book"]["latency"]
    assert f"{latency['max'] * 8:.1f} ns at Fmax 125.0 MHz" in book[2]
    assert f"{latency['max'] * 6.4:.1f}" in book[2]  # 156.25 MHz: 6.4 ns a cycle
    assert ("synthesis", "Fmax, whole core") == next(r for r in rows if r[0] == "synthesis")[:2]


def test_readme_section_goes_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nintro\n")
    update_readme(readme, "| a | b |\n")
    first = readme.read_text()
    assert first.startswith("# title\n\nintro\n\n## Performance table\n")
    assert f"{bench.BEGIN}\n| a | b |\n{bench.END}" in first
    readme.write_text(first + "\n## After\n\ntext\n")
    update_readme(readme, "| c | d |\n")
    second = readme.read_text()
    assert "| a | b |" not in second and f"{bench.BEGIN}\n| c | d |\n{bench.END}" in second
    assert second.endswith("## After\n\ntext\n") and second.count("## Performance table") == 1


def test_cli_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.MODES, "short", TINY)
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    synth = tmp_path / "synth.json"
    synth.write_text(json.dumps({"fmax_mhz": 140.5, "target_mhz": 156.25}))
    result = CliRunner().invoke(main, ["bench", "--short", "--part", "software", "--json",
                                       str(out), "--markdown", str(md), "--synth-json",
                                       str(synth), "--log", str(tmp_path / "log")])  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["mode"] == "tiny" and figures["fmax_hz"] == 140.5e6
    assert [r[1] for r in figures["rows"]].count("Fmax, whole core") == 1
    assert "| software | itch-book C++ book |" in md.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(main, ["bench", "--part", "software", "--synth-json", str(bad)])
    assert result.exit_code != 0 and "no fmax_mhz" in result.output
