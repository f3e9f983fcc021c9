"""The Inference Endpoints front door: `POST /endpoints/{name}` and its health route."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from hubserve.api.common import accept_invocation, error_route, manager_of
from hubserve.api.errors import render_error
from hubserve.errors import HubserveError, NoReadyReplica

router = APIRouter(route_class=error_route(render_error), tags=["inference-endpoints"])


def wants_stream(body: bytes, content_type: str) -> bool:
    """Whether a JSON body asks for `"stream": true` (TGI's and the Inference Endpoints' flag)."""
    if b'"stream"' not in body or "json" not in content_type:
        return False
    try:
        payload = json.loads(body)
    except ValueError:
        return False  # the worker answers bad JSON with its own 400
    return isinstance(payload, dict) and payload.get("stream") is True


def sse(data: bytes) -> bytes:
    return b"data:" + data + b"\n\n"


async def sse_events(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield sse(event)
    except HubserveError as exc:  # after the 200 went out, errors travel as an event (as TGI sends them)
        yield sse(json.dumps({"error": exc.message, "error_type": exc.kind}).encode())


@router.post("/endpoints/{name}")
async def invoke(name: str, request: Request) -> Response:
    runtime, invocation = await accept_invocation(request, name)
    if wants_stream(invocation.body, invocation.content_type):
        invocation.stream = True
        events = await runtime.stream(invocation)
        return StreamingResponse(sse_events(events), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})
    result = await runtime.invoke(invocation)
    return Response(result.body, media_type=result.content_type)


@router.get("/endpoints/{name}/health")
async def health(name: str, request: Request) -> JSONResponse:
    runtime = manager_of(request).get(name)
    if runtime.status.ready_replicas == 0:
        raise NoReadyReplica(f"endpoint {name} has no ready replica (state: {runtime.status.state})",
                             retry_after=5)
    return JSONResponse({"status": "ok", "ready_replicas": runtime.status.ready_replicas})
