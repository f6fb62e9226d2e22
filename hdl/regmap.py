"""A declarative register map: named registers and per-symbol parameter windows.

A :class:`RegisterMap` lists what the control plane (:mod:`.control`) serves over the control
protocol. Every address names one register of up to 64 bits, read and written as one 64-bit
value, so every read is atomic. Three access kinds:

``"ro"``
    read-only status or counter, driven by the gateware (a write is refused with ``READ_ONLY``);
``"rw"``
    a parameter held by the control plane, with a reset value and a validation rule;
``"wo"``
    like ``"rw"`` but reads return 0 (secrets such as the session token).

A **parameter window** maps ``address = base + locate * stride + field`` onto an external
per-symbol store (for example :class:`ParamStore`): writes leave on a write port
``(locate, field, wdata, we)`` and reads come back on ``rdata`` one cycle after ``locate`` and
``field`` are presented.

Values are 64-bit on the wire. A signed register or field is two's complement: the wire value
``2**64 - 1`` is -1. A write is accepted only when the value fits the width (and sign) and the
rule holds; reads of a signed register are sign-extended to 64 bits.

:meth:`RegisterMap.describe` gives the map as a JSON-ready dict; the host's
:class:`tick2quote.host.protocol.control.RegisterClient` reads names and rules from it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import reduce

from amaranth.hdl import Const, Module, Mux, Signal, Value
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "ACCESS",
    "Rule",
    "any_value",
    "one_of",
    "between",
    "nonzero",
    "Register",
    "ParamField",
    "ParamWindow",
    "RegisterMap",
    "quote_param_fields",
    "window_signature",
    "window_row_layout",
    "ParamStore",
    "DEVICE_COUNTERS",
    "device_map",
]

#: The access kinds a register may have.
ACCESS = ("ro", "rw", "wo")
_MASK64 = (1 << 64) - 1


def _to_signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


@dataclass(frozen=True)
class Rule:
    """A validation rule on a register's value: ``kind`` is ``any``, ``one_of``, ``between``
    (inclusive ``low``/``high``) or ``nonzero``; bounds are signed for a signed register."""

    kind: str = "any"
    values: tuple[int, ...] = ()

    def check(self, value: int) -> bool:
        """Whether the (already sign-interpreted) integer ``value`` passes the rule."""
        if self.kind == "one_of":
            return value in self.values
        if self.kind == "between":
            return self.values[0] <= value <= self.values[1]
        if self.kind == "nonzero":
            return value != 0
        return True

    def hdl(self, value: Value, signed: bool) -> Value:
        """The rule as a 1-bit Amaranth expression on a 64-bit raw wire ``value``."""
        view = value.as_signed() if signed else value.as_unsigned()
        if self.kind == "one_of":
            return reduce(operator.or_, [view == v for v in self.values])
        if self.kind == "between":
            return (view >= self.values[0]) & (view <= self.values[1])
        if self.kind == "nonzero":
            return value != 0
        return Const(1, 1)

    def describe(self) -> dict:
        """The rule as JSON: ``{"kind": ..., "values": [...]}``."""
        return {"kind": self.kind, "values": list(self.values)}


def any_value() -> Rule:
    """No rule beyond fitting the width."""
    return Rule()


def one_of(*values: int) -> Rule:
    """The value must be one of ``values``."""
    if not values:
        raise ValueError("one_of needs at least one value")
    return Rule("one_of", tuple(int(v) for v in values))


def between(low: int, high: int) -> Rule:
    """``low <= value <= high`` (inclusive)."""
    if low > high:
        raise ValueError(f"between needs low <= high, not {low!r} > {high!r}")
    return Rule("between", (int(low), int(high)))


def nonzero() -> Rule:
    """The value must not be 0."""
    return Rule("nonzero")


def _check_width(name: str, width: int) -> None:
    if not isinstance(width, int) or not 1 <= width <= 64:
        raise ValueError(f"width of {name} must be an integer in 1 .. 64, not {width!r}")


def _fits(value: int, width: int, signed: bool) -> bool:
    if signed:
        return -(1 << (width - 1)) <= value < (1 << (width - 1))
    return 0 <= value < (1 << width)


def _interpret(raw: int, signed: bool) -> int:
    return _to_signed64(raw) if signed else raw & _MASK64


def _hdl_fits(value: Value, width: int, signed: bool) -> Value:
    if signed:
        top = value[width - 1 :]
        return (top == 0) | (top == (1 << len(top)) - 1)
    return value[width:] == 0 if width < 64 else Const(1, 1)


@dataclass(frozen=True)
class Register:
    """One register: ``name``, word ``address``, ``width`` in bits, ``access``, ``reset``
    value, ``rule``, ``signed`` and a one-line ``doc``."""

    name: str
    address: int
    width: int
    access: str = "rw"
    reset: int = 0
    rule: Rule = field(default_factory=Rule)
    signed: bool = False
    doc: str = ""

    def accepts(self, raw: int) -> bool:
        """Whether a write of the 64-bit wire value ``raw`` passes width, sign and rule."""
        value = _interpret(raw, self.signed)
        return _fits(value, self.width, self.signed) and self.rule.check(value)

    def valid_hdl(self, value: Value) -> Value:
        """:meth:`accepts` as an Amaranth expression on a 64-bit ``value``."""
        return _hdl_fits(value, self.width, self.signed) & self.rule.hdl(value, self.signed)


@dataclass(frozen=True)
class ParamField:
    """One per-symbol parameter field: ``name``, ``width``, ``signed``, ``rule``, ``reset``."""

    name: str
    width: int
    signed: bool = False
    rule: Rule = field(default_factory=Rule)
    reset: int = 0

    def accepts(self, raw: int) -> bool:
        """Whether a write of the 64-bit wire value ``raw`` passes width, sign and rule."""
        value = _interpret(raw, self.signed)
        return _fits(value, self.width, self.signed) and self.rule.check(value)

    def valid_hdl(self, value: Value) -> Value:
        """:meth:`accepts` as an Amaranth expression on a 64-bit ``value``."""
        return _hdl_fits(value, self.width, self.signed) & self.rule.hdl(value, self.signed)


@dataclass(frozen=True)
class ParamWindow:
    """Per-symbol parameters at ``base + locate * stride + index`` for ``symbols`` symbols."""

    name: str
    base: int
    symbols: int
    stride: int
    fields: tuple[ParamField, ...]

    @property
    def locate_width(self) -> int:
        return max(1, (self.symbols - 1).bit_length())

    @property
    def field_width(self) -> int:
        return max(1, (self.stride - 1).bit_length())

    @property
    def end(self) -> int:
        """One past the window's last address."""
        return self.base + self.symbols * self.stride

    def locate(self, address: int) -> tuple[int, int] | None:
        """``(locate, field index)`` of ``address``, or None when it names no field."""
        if not self.base <= address < self.end:
            return None
        locate, index = divmod(address - self.base, self.stride)
        return (locate, index) if index < len(self.fields) else None


