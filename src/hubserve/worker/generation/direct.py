"""Token frames written by the generation thread itself. A streamed request's token events would each wake the
worker's event loop, only for it to shape the event and write its frame: on a small machine whose cores all run the
model's forward, that wake costs the forward more than the work. A stream that opts in (`shape`, TGI's events) and
runs under a `ChunkSink` (the worker's channel and the request's id, set by the worker for each stream) has each
token's frame shaped and written on the generation thread, all of a step's frames in one write; its last event (the
result, with what only the event loop knows) and any error still come through the loop, after its other frames.

A stream the server may hand its client's connection to (`Handoff`) goes further: once the server has written the
head and the first event and sent the connection down the replica's line, the generation thread writes each later
token event to the client as an HTTP chunk itself, and the server hears nothing until the last event."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from hubserve.channel import ChannelClosed, SocketWriter, ThreadedChannel
from hubserve.worker.generation.types import TokenEvent

# A token event (not the last) as its stream's chunk bodies: one event each (none for a token that shows nothing yet).
Shape = Callable[[TokenEvent], Sequence[bytes]]


log = logging.getLogger("hubserve.worker")

# The longest a stream holds its events for the server's word on the connection before its last event: the server
# answers as soon as it has written the first one (`Replica._hand_off`), so only a server that lost it waits this.
HANDOFF_WAIT_S = 5.0


class _Stage(enum.Enum):
    FIRST = enum.auto()  # the first event is yet to go: through the channel, whatever comes
    HELD = enum.auto()  # the server is yet to answer: events wait
    HANDED = enum.auto()  # the client's connection is ours: events go to it
    KEPT = enum.auto()  # through the channel: the server kept the connection, or the stream ended first


class Handoff:
    """One stream's events between the channel and its client's connection (see the module's docstring).

    The generation thread offers each token event (`take`); the event loop hears the server's answer (`grant` with
    the connection, or `keep`) and ends it before anything else of the stream goes through the channel (`finish`,
    or `abandon` when the stream is cancelled). One lock orders them: what was held leaves first, on the way the
    server chose."""

    def __init__(self, channel: ThreadedChannel, request_id: int) -> None:
        self.channel = channel
        self.request_id = request_id
        self._lock = threading.Lock()
        self._stage = _Stage.FIRST
        self._held: list[bytes] = []
        self._client: SocketWriter | None = None
        self._parts = (b"", b"")
        self._answered = asyncio.get_running_loop().create_future()

    @property
    def handed(self) -> bool:
        return self._client is not None

    def take(self, body: bytes) -> bool:
        """From the generation thread: whether this event is taken care of (held, or written to the client);
        False: it goes through the channel as before."""
        with self._lock:
            if self._stage is _Stage.HELD:
                self._held.append(body)
                return True
            if self._stage is _Stage.HANDED:
                self._write(body)
                return True
            if self._stage is _Stage.FIRST:
                self._stage = _Stage.HELD
            return False

    def grant(self, fileno: int, prefix: bytes, suffix: bytes) -> None:
        """The server's answer: the client's connection (a descriptor of our own, which this now owns)."""
        with self._lock:
            if self._stage not in (_Stage.FIRST, _Stage.HELD):  # too late: the stream went on without it
                os.close(fileno)
                return
            client = socket.socket(fileno=fileno)
            client.setblocking(False)
            self._client = SocketWriter(client, "client")
            self._parts = (prefix, suffix)
            self._stage = _Stage.HANDED
            held, self._held = self._held, []
            for body in held:
                self._write(body)
        self._answer()

    def keep(self) -> None:
        """The server's answer: keep sending the events through the channel."""
        with self._lock:
            self._keep()
        self._answer()

    async def finish(self) -> None:
        """Before the rest of the stream goes through the channel: wait for the server's answer if events are held
        (at most HANDOFF_WAIT_S), then let the client have all that was written to it, and give the connection
        back (this process's descriptor of it closes)."""
        with self._lock:
            waiting = self._stage is _Stage.HELD and bool(self._held)
            if self._stage in (_Stage.FIRST, _Stage.HELD) and not waiting:
                self._stage = _Stage.KEPT
        if waiting:
            try:
                await asyncio.wait_for(asyncio.shield(self._answered), HANDOFF_WAIT_S)
            except TimeoutError:
                log.warning("stream %d: the server did not say where its events go; they go through it",
                            self.request_id)
                self.keep()
        with self._lock:
            client = self._client
            self._stage = _Stage.KEPT
        if client is not None:
            await client.drained()
            self._close()

    def abandon(self) -> None:
        """The stream is cancelled: nothing more goes anywhere, and the connection goes back at once."""
        with self._lock:
            self._stage = _Stage.KEPT
            self._held = []
        self._close()

    def _write(self, body: bytes) -> None:
        """Called holding the lock: one event as the response's next HTTP chunk."""
        assert self._client is not None
        prefix, suffix = self._parts
        with contextlib.suppress(ChannelClosed):  # the client left: the server hears of it too, and cancels the stream
            self._client.write(b"%x\r\n%b%b%b\r\n" % (len(prefix) + len(body) + len(suffix), prefix, body, suffix))

    def _keep(self) -> None:
        """Called holding the lock."""
        held, self._held = self._held, []
        self._stage = _Stage.KEPT
        if held:
            frames = [part for body in held for part in self.channel.frame({"op": "chunk", "id": self.request_id},
                                                                             body)]
            with contextlib.suppress(ChannelClosed):  # the server went away: nobody is listening any more
                self.channel.write_now(frames)

    def _answer(self) -> None:
        if not self._answered.done():
            self._answered.set_result(None)

    def _close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close(shutdown=False)  # the server's descriptor keeps the connection


@dataclass(frozen=True)
class ChunkSink:
    """Where a stream's chunks go: the worker's channel, under the request's id; and the client's connection, once
    the server hands it over (`handoff`)."""

    channel: ThreadedChannel
    request_id: int
    handoff: Handoff | None = None

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
