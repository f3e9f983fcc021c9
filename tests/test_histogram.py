"""Fixed-bucket histograms: buckets as Prometheus' `le`, sums across replicas, percentiles."""

from __future__ import annotations

import pytest

from hubserve.histogram import LATENCY_BOUNDS_S, Histogram, bucket_of, log_bounds, quantile


def test_log_bounds_double_every_few_buckets() -> None:
    bounds = log_bounds(1.0, 8.0, 2)
    assert bounds == (1.0, 1.414, 2.0, 2.828, 4.0, 5.657, 8.0)
    assert LATENCY_BOUNDS_S[0] == 1e-4 and LATENCY_BOUNDS_S[-1] >= 600


def test_a_value_counts_in_the_first_bucket_at_or_above_it() -> None:
    bounds = (1.0, 2.0, 4.0)
    assert [bucket_of(bounds, v) for v in (0.0, 1.0, 1.5, 2.0, 4.0, 4.5)] == [0, 0, 1, 1, 2, 3]


def test_histograms_add_up_and_render_cumulative_buckets() -> None:
    a, b = Histogram((1.0, 2.0)), Histogram((1.0, 2.0))
    for value in (0.5, 1.5, 3.0):
        a.observe(value)
    b.observe(1.0)
    a.add(b)
    assert (a.counts, a.count, a.sum) == ([2, 1, 1], 4, 6.0)
    assert a.cumulative() == [("1.0", 2), ("2.0", 3), ("+Inf", 4)]
    assert Histogram.from_dict(a.to_dict()).to_dict() == a.to_dict()
    with pytest.raises(ValueError, match="different buckets"):
        a.add(Histogram((1.0,)))


def test_quantiles_interpolate_within_their_bucket() -> None:
    bounds = (10.0, 20.0, 40.0)
    assert quantile(bounds, {}, 0.5) is None
    assert quantile(bounds, {1: 4}, 0.5) == 15.0  # half way through (10, 20]
    assert quantile(bounds, {0: 1, 2: 1}, 0.5) == 10.0
    assert quantile(bounds, {0: 1, 2: 1}, 1.0) == 40.0
    assert quantile(bounds, {3: 2}, 0.5) == 40.0  # above the last bound: only that is known


def test_latency_percentiles_are_within_a_bucket_of_the_truth() -> None:
    histogram = Histogram(LATENCY_BOUNDS_S)
    values = [0.001 * i for i in range(1, 1001)]  # 1 ms .. 1 s, evenly
    for value in values:
        histogram.observe(value)
    for q in (0.5, 0.9, 0.99):
        estimate = histogram.quantile(q)
        assert estimate is not None and abs(estimate - values[int(q * 1000) - 1]) / values[int(q * 1000) - 1] < 0.2
