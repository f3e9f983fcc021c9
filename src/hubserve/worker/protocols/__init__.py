"""The protocols a replica speaks besides its task's own answer: TGI, TEI, OpenAI and the Inference Endpoints root,
each a set of `Route` handlers that turn a protocol's request into calls on the task adapter (through the same
batching as every request) and its answer into the protocol's shape.

Each module registers its handlers with `register`; `ROOT` handlers are registered per task (the Inference
Endpoints root URL answers as the deployed model's task decides), with "*" for every other task. A stream's events
are JSON objects, or bytes that go to the front door as they are (RESPONSE_STREAM's head and chunks).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from hubserve.errors import BadRequest, NotFound
from hubserve.invocation import InvocationRequest, InvocationResult, Route
from hubserve.worker.generation.direct import ChunkSink, chunk_sink

if TYPE_CHECKING:
    from hubserve.worker.engine import Engine

Event = dict[str, Any] | bytes
Invoke = Callable[["Engine", InvocationRequest], Awaitable[InvocationResult]]
Stream = Callable[["Engine", InvocationRequest], Awaitable[AsyncIterator[Event]]]
ANY_TASK = "*"
# The modules that register handlers, imported on first use (they import the task adapters).
MODULES = ("tgi", "openai_chat", "tei", "ie_root", "sagemaker")


@dataclass(frozen=True)
class Handler:
    """A route's handlers for one task family: `invoke` answers whole, `stream` (for `"stream": true`) gives the
    events; a stream handler raises before its first event (BadRequest, Overloaded) when it cannot start."""

    invoke: Invoke | None = None
    stream: Stream | None = None
    # Whether `stream`'s events reach the worker's channel as they are (each its JSON): then the generation thread
    # may write the token events itself (generation.direct). Not so for a handler whose events another wraps.
    direct: bool = False


def json_object(request: InvocationRequest) -> dict[str, Any]:
    """The request's JSON body, which every protocol's requests are: an object."""
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def json_result(value: Any) -> InvocationResult:
    return InvocationResult(body=orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


HANDLERS: dict[tuple[Route, str], Handler] = {}
_loaded = False


def register(route: Route, handler: Handler, tasks: tuple[str, ...] = (ANY_TASK,)) -> None:
    for task in tasks:
        HANDLERS[(route, task)] = handler


def handler_for(engine: Engine, route: Route) -> Handler:
    global _loaded
    if not _loaded:
        for module in MODULES:
            importlib.import_module(f"{__name__}.{module}")
        _loaded = True
    if engine.custom is not None:
        raise NotFound(f"this endpoint runs custom code, which answers POST on the endpoint URL only, not {route}")
    handler = HANDLERS.get((route, engine.task)) or HANDLERS.get((route, ANY_TASK))
    if handler is None:
        raise NotFound(f"this endpoint's task ({engine.task}) does not serve the {route} route")
    return handler


async def invoke(engine: Engine, request: InvocationRequest) -> InvocationResult:
    handler = handler_for(engine, request.route)
    if handler.invoke is None:
        raise BadRequest(f"the {request.route} route only streams: send \"stream\": true")
    return await handler.invoke(engine, request)


async def stream(engine: Engine, request: InvocationRequest, sink: ChunkSink | None = None) -> AsyncIterator[Event]:
    """The route's stream; a `direct` handler's token events go to `sink` from the generation thread."""
    handler = handler_for(engine, request.route)
    if handler.stream is None:
        raise BadRequest(f"this endpoint's task ({engine.task}) does not stream on the {request.route} route; "
                         "leave out \"stream\"")
    with chunk_sink(sink if handler.direct else None):
        return await handler.stream(engine, request)
