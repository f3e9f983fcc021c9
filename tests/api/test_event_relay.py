"""Relayed event streams, on a real uvicorn server with hubserve's HTTP protocol: the replica's read loop writes each
event as the next HTTP chunk itself, the app's `send` carries only the head and the end, and the bytes are those of
the iterated stream (TGI's and OpenAI's framing, an error after the first event). A client that leaves cancels the
request in the worker; a worker that dies mid-stream ends it with the protocol's error event. From a replica with a
line, the client's connection goes down it once the head and the first event are written: the worker writes the
events in between to it, the bytes are the same, and the connection stays the server's (the next request on it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from fake_replica import give_line, line_message, ready_replica, worker_gone
from hubserve.api.event_relay import Framing, frames
from hubserve.api.http_protocol import with_head_timeout
from hubserve.api.openai import OPENAI_EVENTS
from hubserve.api.tgi import TGI_EVENTS
from hubserve.channel import Channel
from hubserve.errors import Overloaded
from hubserve.invocation import InvocationRequest
from hubserve.serving.replica import Replica

FRAMINGS = {"tgi": TGI_EVENTS, "openai": OPENAI_EVENTS}
EVENTS = [json.dumps({"index": i, "token": {"text": f" t{i}"}}).encode() for i in range(20)]
Worker = Callable[[Channel, int], Awaitable[None]]


class Served:
    """The replica's streams served over HTTP: each request streams one answer through `framing`."""

    def __init__(self, replica: Replica, framing: Framing) -> None:
        self.replica = replica
        self.framing = framing
        self.sends: list[int] = []  # messages the app sent for each request
        self.clients: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.clients.append(scope["client"])
        count = len(self.sends)
        self.sends.append(0)

        async def counted(message: Message) -> None:
            self.sends[count] += 1
            await send(message)

        answer = await self.replica.stream(InvocationRequest(body=b"{}", stream=True), 5)
        await self.framing.response(answer)(scope, receive, counted)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def serving(app: Served) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=with_head_timeout(5), lifespan="off",
                            log_level="warning", loop="asyncio")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def answer_stream(worker: Channel, events: list[bytes], error: Overloaded | None = None) -> int:
    """Take one invocation and stream `events` for it: the first five in one write (they queue before the response
    relays), the others one by one; then `error` or the end. Its request id."""
    header, _ = await worker.receive()
    assert header["op"] == "invoke"
    request_id = header["id"]
    for at, event in enumerate(events):
        await worker.send({"op": "chunk", "id": request_id}, event)
        if at >= 5:
            await asyncio.sleep(0.002)
    if error is None:
        await worker.send({"op": "end", "id": request_id})
    else:
        await worker.send({"op": "error", "id": request_id, "error": error.to_dict()})
    return int(request_id)


async def answer_handed_off(worker: Channel, line: socket.socket, events: list[bytes]) -> int:
    """Take one invocation as a worker with a line: the first event through the channel; the ones in between written
    as HTTP chunks to the connection that comes down the line, which it then lets go; the last, and the end, through
    the channel. Its request id."""
    header, _ = await worker.receive()
    assert header["op"] == "invoke" and header["handoff"] is True
    request_id = int(header["id"])
    await worker.send({"op": "chunk", "id": request_id}, events[0])
    message, fds = await line_message(line)
    assert message["id"] == request_id and len(fds) == 1
    prefix, suffix = message["prefix"].encode("latin-1"), message["suffix"].encode("latin-1")
    with socket.socket(fileno=fds[0]) as client:
        for event in events[1:-1]:
            data = prefix + event + suffix
            client.sendall(b"%x\r\n%b\r\n" % (len(data), data))
    await worker.send({"op": "chunk", "id": request_id}, events[-1])
    await worker.send({"op": "end", "id": request_id})
    return request_id


async def iterated(framing: Framing, events: list[bytes], error: Overloaded | None = None) -> bytes:
    async def source() -> AsyncIterator[bytes]:
        for event in events:
            yield event
        if error is not None:
            raise error

    return b"".join([chunk async for chunk in frames(framing, source())])


