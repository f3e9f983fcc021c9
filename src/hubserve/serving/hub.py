"""The listener that replica processes connect back to, one channel per replica: on loopback, or on the
cluster's network when Ray places replicas on other machines.

Any local process can reach a loopback port (and any machine of the cluster a network one), so a connection
proves who it is before the server reads a single frame: a fixed-size preamble naming a replica the server
started and that replica's secret.

With `line`, the hub also listens on a Unix socket (Linux's abstract namespace: no file to leave behind) where each
local replica opens its line, proven the same way: the server hands a streamed answer's client connection down it
(`Replica.stream`), so that the replica writes the answer's events to the client itself.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from hubserve.channel import PREAMBLE, Channel, Preamble

log = logging.getLogger("hubserve.serving")

# A worker sends its preamble as soon as it connects; a connection that stays silent is nobody we started.
HANDSHAKE_TIMEOUT_S = 10.0


class Attachable(Protocol):
    secret: str

    def attach(self, channel: Channel, pid: int) -> None: ...


Line = Callable[[socket.socket], None]  # a replica's, given its line once the line proved whose it is


class WorkerHub:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, advertised_host: str | None = None,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S, line: bool = False) -> None:
        self.host = host
        self.port = port
        # What replicas dial: the listening address, unless that is a wildcard or not theirs to reach.
        self.advertised_host = advertised_host or host
        self._handshake_timeout_s = handshake_timeout_s
        self._server: asyncio.Server | None = None
        self._expected: dict[str, Attachable] = {}
        self._refused = 0
        # Where local replicas open their line (an abstract Unix socket's name, without its leading NUL); None: no
        # line (not asked for, or not Linux).
        self.line_address: str | None = None
        self._line_wanted = line and sys.platform.startswith("linux")
        self._line_listener: socket.socket | None = None
        self._lines: dict[str, tuple[str, Line]] = {}  # replica id -> its secret, and where its line goes
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=2**26)
        self.port = self._server.sockets[0].getsockname()[1]
        if self._line_wanted:
            self._open_line_listener()

    def _open_line_listener(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        name = f"hubserve-lines-{secrets.token_hex(8)}"
        try:
            listener.bind("\0" + name)
            listener.listen(64)
        except OSError as exc:
            listener.close()
            log.warning("streamed answers go through this server: its replicas' line could not listen (%s)", exc)
            return
        listener.setblocking(False)
        self._line_listener, self.line_address = listener, name
        self._spawn(self._accept_lines(listener))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._line_listener is not None:
            self._line_listener.close()
            self._line_listener = None

    def expect(self, replica_id: str, replica: Attachable, line: Line | None = None) -> None:
        self._expected[replica_id] = replica
        if line is not None and self.line_address is not None:
            self._lines[replica_id] = (replica.secret, line)

    def forget(self, replica_id: str) -> None:
        self._expected.pop(replica_id, None)
        self._lines.pop(replica_id, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_lines(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: the replicas stream through the server meanwhile
                log.warning("the replicas' line listener could not accept a connection: %s", exc)
                await asyncio.sleep(1)
                continue
            connection.setblocking(False)
            self._spawn(self._line_handshake(connection))

    async def _line_handshake(self, connection: socket.socket) -> None:
        try:
            raw = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(connection, PREAMBLE.size),
                                         self._handshake_timeout_s)
        except (OSError, TimeoutError):
            raw = b""
        preamble = Preamble.parse(raw) if len(raw) == PREAMBLE.size else None
        expected = self._lines.get(preamble.replica_id) if preamble is not None else None
        if preamble is None or expected is None or not hmac.compare_digest(preamble.secret, expected[0].encode()):
            self._refused_one()
            connection.close()
            return
        del self._lines[preamble.replica_id]
        expected[1](connection)

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
