"""The relay in a replica's Ray actor: the worker dials it on its node's loopback, as it would dial a server's hub,
and the relay carries that one channel to the owner server's hub and to every data-plane server's hub, each server
with its own request ids. Bodies pass through untouched; only the small JSON header is rewritten."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from hubserve.channel import Channel, ChannelClosed, FrameLimits, Preamble
from hubserve.serving.hub import WorkerHub
from hubserve.spec import MAX_PAYLOAD_BYTES

log = logging.getLogger("hubserve.serving")

LOOPBACK = "127.0.0.1"
# What a server may send: requests, held to the limits the worker holds them to (worker/process.py), so that a frame
# the worker would refuse (closing its channel, and so every server's) is refused here, on that server's link only.
REQUEST_LIMITS = FrameLimits(header=1 << 20, body=MAX_PAYLOAD_BYTES)
# The worker's answers that end a request: its id is free again.
FINAL_OPS = frozenset({"result", "error", "end", "stats"})


@dataclass(eq=False)
class ServerLink:
    """One server's connection to the worker through the relay; `requests` maps that server's ids to the worker's."""

    channel: Channel
    owner: bool
    requests: dict[int, int] = field(default_factory=dict)


class Relay:
    """Carries one worker's channel to the servers that use its replica. The owner (whose hub the worker's config
    named) may stop the worker; a data-plane server may only call it. When the worker's channel closes, every
    server's link closes, so each server fails the requests it has in flight there."""

    def __init__(self, replica_id: str, owner: tuple[str, int, str]) -> None:
        self.replica_id = replica_id
        self.secret = secrets.token_hex(16)  # what the worker shows the relay's listener
        self._owner = owner
        self._listener = WorkerHub(LOOPBACK)
        self._worker: Channel | None = None
        self._pid = 0
        self._gone = False
        self._state: dict[str, Any] | None = None  # the worker's last word on its state (ready, failed)
        self._links: list[ServerLink] = []
        self._routes: dict[int, tuple[ServerLink, int]] = {}  # the worker's id -> the server's link and id
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self) -> tuple[str, int]:
        """Open the listener the worker dials; where it listens."""
        self._listener.expect(self.replica_id, self)
        await self._listener.start()
        return LOOPBACK, self._listener.port

    def attach(self, channel: Channel, pid: int) -> None:
        """The worker has connected: carry its channel to the owner."""
        self._worker, self._pid = channel, pid
        self._spawn(self._listener.close())
        self._spawn(self._start(channel))

    async def _start(self, worker: Channel) -> None:
        host, port, secret = self._owner
        try:
            await self.add_server(host, port, secret, owner=True)
        except OSError as exc:  # the owner is gone: the worker ends, as it does when it cannot reach its server
            log.warning("replica %s: the relay could not reach its server at %s:%d: %s", self.replica_id, host, port,
                        exc)
            worker.close()
            return
        await self._from_worker(worker)

    async def add_server(self, host: str, port: int, secret: str, owner: bool = False) -> None:
        """Dial a server's hub as this replica, with `secret` (the one that server expects), and tell it the worker's
        state so far. Refused (ConnectionError) once the worker is gone or before it has connected."""
        if self._worker is None or self._gone:
            raise ConnectionError(f"replica {self.replica_id}'s worker is not connected")
        preamble = Preamble(replica_id=self.replica_id, secret=secret.encode(), pid=self._pid)
        link = ServerLink(await Channel.connect(host, port, preamble, REQUEST_LIMITS), owner)
        if self._gone:  # the worker went while we dialled
            link.channel.close()
            raise ConnectionError(f"replica {self.replica_id}'s worker is gone")
        self._links.append(link)
        if self._state is not None and not owner:
            with contextlib.suppress(ChannelClosed):
                await link.channel.send(self._state)
        self._spawn(self._from_server(link))

    async def _from_worker(self, worker: Channel) -> None:
        while True:
            try:
                header, body = await worker.receive()
            except ChannelClosed:
                self._close()
                return
            if header.get("op") == "state":
                self._state = header
                for link in list(self._links):
                    await _send(link, header)
                continue
            worker_id = int(header.get("id", 0))
            route = self._routes.pop(worker_id, None) if header.get("op") in FINAL_OPS else \
                self._routes.get(worker_id)
            if route is None:  # answers to a request its server has cancelled, or left
                continue
            link, server_id = route
            if header["op"] in FINAL_OPS:
                link.requests.pop(server_id, None)
            header["id"] = server_id
            await _send(link, header, body)

    async def _from_server(self, link: ServerLink) -> None:
        worker = self._worker
        assert worker is not None
        while True:
            try:
                header, body = await link.channel.receive()
            except ChannelClosed:
                await self._drop(link)
                return
            op = header.get("op")
            if op == "cancel":
                worker_id = link.requests.pop(int(header.get("id", 0)), None)
                if worker_id is None:
                    continue
                self._routes.pop(worker_id, None)
                header["id"] = worker_id
            elif op == "stop":
                if not link.owner:  # only the server that started the replica ends it
                    continue
            elif "id" in header:
                self._next_id += 1
                server_id = int(header["id"])
                self._routes[self._next_id] = (link, server_id)
                link.requests[server_id] = self._next_id
                header["id"] = self._next_id
            try:
                await worker.send(header, body)
            except ChannelClosed:
                return  # the worker's side closes every link

    async def _drop(self, link: ServerLink) -> None:
        """A server's link closed: its requests in flight are cancelled in the worker. The owner's closing ends the
        worker, as the owner's going away did before there was a relay."""
        link.channel.close()
        if link in self._links:
            self._links.remove(link)
        worker = self._worker
        if worker is None:
            return
        if link.owner:
            worker.close()
            return
        for worker_id in link.requests.values():
            self._routes.pop(worker_id, None)
            with contextlib.suppress(ChannelClosed):
                await worker.send({"op": "cancel", "id": worker_id})
        link.requests.clear()

    async def close(self) -> None:
        """Close the worker's channel and every link, and wait until the relay's tasks have seen it."""
        self._close()
        await self._listener.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _close(self) -> None:
        self._gone = True
        if self._worker is not None:
            self._worker.close()
        for link in self._links:
            link.channel.close()
        self._links.clear()
        self._routes.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _send(link: ServerLink, header: dict[str, Any], body: bytes = b"") -> None:
    # A server that has gone is dropped by its own reading side.
    with contextlib.suppress(ChannelClosed):
        await link.channel.send(header, body)
