"""host.latency: HDR summaries against numpy, pow2 register conversion, plots, receive stamps."""

from __future__ import annotations

import json
import math
import socket
import sys

import numpy as np
import pytest
from rich.console import Console
from tick2quote.host.latency import (
    LatencyRecorder,
    LatencySummary,
    clock_for,
    enable_rx_timestamps,
    format_table,
    from_device_registers,
    pow2_bucket_edges,
    recv_with_timestamp,
)


def _random_latencies(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=7.0, sigma=1.2, size=n).astype(np.int64) + rng.integers(0, 3, n)


def _within_hdr_precision(values: np.ndarray, got: int, p: float, digits: int) -> bool:
    """``got`` is a nearest-rank percentile of ``values`` (one rank of rounding either way),
    overstated by at most the HDR relative precision."""
    ordered = np.sort(values)
    rank = max(1, math.ceil(p * len(values) / 100))
    for r in (rank - 1, rank, rank + 1):
        if 1 <= r <= len(values):
            exact = int(ordered[r - 1])
            if exact <= got <= exact * (1 + 10**-digits) + 1:
                return True
    return False


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("digits", [2, 3])
def test_summary_matches_numpy_within_hdr_precision(seed, digits):
    values = _random_latencies(seed, 20_000)
    rec = LatencyRecorder("host round trip", unit="ns", lowest=1, highest=10**10, digits=digits)
    rec.record_all(values.tolist())
    s = rec.summary()
    assert (s.name, s.unit, s.count) == ("host round trip", "ns", len(values))
    assert s.min == values.min() and s.max == values.max()
    assert s.mean == pytest.approx(values.mean(), rel=1e-12)
    for field, p in (("p50", 50), ("p99", 99), ("p999", 99.9)):
        got = getattr(s, field)
        assert _within_hdr_precision(values, got, p, digits), (field, got)
        exact = np.percentile(values, p, method="inverted_cdf")  # nearest rank, ceil
        assert got >= np.percentile(values, p - 0.01, method="inverted_cdf")
        assert got <= np.percentile(values, p + 0.01, method="inverted_cdf") * (1 + 10**-digits)
        assert got == pytest.approx(exact, rel=0.05)


def test_merge_equals_recording_everything_in_one():
    a, b = _random_latencies(3, 5000), _random_latencies(4, 7000)
    ra, rb, rall = (LatencyRecorder("x", unit="cycles") for _ in range(3))
    ra.record_all(a.tolist())
    rb.record_all(b.tolist())
    rall.record_all(np.concatenate([a, b]).tolist())
    ra.merge(rb)
    assert ra.summary() == rall.summary()
    with pytest.raises(ValueError, match="cannot merge 'ns' values into a 'cycles' recorder"):
        ra.merge(LatencyRecorder("y", unit="ns"))


def test_empty_and_bad_values():
    rec = LatencyRecorder("empty", unit="cycles", highest=1000)
    assert rec.summary() == LatencySummary("empty", "cycles", 0, *([None] * 6))
    with pytest.raises(ValueError, match=r"value 1001 outside 0..1000 cycles"):
        rec.record(1001)
    with pytest.raises(ValueError, match="outside"):
        rec.record(-1)
    with pytest.raises(TypeError, match="integer"):
        rec.record(1.5)
    with pytest.raises(ValueError, match="unit must be one of"):
        LatencyRecorder("x", unit="ms")
    with pytest.raises(ValueError, match="digits must be in 1..5"):
        LatencyRecorder("x", digits=6)
    with pytest.raises(ValueError, match="nothing to plot"):
        rec.plot("unused.png")
    assert rec.count == 0


def test_json_shape_and_round_trip_of_the_encoded_histogram():
    from hdrh.histogram import HdrHistogram

    values = _random_latencies(5, 3000)
    rec = LatencyRecorder("wire", unit="ns", highest=10**9, digits=3)
    rec.record_all(values.tolist())
    out = json.loads(json.dumps(rec.to_json()))
    fields = ["name", "unit", "count", "min", "p50", "p99", "p999", "max", "mean"]
    assert set(out) == {*fields, "lowest", "highest", "digits", "sum", "hdr"}
    assert out["count"] == 3000 and out["sum"] == int(values.sum())
    decoded = HdrHistogram.decode(out["hdr"])
    assert decoded.get_total_count() == 3000
    assert decoded.get_value_at_percentile(99) == rec._hist.get_value_at_percentile(99)


