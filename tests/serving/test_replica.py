"""A replica whose worker dies under requests: they fail as `ReplicaLost` (a 503 to retry, not the caller's
fault), streamed ones before their first event too, and it takes no request after. A worker that does not answer
in time is a 504, streamed or not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fake_replica import ready_replica
from hubserve.errors import InvocationTimeout, ReplicaLost
from hubserve.invocation import InvocationRequest


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
