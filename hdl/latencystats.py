"""Latency statistics in registers: minimum, maximum, sum, count and a power-of-two histogram.

:class:`LatencyStats` takes one valid-strobed 32-bit sample a cycle (a :data:`sample_layout`,
e.g. :attr:`tick2quote.hdl.egress.OrderEgress.latency`) and keeps what
:func:`tick2quote.host.latency.from_device_registers` reads back:

- ``min`` / ``max`` of the samples (``min`` reads ``2**32 - 1`` and ``max`` 0 while ``count``
  is 0), ``sum`` (64-bit) and ``count``;
- ``histogram``: ``buckets`` counters; bucket 0 counts the value 0, bucket ``k >= 1`` counts
  ``2**(k-1) .. 2**k - 1``, and the last bucket also counts every larger value.

Timing: a sample is registered with its bucket index (stage 1), then every register is updated
in the same cycle (stage 2), so the registers always agree with each other; a read taken across
several cycles may still be torn, which the host detects and retries. ``clear`` (a pulse)
zeroes everything and discards the sample in stage 1. Counters wrap at their width; ``sum``
wraps at 64 bits.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["sample_layout", "LatencyStats", "bucket_of"]

#: One latency sample: ``valid`` strobes ``value`` (cycles).
sample_layout = data.StructLayout({"valid": 1, "value": 32})

_SAMPLE_BITS = 32


def bucket_of(value: int, buckets: int) -> int:
    """The histogram bucket of ``value`` (``value.bit_length()``, clamped to the last one)."""
    return min(value.bit_length(), buckets - 1)


class LatencyStats(wiring.Component):
    """Minimum / maximum / sum / count and a power-of-two histogram of 32-bit samples.

    Parameters
    ----------
    buckets:
        Histogram buckets, 2 .. 33 (33 gives every 32-bit value a bucket of its own size).
    count_width:
        Width of ``count`` and of each bucket counter, 1 .. 64.

    Attributes
    ----------
    sample : In(sample_layout)
    clear : In(1)
        Pulse: zero every register.
    min, max : Out(32)
    sum : Out(64)
    count : Out(count_width)
    histogram : Out(ArrayLayout(count_width, buckets))
    """

    def __init__(self, buckets: int = 32, count_width: int = 32):
        if not isinstance(buckets, int) or not 2 <= buckets <= _SAMPLE_BITS + 1:
            raise ValueError(f"buckets must be an integer in 2 .. 33, not {buckets!r}")
        if not isinstance(count_width, int) or not 1 <= count_width <= 64:
            raise ValueError(f"count_width must be an integer in 1 .. 64, not {count_width!r}")
        self.buckets = buckets
        self.count_width = count_width
        super().__init__(
            {
                "sample": In(sample_layout),
                "clear": In(1),
                "min": Out(_SAMPLE_BITS, init=(1 << _SAMPLE_BITS) - 1),
                "max": Out(_SAMPLE_BITS),
                "sum": Out(64),
                "count": Out(count_width),
                "histogram": Out(data.ArrayLayout(count_width, buckets)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        value = self.sample.value

        # Stage 1: the sample and its bucket (the index of its highest set bit, plus one).
        held = Signal(_SAMPLE_BITS)
        held_valid = Signal()
        held_bucket = Signal(range(self.buckets))
        bucket = Signal(range(self.buckets))
        for bit in range(_SAMPLE_BITS):
            with m.If(value[bit]):
                m.d.comb += bucket.eq(min(bit + 1, self.buckets - 1))
        m.d.sync += [
            held.eq(value),
            held_valid.eq(self.sample.valid & ~self.clear),
            held_bucket.eq(bucket),
        ]

        # Stage 2: every register at once.
        with m.If(self.clear):
            m.d.sync += [
                self.min.eq((1 << _SAMPLE_BITS) - 1),
                self.max.eq(0),
                self.sum.eq(0),
                self.count.eq(0),
                self.histogram.eq(0),
            ]
        with m.Elif(held_valid):
            m.d.sync += [
                self.min.eq(Mux(held < self.min, held, self.min)),
                self.max.eq(Mux(held > self.max, held, self.max)),
                self.sum.eq(self.sum + held),
                self.count.eq(self.count + 1),
            ]
            for k in range(self.buckets):
                with m.If(held_bucket == k):
                    m.d.sync += self.histogram[k].eq(self.histogram[k] + 1)
        return m
