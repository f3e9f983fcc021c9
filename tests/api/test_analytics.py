"""The analytics API end to end: an endpoint's calls counted per minute and by status class, latency percentiles,
ready replicas, the server-wide summary, and its errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_TOKEN, Server, running_endpoints

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GOOD, BAD = 4, 2


@pytest.fixture(scope="module")
def charted(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[str]:
    with running_endpoints(server, [{"name": "charted", "model": str(tiny_model("text-classification"))}]):
        yield "charted"


def analytics(server: Server, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1{path}", params=params, headers=ADMIN, timeout=30)


def series_with(server: Server, name: str, requests: int, period: str) -> dict[str, Any]:
    """The series once it counts `requests` (a call is recorded as its answer ends, just after the client has it)."""
    deadline = time.monotonic() + 5
    while True:
        response = analytics(server, f"/endpoints/{name}/analytics", period=period)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["totals"]["requests"] >= requests or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_an_endpoint_s_calls_by_minute_status_and_latency(server: Server, charted: str) -> None:
    started = time.time()
    url = f"{server.url}/endpoints/{charted}"
    for index in range(GOOD):
        assert httpx.post(url, json={"inputs": f"a fine day {index}"}, timeout=60).status_code == 200
    for _ in range(BAD):
        assert httpx.post(url, content=b"[1,", headers={"content-type": "application/json"}).status_code == 400

    hour = series_with(server, charted, GOOD + BAD, "1h")
    assert (hour["name"], hour["period"], hour["step_s"]) == (charted, "1h", 60)
    points = hour["points"]
    assert len(points) == 60
    assert [p["t"] for p in points] == list(range(points[0]["t"], points[0]["t"] + 3600, 60))
    assert started // 60 * 60 <= points[-1]["t"] <= time.time()
    assert sum(p["requests"] for p in points) == GOOD + BAD
    busy = [p for p in points if p["requests"]]
    assert busy and all(p["t"] >= started // 60 * 60 for p in busy)
    for point in busy:
        assert point["requests"] == sum(point["status"].values())
        assert 0 < point["p50_ms"] <= point["p90_ms"] <= point["p99_ms"]
    idle = [p for p in points if not p["requests"]]
    assert all(p["p50_ms"] is None and p["p99_ms"] is None for p in idle)
    assert points[-1]["replicas"] == 1

    totals = hour["totals"]
    assert totals["requests"] == GOOD + BAD
    assert totals["status"] == {"2xx": GOOD, "4xx": BAD, "5xx": 0}
    assert totals["requests_per_min"] == round((GOOD + BAD) / 60, 3)
    assert 0 < totals["p50_ms"] <= totals["p90_ms"] <= totals["p99_ms"]

    day = series_with(server, charted, GOOD + BAD, "1d")
    assert (day["step_s"], len(day["points"])) == (900, 96)
    assert all(p["t"] % 900 == 0 for p in day["points"])
    assert day["totals"]["status"] == totals["status"]
    assert day["points"][-1]["requests"] == GOOD + BAD or sum(p["requests"] for p in day["points"]) == GOOD + BAD

    summary = analytics(server, "/analytics").json()["endpoints"][charted]
    assert summary["requests_1h"] == GOOD + BAD
    assert summary["requests_per_min"] == round((GOOD + BAD) / 5, 3)
    assert summary["p50_ms"] > 0


def test_analytics_errors(server: Server, charted: str) -> None:
    missing = analytics(server, "/endpoints/no-such-endpoint/analytics")
    assert missing.status_code == 404
    assert "no-such-endpoint" in missing.json()["error"]
    assert analytics(server, f"/endpoints/{charted}/analytics", period="2h").status_code == 400
    assert httpx.get(f"{server.url}/api/v1/analytics").status_code == 401
    assert httpx.get(f"{server.url}/api/v1/endpoints/{charted}/analytics").status_code == 401
