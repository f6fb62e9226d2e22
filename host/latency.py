"""Latency distributions: recording, summaries, tables, plots, device registers, receive stamps.

Host-side latencies are recorded in a :class:`LatencyRecorder`, a named, unit-tagged wrapper
around an HdrHistogram (``hdrh``); no percentile is computed by hand. Device-side latencies come
from the gateware's registers (minimum, maximum, sum, count and a power-of-two histogram) and are
turned into the same :class:`LatencySummary` by :func:`from_device_registers`. Every summary
reports min / p50 / p99 / p99.9 / max with its sample count (see ``anchors.md``).

Percentiles of a recorder
    Taken by ``HdrHistogram.get_value_at_percentile``: the target rank is
    ``max(1, round(p * count / 100))`` and the value is the highest value equivalent to the
    bucket holding that rank, so it overstates the exact order statistic by at most one part in
    ``10**digits``. It is then clamped to the exact ``[min, max]`` recorded (the recorder keeps
    the exact minimum, maximum and sum beside the histogram), so ``p100 == max`` and the mean is
    exact.

Percentiles of the device's power-of-two histogram
    Bucket 0 counts the value 0; bucket ``k >= 1`` counts values in ``[2**(k-1), 2**k - 1]``;
    the last bucket also counts every larger value (it saturates). A percentile ``p`` takes the
    nearest rank ``r = max(1, ceil(p * count / 100))``, finds the first bucket whose cumulative
    count reaches ``r``, and reports that bucket's **upper edge** (``2**k - 1``; for the last
    bucket, infinity), clamped to the exact ``[min, max]`` from the registers. The result is an
    upper bound: the exact percentile lies between the bucket's lower edge and the value reported.

Receive timestamps
    :func:`enable_rx_timestamps` asks the kernel to stamp datagrams on arrival (``SO_TIMESTAMPNS``,
    Linux); :func:`recv_with_timestamp` returns that stamp with ``source="kernel"``. Kernel stamps
    are ``CLOCK_REALTIME`` nanoseconds, so the matching send stamps must be taken with
    :func:`time.time_ns`. Without a kernel stamp the function stamps in user space after
    ``recvmsg`` returns, with :func:`time.perf_counter_ns` and ``source="user"`` (a monotonic
    clock with an arbitrary epoch, which includes the wake-up delay); send stamps must then come
    from ``perf_counter_ns`` too. :func:`clock_for` returns the right send clock for a source.
"""

from __future__ import annotations

import builtins
import math
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from hdrh.histogram import HdrHistogram

__all__ = [
    "UNITS",
    "LatencySummary",
    "LatencyRecorder",
    "format_table",
    "from_device_registers",
    "pow2_bucket_edges",
    "enable_rx_timestamps",
    "recv_with_timestamp",
    "clock_for",
]

#: Units a recorder may be tagged with.
UNITS = ("ns", "cycles")
#: Percentiles every summary reports, by field name.
_PERCENTILES = {"p50": 50.0, "p99": 99.0, "p999": 99.9}


@dataclass(frozen=True)
class LatencySummary:
    """One latency distribution, ready for a report.

    ``min``, the percentiles and ``max`` are in ``unit``; ``mean`` is exact (sum / count).
    An empty distribution has ``count == 0`` and every other statistic ``None``.
    """

    name: str
    unit: str
    count: int
    min: int | None
    p50: int | None
    p99: int | None
    p999: int | None
    max: int | None
    mean: float | None


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")


