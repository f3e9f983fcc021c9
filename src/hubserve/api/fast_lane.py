"""The invocation routes' fast lane: calls to endpoints skip FastAPI's middleware, routing and dependency solving.

A model call is the one request a busy server gets thousands of times a second, and on a small machine the API
process shares the cores with the models: FastAPI's layers took about half of its time per invocation. The lane
matches the invocation paths on the raw ASGI scope and runs the very handlers FastAPI has registered for them (which
keep those routes in the OpenAPI document); every other request goes to the FastAPI app.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from hubserve.api.common import ErrorRenderer, ProtocolRoute, guarded

# Called with the path's parameters (a route's `name`, or none for a server-wide route) and `request`.
Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class Lane:
    """POSTs whose path matches `pattern` go straight to `handler`, their errors written by `render`."""

    pattern: re.Pattern[str]
    handler: Handler
    render: ErrorRenderer

    async def handle(self, params: dict[str, str], request: Request) -> Response:
        return await guarded(self.render, lambda r: self.handler(request=r, **params), request)


def lanes_of(routers: Iterable[APIRouter]) -> list[Lane]:
    """A lane for every POST route of `routers`, with the route's own path, handler and error format."""
    return [Lane(route.path_regex, route.endpoint, type(route).render) for router in routers
            for route in router.routes if isinstance(route, ProtocolRoute) and "POST" in (route.methods or ())]


class FastLane:
    """An ASGI app: the lanes' calls served directly, everything else by `app`."""

    def __init__(self, app: FastAPI, lanes: Sequence[Lane]) -> None:
        self.app = app
        self.lanes = tuple(lanes)
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for lane in self.lanes:
                match = lane.pattern.fullmatch(scope["path"])
                if match is not None:
                    scope["app"] = self.app
                    scope["path_params"] = params = match.groupdict()
                    response = await lane.handle(params, Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
