"""What every front door shares: reading a bounded body, the endpoint's access check, error routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError

from hubserve.errors import BadRequest, HubserveError, PayloadTooLarge
from hubserve.invocation import InvocationRequest
from hubserve.security import TokenRegistry
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.manager import EndpointManager

ErrorRenderer = Callable[[Request, HubserveError], Response]


def manager_of(request: Request) -> EndpointManager:
    manager: EndpointManager = request.app.state.manager
    return manager


def tokens_of(request: Request) -> TokenRegistry:
    tokens: TokenRegistry = request.app.state.tokens
    return tokens


def validation_message(errors: Sequence[Any]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "invalid request: " + "; ".join(parts)


async def guarded(render: ErrorRenderer, handler: Callable[[Request], Awaitable[Response]],
                  request: Request) -> Response:
    """`handler`'s response, or our error in `render`'s wire format: handlers just raise."""
    try:
        return await handler(request)
    except HubserveError as exc:
        return render(request, exc)
    except (ValidationError, RequestValidationError) as exc:
        return render(request, BadRequest(validation_message(exc.errors())))


def error_route(render: ErrorRenderer) -> type[APIRoute]:
    """A route class that renders our errors in `render`'s wire format."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            return partial(guarded, render, super().get_route_handler())

    return ProtocolRoute


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body ({declared} bytes) is over this endpoint's limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over this endpoint's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def accept_invocation(request: Request, name: str,
                            attributes: dict[str, str] | None = None) -> tuple[EndpointRuntime, InvocationRequest]:
    """The endpoint and the internal request for an HTTP call: checks access, then reads the body."""
    runtime = manager_of(request).get(name)
    if runtime.spec.security == "protected":
        tokens_of(request).require_endpoint_access(request.headers.get("authorization"), name)
    body = await read_body(request, runtime.spec.max_payload_bytes)
    return runtime, InvocationRequest(
        body=body,
        content_type=request.headers.get("content-type") or "application/json",
        accept=request.headers.get("accept") or "application/json",
        attributes=attributes or {},
    )