def test_plot_writes_a_png(tmp_path):
    rec = LatencyRecorder("plot me", unit="ns")
    rec.record_all(_random_latencies(6, 2000).tolist())
    path = rec.plot(tmp_path / "latency.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_table_lists_every_summary():
    rec = LatencyRecorder("host", unit="ns")
    rec.record_all([10, 20, 30])
    empty = LatencyRecorder("none", unit="cycles").summary()
    console = Console(width=200, record=True)
    console.print(format_table([rec.summary(), empty]))
    text = console.export_text()
    assert "host" in text and "none" in text and "p99.9" in text
    assert "20.0" in text  # the exact mean of 10, 20, 30


# -- device registers --------------------------------------------------------------------------


def _pow2_index(value: int, nbuckets: int) -> int:
    """Independent bucket index: bit length, saturated at the last bucket."""
    return min(value.bit_length(), nbuckets - 1)


def test_bucket_edges():
    assert [pow2_bucket_edges(k) for k in range(5)] == [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15)]
    for k in range(1, 20):
        lower, upper = pow2_bucket_edges(k)
        assert _pow2_index(lower, 64) == k == _pow2_index(upper, 64)


def test_hand_built_buckets():
    # 10 values: 3 in [2,3], 4 in [4,7], 2 in [32,63], 1 in the saturating last bucket (>= 64).
    buckets = [0, 0, 3, 4, 0, 0, 2, 1]
    s = from_device_registers(2, 900, 1500, 10, buckets, name="t2q", unit="cycles")
    assert (s.name, s.unit, s.count, s.min, s.max, s.mean) == ("t2q", "cycles", 10, 2, 900, 150.0)
    # p50: rank 5 falls in bucket 3 (cumulative 3, 7): upper edge 7.
    assert s.p50 == 7
    # p99 and p99.9: rank 10 is the saturated bucket, whose upper edge is clamped to max.
    assert s.p99 == 900 and s.p999 == 900


def test_buckets_upper_edge_clamped_to_max_and_min():
    # 1000 values: 990 in [16,31], 9 in [32,63], 1 in [64,127] whose real max is 70.
    buckets = [0, 0, 0, 0, 0, 990, 9, 1, 0, 0]
    s = from_device_registers(20, 70, 990 * 20 + 9 * 40 + 70, 1000, buckets)
    assert s.p50 == 31  # rank 500 in bucket 5
    assert s.p99 == 31  # rank 990 is still bucket 5 (cumulative 990)
    assert s.p999 == 63  # rank 999 in bucket 6
    assert s.max == 70
    one = from_device_registers(5, 5, 5, 1, [0, 0, 0, 1, 0])
    assert one.p50 == one.p99 == one.p999 == 5  # bucket 3's upper edge 7 clamped to max 5


def test_buckets_bound_the_exact_percentiles():
    values = _random_latencies(7, 5000) // 8
    nb = 16
    buckets = [0] * nb
    for v in values.tolist():
        buckets[_pow2_index(v, nb)] += 1
    s = from_device_registers(
        int(values.min()), int(values.max()), int(values.sum()), len(values), buckets
    )
    ordered = np.sort(values)
    for field, p in (("p50", 50), ("p99", 99), ("p999", 99.9)):
        exact = int(ordered[max(1, math.ceil(p * len(values) / 100)) - 1])
        got = getattr(s, field)
        assert exact <= got
        assert got <= max(2 * exact + 1, 1)  # within one power of two above


def test_torn_register_reads_raise():
    with pytest.raises(ValueError, match="bucket counts add up to 3, count is 4"):
        from_device_registers(2, 3, 10, 4, [0, 0, 3])
    with pytest.raises(ValueError, match="min 1 is not in the lowest occupied bucket 2"):
        from_device_registers(1, 3, 7, 3, [0, 0, 3])
    with pytest.raises(ValueError, match="max 9 is not in the highest occupied bucket 2"):
        from_device_registers(2, 9, 7, 3, [0, 0, 3, 0])
    with pytest.raises(ValueError, match="sum 100 is impossible"):
        from_device_registers(2, 3, 100, 3, [0, 0, 3])
    empty = from_device_registers(0, 0, 0, 0, [0, 0, 0])
    assert empty.count == 0 and empty.p50 is None


# -- receive timestamps ------------------------------------------------------------------------


def test_loopback_udp_receive_stamps():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        kernel = enable_rx_timestamps(rx)
        if sys.platform.startswith("linux"):
            assert kernel
        stamps, sources = [], set()
        for i in range(20):
            clock = clock_for("kernel" if kernel else "user")
            sent = clock()
            tx.sendto(i.to_bytes(2, "big"), rx.getsockname())
            data, addr, t_ns, source = recv_with_timestamp(rx, 64)
            assert data == i.to_bytes(2, "big") and addr == tx.getsockname()
            if source == "kernel":
                assert t_ns >= sent  # same clock domain: received after it was sent
            stamps.append(t_ns)
            sources.add(source)
        if sys.platform.startswith("linux"):
            assert sources == {"kernel"}
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    finally:
        rx.close()
        tx.close()


def test_user_stamps_without_kernel_stamping():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        before = clock_for("user")()
        tx.sendto(b"x", rx.getsockname())
        data, _addr, t_ns, source = recv_with_timestamp(rx, 64)
        assert (data, source) == (b"x", "user") and t_ns >= before
    finally:
        rx.close()
        tx.close()
    with pytest.raises(ValueError, match="source must be"):
        clock_for("gps")
