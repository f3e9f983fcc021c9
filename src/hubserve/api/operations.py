"""An invocation route of a protocol: which `Route` the replica gets, when the call streams, and how its
server-sent events are framed (TGI ends a stream with its last event, OpenAI with `data: [DONE]`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from fastapi import Request, Response

from hubserve.api.common import accept_invocation
from hubserve.api.errors import ErrorShape
from hubserve.api.event_relay import RelayedEvents
from hubserve.errors import HubserveError
from hubserve.invocation import InvocationRequest, Route
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.replica import StreamedAnswer

SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
OPENAI_DONE = b"data: [DONE]\n\n"
StreamWhen = Callable[[InvocationRequest], bool]
EndpointHandler = Callable[[str, Request], Awaitable[Response]]


# With the space after the colon, as TGI's router (axum) writes it: every client reads that form.
SSE_PARTS = (b"data: ", b"\n\n")


def sse(data: bytes) -> bytes:
    return SSE_PARTS[0] + data + SSE_PARTS[1]


def wants_stream(body: bytes, content_type: str) -> bool:
    """Whether a JSON body asks for `"stream": true` (TGI's, OpenAI's and the Inference Endpoints' flag)."""
    if b'"stream"' not in body or "json" not in content_type:
        return False
    try:
        # orjson stops at 1024 levels of nesting, where the json module would overflow its recursion.
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False  # the worker answers bad JSON with its own 400
    return isinstance(payload, dict) and payload.get("stream") is True


def asked(invocation: InvocationRequest) -> bool:
    return wants_stream(invocation.body, invocation.content_type)


def always(_invocation: InvocationRequest) -> bool:
    return True


def never(_invocation: InvocationRequest) -> bool:
    return False


@dataclass(frozen=True)
class EventStream:
    """How a protocol frames a stream: the event an error after the 200 becomes, and what closes every stream."""

    error: ErrorShape
    done: bytes = b""

    def event(self, data: bytes) -> bytes:
        return sse(data)

    @property
    def parts(self) -> tuple[bytes, bytes]:
        return SSE_PARTS

    def failure(self, exc: HubserveError) -> bytes:
        """The event an error after the 200 becomes."""
        return sse(orjson.dumps(self.error(exc)[1]))

    def response(self, answer: StreamedAnswer) -> RelayedEvents:
        return RelayedEvents(answer, self, SSE_HEADERS)


@dataclass(frozen=True)
class Operation:
    """One invocation route: the replica's `route`, whether a call `streams`, and its stream's framing."""

    route: Route
    events: EventStream
    streams: StreamWhen = never

    async def answer(self, runtime: EndpointRuntime, invocation: InvocationRequest) -> Response:
        """The replica's answer: one body, or its events as they come."""
        if self.streams(invocation):
            invocation.stream = True
            return self.events.response(await runtime.stream(invocation))
        result = await runtime.invoke(invocation)
        return Response(result.body, media_type=result.content_type)

    def on_endpoint(self) -> EndpointHandler:
        """The handler of this operation under an endpoint URL (`/endpoints/{name}/...`)."""

        async def invoke(name: str, request: Request) -> Response:
            runtime, invocation = await accept_invocation(request, name, self.route)
            agent = request.headers.get("user-agent")
            if self.route is Route.ROOT and agent is not None and agent.isascii():
                # The root's answer shape follows huggingface_hub's version for zero-shot (its format changed).
                invocation.attributes["user-agent"] = agent
            return await self.answer(runtime, invocation)

        return invoke
