"""What every front door shares: reading a bounded body, the endpoint's access check, error routes."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import aclosing
from functools import partial
from typing import Any, ClassVar

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from hubserve.api.aws_auth import signed_caller, tokens_of
from hubserve.errors import BadRequest, HubserveError, NotFound, PayloadTooLarge, RequestTimeout
from hubserve.invocation import InvocationRequest, Route
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.manager import EndpointManager
from hubserve.settings import ServerSettings

log = logging.getLogger("hubserve")

ErrorRenderer = Callable[[Request, HubserveError], Response]
# Control API bodies are specs and token requests: a few KB.
CONTROL_BODY_LIMIT = 1 << 20
# The status nginx logs for a client that left before its answer; no one receives it.
CLIENT_CLOSED_REQUEST = 499


def manager_of(request: Request) -> EndpointManager:
    manager: EndpointManager = request.app.state.manager
    return manager


def owner_only(request: Request) -> None:
    """Refuse on a data-plane server what changes state (endpoints, tokens, jobs): its owner server takes it."""
    manager_of(request).require_owner()


def settings_of(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


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
    except RequestTimeout as exc:
        response = render(request, exc)
        # The rest of the body may still arrive: it must not be read as the connection's next request.
        response.headers["connection"] = "close"
        return response
    except HubserveError as exc:
        return render(request, exc)
    except (ValidationError, RequestValidationError) as exc:
        return render(request, BadRequest(validation_message(exc.errors())))
    except ClientDisconnect:
        log.info("%s %s: the client disconnected before sending its whole body", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands over `body` whole, then waits on the connection (which tells disconnects)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again() -> Message:
        return pending.pop() if pending else await receive()

    return receive_again


async def with_read_body(handler: Callable[[Request], Awaitable[Response]], request: Request) -> Response:
    """`handler` given the request once its body is in, bounded in size and time as the invocations' bodies are."""
    body = await read_body(request, CONTROL_BODY_LIMIT)
    return await handler(Request(request.scope, replay(body, request.receive)))


class ProtocolRoute(APIRoute):
    """A route that renders our errors in its protocol's wire format (`render`, set by `error_route`)."""

    render: ClassVar[ErrorRenderer]

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is not None:  # FastAPI would read any body whole, however large or slow
            handler = partial(with_read_body, handler)
        return partial(guarded, type(self).render, handler)


def error_route(render: ErrorRenderer) -> type[ProtocolRoute]:
    """The route class for a front door whose errors `render` writes."""
    return type("ProtocolRoute", (ProtocolRoute,), {"render": staticmethod(render)})


async def read_body(request: Request, limit: int) -> bytes:
    """The request body: 413 as soon as it is known to be over `limit` bytes, 408 when the client stalls."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body ({declared} bytes) is over this endpoint's limit of {limit} bytes")
    timeout_s = settings_of(request).body_timeout_s
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    chunk = await anext(stream, None)
            except TimeoutError:
                raise RequestTimeout(f"the request body stalled: nothing came for {timeout_s:g} s") from None
            if chunk is None:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body is over this endpoint's limit of {limit} bytes")
            chunks.append(chunk)


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (400 otherwise, saying why)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def forwarded_header(request: Request, name: str) -> str | None:
    """A header handed on to the model: HTTP carries any byte, but media types and SageMaker's attributes are
    ASCII, and other bytes would reach the model's code as mojibake."""
    value = request.headers.get(name)
    if value is not None and not value.isascii():
        raise BadRequest(f"the {name} header must be ASCII text")
    return value


def tag_endpoint(request: Request, name: str) -> None:
    """Name the endpoint a request is for where the request recorder (metrics, analytics) finds it, also for
    server-wide routes that learn it from the body."""
    request.scope["hubserve.endpoint"] = name


def check_access(request: Request, name: str) -> EndpointRuntime:
    """The endpoint, once the caller may use it (protected endpoints take a token). Routes that read no body, or
    read it after this check, take bearer tokens only: an AWS signature covers the body."""
    runtime = manager_of(request).get(name)
    tag_endpoint(request, name)
    if runtime.spec.security == "protected":
        tokens_of(request).require_endpoint_access(request.headers.get("authorization"), name)
    return runtime


def endpoint_task(request: Request) -> str | None:
    """The task of the endpoint the request's path names (None while unknown, or for no such endpoint): some
    routes answer in the protocol of the model's task."""
    try:
        runtime = manager_of(request).get(request.path_params.get("name", ""))
    except NotFound:
        return None
    return runtime.status.task or runtime.spec.task


def scale_up_timeout(request: Request) -> float | None:
    """`X-Scale-Up-Timeout`, as Inference Endpoints reads it: how many seconds to wait for a replica when none is
    ready (0: do not wait, answer 503 at once). None when the request does not say."""
    value = request.headers.get("x-scale-up-timeout")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest(f"the X-Scale-Up-Timeout header must be a number of seconds, 0 or more (not {value!r})")
    return seconds


def new_invocation(request: Request, route: Route = Route.DEFAULT,
                   attribute_headers: Sequence[str] = ()) -> InvocationRequest:
    """The internal request for an HTTP call, its body still to read: bad headers are refused before it is."""
    content_type = forwarded_header(request, "content-type") or "application/json"
    accept = forwarded_header(request, "accept") or "application/json"
    attributes = {h: value for h in attribute_headers if (value := forwarded_header(request, h)) is not None}
    return InvocationRequest(body=b"", content_type=content_type, accept=accept, attributes=attributes, route=route,
                             scale_up_timeout_s=scale_up_timeout(request))


async def accept_invocation(request: Request, name: str, route: Route = Route.DEFAULT,
                            attribute_headers: Sequence[str] = ()) -> tuple[EndpointRuntime, InvocationRequest]:
    """The endpoint and the internal request for an HTTP call: checks access and headers, then reads the body.
    A protected endpoint also takes an AWS signature by a key hubserve issued: what its headers tell is checked
    first, the signature itself once the body it covers is in."""
    runtime = manager_of(request).get(name)
    tag_endpoint(request, name)
    signed = None
    if runtime.spec.security == "protected":
        signed = signed_caller(request)
        if signed is None:
            tokens_of(request).require_endpoint_access(request.headers.get("authorization"), name)
    invocation = new_invocation(request, route, attribute_headers)
    invocation.body = await read_body(request, runtime.spec.max_payload_bytes)
    if signed is not None:
        signed.require_endpoint(name, invocation.body)
    return runtime, invocation
