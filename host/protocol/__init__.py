"""Wire formats: one declaration per structure, used by encoder and decoder alike."""

from . import ethernet, itch, moldudp64, ouch, tick
from .errors import (
    ChecksumError,
    DecodeError,
    FieldValueError,
    LengthError,
    TruncatedError,
    UnknownTypeError,
)

__all__ = [
    "ethernet",
    "itch",
    "moldudp64",
    "ouch",
    "tick",
    "DecodeError",
    "TruncatedError",
    "LengthError",
    "ChecksumError",
    "UnknownTypeError",
    "FieldValueError",
]
