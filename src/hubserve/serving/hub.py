"""The listener that replica processes connect back to, one channel per replica: on loopback, or on the
cluster's network when Ray places replicas on other machines.

Any local process can reach a loopback port (and any machine of the cluster a network one), so a connection
proves who it is before the server reads a single frame: a fixed-size preamble naming a replica the server
started and that replica's secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Protocol

from hubserve.channel import PREAMBLE, Channel, Preamble

log = logging.getLogger("hubserve.serving")

# A worker sends its preamble as soon as it connects; a connection that stays silent is nobody we started.
HANDSHAKE_TIMEOUT_S = 10.0


class Attachable(Protocol):
    secret: str

    def attach(self, channel: Channel, pid: int) -> None: ...


class WorkerHub:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, advertised_host: str | None = None,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        # What replicas dial: the listening address, unless that is a wildcard or not theirs to reach.
        self.advertised_host = advertised_host or host
        self._handshake_timeout_s = handshake_timeout_s
        self._server: asyncio.Server | None = None
        self._expected: dict[str, Attachable] = {}
        self._refused = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=2**26)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def expect(self, replica_id: str, replica: Attachable) -> None:
        self._expected[replica_id] = replica

    def forget(self, replica_id: str) -> None:
        self._expected.pop(replica_id, None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readexactly(PREAMBLE.size), self._handshake_timeout_s)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            self._refused_one()
            writer.close()
            return
        preamble = Preamble.parse(raw)
        replica = self._expected.get(preamble.replica_id) if preamble is not None else None
        if preamble is None or replica is None or not hmac.compare_digest(preamble.secret, replica.secret.encode()):
            # The replica is forgotten only once proven: a wrong guess must not lock the real one out.
            self._refused_one()
            writer.close()
            return
        del self._expected[preamble.replica_id]
        # The channel's default limits are the ones for what a worker answers (FrameLimits says why).
        replica.attach(Channel(reader, writer), preamble.pid)

    def _refused_one(self) -> None:
        self._refused += 1
        # Logged at 1, 2, 4, 8, ... refusals: a process that keeps knocking cannot fill the disk with our log.
        if self._refused & (self._refused - 1) == 0:
            log.warning("the worker hub has refused %d connection(s) that did not present a replica's secret",
                        self._refused)
