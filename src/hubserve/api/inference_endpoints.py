"""The Inference Endpoints front door: `POST /endpoints/{name}` and its health route."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from hubserve.api.common import accept_invocation, error_route, manager_of
from hubserve.api.errors import render_error
from hubserve.errors import NoReadyReplica

router = APIRouter(route_class=error_route(render_error), tags=["inference-endpoints"])


@router.post("/endpoints/{name}")
async def invoke(name: str, request: Request) -> Response:
    runtime, invocation = await accept_invocation(request, name)
    result = await runtime.invoke(invocation)
    return Response(result.body, media_type=result.content_type)


@router.get("/endpoints/{name}/health")
async def health(name: str, request: Request) -> JSONResponse:
    runtime = manager_of(request).get(name)
    if runtime.status.ready_replicas == 0:
        raise NoReadyReplica(f"endpoint {name} has no ready replica (state: {runtime.status.state})",
                             retry_after=5)
    return JSONResponse({"status": "ok", "ready_replicas": runtime.status.ready_replicas})