class LatencyRecorder:
    """A named latency histogram in one unit.

    Parameters
    ----------
    name:
        What is measured, e.g. ``"host round trip"``.
    unit:
        ``"ns"`` or ``"cycles"``.
    lowest, highest:
        The smallest distinguishable and the largest recordable value (``1 <= lowest``,
        ``highest >= 2 * lowest``).
    digits:
        Significant decimal digits kept (1..5): the relative precision is ``10**-digits``.
    """

    def __init__(
        self,
        name: str,
        unit: str = "ns",
        *,
        lowest: int = 1,
        highest: int = 10**10,
        digits: int = 3,
    ):
        _check_unit(unit)
        if not isinstance(lowest, int) or lowest < 1:
            raise ValueError(f"lowest must be an int >= 1, not {lowest!r}")
        if not isinstance(highest, int) or highest < 2 * lowest:
            raise ValueError(f"highest must be an int >= 2 * lowest, not {highest!r}")
        if digits not in range(1, 6):
            raise ValueError(f"digits must be in 1..5, not {digits!r}")
        self.name = name
        self.unit = unit
        self.lowest, self.highest, self.digits = lowest, highest, digits
        self._hist = HdrHistogram(lowest, highest, digits)
        self._min: int | None = None
        self._max: int | None = None
        self._sum = 0

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return self._hist.get_total_count()

    def record(self, value: int, count: int = 1) -> None:
        """Record ``value`` (an integer in ``0..highest``) ``count`` times.

        A value out of range raises :class:`ValueError`: an outlier is never dropped silently.
        """
        value = _as_int("value", value)
        count = _as_int("count", count)
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count!r}")
        if not 0 <= value <= self.highest:
            raise ValueError(f"{self.name}: value {value} outside 0..{self.highest} {self.unit}")
        if not self._hist.record_value(value, count):
            raise ValueError(f"{self.name}: HdrHistogram refused value {value}")
        self._min = value if self._min is None else min(self._min, value)
        self._max = value if self._max is None else max(self._max, value)
        self._sum += value * count

    def record_all(self, values: Iterable[int]) -> None:
        """Record every value of ``values`` once."""
        for value in values:
            self.record(value)

    def percentile(self, p: float) -> int | None:
        """The ``p``-th percentile (0..100) as described in the module docstring."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be in 0..100, not {p!r}")
        if self._min is None:
            return None
        value = self._hist.get_value_at_percentile(p)
        return min(max(int(value), self._min), self._max)

    def summary(self) -> LatencySummary:
        """The distribution as a :class:`LatencySummary`."""
        if self._min is None:
            return LatencySummary(self.name, self.unit, 0, None, None, None, None, None, None)
        pct = {field: self.percentile(p) for field, p in _PERCENTILES.items()}
        return LatencySummary(
            self.name,
            self.unit,
            self.count,
            self._min,
            max=self._max,
            mean=self._sum / self.count,
            **pct,
        )

    def merge(self, other: LatencyRecorder) -> None:
        """Add every value recorded by ``other`` (same unit, same range) into this recorder."""
        if other.unit != self.unit:
            raise ValueError(f"cannot merge {other.unit!r} values into a {self.unit!r} recorder")
        if (other.lowest, other.highest, other.digits) != (self.lowest, self.highest, self.digits):
            raise ValueError("cannot merge recorders with different lowest/highest/digits")
        if other._min is None:
            return
        self._hist.add(other._hist)
        self._min = other._min if self._min is None else min(self._min, other._min)
        self._max = other._max if self._max is None else max(self._max, other._max)
        self._sum += other._sum

    def to_json(self) -> dict:
        """The summary as a JSON-ready dict, plus the range and the encoded HdrHistogram.

        Keys: the :class:`LatencySummary` fields, ``lowest``, ``highest``, ``digits``, ``sum``
        and ``hdr`` (HdrHistogram's base64 compressed encoding, ``""`` when empty).
        """
        out = asdict(self.summary())
        out.update(lowest=self.lowest, highest=self.highest, digits=self.digits, sum=self._sum)
        out["hdr"] = self._hist.encode().decode("ascii") if self.count else ""
        return out

    def plot(self, path: str | Path) -> Path:
        """Write a PNG histogram of the distribution to ``path`` and return the path.

        Counts are binned on a logarithmic x axis; vertical lines mark p50, p99, p99.9 and max.
        Raises :class:`ValueError` when nothing was recorded.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        summary = self.summary()
        if summary.count == 0:
            raise ValueError(f"{self.name}: nothing recorded, nothing to plot")
        values, counts = [], []
        for item in self._hist.get_recorded_iterator():
            values.append(max(item.value_iterated_to, 1))
            counts.append(item.count_at_value_iterated_to)
        low, high = max(summary.min, 1), max(summary.max, 2)
        edges = (
            [low * (high / low) ** (i / 60) for i in range(61)] if high > low else [low, low * 2]
        )
        fig = Figure(figsize=(8, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.hist(values, bins=edges, weights=counts, color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel(f"latency ({self.unit})")
        ax.set_ylabel("count")
        ax.set_title(f"{self.name}: {summary.count} samples")
        marks = {"p50": summary.p50, "p99": summary.p99, "p99.9": summary.p999}
        marks["max"] = summary.max
        for (label, value), color in zip(marks.items(), ("green", "orange", "red", "black")):
            ax.axvline(max(value, 1), color=color, linestyle="--", label=f"{label} {value}")
        ax.legend()
        path = Path(path)
        fig.savefig(path, format="png")
        return path


def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    return value.__index__()


def format_table(summaries: Sequence[LatencySummary], title: str | None = "Latency"):
    """A :class:`rich.table.Table` with one row per summary (``-`` for an empty one)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name")
    table.add_column("unit")
    for column in ("count", "min", "p50", "p99", "p99.9", "max", "mean"):
        table.add_column(column, justify="right")
    for s in summaries:
        stats = (s.min, s.p50, s.p99, s.p999, s.max)
        cells = ["-" if v is None else str(v) for v in stats]
        mean = "-" if s.mean is None else f"{s.mean:.1f}"
        table.add_row(s.name, s.unit, str(s.count), *cells, mean)
    return table


def pow2_bucket_edges(index: int) -> tuple[int, float]:
    """The ``(lower, upper)`` values counted by power-of-two bucket ``index`` (not saturated).

    Bucket 0 holds 0 only; bucket ``k >= 1`` holds ``2**(k-1) .. 2**k - 1``.
    """
    if index < 0:
        raise ValueError(f"bucket index must be >= 0, not {index!r}")
    return (0, 0) if index == 0 else (1 << (index - 1), (1 << index) - 1)


def from_device_registers(
    min: int,
    max: int,
    sum: int,
    count: int,
    pow2_histogram: Sequence[int],
    *,
    name: str = "device tick-to-quote",
    unit: str = "cycles",
) -> LatencySummary:
    """A summary from the device's latency registers (see the module docstring for the rule).

    Raises :class:`ValueError` when the registers disagree with each other (a torn read: the
    bucket counts do not add up to ``count``, or ``min``/``max`` lie outside the lowest/highest
    occupied bucket); read them again.
    """
    _check_unit(unit)
    buckets = [_as_int("bucket count", c) for c in pow2_histogram]
    if not buckets:
        raise ValueError("pow2_histogram must have at least one bucket")
    if any(c < 0 for c in buckets) or count < 0 or sum < 0:
        raise ValueError("register values must be non-negative")
    if builtins.sum(buckets) != count:
        raise ValueError(f"bucket counts add up to {builtins.sum(buckets)}, count is {count}")
    if count == 0:
        return LatencySummary(name, unit, 0, None, None, None, None, None, None)
    if not 0 <= min <= max:
        raise ValueError(f"need 0 <= min <= max, not min={min} max={max}")
    last = len(buckets) - 1
    occupied = [k for k, c in enumerate(buckets) if c]

    def edges(k: int) -> tuple[int, float]:
        lower, upper = pow2_bucket_edges(k)
        return (lower, math.inf) if k == last else (lower, upper)

    lo_lower, lo_upper = edges(occupied[0])
    hi_lower, hi_upper = edges(occupied[-1])
    if not lo_lower <= min <= lo_upper:
        raise ValueError(f"min {min} is not in the lowest occupied bucket {occupied[0]}")
    if not hi_lower <= max <= hi_upper:
        raise ValueError(f"max {max} is not in the highest occupied bucket {occupied[-1]}")
    if not min * count <= sum <= max * count:
        raise ValueError(f"sum {sum} is impossible for {count} values in {min}..{max}")

    def percentile(p: float) -> int:
        rank = builtins.max(1, math.ceil(Fraction(str(p)) * count / 100))
        seen = 0
        for k, c in enumerate(buckets):
            seen += c
            if seen >= rank:
                return int(builtins.min(builtins.max(edges(k)[1], min), max))
        raise AssertionError("unreachable: bucket counts add up to count")

    pct = {field: percentile(p) for field, p in _PERCENTILES.items()}
    return LatencySummary(name, unit, count, min, max=max, mean=sum / count, **pct)


# -- kernel receive timestamps -------------------------------------------------------------------

#: ``SO_TIMESTAMPNS`` (== ``SCM_TIMESTAMPNS``): the asm-generic Linux value, used where Python's
#: socket module does not name it; ``None`` where the OS does not offer it.
SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None
)
_TIMESPEC = struct.Struct("@ll")


def enable_rx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram received on ``sock``; True if it accepted."""
    if SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def recv_with_timestamp(sock: socket.socket, bufsize: int) -> tuple[bytes, object, int, str]:
    """Receive one datagram: ``(data, addr, t_ns, source)``.

    ``source`` is ``"kernel"`` (``t_ns`` is the kernel's ``CLOCK_REALTIME`` arrival stamp) or
    ``"user"`` (``t_ns`` is :func:`time.perf_counter_ns` just after ``recvmsg`` returned).
    """
    ancillary = socket.CMSG_SPACE(_TIMESPEC.size) if SO_TIMESTAMPNS is not None else 0
    data, ancdata, _flags, addr = sock.recvmsg(bufsize, ancillary)
    user_ns = time.perf_counter_ns()
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            if len(payload) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                return data, addr, seconds * 1_000_000_000 + nanoseconds, "kernel"
    return data, addr, user_ns, "user"


def clock_for(source: str) -> Callable[[], int]:
    """The clock whose stamps are comparable with receive stamps of ``source``."""
    clocks = {"kernel": time.time_ns, "user": time.perf_counter_ns}
    try:
        return clocks[source]
    except KeyError:
        raise ValueError(f"source must be 'kernel' or 'user', not {source!r}") from None
