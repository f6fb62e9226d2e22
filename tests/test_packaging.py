"""The distribution installs under ``tick2quote.*`` only, and lists every package folder."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "hdl": "tick2quote.hdl",
    "host": "tick2quote.host",
    "sim": "tick2quote.sim",
    "boards": "tick2quote.boards",
}


def _declared_packages():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"]), config["package-dir"]


def test_every_package_folder_is_declared():
    packages, package_dir = _declared_packages()
    assert package_dir == {dotted: folder for folder, dotted in FOLDERS.items()}
    found = set()
    for folder, dotted in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((dotted, *rel)))
    assert found == packages


def test_wheel_holds_only_tick2quote(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tick2quote-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("tick2quote-")}
    assert tops == {"tick2quote"}
    for module in (
        "tick2quote/host/protocol/itch.py",
        "tick2quote/host/cli.py",
        "tick2quote/sim/models/book.py",
        "tick2quote/hdl/__init__.py",
        "tick2quote/host/tic_sim.yaml",
    ):
        assert module in names
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "t2q = tick2quote.host.cli:main" in entry_points
