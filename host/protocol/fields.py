"""One declaration per fixed-layout wire structure, used by both encoder and decoder.

A :class:`Format` is an ordered list of :class:`Field`\\ s. Offsets are derived from the sizes, so
no offset is ever typed twice; the gateware layouts are checked against :meth:`Format.offsets` in
the tests. Decoding yields a :func:`collections.namedtuple` record whose attribute names are the
field names (snake_case), so ``record._asdict()`` is the JSON form.

Field kinds:

``uint``
    unsigned integer of 1..8 bytes, in the format's byte order.
``int``
    two's-complement signed integer.
``alpha``
    ASCII text, left-justified and space-padded; decodes to the trimmed ``str``.
``char``
    one ASCII character; decodes to a ``str`` of length 1.
``bytes``
    raw bytes, kept as they are.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from dataclasses import dataclass

from .errors import FieldValueError, LengthError, TruncatedError

__all__ = ["Field", "Format", "uint", "sint", "alpha", "char", "raw"]

_KINDS = ("uint", "int", "alpha", "char", "bytes")
_STRUCT_INT = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class Field:
    """A named field of ``size`` bytes and one of the kinds listed in the module docstring."""

    name: str
    size: int
    kind: str = "uint"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"field kind must be one of {_KINDS}, not {self.kind!r}")
        if self.size < 1:
            raise ValueError(f"field size must be positive, not {self.size!r}")
        if self.kind in ("uint", "int") and self.size > 8:
            raise ValueError(f"integer fields are at most 8 bytes, not {self.size!r}")
        if self.kind == "char" and self.size != 1:
            raise ValueError(f"char fields are 1 byte, not {self.size!r}")


def uint(name: str, size: int) -> Field:
    """An unsigned integer field."""
    return Field(name, size, "uint")


def sint(name: str, size: int) -> Field:
    """A signed (two's complement) integer field."""
    return Field(name, size, "int")


def alpha(name: str, size: int) -> Field:
    """A space-padded ASCII text field."""
    return Field(name, size, "alpha")


def char(name: str) -> Field:
    """A one-character ASCII field."""
    return Field(name, 1, "char")


def raw(name: str, size: int) -> Field:
    """A raw bytes field."""
    return Field(name, size, "bytes")


class Format:
    """A fixed-size wire structure.

    Parameters
    ----------
    name:
        Record class name, e.g. ``"AddOrder"``.
    fields:
        The fields, in wire order.
    byteorder:
        ``"big"`` (network order, the default) or ``"little"``.
    """

    def __init__(self, name: str, fields: list[Field], *, byteorder: str = "big"):
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', not {byteorder!r}")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"field names of {name} must be unique, not {names!r}")
        self.name = name
        self.fields = tuple(fields)
        self.byteorder = byteorder
        self.record = namedtuple(name, names)
        self.offsets: dict[str, int] = {}
        offset = 0
        codes = ["<" if byteorder == "little" else ">"]
        for f in self.fields:
            self.offsets[f.name] = offset
            offset += f.size
            if f.kind in ("uint", "int") and f.size in _STRUCT_INT:
                code = _STRUCT_INT[f.size]
                codes.append(code.lower() if f.kind == "int" else code)
            else:
                codes.append(f"{f.size}s")
        self.size = offset
        self._struct = struct.Struct("".join(codes))
        # Post-processing per field: None when struct already yields the final value.
        self._post = tuple(self._converter(f) for f in self.fields)
        self._pre = tuple(self._encoder(f) for f in self.fields)

    def __repr__(self):
        return f"Format({self.name!r}, size={self.size})"

    def field(self, name: str) -> Field:
        """The field called ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def _converter(self, f: Field):
        if f.kind == "alpha":
            return lambda b: b.decode("ascii", "replace").rstrip(" ")
        if f.kind == "char":
            return lambda b: b.decode("ascii", "replace")
        if f.kind in ("uint", "int") and f.size not in _STRUCT_INT:
            signed = f.kind == "int"
            order = self.byteorder
            return lambda b: int.from_bytes(b, order, signed=signed)
        return None

    def _encoder(self, f: Field):
        if f.kind == "alpha":
            return lambda v: _ascii(f, v).ljust(f.size, b" ")
        if f.kind == "char":
            return lambda v: _ascii(f, v)
        if f.kind == "bytes":
            return lambda v: _exact_bytes(f, v)
        if f.kind in ("uint", "int") and f.size not in _STRUCT_INT:
            signed = f.kind == "int"
            order = self.byteorder
            return lambda v: _odd_size_int(f, v, order, signed)
        return None

    def decode(self, data: bytes | memoryview, offset: int = 0, *, exact: bool = False):
        """Decode one record starting at ``offset``.

        Raises :class:`TruncatedError` when fewer than :attr:`size` bytes remain, and with
        ``exact=True`` a :class:`LengthError` when more remain.
        """
        available = len(data) - offset
        if available < self.size:
            raise TruncatedError(
                f"{self.name} needs {self.size} bytes, {available} remain",
                offset + max(0, available),
            )
        if exact and available != self.size:
            raise LengthError(f"{self.name} is {self.size} bytes, got {available}", offset)
        values = self._struct.unpack_from(data, offset)
        return self.record._make(
            v if conv is None else conv(v) for v, conv in zip(values, self._post)
        )

    def encode(self, record=None, /, **values) -> bytes:
        """Encode a record (the namedtuple, or keyword values) to exactly :attr:`size` bytes."""
        if record is not None:
            values = record._asdict() if hasattr(record, "_asdict") else dict(record)
        missing = [f.name for f in self.fields if f.name not in values]
        extra = set(values) - set(self.offsets)
        if missing or extra:
            raise ValueError(
                f"{self.name}: missing fields {missing}, unknown fields {sorted(extra)}"
            )
        out = []
        for f, enc in zip(self.fields, self._pre):
            v = values[f.name]
            out.append(v if enc is None else enc(v))
        try:
            return self._struct.pack(*out)
        except struct.error as exc:
            raise ValueError(f"{self.name}: {exc}") from None

    def make(self, **values):
        """A record with the given values; the rest are blank, so the record always encodes.

        Fields not given are 0 (integers), empty text (``alpha``), a space (``char``, the
        blank fill of fixed-width ASCII formats) or zero bytes (``bytes``).
        """
        defaults = {f.name: _BLANK[f.kind](f.size) for f in self.fields}
        defaults.update(values)
        return self.record(**defaults)


_BLANK = {
    "uint": lambda size: 0,
    "int": lambda size: 0,
    "alpha": lambda size: "",
    "char": lambda size: " ",
    "bytes": bytes,
}


def _ascii(f: Field, value) -> bytes:
    data = value.encode("ascii") if isinstance(value, str) else bytes(value)
    if len(data) > f.size:
        raise FieldValueError(f"field {f.name} holds {f.size} bytes, got {len(data)}", 0)
    if f.kind == "char" and len(data) != 1:
        raise FieldValueError(f"field {f.name} holds one character, got {value!r}", 0)
    return data


def _odd_size_int(f: Field, value, order: str, signed: bool) -> bytes:
    try:
        return int(value).to_bytes(f.size, order, signed=signed)
    except OverflowError:
        raise ValueError(f"field {f.name} of {f.size} bytes cannot hold {value!r}") from None


def _exact_bytes(f: Field, value) -> bytes:
    data = bytes(value)
    if len(data) != f.size:
        raise FieldValueError(f"field {f.name} holds {f.size} bytes, got {len(data)}", 0)
    return data
