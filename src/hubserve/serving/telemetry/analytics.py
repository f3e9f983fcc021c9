"""Per-endpoint analytics for the last day: a ring of per-minute buckets (requests, status classes, a latency
histogram, ready replicas), merged into the points and totals the analytics API answers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from hubserve.histogram import LATENCY_BOUNDS_S, bucket_of, quantile

MINUTES = 24 * 60
STATUS_CLASSES = ("2xx", "4xx", "5xx")
Period = Literal["1h", "1d"]
# A period: how many points, of how many minutes each (1h: 60 points of a minute, 1d: 96 of 15 minutes).
PERIODS: dict[str, tuple[int, int]] = {"1h": (60, 1), "1d": (96, 15)}
# The list page's rate: requests per minute over the last few minutes (the current one included).
RATE_MINUTES = 5
QUANTILES = (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99))


def status_class(status: int) -> str | None:
    """2xx, 4xx (a client's closed connection, 499, too) or 5xx; None for the others (1xx, 3xx)."""
    label = f"{status // 100}xx"
    return label if label in STATUS_CLASSES else None


@dataclass
class Minute:
    """One minute's counts (`minute` is minutes since the epoch); latencies by LATENCY_BOUNDS_S bucket index."""

    minute: int
    requests: int = 0
    status: Counter[str] = field(default_factory=Counter)
    latency: Counter[int] = field(default_factory=Counter)
    replicas: int | None = None  # the most ready replicas sampled in this minute


@dataclass
class Window:
    """Minutes merged: what one point (or the totals) of the API shows."""

    requests: int = 0
    status: Counter[str] = field(default_factory=Counter)
    latency: Counter[int] = field(default_factory=Counter)
    replicas: int | None = None

    def add(self, minute: Minute) -> None:
        self.requests += minute.requests
        self.status.update(minute.status)
        self.latency.update(minute.latency)
        if minute.replicas is not None:
            self.replicas = max(self.replicas or 0, minute.replicas)

    def percentile_ms(self, q: float) -> float | None:
        seconds = quantile(LATENCY_BOUNDS_S, self.latency, q)
        return None if seconds is None else round(seconds * 1000, 3)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "status": {label: self.status[label] for label in STATUS_CLASSES},
                **{key: self.percentile_ms(q) for key, q in QUANTILES}}


class EndpointAnalytics:
    """An endpoint's last MINUTES minutes: a slot per minute, reused a day later."""

    def __init__(self) -> None:
        self._ring: list[Minute | None] = [None] * MINUTES

    def _slot(self, now: float) -> Minute:
        minute = int(now // 60)
        slot = self._ring[minute % MINUTES]
        if slot is None or slot.minute != minute:
            slot = self._ring[minute % MINUTES] = Minute(minute)
        return slot

    def record(self, status: int, duration_s: float, now: float) -> None:
        slot = self._slot(now)
        slot.requests += 1
        label = status_class(status)
        if label is not None:
            slot.status[label] += 1
        slot.latency[bucket_of(LATENCY_BOUNDS_S, duration_s)] += 1

    def sample_replicas(self, ready: int, now: float) -> None:
        slot = self._slot(now)
        slot.replicas = max(slot.replicas or 0, ready)

    def window(self, first: int, last: int) -> Window:
        """Minutes `first` to `last` (minutes since the epoch, both included) merged; those older than a day or not
        seen count nothing."""
        window = Window()
        for minute in range(max(first, last - MINUTES + 1), last + 1):
            slot = self._ring[minute % MINUTES]
            if slot is not None and slot.minute == minute:
                window.add(slot)
        return window

    def series(self, period: str, now: float) -> dict[str, Any]:
        """The analytics API's `step_s`, `points` (oldest first, the last one the current, partial step) and
        `totals` for `period`."""
        count, minutes = PERIODS[period]
        current = int(now // 60) // minutes * minutes  # the first minute of the current step
        first = current - (count - 1) * minutes
        points = []
        for start in range(first, current + 1, minutes):
            window = self.window(start, start + minutes - 1)
            points.append({"t": start * 60, **window.to_dict(), "replicas": window.replicas})
        totals = self.window(first, current + minutes - 1)
        return {"step_s": minutes * 60, "points": points,
                "totals": {**totals.to_dict(), "requests_per_min": round(totals.requests / (count * minutes), 3)}}

    def summary(self, now: float) -> dict[str, Any]:
        """What the endpoint list shows: the current rate, the last hour's requests and median latency."""
        minute = int(now // 60)
        hour = self.window(minute - 59, minute)
        recent = self.window(minute - RATE_MINUTES + 1, minute)
        return {"requests_per_min": round(recent.requests / RATE_MINUTES, 3), "requests_1h": hour.requests,
                "p50_ms": hour.percentile_ms(0.5)}
