"""SageMaker's InvokeEndpointWithResponseStream on a task model: text generation streams TGI's server-sent events, as
SageMaker's Hugging Face LLM containers do, and every other task sends its whole answer as one chunk. (Custom code
streams its generators' chunks: the engine answers that itself.)"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from hubserve.invocation import InvocationRequest, Route, StreamHead
from hubserve.worker.protocols import Handler, register, tgi

if TYPE_CHECKING:
    from hubserve.worker.engine import Engine

EVENT_STREAM = "text/event-stream"


async def headed(content_type: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A RESPONSE_STREAM answer: the StreamHead, sent once the first chunk exists (an error before it is the
    caller's HTTP error), then the chunks."""
    first = await anext(chunks, None)
    yield StreamHead(content_type).encode()
    if first is None:
        return
    yield first
    async for chunk in chunks:
        yield chunk


async def token_events(engine: Engine, request: InvocationRequest) -> AsyncIterator[bytes]:
    """TGI's stream events, each one server-sent event (with the space after the colon, as TGI's router writes)."""
    events = await tgi.generate_stream(engine, request)
    return headed(EVENT_STREAM, (b"data: " + orjson.dumps(event) + b"\n\n" async for event in events))


async def whole_answer(engine: Engine, request: InvocationRequest) -> AsyncIterator[bytes]:
    """The task's own answer (InvokeEndpoint's), in one chunk. A JSON or text answer ends with a newline: the
    sagemaker SDK's LineIterator, which the guides read streams with, never returns a last line without one."""
    result = await engine.invoke(dataclasses.replace(request, route=Route.DEFAULT, stream=False))
    body = result.body
    if is_text(result.content_type) and not body.endswith(b"\n"):
        body += b"\n"
    return headed(result.content_type, _one(body))


def is_text(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media == "application/json" or media.endswith("+json")


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


register(Route.RESPONSE_STREAM, Handler(stream=token_events), tgi.TASKS)
register(Route.RESPONSE_STREAM, Handler(stream=whole_answer))
