"""Framed messages between the server and its worker processes: a JSON header plus raw bytes, each frame
bounded in size; a worker's connection opens with a fixed-size preamble that says who it is."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

import orjson

_LENGTHS = struct.Struct("!II")
# A worker's first bytes: magic, its pid, its replica id and its secret (both NUL-padded). A fixed size lets
# the server read exactly this much from a connection it knows nothing about yet.
PREAMBLE = struct.Struct("!8sI96s64s")
PREAMBLE_MAGIC = b"hubsrv\x00\x01"


class ChannelClosed(ConnectionError):
    """The other side went away."""


class FrameTooLarge(ChannelClosed):
    """The other side announced a frame over the channel's limits; the channel is closed unread."""


@dataclass(frozen=True)
class FrameLimits:
    """The largest header and body a receiver takes.

    The defaults bound what a worker may answer with: headers carry error messages, which can quote an
    input (a request body, 6 MiB by default), and answers can be far bigger than requests (token embeddings,
    images). The server holds a whole answer in memory, so one bounded frame is what a bug can cost it.
    """

    header: int = 64 << 20
    body: int = 1 << 30


@dataclass(frozen=True)
class Preamble:
    """Who opens a connection to the worker hub: the replica, its secret, its process."""

    replica_id: str
    secret: bytes
    pid: int

    def pack(self) -> bytes:
        return PREAMBLE.pack(PREAMBLE_MAGIC, self.pid, _field(self.replica_id.encode(), 96),
                             _field(self.secret, 64))

    @classmethod
    def parse(cls, raw: bytes) -> Preamble | None:
        """The preamble in `raw` (PREAMBLE.size bytes), or None when it is not one."""
        magic, pid, replica_id, secret = PREAMBLE.unpack(raw)
        if magic != PREAMBLE_MAGIC:
            return None
        return cls(replica_id.rstrip(b"\0").decode(errors="replace"), secret.rstrip(b"\0"), pid)


def _field(value: bytes, size: int) -> bytes:
    if len(value) > size:  # struct would cut it silently, and the server would refuse it without saying why
        raise ValueError(f"a preamble field of {len(value)} bytes is over its {size} bytes")
    return value


