"""The Inference Endpoints front door: `POST /endpoints/{name}` and its health route."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from hubserve.api.common import accept_invocation, check_access, error_route
from hubserve.api.contract import ANSWER_CONTENT, INVOCATION_BODY, OPTIONAL_TOKEN, errors
from hubserve.api.errors import render_error
from hubserve.errors import HubserveError, NoReadyReplica

router = APIRouter(route_class=error_route(render_error), tags=["inference-endpoints"])


class Health(BaseModel):
    status: str
    ready_replicas: int


def wants_stream(body: bytes, content_type: str) -> bool:
    """Whether a JSON body asks for `"stream": true` (TGI's and the Inference Endpoints' flag)."""
    if b'"stream"' not in body or "json" not in content_type:
        return False
    try:
        # orjson stops at 1024 levels of nesting, where the json module would overflow its recursion.
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
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


@router.post("/endpoints/{name}", openapi_extra={"requestBody": INVOCATION_BODY, "security": OPTIONAL_TOKEN},
             response_class=Response, responses={
                 200: {"description": "The answer, encoded by Accept; server-sent events for `\"stream\": true`",
                       "content": {**ANSWER_CONTENT, "text/event-stream": {"schema": {"type": "string"}}}},
                 **errors(400, 401, 403, 404, 406, 408, 413, 415, 424, 429, 503, 504)})
async def invoke(name: str, request: Request) -> Response:
    runtime, invocation = await accept_invocation(request, name)
    if wants_stream(invocation.body, invocation.content_type):
        invocation.stream = True
        events = await runtime.stream(invocation)
        return StreamingResponse(sse_events(events), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})
    result = await runtime.invoke(invocation)
    return Response(result.body, media_type=result.content_type)


@router.get("/endpoints/{name}/health", openapi_extra={"security": OPTIONAL_TOKEN},
            responses=errors(401, 403, 404, 503))
async def health(name: str, request: Request) -> Health:
    runtime = check_access(request, name)
    if runtime.status.ready_replicas == 0:
        raise NoReadyReplica(f"endpoint {name} has no ready replica (state: {runtime.status.state})",
                             retry_after=5)
    return Health(status="ok", ready_replicas=runtime.status.ready_replicas)
