"""A replica whose worker dies under requests: they fail as `ReplicaLost` (a 503 to retry, not the caller's
fault), streamed ones before their first event too, and it takes no request after. A worker that does not answer
in time is a 504, streamed or not. With a line, every streamed answer tells the worker once where its events go: the
client's connection down the line, or (iterated, a connection with unsent bytes, a broken line) keep them coming."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from fake_replica import give_line, line_message, ready_replica, worker_gone
from hubserve.channel import Channel
from hubserve.errors import InvocationTimeout, ReplicaLost
from hubserve.invocation import InvocationRequest
from hubserve.serving.replica import HandOff, Replica, StreamedAnswer


@pytest.mark.parametrize("stream", [False, True])
def test_requests_in_flight_fail_as_replica_lost_when_the_worker_dies(tmp_path: Path, stream: bool) -> None:
    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        assert replica.ready
        request = InvocationRequest(body=b"{}", stream=stream)
        call = asyncio.ensure_future(replica.stream(request, 5) if stream else replica.invoke(request, 5))
        header, _ = await worker.receive()
        assert header["op"] == "invoke"
        worker.close()  # what the kernel does to a killed worker's socket
        with pytest.raises(ReplicaLost) as lost:
            await call
        assert (lost.value.status, lost.value.retry_after) == (503, 1)
        assert not replica.ready and replica.in_flight == 0

    asyncio.run(main())


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_unanswered_within_the_timeout_is_a_504(tmp_path: Path, stream: bool) -> None:
    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        request = InvocationRequest(body=b"{}", stream=stream)
        with pytest.raises(InvocationTimeout):
            await (replica.stream(request, 0.05) if stream else replica.invoke(request, 0.05))
        header, _ = await worker.receive()
        assert header["op"] == "invoke"
        assert (await worker.receive())[0]["op"] == "cancel"  # the worker drops what no one waits for
        assert replica.ready and replica.in_flight == 0
        worker.close()
        while replica.ready:  # the replica closes its end once it sees the worker's gone
            await asyncio.sleep(0.01)

    asyncio.run(main())


def test_a_stats_call_is_not_a_request_in_flight(tmp_path: Path) -> None:
    """Polling a replica's stats must not steer requests to its sibling, nor count as load for the autoscaler."""
    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        request = InvocationRequest(body=b"{}")
        call = asyncio.ensure_future(replica.invoke(request, 5))
        assert (await worker.receive())[0]["op"] == "invoke"
        stats = asyncio.ensure_future(replica.stats())
        header, _ = await worker.receive()
        assert header["op"] == "stats"
        assert replica.in_flight == 1  # the invocation's only, while the stats call waits for its answer
        await worker.send({"op": "stats", "id": header["id"], "stats": {"queued": 0}})
        assert (await stats)["queued"] == 0
        worker.close()
        with pytest.raises(ReplicaLost):
            await call

    asyncio.run(main())


async def started_stream(replica: Replica, worker: Channel) -> tuple[StreamedAnswer, dict[str, Any]]:
    """A streamed answer whose first event came; the worker's invocation header."""
    stream = asyncio.ensure_future(replica.stream(InvocationRequest(body=b"{}", stream=True), 5))
    header, _ = await worker.receive()
    await worker.send({"op": "chunk", "id": header["id"]}, b"first")
    return await stream, header


def test_a_streamed_answer_hands_the_client_connection_down_the_line_once(tmp_path: Path) -> None:
    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        line = give_line(replica)
        answer, header = await started_stream(replica, worker)
        assert header["handoff"] is True
        written: list[tuple[str, Any]] = []
        server_end, client_end = socket.socketpair()
        answer.relay(lambda op, value: written.append((op, value)),
                     lambda: HandOff(server_end.fileno(), b"data: ", b"\n\n"))
        assert written == [("chunk", b"first")]
        message, fds = await line_message(line)
        assert message == {"id": header["id"], "prefix": "data: ", "suffix": "\n\n"}
        assert os.fstat(fds[0]).st_ino == os.fstat(server_end.fileno()).st_ino  # that very connection
        await worker.send({"op": "end", "id": header["id"]})
        await asyncio.wait_for(answer.relay(written.append), 5)
        for fd in fds:
            os.close(fd)
        server_end.close()
        client_end.close()
        line.close()
        await worker_gone(replica, worker)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["iterated", "unsent bytes", "broken line"])
def test_a_streamed_answer_that_keeps_its_connection_tells_the_worker(tmp_path: Path, how: str) -> None:
    async def main() -> None:
        replica, worker = await ready_replica(tmp_path)
        line = give_line(replica)
        answer, header = await started_stream(replica, worker)
        server_end, client_end = socket.socketpair()
        if how == "iterated":
            assert await answer.__anext__() == b"first"
        elif how == "unsent bytes":  # what the relay's connection answers when it has not sent all yet
            answer.relay(lambda op, value: None, lambda: None)
        else:
            line.close()
            answer.relay(lambda op, value: None, lambda: HandOff(server_end.fileno(), b"", b""))
        assert (await asyncio.wait_for(worker.receive(), 5))[0] == {"op": "keep", "id": header["id"]}
        await worker.send({"op": "end", "id": header["id"]})
        if how == "broken line":  # the replica let go of it: its streams go through the server from now on
            assert not (await started_stream(replica, worker))[1]["handoff"]
        else:
            with pytest.raises(BlockingIOError):  # nothing came down the line
                socket.recv_fds(line, 4096, 1)
        server_end.close()
        client_end.close()
        line.close()
        await worker_gone(replica, worker)

    asyncio.run(main())
