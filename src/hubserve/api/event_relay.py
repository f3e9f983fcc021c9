"""A streamed answer's server-sent events, written to the client's connection by the replica's read loop itself.

Through a StreamingResponse each event woke a second task, went through four async generators and uvicorn's `send`:
measured on one llama.cpp stream, the API process spent 0.27 ms of CPU per token where llama-server's HTTP thread
spends 0.013, on a machine whose two cores both run the model's forward. Relayed, the read loop that receives the
event from the worker frames it and writes it as the next HTTP chunk at once; the response's task wakes only at the
end, to finish the response as uvicorn does. Only the chunks in between bypass `send`: the head and the end still
go through it, so the status, the headers, keep-alive and the call's telemetry are uvicorn's and the app's own.

From a replica with a line (a local worker process), the relay hands the connection itself over once the head and
the first event are written: the worker writes each later event to the client, as the next chunk, from the thread
that generated it, and this process wakes for none of them (on one llama.cpp stream that was 0.21 ms of CPU per
token, on two cores both running the forward). The last event and the end still come through here, after the
worker has written all of its own.

A connection that is not uvicorn's httptools cycle (an in-process ASGI transport in tests) gets the same bytes
through a StreamingResponse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, Protocol

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from hubserve.api.http_protocol import WIRE
from hubserve.errors import HubserveError
from hubserve.serving.replica import HandOff, StreamedAnswer


class Wire(Protocol):
    """What a relay needs of uvicorn's request cycle (`uvicorn.protocols.http.httptools_impl.RequestResponseCycle`)."""

    transport: asyncio.Transport
    chunked_encoding: bool | None
    disconnected: bool


class Framing(Protocol):
    """How a protocol frames its events (`hubserve.api.operations.EventStream`)."""

    @property
    def done(self) -> bytes: ...

    def event(self, data: bytes) -> bytes: ...

    @property
    def parts(self) -> tuple[bytes, bytes]:
        """What goes before and after an event's data (`event(data) == prefix + data + suffix`)."""
        ...

    def failure(self, exc: HubserveError) -> bytes: ...


class RelayedEvents(StreamingResponse):
    """`answer`'s events framed by `framing`, then `framing.done`: relayed when the scope carries a wire."""

    def __init__(self, answer: StreamedAnswer, framing: Framing, headers: dict[str, str]) -> None:
        super().__init__(frames(framing, answer), media_type="text/event-stream", headers=headers)
        self.answer = answer
        self.framing = framing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wire: Wire | None = scope.get(WIRE)
        if wire is None:
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if wire.chunked_encoding is not True:  # uvicorn chunks every body without a length, as this one is
            raise RuntimeError("uvicorn did not answer the event stream in chunks")
        ended = self.answer.relay(self._writer(wire), lambda: self._hand_off(wire))
        disconnect = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait((ended, disconnect), return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
            await self.answer.aclose()  # the worker stops a request whose client left
        if ended.done():
            ended.result()  # what the writer raised, if it did
            await send({"type": "http.response.body", "body": self.framing.done, "more_body": False})

    def _hand_off(self, wire: Wire) -> HandOff | None:
        """The connection for the worker to write to, if all written so far has left (nothing may overtake it)."""
        if wire.disconnected or wire.transport.get_write_buffer_size() or wire.transport.is_closing():
            return None
        socket = wire.transport.get_extra_info("socket")
        return HandOff(socket.fileno(), *self.framing.parts) if socket is not None else None

    def _writer(self, wire: Wire) -> Callable[[str, Any], None]:
        event, failure = self.framing.event, self.framing.failure
        write = wire.transport.write

        def relay(op: str, value: Any) -> None:
            if wire.disconnected or op == "end":
                return
            chunk = failure(value) if op == "error" else event(value)
            write(b"%x\r\n%b\r\n" % (len(chunk), chunk))  # uvicorn's chunk framing

        return relay


async def frames(framing: Framing, events: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The events framed, for a response that iterates them."""
    try:
        async for data in events:
            yield framing.event(data)
    except HubserveError as exc:  # after the 200 went out, errors travel as an event
        yield framing.failure(exc)
    if framing.done:
        yield framing.done


async def disconnected(receive: Receive) -> None:
    with contextlib.suppress(OSError):
        while (await receive())["type"] != "http.disconnect":
            pass