@pytest.mark.parametrize("protocol", sorted(FRAMINGS))
@pytest.mark.parametrize("failed", [False, True])
def test_a_relayed_stream_has_the_iterated_streams_bytes_and_sends_only_its_head_and_end(
        tmp_path: Path, protocol: str, failed: bool) -> None:
    framing = FRAMINGS[protocol]
    error = Overloaded("the model is overloaded") if failed else None

    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        app = Served(replica, framing)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            for _ in range(2):  # the second on the same connection: the relayed response ended as uvicorn's do
                worker_task = asyncio.ensure_future(answer_stream(worker, EVENTS, error))
                response = await client.post("/", content=b"{}")
                await worker_task
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["x-accel-buffering"] == "no"
                assert response.content == await iterated(framing, EVENTS, error)
        assert app.sends == [2, 2]  # the head and the end: every event went by the read loop
        assert app.clients[0] == app.clients[1]
        assert replica.in_flight == 0
        await worker_gone(replica, worker)

    asyncio.run(main())


@pytest.mark.parametrize("protocol", sorted(FRAMINGS))
def test_a_handed_off_stream_has_the_iterated_streams_bytes_and_the_connection_stays_the_servers(
        tmp_path: Path, protocol: str) -> None:
    framing = FRAMINGS[protocol]

    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        line = give_line(replica)
        app = Served(replica, framing)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            for _ in range(2):  # the second on the same connection: the worker let go of it, the server goes on
                worker_task = asyncio.ensure_future(answer_handed_off(worker, line, EVENTS))
                response = await client.post("/", content=b"{}")
                await asyncio.wait_for(worker_task, 5)
                assert response.status_code == 200
                assert response.content == await iterated(framing, EVENTS)
        assert app.sends == [2, 2]
        assert app.clients[0] == app.clients[1]
        assert replica.in_flight == 0
        line.close()
        await worker_gone(replica, worker)

    asyncio.run(main())


@pytest.mark.parametrize("handed_off", [False, True])
def test_a_client_that_leaves_a_stream_cancels_it_in_the_worker(tmp_path: Path, handed_off: bool) -> None:
    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        line = give_line(replica) if handed_off else None
        async with serving(Served(replica, TGI_EVENTS)) as url:
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            header, _ = await worker.receive()
            await worker.send({"op": "chunk", "id": header["id"]}, EVENTS[0])
            client = None
            if line is None:
                await worker.send({"op": "chunk", "id": header["id"]}, EVENTS[1])
            else:  # the worker writes the second event to the connection it was handed
                client = socket.socket(fileno=(await line_message(line))[1][0])
                data = b"data: " + EVENTS[1] + b"\n\n"
                client.sendall(b"%x\r\n%b\r\n" % (len(data), data))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
            assert EVENTS[1] in await reader.readuntil(EVENTS[1])
            writer.close()
            cancel, _ = await asyncio.wait_for(worker.receive(), 5)
            assert cancel == {"op": "cancel", "id": header["id"]}
            assert replica.in_flight == 0
            if client is not None:
                client.close()
            await worker.send({"op": "chunk", "id": header["id"]}, EVENTS[2])  # late: dropped
            await worker.send({"op": "end", "id": header["id"]})
        if line is not None:
            line.close()
        await worker_gone(replica, worker)

    asyncio.run(main())


def test_a_worker_that_dies_under_a_relayed_stream_ends_it_with_the_protocols_error_event(tmp_path: Path) -> None:
    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        async with serving(Served(replica, OPENAI_EVENTS)) as url, httpx.AsyncClient(base_url=url) as client:
            async def die_after_three() -> None:
                header, _ = await worker.receive()
                for event in EVENTS[:3]:
                    await worker.send({"op": "chunk", "id": header["id"]}, event)
                await asyncio.sleep(0.05)
                await worker_gone(replica, worker)

            dying = asyncio.ensure_future(die_after_three())
            response = await client.post("/", content=b"{}")
            await dying
        events = response.content.split(b"\n\n")
        assert events[:3] == [b"data: " + event for event in EVENTS[:3]]
        assert "worker process died" in json.loads(events[3].removeprefix(b"data: "))["error"]["message"]
        assert events[4:] == [b"data: [DONE]", b""]
        assert replica.in_flight == 0

    asyncio.run(main())
