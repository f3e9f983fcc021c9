"""Framed messages between the server and its worker processes: a JSON header plus raw bytes, each frame
bounded in size; a worker's connection opens with a fixed-size preamble that says who it is."""

from __future__ import annotations

import asyncio
import struct
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
        writer.write(preamble.pack())
        return cls(reader, writer, limits)

    async def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        raw = orjson.dumps(header)
        if self._writer.is_closing():
            raise ChannelClosed("channel closed")
        self._outbox += (_LENGTHS.pack(len(raw), len(body)), raw, body)
        if len(self._outbox) == 3:
            asyncio.get_running_loop().call_soon(self._flush)
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
