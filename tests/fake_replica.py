"""A ready replica whose worker is the test: the replica's channel to a socket pair whose other end the test reads
and writes as the worker would; and, given a line, the worker's end of that too."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from hubserve.channel import Channel
from hubserve.serving.context import ServingContext
from hubserve.serving.hub import WorkerHub
from hubserve.serving.replica import Replica
from hubserve.serving.spawner import Spawner
from hubserve.spec import EndpointSpec


async def ready_replica(tmp_path: Path) -> tuple[Replica, Channel]:
    """A ready replica, and the worker's end of its channel."""
    context = ServingContext(hub=WorkerHub(), spawner=Spawner(tmp_path / "zygote.log"), logs_dir=tmp_path,
                             models_dir=tmp_path, drain_timeout_s=1, save=lambda spec, status: None)
    replica = Replica("e-1", EndpointSpec(name="e", model="m"), context, on_change=lambda r: None)
    ours, theirs = socket.socketpair()
    replica.attach(Channel(*await asyncio.open_connection(sock=ours)), pid=0)
    worker = Channel(*await asyncio.open_connection(sock=theirs))
    await worker.send({"op": "state", "state": "ready", "task": "echo"})
    await replica.wait_settled()
    return replica, worker


async def worker_gone(replica: Replica, worker: Channel) -> None:
    """Close the worker's end, and wait until the replica has closed its own."""
    worker.close()
    while replica.ready:
        await asyncio.sleep(0.01)


def give_line(replica: Replica) -> socket.socket:
    """Attach a line to `replica` (as the hub does once a worker proves it); the worker's end of it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    replica.attach_line(ours)
    theirs.setblocking(False)
    return theirs


async def line_message(line: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The next message down the worker's end of a line, and the descriptors it carried."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(line, 4096, 4)
            return json.loads(message), fds
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(line.fileno(), readable.set_result, None)
            try:
                await asyncio.wait_for(readable, 5)
            finally:
                loop.remove_reader(line.fileno())
