"""The invocation routes' fast lane: calls to endpoints skip FastAPI's middleware, routing and dependency solving.

A model call is the one request a busy server gets thousands of times a second, and on a small machine the API
process shares the cores with the models: FastAPI's layers took about half of its time per invocation. The lane
matches the invocation paths on the raw ASGI scope and runs the very handlers FastAPI has registered for them (which
keep those routes in the OpenAPI document); every other request goes to the FastAPI app. Each lane call is counted
and timed (to the end of its answer, a stream's too) for the metrics and analytics.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import Message, Receive, Scope, Send

from hubserve.api.common import ErrorRenderer, ProtocolRoute, guarded
from hubserve.serving.telemetry import Telemetry

# Called with the path's parameters (a route's `name`, or none for a server-wide route) and `request`.
Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class Lane:
    """POSTs whose path matches `pattern` go straight to `handler`, their errors written by `render`; `route` is
    the path's template (`/endpoints/{name}/invocations`), what the metrics label calls with."""

    pattern: re.Pattern[str]
    handler: Handler
    render: ErrorRenderer
    route: str = ""

    async def handle(self, params: dict[str, str], request: Request) -> Response:
        return await guarded(self.render, lambda r: self.handler(request=r, **params), request)


def lanes_of(routers: Iterable[APIRouter]) -> list[Lane]:
    """A lane for every POST route of `routers`, with the route's own path, handler and error format."""
    return [Lane(route.path_regex, route.endpoint, type(route).render, route.path) for router in routers
            for route in router.routes if isinstance(route, ProtocolRoute) and "POST" in (route.methods or ())]


class FastLane:
    """An ASGI app: the lanes' calls served directly (each recorded in `telemetry`), everything else by `app`."""

    def __init__(self, app: FastAPI, lanes: Sequence[Lane], telemetry: Telemetry | None = None) -> None:
        self.app = app
        self.lanes = tuple(lanes)
        self.state = app.state
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for lane in self.lanes:
                match = lane.pattern.fullmatch(scope["path"])
                if match is not None:
                    scope["app"] = self.app
                    scope["path_params"] = params = match.groupdict()
                    if self.telemetry is None:
                        response = await lane.handle(params, Request(scope, receive, send))
                        await response(scope, receive, send)
                    else:
                        await self._recorded(lane, params, scope, receive, send, self.telemetry)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _recorded(lane: Lane, params: dict[str, str], scope: Scope, receive: Receive, send: Send,
                        telemetry: Telemetry) -> None:
        """The call, recorded once its answer has ended (or broke off) with the status it started with; the
        endpoint is the one accept_invocation names (server-wide routes name it in the body), else the path's."""
        started = time.perf_counter()
        status = 500  # what the server answers a call whose response never started

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            response = await lane.handle(params, Request(scope, receive, send))
            await response(scope, receive, send_noting_status)
        finally:
            telemetry.record(scope.get("hubserve.endpoint") or params.get("name"), lane.route, status,
                             time.perf_counter() - started)