class RegisterMap:
    """A register map under construction; add registers and windows, then hand it over.

    Addresses are 32-bit word addresses (one 64-bit register each). Overlaps, duplicate names
    and bad parameters raise ``ValueError`` at once.
    """

    def __init__(self):
        self.registers: dict[str, Register] = {}
        self.windows: dict[str, ParamWindow] = {}

    def _claim(self, name: str, low: int, high: int) -> None:
        if not name.isidentifier():
            raise ValueError(f"register name must be an identifier, not {name!r}")
        if name in self.registers or name in self.windows:
            raise ValueError(f"name {name!r} is already in the map")
        if not 0 <= low < high <= 1 << 32:
            raise ValueError(f"{name}: addresses must lie in 0 .. 2**32 - 1, not {low:#x}")
        for other in self.registers.values():
            if low <= other.address < high:
                raise ValueError(f"{name} overlaps register {other.name} at {other.address:#x}")
        for win in self.windows.values():
            if low < win.end and win.base < high:
                raise ValueError(f"{name} overlaps window {win.name} at {win.base:#x}")

    def add(
        self,
        name: str,
        address: int,
        width: int = 32,
        access: str = "rw",
        *,
        reset: int = 0,
        rule: Rule | None = None,
        signed: bool = False,
        doc: str = "",
    ) -> Register:
        """Add one register and return it."""
        _check_width(name, width)
        if access not in ACCESS:
            raise ValueError(f"access of {name} must be one of {ACCESS}, not {access!r}")
        self._claim(name, address, address + 1)
        reg = Register(name, address, width, access, reset, rule or Rule(), signed, doc)
        if access != "ro" and not reg.accepts(reset & _MASK64):
            raise ValueError(f"reset value {reset!r} of {name} fails its own rule or width")
        self.registers[name] = reg
        return reg

    def counters(self, base: int, names, width: int = 32, doc: str = "") -> None:
        """Add read-only counters ``names`` at consecutive addresses from ``base``."""
        for k, name in enumerate(names):
            self.add(name, base + k, width, "ro", doc=doc)

    def window(
        self, name: str, base: int, symbols: int, fields: list[ParamField], stride: int = 0
    ) -> ParamWindow:
        """Add a per-symbol parameter window and return it.

        ``stride`` (a power of two, at least the number of fields) defaults to the smallest
        that fits; ``base`` must be a multiple of it.
        """
        if not fields:
            raise ValueError(f"window {name} needs at least one field")
        stride = stride or 1 << (len(fields) - 1).bit_length()
        if stride & (stride - 1) or stride < len(fields):
            raise ValueError(f"stride of {name} must be a power of two >= {len(fields)}")
        if not isinstance(symbols, int) or symbols < 1:
            raise ValueError(f"symbols of {name} must be a positive integer, not {symbols!r}")
        if base % stride:
            raise ValueError(f"base of {name} must be a multiple of its stride {stride}")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"field names of {name} must be unique, not {names!r}")
        for f in fields:
            _check_width(f"{name}.{f.name}", f.width)
            if not f.accepts(f.reset & _MASK64):
                raise ValueError(f"reset value of {name}.{f.name} fails its own rule or width")
        self._claim(name, base, base + symbols * stride)
        win = ParamWindow(name, base, symbols, stride, tuple(fields))
        self.windows[name] = win
        return win

    def describe(self) -> dict:
        """The map as a JSON-ready dict: ``{"registers": {...}, "windows": {...}}``."""
        regs = {
            r.name: {
                "address": r.address,
                "width": r.width,
                "access": r.access,
                "signed": r.signed,
                "reset": r.reset,
                "rule": r.rule.describe(),
                "doc": r.doc,
            }
            for r in sorted(self.registers.values(), key=lambda r: r.address)
        }
        wins = {
            w.name: {
                "base": w.base,
                "symbols": w.symbols,
                "stride": w.stride,
                "fields": [
                    {
                        "name": f.name,
                        "index": k,
                        "width": f.width,
                        "signed": f.signed,
                        "reset": f.reset,
                        "rule": f.rule.describe(),
                    }
                    for k, f in enumerate(w.fields)
                ],
            }
            for w in self.windows.values()
        }
        return {"registers": regs, "windows": wins}


