"""The loopback listener that replica processes connect back to, one channel per replica."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Protocol

from hubserve.channel import Channel, ChannelClosed

log = logging.getLogger("hubserve.serving")


class Attachable(Protocol):
    secret: str

    def attach(self, channel: Channel, pid: int) -> None: ...


class WorkerHub:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._expected: dict[str, Attachable] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0, limit=2**26)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def expect(self, replica_id: str, replica: Attachable) -> None:
        self._expected[replica_id] = replica

    def forget(self, replica_id: str) -> None:
        self._expected.pop(replica_id, None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = Channel(reader, writer)
        try:
            header, _ = await asyncio.wait_for(channel.receive(), timeout=30)
        except (ChannelClosed, TimeoutError):
            channel.close()
            return
        replica = self._expected.pop(str(header.get("replica")), None)
        if replica is None or not hmac.compare_digest(str(header.get("secret")), replica.secret):
            log.warning("refused a worker connection that did not present a known replica")
            channel.close()
            return
        replica.attach(channel, int(header.get("pid", 0)))
