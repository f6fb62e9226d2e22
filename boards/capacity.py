"""What a board build puts in its core: capacities and the device's identity on the network.

A :class:`Capacity` names the tables the core is built with (``SYMBOLSxORDERS``, for example
``256x8192``: 256 symbols quoted, an order table of 8192 entries; the set ways, ladder depth and
UserRefNum window may follow: ``4x64x2,depth=4,refs=64``). A :class:`DeviceIdentity`
names the device on the network and who may reach its control port: its IPv4 and MAC, the
control peers and the session token. :func:`board_config` joins them into the
:class:`~tick2quote.hdl.coremap.CoreConfig` the board top builds.

A board build with no token given draws one at random and keeps it beside the bitstream in a
file only its owner can read (:func:`tick2quote.host.session.session_token`); the register
description goes beside it (``built.json``), so ``t2q run --target udp://IP:PORT --twin-build
BUILD_DIR`` reaches the board with both, exactly as it reaches a twin build.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from tick2quote.hdl.coremap import CoreConfig

__all__ = ["Capacity", "DeviceIdentity", "board_config", "write_session"]

#: Name of the register description in a build directory.
DESCRIPTION_FILE = "built.json"


def _power_of_two(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high or value & (value - 1):
        raise ValueError(f"{name} must be a power of two in {low} .. {high}, not {value!r}")


@dataclass(frozen=True)
class Capacity:
    """The core's table sizes.

    ``symbols`` locates are quoted; the order table holds ``orders`` entries in sets of
    ``ways``; ``ladder_depth`` price levels are kept per side; ``ref_window`` UserRefNums are
    remembered for fills. All are powers of two.
    """

    symbols: int
    orders: int
    ways: int = 4
    ladder_depth: int = 8
    ref_window: int = 4096

    def __post_init__(self):
        _power_of_two("symbols", self.symbols, 2, 65536)
        _power_of_two("ways", self.ways, 1, 16)
        _power_of_two("orders", self.orders, 2 * self.ways, 1 << 24)
        _power_of_two("ladder_depth", self.ladder_depth, 2, 64)
        _power_of_two("ref_window", self.ref_window, 2, 1 << 20)

    @classmethod
    def parse(cls, text: str) -> Capacity:
        """``SYMBOLSxORDERS[xWAYS][,depth=LEVELS][,refs=USERREFNUMS]``: ``256x8192``,
        ``64x1024x2``, ``4x64x2,depth=4,refs=64``; what is left out keeps its default."""
        head, *options = text.lower().replace(" ", "").split(",")
        named = {}
        try:
            numbers = [int(part) for part in head.split("x")]
            named = dict(option.split("=", 1) for option in options)
            extra = {_OPTION_FIELDS[key]: int(value) for key, value in named.items()}
        except (ValueError, KeyError):
            numbers = []
        if len(numbers) not in (2, 3) or len(named) != len(options):
            raise ValueError(f"capacity {text!r} is not SYMBOLSxORDERS[xWAYS][,depth=N][,refs=N]")
        return cls(*numbers, **extra)

    @classmethod
    def coerce(cls, value: Capacity | str | None, default: Capacity) -> Capacity:
        """``value`` as a capacity: a :class:`Capacity`, its text, or None for ``default``."""
        if value is None:
            return default
        if isinstance(value, str):
            return cls.parse(value)
        if not isinstance(value, cls):
            raise ValueError(f"capacity must be a Capacity or its text, not {value!r}")
        return value

    def __str__(self) -> str:
        text = f"{self.symbols}x{self.orders}"
        if self.ways != _DEFAULTS["ways"]:
            text += f"x{self.ways}"
        for option, name in _OPTION_FIELDS.items():
            value = getattr(self, name)
            if value != _DEFAULTS[name]:
                text += f",{option}={value}"
        return text

    def core_fields(self) -> dict:
        """The capacity as :class:`CoreConfig` fields."""
        return {
            "symbols": self.symbols,
            "order_sets": self.orders // self.ways,
            "order_ways": self.ways,
            "ladder_depth": self.ladder_depth,
            "ref_window": self.ref_window,
        }


#: ``Capacity.parse`` option -> field.
_OPTION_FIELDS = {"depth": "ladder_depth", "refs": "ref_window"}
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Capacity)}


@dataclass(frozen=True)
class DeviceIdentity:
    """Who the device is and who may talk to it: ``ip``, ``mac``, control ``peers`` (IPv4
    addresses; empty: nobody) and the session ``token`` (None: drawn at build time)."""

    ip: str = CoreConfig.ip
    mac: int = CoreConfig.mac
    peers: tuple[str, ...] = ()
    token: int | None = None

    def with_token(self) -> DeviceIdentity:
        """This identity, with a token drawn at random (64 bits) if it has none."""
        if self.token is not None:
            return self
        return dataclasses.replace(self, token=secrets.randbits(64))


def board_config(capacity: Capacity, identity: DeviceIdentity, *, clock_hz: float) -> CoreConfig:
    """The core configuration of a board build (``identity.token`` must be set)."""
    if identity.token is None:
        raise ValueError("the session token is not set (see session_token)")
    return CoreConfig(
        **capacity.core_fields(),
        ip=identity.ip,
        mac=identity.mac,
        peers=tuple(identity.peers),
        token=identity.token,
        clock_hz=int(round(clock_hz)),
    )


def write_session(directory: Path, config: CoreConfig, description: dict | None) -> Path:
    """Write the build's register description and configuration (``built.json``)."""
    path = directory / DESCRIPTION_FILE
    params = dataclasses.replace(config, token=0).build_params()  # the token stays in its file
    path.write_text(json.dumps({"config": params, "describe": description}))
    return path