def quote_param_fields() -> list[ParamField]:
    """The per-symbol quoting parameters of quoting.md, with the reference model's rules and
    defaults (``tick2quote.sim.models.pricing.QuoteParams``)."""
    return [
        ParamField("tick", 7, rule=one_of(1, 100), reset=100),
        ParamField("spread_bps", 16, reset=20),
        ParamField("skew_num", 16, signed=True),
        ParamField("skew_shift", 5, rule=between(0, 31)),
        ParamField("quote_size", 32, reset=100),
        ParamField("max_order_qty", 32, reset=1000),
        ParamField("max_inventory", 32, reset=1000),
        ParamField("min_edge_bps", 16),
        ParamField("band_bps", 16, rule=between(1, 65535), reset=500),
        ParamField("max_loss", 64, reset=2**63 - 1),
        ParamField("refresh_cycles", 32),
        ParamField("enabled", 1, reset=1),
    ]


def window_signature(window: ParamWindow) -> wiring.Signature:
    """The control plane's side of a window's port: it drives ``locate``, ``field``, ``wdata``
    and ``we`` and reads ``rdata`` (the field's raw bits, zero-extended) one cycle after
    presenting ``locate`` and ``field``."""
    return wiring.Signature(
        {
            "locate": Out(window.locate_width),
            "field": Out(window.field_width),
            "wdata": Out(64),
            "we": Out(1),
            "rdata": In(64),
        }
    )


