"""The control API under /api/v1: endpoints (create, list, get, update, pause, resume, delete, logs) and tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from hubserve.api.common import error_route, manager_of, owner_only, tokens_of
from hubserve.api.contract import BEARER, errors
from hubserve.api.errors import render_error
from hubserve.serving.async_queue import AsyncBacklog
from hubserve.serving.endpoint import tail_lines
from hubserve.spec import Endpoint, EndpointName, EndpointSpec, EndpointUpdate, Text
from hubserve.store import TokenKind

# The most log lines one call returns: each is read into memory.
MAX_TAIL = 100_000


def require_admin(request: Request,
                  _declared: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None) -> None:
    tokens_of(request).require_admin(request.headers.get("authorization"))


router = APIRouter(prefix="/api/v1", route_class=error_route(render_error), dependencies=[Depends(require_admin)],
                   tags=["control"], responses=errors(401, 403))
# A route that takes a body answers one too slow or too big for the limits it is read with (common.py).
BODY_ERRORS = (408, 413)
# What a data-plane server refuses: changes, and the logs (on the owner's nodes).
OWNER_ONLY = [Depends(owner_only)]


class EndpointList(BaseModel):
    items: list[Endpoint]


class EndpointStats(BaseModel):
    name: str
    replicas: list[dict[str, Any]]
    # Asynchronous requests not done yet; None for an endpoint without async_inference.
    async_backlog: AsyncBacklog | None = None


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Text = Field(min_length=1)
    endpoints: list[EndpointName] | None = None  # None: every endpoint
    aws: bool = Field(False, description="An AWS access key pair (for SigV4 clients) instead of a bearer token")
    admin: bool = Field(False, description="Control-plane rights (and so every endpoint)")


class TokenInfo(BaseModel):
    id: str  # an AWS key's access key id
    name: str
    kind: TokenKind
    endpoints: list[str] | None
    admin: bool
    created_at: float


class CreatedToken(TokenInfo):
    token: str  # shown once


class CreatedAwsKey(TokenInfo):
    access_key_id: str
    secret_access_key: str  # shown once


def with_url(request: Request, endpoint: Endpoint) -> Endpoint:
    endpoint.url = str(request.base_url).rstrip("/") + f"/endpoints/{endpoint.spec.name}"
    return endpoint


@router.post("/endpoints", status_code=201, responses=errors(400, 409, *BODY_ERRORS), dependencies=OWNER_ONLY)
async def create_endpoint(spec: EndpointSpec, request: Request) -> Endpoint:
    return with_url(request, manager_of(request).create(spec))


@router.get("/endpoints")
async def list_endpoints(request: Request) -> EndpointList:
    return EndpointList(items=[with_url(request, e) for e in manager_of(request).list()])


@router.get("/endpoints/{name}", responses=errors(404))
async def get_endpoint(name: str, request: Request) -> Endpoint:
    return with_url(request, manager_of(request).get(name).describe())


@router.put("/endpoints/{name}", responses=errors(400, 404, 409, *BODY_ERRORS), dependencies=OWNER_ONLY)
@router.patch("/endpoints/{name}", responses=errors(400, 404, 409, *BODY_ERRORS), dependencies=OWNER_ONLY)
async def update_endpoint(name: str, change: EndpointUpdate, request: Request) -> Endpoint:
    return with_url(request, manager_of(request).update(name, change))


@router.post("/endpoints/{name}/pause", responses=errors(404), dependencies=OWNER_ONLY)
async def pause_endpoint(name: str, request: Request) -> Endpoint:
    """Stop the replicas (they finish their requests first) and keep the spec: requests are answered 503 until the
    endpoint is resumed, also after a server restart."""
    return with_url(request, await manager_of(request).pause(name))


@router.post("/endpoints/{name}/resume", responses=errors(404, 409), dependencies=OWNER_ONLY)
async def resume_endpoint(name: str, request: Request) -> Endpoint:
    """Deploy a paused endpoint again (409 for one that is not paused)."""
    return with_url(request, manager_of(request).resume(name))


@router.delete("/endpoints/{name}", status_code=204, response_class=Response, responses=errors(404),
                dependencies=OWNER_ONLY)
async def delete_endpoint(name: str, request: Request) -> Response:
    await manager_of(request).delete(name)
    return Response(status_code=204)


@router.get("/endpoints/{name}/stats", responses=errors(404))
async def endpoint_stats(name: str, request: Request) -> EndpointStats:
    """The engine counters of each ready replica (batches formed, sizes, queue waits, generation steps), and the
    asynchronous requests waiting or running."""
    manager = manager_of(request)
    return EndpointStats(name=name, replicas=await manager.get(name).stats(),
                         async_backlog=manager.async_runners.backlog(name))


@router.get("/endpoints/{name}/logs", response_model=None, response_class=Response, dependencies=OWNER_ONLY, responses={
    200: {"description": "The worker log's last lines; with `follow`, then new lines as they come",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    **errors(400, 404)})
async def endpoint_logs(name: str, request: Request, tail: Annotated[int, Query(ge=0, le=MAX_TAIL)] = 200,
                        follow: bool = False) -> PlainTextResponse | StreamingResponse:
    return log_response(request, manager_of(request).get(name).log_path, tail, follow)


def log_response(request: Request, path: Path, tail: int, follow: bool) -> PlainTextResponse | StreamingResponse:
    """A log's last `tail` lines; with `follow`, then new lines as they are written, until the client goes."""
    lines = "".join(line + "\n" for line in tail_lines(path, tail))
    if not follow:
        return PlainTextResponse(lines)

    async def stream() -> AsyncIterator[str]:
        yield lines
        position = path.stat().st_size if path.exists() else 0
        while not await request.is_disconnected():
            if path.exists() and path.stat().st_size > position:
                with open(path, errors="replace") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position = handle.tell()
                yield chunk
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/plain")


@router.post("/tokens", status_code=201, responses=errors(400, *BODY_ERRORS), dependencies=OWNER_ONLY)
async def create_token(body: TokenRequest, request: Request) -> CreatedToken | CreatedAwsKey:
    record, secret = tokens_of(request).create(body.name, body.endpoints, aws=body.aws, admin=body.admin)
    info = record.model_dump(exclude={"digest"})
    if record.kind == "aws":
        return CreatedAwsKey(access_key_id=record.id, secret_access_key=secret, **info)
    return CreatedToken(token=secret, **info)


@router.get("/tokens", dependencies=OWNER_ONLY)
async def list_tokens(request: Request) -> list[TokenInfo]:
    return [TokenInfo(**t.model_dump(exclude={"digest"})) for t in tokens_of(request).list()]


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response, responses=errors(404),
                dependencies=OWNER_ONLY)
async def revoke_token(token_id: str, request: Request) -> Response:
    tokens_of(request).revoke(token_id)
    return Response(status_code=204)
