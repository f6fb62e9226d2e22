"""Stream helpers for ``amaranth.sim`` testbenches, and pause patterns shared with cocotb.

The testbench helpers follow Amaranth's stream rules: a source raises ``valid`` with its payload
and holds both until a clock edge sees ``ready``; a sink raises ``ready`` and takes the payload
at an edge that sees ``valid``. Use them from async testbenches (``sim.add_testbench``)::

    async def source(ctx):
        for beat in packet_beats(b"..."):
            await stream_put(ctx, dut.i, beat, idle=pause)

Pause patterns are iterators of booleans, one per clock cycle, ``True`` meaning "pause this
cycle" (a source inserts an idle cycle, a sink holds ``ready`` low). They are plain Python, so
the cocotb drivers in :mod:`.cocotb_streams` use the same ones.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "pack",
    "unpack",
    "PAUSE_PATTERNS",
    "pause_pattern",
    "packet_beats",
    "beats_bytes",
    "stream_put",
    "stream_get",
]


def pack(layout, values: Mapping[str, int]) -> int:
    """Pack field values into the integer of a ``StructLayout`` (missing fields are 0)."""
    unknown = set(values) - {name for name, _ in layout}
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} are not in the layout")
    word = 0
    for name, fld in layout:
        value = int(values.get(name, 0))
        if not 0 <= value < (1 << fld.width):
            raise ValueError(f"field {name!r} of {fld.width} bits cannot hold {value}")
        word |= value << fld.offset
    return word


def unpack(layout, word: int) -> dict[str, int]:
    """Split a ``StructLayout`` integer into ``{field: value}``."""
    return {name: (word >> fld.offset) & ((1 << fld.width) - 1) for name, fld in layout}


def _never() -> Iterator[bool]:
    return itertools.repeat(False)


def _every_fourth() -> Iterator[bool]:
    return itertools.cycle([False, False, False, True])


def _alternate() -> Iterator[bool]:
    return itertools.cycle([False, True])


def _bursty() -> Iterator[bool]:
    return itertools.cycle([False] * 7 + [True] * 3)


#: Named pause patterns; ``random`` ones take a seed through :func:`pause_pattern`.
PAUSE_PATTERNS = ("none", "every_fourth", "alternate", "bursty", "random_25", "random_60")


def pause_pattern(name: str, seed: int = 0) -> Iterator[bool]:
    """The pause iterator called ``name`` (one of :data:`PAUSE_PATTERNS`)."""
    fixed = {
        "none": _never,
        "every_fourth": _every_fourth,
        "alternate": _alternate,
        "bursty": _bursty,
    }
    if name in fixed:
        return fixed[name]()
    if name.startswith("random_"):
        rate = int(name.removeprefix("random_")) / 100
        rng = random.Random(seed)
        return iter(lambda: rng.random() < rate, None)
    raise ValueError(f"pause pattern must be one of {PAUSE_PATTERNS}, not {name!r}")


def packet_beats(data: bytes, beat_bytes: int = 8) -> list[dict]:
    """Split a packet into beat payloads ``{data, keep, first, last}`` (lane 0 = first byte)."""
    if not data:
        raise ValueError("a packet needs at least one byte")
    beats = []
    for pos in range(0, len(data), beat_bytes):
        chunk = data[pos : pos + beat_bytes]
        beats.append(
            {
                "data": int.from_bytes(chunk, "little"),
                "keep": (1 << len(chunk)) - 1,
                "first": int(pos == 0),
                "last": int(pos + beat_bytes >= len(data)),
            }
        )
    return beats


def beats_bytes(beats: Iterable[tuple[int, int]], beat_bytes: int = 8) -> bytes:
    """Join the valid bytes of ``(data, keep)`` beats."""
    out = bytearray()
    for data, keep in beats:
        raw = int(data).to_bytes(beat_bytes, "little")
        out += bytes(raw[k] for k in range(beat_bytes) if (int(keep) >> k) & 1)
    return bytes(out)


async def stream_put(ctx, stream, payload, *, idle: Iterator[bool] | None = None) -> None:
    """Send one beat on ``stream``, first idling for as many cycles as ``idle`` says."""
    if idle is not None:
        while next(idle):
            await ctx.tick()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, pause: Iterator[bool] | None = None):
    """Take one beat from ``stream`` and return its payload, holding ``ready`` low while
    ``pause`` says so."""
    while True:
        ready = not (pause is not None and next(pause))
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            ctx.set(stream.ready, 0)
            return payload
