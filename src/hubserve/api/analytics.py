"""The analytics API under /api/v1 (what the console charts): an endpoint's requests, status classes, latency
percentiles and ready replicas over the last hour or day, and a summary of every endpoint."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from hubserve.api.common import error_route, manager_of
from hubserve.api.contract import errors
from hubserve.api.control import require_admin
from hubserve.api.errors import render_error
from hubserve.serving.telemetry import Telemetry

router = APIRouter(prefix="/api/v1", route_class=error_route(render_error), dependencies=[Depends(require_admin)],
                   tags=["analytics"], responses=errors(401, 403))


class Latencies(BaseModel):
    requests: int
    status: dict[str, int]  # "2xx", "4xx", "5xx"
    # Latency percentiles in milliseconds (from the arrival of a call to the end of its answer); None without calls.
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


class AnalyticsPoint(Latencies):
    t: int  # the step's start, in seconds since the epoch
    replicas: int | None  # the most ready replicas seen in the step; None where none was sampled


class AnalyticsTotals(Latencies):
    requests_per_min: float


class AnalyticsSeries(BaseModel):
    name: str
    period: Literal["1h", "1d"]
    step_s: int
    points: list[AnalyticsPoint]  # oldest first; the last is the current step, still counting
    totals: AnalyticsTotals


class EndpointSummary(BaseModel):
    requests_per_min: float  # over the last 5 minutes
    requests_1h: int
    p50_ms: float | None  # over the last hour


class ServerAnalytics(BaseModel):
    endpoints: dict[str, EndpointSummary]


def telemetry_of(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


@router.get("/endpoints/{name}/analytics", responses=errors(400, 404))
async def endpoint_analytics(name: str, request: Request, period: Literal["1h", "1d"] = "1h") -> AnalyticsSeries:
    """The last hour in 60 steps of a minute, or the last day in 96 steps of 15 minutes (kept in memory: a restart
    starts them again)."""
    runtime = manager_of(request).get(name)
    telemetry = telemetry_of(request)
    telemetry.sample_replicas()
    series = telemetry.analytics(runtime).series(period, time.time())
    return AnalyticsSeries.model_validate({"name": name, "period": period, **series})


@router.get("/analytics")
async def server_analytics(request: Request) -> ServerAnalytics:
    """Each endpoint's recent rate, requests in the last hour and median latency (the endpoint list's columns)."""
    telemetry = telemetry_of(request)
    now = time.time()
    return ServerAnalytics.model_validate({"endpoints": {
        runtime.spec.name: telemetry.analytics(runtime).summary(now) for runtime in telemetry.runtimes()}})
