"""Framed messages between the server and its worker processes: a JSON header plus raw bytes."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

_LENGTHS = struct.Struct("!II")


class ChannelClosed(ConnectionError):
    """The other side went away."""


class Channel:
    """One duplex connection; each message is `(header dict, body bytes)`. Writes are serialised."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()
        # Frames sent in one turn of the event loop leave in one write (a batch's answers: one syscall, not 32).
        self._outbox: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> Channel:
        reader, writer = await asyncio.open_connection(host, port, limit=2**26)
        return cls(reader, writer)

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
            lengths = await self._reader.readexactly(_LENGTHS.size)
            header_len, body_len = _LENGTHS.unpack(lengths)
            raw = await self._reader.readexactly(header_len)
            body = await self._reader.readexactly(body_len) if body_len else b""
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ChannelClosed("channel closed") from exc
        return orjson.loads(raw), body

    def close(self) -> None:
        self._writer.close()