class Channel:
    """One duplex connection; each message is `(header dict, body bytes)`. Writes are serialised."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limits: FrameLimits = FrameLimits()) -> None:
        self._reader = reader
        self._writer = writer
        self.limits = limits
        self._write_lock = asyncio.Lock()
        # Frames sent in one turn of the event loop leave in one write (a batch's answers: one syscall, not 32).
        self._outbox: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int, preamble: Preamble, limits: FrameLimits) -> Channel:
        reader, writer = await asyncio.open_connection(host, port, limit=2**26)
        channel = cls(reader, writer, limits)
        channel._write_first(preamble.pack())
        return channel

    def _write_first(self, data: bytes) -> None:
        """Bytes before any frame (a worker's preamble)."""
        self._writer.write(data)

    @staticmethod
    def frame(header: dict[str, Any], body: bytes = b"") -> list[bytes]:
        """A message's bytes as they go on the wire: the lengths, the JSON header, the body."""
        raw = orjson.dumps(header)
        return [_LENGTHS.pack(len(raw), len(body)), raw, body]

    async def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        frame = self.frame(header, body)
        self._check_open()
        self._outbox += frame
        if len(self._outbox) == 3:
            asyncio.get_running_loop().call_soon(self._flush)
        await self._drain()

    def _check_open(self) -> None:
        if self._writer.is_closing():
            raise ChannelClosed("channel closed")

    async def _drain(self) -> None:
        async with self._write_lock:  # back-pressure: wait while the connection's buffer is full
            try:
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise ChannelClosed(str(exc)) from exc

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if not self._writer.is_closing():
            self._writer.writelines(frames)

    async def receive(self) -> tuple[dict[str, Any], bytes]:
        try:
            header_len, body_len = _LENGTHS.unpack(await self._reader.readexactly(_LENGTHS.size))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ChannelClosed("channel closed") from exc
        if header_len > self.limits.header or body_len > self.limits.body:
            # Checked before reading on: lengths alone must not make us buffer gigabytes.
            self.close()
            raise FrameTooLarge(f"a frame of {header_len} + {body_len} bytes is over the channel's limits "
                                f"({self.limits.header} + {self.limits.body})")
        try:
            raw = await self._reader.readexactly(header_len)
            body = await self._reader.readexactly(body_len) if body_len else b""
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ChannelClosed("channel closed") from exc
        return orjson.loads(raw), body

    def close(self) -> None:
        self._writer.close()


# What a threaded channel holds unsent before `send` waits for the socket to drain (as asyncio's default does).
HIGH_WATER = 1 << 20


class SocketWriter:
    """Bytes written to a non-blocking socket from any thread, each write whole and in order (one lock). What the
    socket cannot take at once waits, in order, for a flusher thread that sends it as the socket drains (an answer
    of megabytes; a reader that lags). Once the connection fails, writes raise ChannelClosed and what waited is
    dropped."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.socket = sock
        self.name = name
        self._lock = threading.Lock()
        self._unsent: collections.deque[memoryview] = collections.deque()
        self.unsent_bytes = 0
        self._flusher: threading.Thread | None = None
        self.failure: str | None = None
        self._waiting: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.failure is not None:
                raise ChannelClosed(self.failure)
            if self._unsent:  # behind what waits already: in order
                self._keep(memoryview(data))
                return
            try:
                sent = self.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._fail(f"{self.name} closed: {exc}")
                raise ChannelClosed(self.failure) from exc
            if sent < len(data):
                self._keep(memoryview(data)[sent:])
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_unsent, name=f"{self.name}-flusher",
                                                     daemon=True)
                    self._flusher.start()

    async def drained(self, below: int = 0) -> None:
        """Until at most `below` bytes wait unsent (or the connection failed)."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            if self.unsent_bytes > below and self.failure is None:
                self._waiting.append((below, asyncio.get_running_loop(), future))
            else:
                future.set_result(None)
        await future

    def _keep(self, data: memoryview) -> None:
        self._unsent.append(data)
        self.unsent_bytes += len(data)

    def _flush_unsent(self) -> None:
        poller = select.poll()
        poller.register(self.socket.fileno(), select.POLLOUT)
        while True:
            with self._lock:
                while self._unsent and self.failure is None:
                    head = self._unsent[0]
                    try:
                        sent = self.socket.send(head)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        self._fail(f"{self.name} closed: {exc}")
                        break
                    self.unsent_bytes -= sent
                    if sent < len(head):
                        self._unsent[0] = head[sent:]
                    else:
                        self._unsent.popleft()
                self._wake()
                if not self._unsent or self.failure is not None:
                    self._flusher = None
                    return
            poller.poll(100)  # writable again (or 100 ms, to look at a close)

    def _fail(self, reason: str) -> None:
        """Called holding the lock: the connection is gone, and what waited is dropped."""
        self.failure = reason
        self._unsent.clear()
        self.unsent_bytes = 0
        self._wake()

    def _wake(self) -> None:
        """Called holding the lock: resolve the waits that are over."""
        still = []
        for below, loop, future in self._waiting:
            if self.unsent_bytes <= below or self.failure is not None:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_resolve, future)
            else:
                still.append((below, loop, future))
        self._waiting = still

    def close(self, shutdown: bool = True) -> None:
        """Drop what waits and close the socket; `shutdown` ends the connection too (not only this descriptor of
        it, which another process may share)."""
        with self._lock:
            if self.failure is None:
                self._fail(f"{self.name} closed")
            if shutdown:
                with contextlib.suppress(OSError):
                    self.socket.shutdown(socket.SHUT_RDWR)
            self.socket.close()


class ThreadedChannel(Channel):
    """A channel whose frames may also be written from other threads (`write_now`): a worker's generation thread
    writes each token's frame itself instead of waking the event loop for it. Every write, the loop's too, goes
    through one SocketWriter onto the socket (a duplicate of the transport's, which then only reads), so frames
    leave whole and in the order they were written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limits: FrameLimits = FrameLimits()) -> None:
        super().__init__(reader, writer, limits)
        transport_socket = writer.get_extra_info("socket")
        duplicate = socket.socket(fileno=os.dup(transport_socket.fileno()))
        duplicate.setblocking(False)
        self._out = SocketWriter(duplicate, "channel")

    def _write_first(self, data: bytes) -> None:
        self.write_now([data])

    # The loop's frames of one turn leave in one write, as Channel's do (`send`). Another thread's frames may overtake
    # them: what must stay in order (a stream's last chunk and its end after its other chunks) is so already.

    def _check_open(self) -> None:
        if self._out.failure is not None:
            raise ChannelClosed(self._out.failure)

    async def _drain(self) -> None:
        if self._out.unsent_bytes > HIGH_WATER:  # back-pressure: wait while the socket is behind
            await self._out.drained(HIGH_WATER // 2)
            self._check_open()

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        with contextlib.suppress(ChannelClosed):  # the sender heard of it, or hears at its next send
            self.write_now(frames)

    def write_now(self, chunks: list[bytes]) -> None:
        """Write these frames' bytes now, from any thread (ChannelClosed once the connection is gone)."""
        self._out.write(b"".join(chunks))

    def close(self) -> None:
        self._out.close()
        super().close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
