"""The core's build configuration and its register map.

:class:`CoreConfig` holds everything fixed when the core is built (capacities, the reset values of
its network identity, the quoting defaults). :func:`core_map` turns it into the
:class:`~.regmap.RegisterMap` the control plane serves; :func:`counter_registers` lists every
block counter with the register that shows it. The host reads the same map as JSON
(:meth:`~.control.ControlPlane.describe`), so register names are the only contract.

Addresses (64-bit word addresses):

=================  ==================================================================
``0x000 .. 0x0ff`` the control plane's own (token, device IP and MAC, control port, peers)
``0x100 .. 0x17f`` switches and network configuration (:data:`CONFIG_REGISTERS`)
``0x180 .. 0x1ff`` status: cycle counter, latency statistics
``0x200 ..``       every block counter, in :func:`counter_registers` order
``0x1000 ..``      per-symbol quoting parameters (window ``params``, stride 16)
``0x10000 ..``     per-symbol subscription (window ``subscription``, field ``tracked``)
=================  ==================================================================
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from amaranth.lib import data

from ..sim.models.pricing import QuoteParams
from .regmap import ParamField, RegisterMap, between, quote_param_fields

__all__ = [
    "CoreConfig",
    "CONFIG_REGISTERS",
    "LATENCY_BUCKETS",
    "core_map",
    "counter_registers",
    "flatten_counters",
]

#: Buckets of the device's tick-to-quote histogram (see :mod:`.latencystats`).
LATENCY_BUCKETS = 32
_COUNTER_BASE = 0x200
_PARAMS_BASE = 0x1000
_SUBSCRIPTION_BASE = 0x10000


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


@dataclass(frozen=True)
class CoreConfig:
    """What a :class:`~.core.Core` is built with.

    Capacities: ``symbols`` (locates ``0 .. symbols - 1``), the order table ``order_sets`` x
    ``order_ways``, ``ladder_depth`` price levels tracked per side, ``ref_window`` UserRefNums
    remembered for fills. Network identity (reset values; every one is a register): the device
    ``ip`` / ``mac``, the ``control_port``, the session ``token`` and the accepted ``peers``;
    the feed (``feed_group``, ``feed_port``: the multicast group and port of the MoldUDP64
    feed), the tick-record port ``tick_port``, the OUCH port ``order_port`` (orders leave from
    it, fills arrive on it) and the order gateway ``gateway_ip`` / ``gateway_port`` /
    ``gateway_mac``, the top-of-book feed's ``tob_group`` / ``tob_port``. ``default``: the
    quoting parameters of every symbol after reset. ``clock_hz``: the core clock, for reports.
    """

    symbols: int = 1024
    order_sets: int = 4096
    order_ways: int = 4
    ladder_depth: int = 8
    ref_window: int = 4096
    ip: str = "192.168.1.2"
    mac: int = 0x02_00_00_00_00_02
    control_port: int = 21554
    token: int = 0
    peers: tuple[str, ...] = ()
    feed_group: str = "233.54.12.111"
    feed_port: int = 26477
    tick_port: int = 26400
    order_port: int = 15000
    gateway_ip: str = "192.168.1.1"
    gateway_port: int = 15000
    gateway_mac: int = 0x02_00_00_00_00_01
    tob_group: str = "239.1.1.1"
    tob_port: int = 26500
    default: QuoteParams = field(default_factory=QuoteParams)
    clock_hz: int = 156_250_000

    def build_params(self) -> dict:
        """The capacities as the keyword arguments a build cache keys on."""
        return dataclasses.asdict(self) | {"default": dataclasses.asdict(self.default)}


#: ``(name, width, reset from config, rule, doc)`` of the configuration registers, from 0x100.
def _config_registers(cfg: CoreConfig):
    port = between(1, 65535)
    group_mac = 0x01_00_5E_00_00_00 | (_ip(cfg.tob_group) & 0x7F_FF_FF)
    return [
        ("kill_switch", 1, 1, None, "1 pulls every quote and blocks new ones"),
        ("recover_epoch", 32, 0, None, "a new value trusts every stale symbol again"),
        ("latency_clear_epoch", 32, 0, None, "a new value clears the latency statistics"),
        ("allow_zero_checksum", 1, 0, None, "accept feed frames whose IPv4 checksum is 0"),
        ("feed_group0", 33, 1 << 32 | _ip(cfg.feed_group), None, "bit 32 enable, IPv4"),
        ("feed_group1", 33, 0, None, "bit 32 enable, IPv4 (second line)"),
        ("feed_port0", 17, 1 << 16 | cfg.feed_port, None, "bit 16 enable, UDP port"),
        ("feed_port1", 17, 0, None, "bit 16 enable, UDP port (second line)"),
        ("tick_port", 16, cfg.tick_port, port, "UDP port of tick records"),
        ("order_port", 16, cfg.order_port, port, "device's OUCH port: orders out, fills in"),
        ("gateway_ip", 32, _ip(cfg.gateway_ip), None, "IPv4 of the order entry gateway"),
        ("gateway_port", 16, cfg.gateway_port, port, "UDP port of the order entry gateway"),
        ("gateway_mac", 48, cfg.gateway_mac, None, "next-hop MAC of orders"),
        ("tob_group", 32, _ip(cfg.tob_group), None, "destination of top-of-book frames"),
        ("tob_port", 16, cfg.tob_port, port, "UDP port of top-of-book frames"),
        ("tob_mac", 48, group_mac, None, "destination MAC of top-of-book frames"),
        ("ttl", 8, 64, None, "IPv4 TTL of frames sent"),
    ]


#: Names of the configuration registers, in address order from 0x100.
CONFIG_REGISTERS = tuple(name for name, *_ in _config_registers(CoreConfig()))

#: Status registers from 0x180.
_STATUS = [
    ("cycle", 32, "free-running core cycle counter"),
    ("symbols", 32, "locates 0 .. symbols - 1 are quoted"),
    ("clock_hz", 32, "core clock in Hz (build parameter)"),
    ("latency_min", 32, "tick-to-quote minimum, cycles"),
    ("latency_max", 32, "tick-to-quote maximum, cycles"),
    ("latency_sum", 64, "tick-to-quote sum, cycles"),
    ("latency_count", 32, "tick-to-quote samples"),
]
_HIST_BASE = 0x1C0


def flatten_counters(prefix: str, layout: data.StructLayout) -> list[tuple[str, tuple[str, ...]]]:
    """``(register name, member path)`` of every leaf of a counters struct, depth first."""
    out = []
    for name, member in layout:
        shape = member.shape
        path_name = f"{prefix}_{name}"
        if isinstance(shape, data.StructLayout):
            for sub, path in flatten_counters(path_name, shape):
                out.append((sub, (name, *path)))
        else:
            out.append((path_name, (name,)))
    return out


def counter_registers(blocks: dict[str, data.StructLayout]) -> list[tuple[str, str, tuple]]:
    """``(register name, block, member path)`` for every counter of ``blocks`` (block name ->
    its counters layout), in address order from 0x200."""
    out = []
    for block, layout in blocks.items():
        for name, path in flatten_counters(block, layout):
            out.append((name, block, path))
    return out


def core_map(cfg: CoreConfig, blocks: dict[str, data.StructLayout]) -> RegisterMap:
    """The register map of a core built with ``cfg`` whose blocks have the counters
    ``blocks`` (see :func:`counter_registers`)."""
    regmap = RegisterMap()
    for k, (name, width, reset, rule, doc) in enumerate(_config_registers(cfg)):
        regmap.add(name, 0x100 + k, width, reset=reset, rule=rule, doc=doc)
    for k, (name, width, doc) in enumerate(_STATUS):
        regmap.add(name, 0x180 + k, width, "ro", doc=doc)
    for k in range(LATENCY_BUCKETS):
        regmap.add(f"latency_hist{k}", _HIST_BASE + k, 32, "ro", doc="pow2 histogram bucket")
    for k, (name, _, _) in enumerate(counter_registers(blocks)):
        regmap.add(name, _COUNTER_BASE + k, 32, "ro", doc="counter (wraps)")
    defaults = dataclasses.asdict(cfg.default)
    fields = [
        dataclasses.replace(f, reset=int(defaults[f.name]) & ((1 << f.width) - 1))
        if not f.signed
        else dataclasses.replace(f, reset=int(defaults[f.name]))
        for f in quote_param_fields()
    ]
    regmap.window("params", _PARAMS_BASE, cfg.symbols, fields, stride=16)
    regmap.window(
        "subscription", _SUBSCRIPTION_BASE, cfg.symbols, [ParamField("tracked", 1, reset=1)]
    )
    return regmap
