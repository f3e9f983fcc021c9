"""GET /metrics: the server's Prometheus metrics, behind the admin token unless the server makes them public."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from hubserve.api.aws_auth import tokens_of
from hubserve.api.common import error_route, settings_of
from hubserve.api.contract import OPTIONAL_TOKEN, errors
from hubserve.api.errors import render_error
from hubserve.serving.telemetry import Telemetry

# The text format generate_latest writes (prometheus_client's CONTENT_TYPE_LATEST names a newer one).
PROMETHEUS_TEXT = CONTENT_TYPE_PLAIN_0_0_4


def require_scraper(request: Request) -> None:
    """The admin token, unless `public_metrics` is set."""
    if not settings_of(request).public_metrics:
        tokens_of(request).require_admin(request.headers.get("authorization"))


router = APIRouter(route_class=error_route(render_error), dependencies=[Depends(require_scraper)], tags=["metrics"],
                   responses=errors(401, 403))


# The document says the token is optional: a server with public_metrics takes none.
@router.get("/metrics", response_class=Response, openapi_extra={"security": OPTIONAL_TOKEN}, responses={
    200: {"description": "Prometheus text exposition", "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    """Requests by endpoint, route and status with their latencies; endpoints and replicas by state; requests in
    flight and held; the replicas' queue waits, batch sizes, generated tokens, time to first token and inter-token
    latencies; asynchronous backlogs; transform jobs' progress."""
    telemetry: Telemetry = request.app.state.telemetry
    return Response(await telemetry.scrape(), media_type=PROMETHEUS_TEXT)
