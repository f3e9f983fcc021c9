"""The analytics ring: per-minute buckets for a day, merged into an hour's or a day's points and totals."""

from __future__ import annotations

from hubserve.serving.telemetry.analytics import MINUTES, EndpointAnalytics, status_class

# A Monday at 12:00 UTC: on a 15-minute boundary.
NOON = 1_700_481_600.0


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 204, 301, 400, 429, 499, 500, 503)] == \
        ["2xx", "2xx", None, "4xx", "4xx", "4xx", "5xx", "5xx"]


def test_the_hour_has_a_point_per_minute_and_the_current_one_last() -> None:
    analytics = EndpointAnalytics()
    analytics.record(200, 0.010, NOON - 61)  # two minutes ago
    analytics.record(200, 0.020, NOON + 5)
    analytics.record(404, 0.001, NOON + 30)
    analytics.record(500, 1.0, NOON + 59)
    analytics.sample_replicas(2, NOON + 10)
    analytics.sample_replicas(1, NOON + 20)
    hour = analytics.series("1h", NOON + 59)
    points = hour["points"]
    assert hour["step_s"] == 60 and len(points) == 60
    assert points[-1]["t"] == NOON and points[0]["t"] == NOON - 59 * 60
    assert points[-1]["requests"] == 3 and points[-1]["status"] == {"2xx": 1, "4xx": 1, "5xx": 1}
    assert points[-1]["replicas"] == 2  # the most seen in the minute
    assert points[-3]["requests"] == 1 and points[-3]["replicas"] is None
    assert points[-2] == {"t": NOON - 60, "requests": 0, "status": {"2xx": 0, "4xx": 0, "5xx": 0}, "p50_ms": None,
                          "p90_ms": None, "p99_ms": None, "replicas": None}
    assert points[-1]["p50_ms"] is not None and 10 < points[-1]["p50_ms"] < 25  # the 20 ms call, within its bucket
    assert points[-1]["p99_ms"] is not None and points[-1]["p99_ms"] > 800
    totals = hour["totals"]
    assert totals["requests"] == 4 and totals["requests_per_min"] == round(4 / 60, 3)
    assert totals["status"] == {"2xx": 2, "4xx": 1, "5xx": 1}


def test_the_day_has_96_points_of_15_minutes() -> None:
    analytics = EndpointAnalytics()
    analytics.record(200, 0.05, NOON - 14 * 60)  # the previous quarter hour
    analytics.record(200, 0.05, NOON + 14 * 60)  # the current one
    analytics.record(200, 0.05, NOON - 23 * 3600)
    day = analytics.series("1d", NOON + 14 * 60)
    points = day["points"]
    assert day["step_s"] == 900 and len(points) == 96
    assert points[-1]["t"] == NOON and points[-2]["t"] == NOON - 900
    assert [p["requests"] for p in points[-2:]] == [1, 1]
    assert points[3]["t"] == NOON - 23 * 3600 and points[3]["requests"] == 1
    assert day["totals"]["requests"] == 3


def test_minutes_older_than_a_day_are_forgotten() -> None:
    analytics = EndpointAnalytics()
    analytics.record(200, 0.05, NOON)
    later = NOON + MINUTES * 60  # the same slot of the ring, a day on
    assert analytics.series("1d", later)["totals"]["requests"] == 0
    analytics.record(500, 0.05, later)
    assert analytics.window(int(NOON // 60), int(NOON // 60)).requests == 0
    assert analytics.series("1h", later)["totals"]["status"] == {"2xx": 0, "4xx": 0, "5xx": 1}


def test_the_summary_rate_is_over_the_last_five_minutes() -> None:
    analytics = EndpointAnalytics()
    for minute in range(10):
        analytics.record(200, 0.004, NOON + minute * 60)
    summary = analytics.summary(NOON + 9 * 60 + 30)
    assert summary == {"requests_per_min": 1.0, "requests_1h": 10, "p50_ms": summary["p50_ms"]}
    assert summary["p50_ms"] is not None and 3 < summary["p50_ms"] <= 4.5
