"""The session token a device build is made with, kept in a file only its owner can read.

A twin build and a board build each draw a 64-bit token at random the first time and keep it
in ``<build directory>/token`` (mode 0600); the host reads it back from there
(``t2q run --twin-build DIR``) to sign its control requests.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["TOKEN_FILE", "session_token"]

#: Name of the token file in a build directory.
TOKEN_FILE = "token"


def session_token(directory: Path) -> tuple[int, Path]:
    """The session token kept in ``directory``: drawn at random (64 bits) and written with mode
    0600 the first time, read back afterwards. Returns the token and its file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{secrets.randbits(64):#018x}\n")
    return int(path.read_text().strip(), 16), path
