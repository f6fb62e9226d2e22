"""Board build settings: capacities, the device identity, the session token kept per build."""

import json
import stat

import pytest
from click.testing import CliRunner
from tick2quote.boards import build as board_build
from tick2quote.boards.capacity import Capacity, DeviceIdentity, board_config, write_session
from tick2quote.boards.ecpix5 import Ecpix5Top
from tick2quote.hdl.core import Core
from tick2quote.host.build_cli import build
from tick2quote.host.session import session_token


def test_capacity_text_round_trips_and_maps_onto_the_core_config():
    capacity = Capacity.parse("256x8192")
    assert capacity == Capacity(symbols=256, orders=8192)
    assert str(capacity) == "256x8192"
    assert str(Capacity.parse("64X1024x2")) == "64x1024x2"
    small = Capacity.parse("4x64x2, depth=4, refs=64")
    assert small == Capacity(4, 64, ways=2, ladder_depth=4, ref_window=64)
    assert Capacity.parse(str(small)) == small
    assert str(Capacity.parse("16x256,refs=64")) == "16x256,refs=64"
    config = board_config(capacity, DeviceIdentity(token=5, peers=("10.0.0.9",)), clock_hz=125e6)
    assert (config.symbols, config.order_sets, config.order_ways) == (256, 2048, 4)
    assert (config.token, config.peers, config.clock_hz) == (5, ("10.0.0.9",), 125_000_000)


@pytest.mark.parametrize(
    "text",
    ["256", "256x", "x8192", "256x8192x4x2", "300x8192", "256x6", "4x64,depth=3",
     "4x64,levels=4", "4x64,refs", "4x64,refs=1x"],
)  # fmt: skip
def test_bad_capacity_text_is_refused_by_name(text):
    with pytest.raises(ValueError, match="capacity|power of two"):
        Capacity.parse(text)


def test_a_build_without_token_is_refused():
    with pytest.raises(ValueError, match="token"):
        board_config(Capacity(16, 64), DeviceIdentity(), clock_hz=125e6)


def test_session_token_is_drawn_once_and_private(tmp_path):
    token, path = session_token(tmp_path / "build")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_token(tmp_path / "build") == (token, path)
    assert session_token(tmp_path / "other")[0] != token  # 64 random bits each


def test_board_top_builds_the_full_core_with_its_identity(tmp_path):
    identity = DeviceIdentity(ip="10.1.2.3", peers=("10.1.2.1",), token=0x1234)
    top = Ecpix5Top(capacity="32x256", identity=identity, core_clock=125e6)
    assert top.config.ip == "10.1.2.3" and top.config.token == 0x1234
    platform = Ecpix5Top.make_platform()
    platform.build(top, name="top", build_dir=str(tmp_path), do_build=False)
    assert isinstance(top.core, Core) and top.core.config.symbols == 32
    path = write_session(tmp_path, top.config, top.core.describe())
    written = json.loads(path.read_text())
    assert written["config"]["token"] == 0  # the token stays in its own file
    assert written["config"]["symbols"] == 32 and written["describe"]["clock_hz"] == 125_000_000


def test_identity_without_token_draws_a_fresh_one():
    first, second = DeviceIdentity().with_token(), DeviceIdentity().with_token()
    assert first.token != second.token and first.token.bit_length() <= 64
    assert DeviceIdentity(token=7).with_token().token == 7


def test_build_command_requires_a_control_peer():
    result = CliRunner().invoke(build, ["--board", "ecpix5"])
    assert result.exit_code != 0 and "--peer" in result.output


def test_build_command_names_a_bad_capacity(tmp_path):
    result = CliRunner().invoke(
        build, ["--board", "ecpix5", "--peer", "10.0.0.1", "--capacity", "12x34",
                "--build-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code != 0 and "power of two" in result.output


@pytest.mark.parametrize(
    ("options", "expected_clock", "expected_capacity", "expected_seed"),
    [([], None, None, None), (["--core-clock", "62.5", "--capacity", "4x64x2,depth=4",
                               "--seed", "3"], 62.5e6, "4x64x2,depth=4", 3)],
)  # fmt: skip
def test_build_command_leaves_unset_options_to_the_board(
    monkeypatch, tmp_path, options, expected_clock, expected_capacity, expected_seed
):
    calls = []

    def fake_run_build(board, **kwargs):
        calls.append(kwargs)
        return board_build.BuildReport(board=board, device="LFE5UM5G-85F-8", build_dir=tmp_path)

    monkeypatch.setattr(board_build, "run_build", fake_run_build)
    result = CliRunner().invoke(build, ["--board", "ecpix5", "--peer", "10.0.0.1", *options])
    assert result.exit_code == 0, result.output
    [kwargs] = calls
    assert kwargs["core_clock"] == expected_clock and kwargs["capacity"] == expected_capacity
    assert kwargs["seed"] == expected_seed


def test_a_placement_seed_reaches_nextpnr_in_the_build_script(monkeypatch, tmp_path):
    monkeypatch.setattr(board_build, "run_script", lambda build_dir: None)  # the plan only
    identity = DeviceIdentity(peers=("10.0.0.1",), token=7)
    board_build.run_build("ecpix5", build_dir=tmp_path, identity=identity, seed=4)
    script = (tmp_path / "build_top.sh").read_text()
    assert f"{' '.join(board_build.PLACE_AND_ROUTE)} --seed 4" in script
    for bad in (-1, True):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            board_build.run_build("ecpix5", build_dir=tmp_path / "bad", identity=identity, seed=bad)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="the ECP5 boards only"):
        board_build.run_build("kcu105", build_dir=tmp_path / "kcu", identity=identity, seed=2)
