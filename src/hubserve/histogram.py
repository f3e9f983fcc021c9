"""Fixed-bucket histograms: counted where a value is measured (a replica, the API's request path), summed across
replicas or minutes, exported to Prometheus, and read as percentiles. Plain Python: the API process imports it."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any


def log_bounds(first: float, last: float, per_doubling: int) -> tuple[float, ...]:
    """Upper bounds from `first` up to at least `last`, `per_doubling` of them per factor of two: the same relative
    precision for a 2 ms and a 2 s latency."""
    bounds = [first]
    step = 2 ** (1 / per_doubling)
    while bounds[-1] < last:
        bounds.append(bounds[-1] * step)
    return tuple(float(f"{bound:.4g}") for bound in bounds)


# Seconds: from a tenth of a millisecond to 10 minutes, 4 buckets per doubling (each about 19% wide).
LATENCY_BOUNDS_S = log_bounds(1e-4, 600.0, 4)
# Prometheus' series per label set: fewer, coarser buckets (a scrape carries each of them).
EXPORTED_LATENCY_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Items in a batch of the dynamic batching.
BATCH_SIZE_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


def bucket_of(bounds: Sequence[float], value: float) -> int:
    """The index of the bucket `value` counts in: the first bound at or above it (Prometheus' `le`), else the
    overflow bucket, `len(bounds)`."""
    return bisect.bisect_left(bounds, value)


def quantile(bounds: Sequence[float], counts: Mapping[int, int], q: float) -> float | None:
    """The `q` quantile (0..1) of counts by bucket index, interpolated linearly inside its bucket; None without a
    count. The overflow bucket answers its lower bound: nothing is known above it."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index in sorted(counts):
        count = counts[index]
        if count and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * max(rank - seen, 0.0) / count
        seen += count
    return bounds[-1]  # pragma: no cover - rank <= total always lands in a bucket


class Histogram:
    """Counts of observations by bucket (`bounds` are the buckets' upper bounds, then an overflow bucket), and
    their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, value: float) -> None:
        self.counts[bucket_of(self.bounds, value)] += 1
        self.sum += value

    def add(self, other: Histogram) -> None:
        """Count `other`'s observations here too (the same bounds: a replica's, another minute's)."""
        if other.bounds != self.bounds:
            raise ValueError("histograms with different buckets do not add up")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def quantile(self, q: float) -> float | None:
        return quantile(self.bounds, dict(enumerate(self.counts)), q)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus' buckets: (`le`, observations at or below it), the last `+Inf`."""
        buckets, running = [], 0
        for bound, count in zip((*(repr(b) for b in self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        histogram = cls(data["bounds"])
        counts = list(data["counts"])
        if len(counts) != len(histogram.counts):
            raise ValueError("a histogram's counts do not match its buckets")
        histogram.counts = [int(c) for c in counts]
        histogram.sum = float(data["sum"])
        return histogram
