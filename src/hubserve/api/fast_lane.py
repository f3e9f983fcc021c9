"""The invocation routes' fast lane: calls to endpoints skip FastAPI's middleware, routing and dependency solving.

A model call is the one request a busy server gets thousands of times a second, and on a small machine the API
process shares the cores with the models: FastAPI's layers took about half of its time per invocation. The lane
matches the invocation paths on the raw ASGI scope and runs the very handlers FastAPI has registered for them (which
keep those routes in the OpenAPI document); every other request goes to the FastAPI app.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from hubserve.api.common import ErrorRenderer, guarded

Handler = Callable[[str, Request], Awaitable[Response]]


@dataclass(frozen=True)
class Lane:
    """POSTs whose path matches `pattern` (with a `name` group) go straight to `handler`."""

    pattern: re.Pattern[str]
    handler: Handler
    render: ErrorRenderer

    async def handle(self, name: str, request: Request) -> Response:
        return await guarded(self.render, partial(self.handler, name), request)


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
                    scope["path_params"] = match.groupdict()
                    response = await lane.handle(match["name"], Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
