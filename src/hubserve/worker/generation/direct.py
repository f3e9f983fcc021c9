"""Token frames written by the generation thread itself. A streamed request's token events would each wake the
worker's event loop, only for it to shape the event and write its frame: on a small machine whose cores all run the
model's forward, that wake costs the forward more than the work. A stream that opts in (`shape`, TGI's events) and
runs under a `ChunkSink` (the worker's channel and the request's id, set by the worker for each stream) has each
token's frame shaped and written on the generation thread, all of a step's frames in one write; its last event (the
result, with what only the event loop knows) and any error still come through the loop, after its other frames."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from hubserve.channel import ThreadedChannel
from hubserve.worker.generation.types import TokenEvent

# A token event (not the last) as its stream's chunk body.
Shape = Callable[[TokenEvent], bytes]


@dataclass(frozen=True)
class ChunkSink:
    """Where a stream's chunks go: the worker's channel, under the request's id."""

    channel: ThreadedChannel
    request_id: int

    def frame(self, body: bytes) -> list[bytes]:
        return ThreadedChannel.frame({"op": "chunk", "id": self.request_id}, body)


# The sink of the stream being opened (set by the worker around the call that opens it: `chunk_sink`).
CHUNK_SINK: ContextVar[ChunkSink | None] = ContextVar("hubserve_chunk_sink", default=None)


@contextlib.contextmanager
def chunk_sink(sink: ChunkSink | None) -> Iterator[None]:
    """Streams opened inside this block (on this task) may write their token events to `sink`."""
    token = CHUNK_SINK.set(sink)
    try:
        yield
    finally:
        CHUNK_SINK.reset(token)


@dataclass(frozen=True)
class Direct:
    """A request's direct route: its sink, and how its token events are shaped."""

    sink: ChunkSink
    shape: Shape


def direct_route(shape: Shape | None) -> Direct | None:
    """The direct route of a stream opened now with `shape`, if the current task has a sink."""
    sink = CHUNK_SINK.get()
    return Direct(sink, shape) if sink is not None and shape is not None else None
