"""Framed messages between the server and its worker processes: a JSON header plus raw bytes."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

_LENGTHS = struct.Struct("!II")


class ChannelClosed(ConnectionError):
    """The other side went away."""


class Channel:
    """One duplex connection; each message is `(header dict, body bytes)`. Writes are serialised."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, host: str, port: int) -> Channel:
        reader, writer = await asyncio.open_connection(host, port, limit=2**26)
        return cls(reader, writer)

    async def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        raw = json.dumps(header, separators=(",", ":")).encode()
        async with self._write_lock:
            if self._writer.is_closing():
                raise ChannelClosed("channel closed")
            self._writer.write(_LENGTHS.pack(len(raw), len(body)) + raw + body)
            try:
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise ChannelClosed(str(exc)) from exc

    async def receive(self) -> tuple[dict[str, Any], bytes]:
        try:
            lengths = await self._reader.readexactly(_LENGTHS.size)
            header_len, body_len = _LENGTHS.unpack(lengths)
            raw = await self._reader.readexactly(header_len)
            body = await self._reader.readexactly(body_len) if body_len else b""
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ChannelClosed("channel closed") from exc
        return json.loads(raw), body

    def close(self) -> None:
        self._writer.close()