def window_row_layout(window: ParamWindow) -> data.StructLayout:
    """One symbol's parameters, one member per field (raw bits; signed fields two's
    complement)."""
    return data.StructLayout({f.name: f.width for f in window.fields})


class ParamStore(wiring.Component):
    """Per-symbol parameter storage for one window: one memory per field.

    ``ctrl`` is the control plane's port (:func:`window_signature`, flipped); ``row_locate`` /
    ``row`` give every field of one symbol one cycle after ``row_locate`` is presented (the
    quoter's read). Memories start at each field's reset value, and after every reset a sweep
    of ``symbols`` cycles writes them back (block RAM keeps its contents across a reset); a
    control write during the sweep is lost.
    """

    def __init__(self, window: ParamWindow):
        self.window = window
        super().__init__(
            {
                "ctrl": In(window_signature(window)),
                "row_locate": In(window.locate_width),
                "row": Out(window_row_layout(window)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        field_reg = Signal.like(self.ctrl.field)
        m.d.sync += field_reg.eq(self.ctrl.field)
        symbols = self.window.symbols
        sweep = Signal(range(symbols + 1))  # after reset: write every row back to reset values
        sweeping = Signal()
        m.d.comb += sweeping.eq(sweep != symbols)
        with m.If(sweeping):
            m.d.sync += sweep.eq(sweep + 1)
        reads = []
        for index, f in enumerate(self.window.fields):
            mem = memory.Memory(shape=f.width, depth=symbols, init=[f.reset] * symbols)
            m.submodules[f"mem_{f.name}"] = mem
            wr = mem.write_port()
            rd = mem.read_port()
            row = mem.read_port()
            m.d.comb += [
                wr.addr.eq(Mux(sweeping, sweep, self.ctrl.locate)),
                wr.data.eq(Mux(sweeping, f.reset, self.ctrl.wdata[: f.width])),
                wr.en.eq(sweeping | self.ctrl.we & (self.ctrl.field == index)),
                rd.addr.eq(self.ctrl.locate),
                row.addr.eq(self.row_locate),
                getattr(self.row, f.name).eq(row.data),
            ]
            reads.append(rd.data)
        with m.Switch(field_reg):
            for index, value in enumerate(reads):
                with m.Case(index):
                    m.d.comb += self.ctrl.rdata.eq(value)
        return m


#: The device's counters (read-only, 64 bits), in address order from ``0x180``.
DEVICE_COUNTERS = (
    "frames_in",
    "messages_in",
    "drop_filter",
    "drop_truncated",
    "gaps",
    "duplicates",
    "stale_symbols",
    "quotes",
    "orders_enter",
    "orders_replace",
    "orders_cancel",
    "fills",
    "fills_unknown",
    "reject_band",
    "reject_edge",
    "reject_inventory",
    "reject_loss",
    "reject_throttle",
)


def device_map(symbols: int) -> RegisterMap:
    """The tick-to-quote device's registers outside the control plane's own: kill switch,
    subscription mask, feed and order addresses, :data:`DEVICE_COUNTERS` and the per-symbol
    quoting parameters (window ``params`` at ``0x1000``, stride 16)."""
    regmap = RegisterMap()
    regmap.add("kill_switch", 0x100, 1, reset=1, doc="1 pulls every quote")
    regmap.add("subscription_mask", 0x101, 64, doc="bit k: feed group k is joined")
    regmap.add("feed_group", 0x102, 32, doc="IPv4 multicast group of the feed")
    regmap.add("feed_port", 0x103, 16, reset=26477, rule=between(1, 65535), doc="feed port")
    regmap.add("order_ip", 0x104, 32, doc="IPv4 address of the order entry gateway")
    regmap.add("order_port", 0x105, 16, reset=15000, rule=between(1, 65535), doc="OUCH port")
    regmap.counters(0x180, DEVICE_COUNTERS, width=64, doc="device counter")
    regmap.window("params", 0x1000, symbols, quote_param_fields(), stride=16)
    return regmap
