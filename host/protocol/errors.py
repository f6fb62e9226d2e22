"""Typed decode errors: every one names the byte offset where the input went wrong."""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "TruncatedError",
    "LengthError",
    "ChecksumError",
    "UnknownTypeError",
    "FieldValueError",
]


class DecodeError(ValueError):
    """Input bytes that cannot be decoded to a trustworthy value.

    ``offset`` is the byte offset, from the start of the buffer handed to the decoder (or of the
    file, for file readers), at which the problem was found.
    """

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} (at byte offset {offset})")
        self.offset = offset
        self.reason = message

    def shifted(self, base: int) -> DecodeError:
        """The same error with its offset moved by ``base`` (for errors found in a sub-buffer)."""
        err = type(self).__new__(type(self))
        DecodeError.__init__(err, self.reason, self.offset + base)
        return err


class TruncatedError(DecodeError):
    """The buffer ends before the structure it must hold."""


class LengthError(DecodeError):
    """A length field disagrees with the size its type or its container requires."""


class ChecksumError(DecodeError):
    """A header checksum does not verify."""


class UnknownTypeError(DecodeError):
    """A type code with no known layout, where no length prefix allows skipping it."""


class FieldValueError(DecodeError):
    """A field holds a value its format does not allow (e.g. a tick record's side of 7)."""
