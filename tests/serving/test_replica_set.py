"""A replica set replaces dead replicas after a backoff that starts over once one had been healthy."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hubserve.serving.backoff import HEALTHY_AFTER_S
from hubserve.serving.context import ServingContext
from hubserve.serving.hub import WorkerHub
from hubserve.serving.replica import ReplicaState
from hubserve.serving.replica_set import RESTART_BACKOFF_S, ReplicaSet
from hubserve.serving.spawner import Spawner
from hubserve.spec import EndpointSpec


class DeadReplica:
    """What the set sees of a replica whose process ended after `ready_for` seconds of service."""

    state = ReplicaState.exited
    stopping = False
    failure = "the worker process was killed by SIGKILL (code -9)"

    def __init__(self, ready_for: float) -> None:
        self.id = f"r-{ready_for}"
        self.ready_for = ready_for


def test_restart_delays_grow_and_start_over_after_a_healthy_replica(tmp_path: Path) -> None:
    context = ServingContext(hub=WorkerHub(), spawner=Spawner(tmp_path / "zygote.log"), logs_dir=tmp_path,
                             models_dir=tmp_path, drain_timeout_s=1, save=lambda spec, status: None)
    delays: list[float] = []

    async def main() -> None:
        replica_set = ReplicaSet(EndpointSpec(name="e", model="m"), context, on_change=lambda: None)

        async def replace(delay: float) -> None:
            delays.append(delay)

        replica_set._replace = replace  # type: ignore[method-assign]
        for lived in (1, 1, 1, HEALTHY_AFTER_S + 1, 1):
            dead = DeadReplica(lived)
            replica_set.replicas.append(dead)  # type: ignore[arg-type]
            replica_set._replica_changed(dead)  # type: ignore[arg-type]
            await asyncio.sleep(0)
        assert replica_set.restarts == 5 and replica_set.replicas == []

    asyncio.run(main())
    assert delays == [RESTART_BACKOFF_S[0], RESTART_BACKOFF_S[1], RESTART_BACKOFF_S[2],
                      RESTART_BACKOFF_S[0], RESTART_BACKOFF_S[1]]


class PlacedProcess:
    """A worker process as `RaySpawner` hands it back once placed, that ends when the test is over."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ended = asyncio.Event()

    async def wait(self) -> int | None:
        await self.ended.wait()
        return 0

    def send_signal(self, sig: int) -> None:
        self.ended.set()


class PlacingSpawner:
    """Starts as Ray places: each start waits until its replica is placed, here when the test says."""

    def __init__(self) -> None:
        self.placements: list[asyncio.Future[PlacedProcess]] = []

    async def start(self, spec: EndpointSpec, env: dict[str, str], log_path: Path) -> PlacedProcess:
        placed: asyncio.Future[PlacedProcess] = asyncio.get_running_loop().create_future()
        self.placements.append(placed)
        return await placed

    def threads(self, spec: EndpointSpec) -> int | None:
        return None

    async def close(self) -> None:
        pass


def test_replicas_wait_for_their_placements_side_by_side(tmp_path: Path) -> None:
    spawner = PlacingSpawner()
    context = ServingContext(hub=WorkerHub(), spawner=spawner, logs_dir=tmp_path, models_dir=tmp_path,
                             drain_timeout_s=1, save=lambda spec, status: None)

    async def main() -> None:
        replica_set = ReplicaSet(EndpointSpec(name="e", model="m"), context, on_change=lambda: None)
        scaling = asyncio.ensure_future(replica_set.scale(3, 0))
        while len(spawner.placements) < 3:  # all three ask before any is placed
            await asyncio.sleep(0)
        processes = [PlacedProcess(pid) for pid in (101, 102)]
        for placement, process in zip(spawner.placements[1:], processes, strict=True):
            placement.set_result(process)  # the first one finds no room: the others start anyway
        while sum(r.pid is not None for r in replica_set.replicas) < 2:
            await asyncio.sleep(0)
        assert [r.pid for r in replica_set.replicas] == [None, 101, 102] and not scaling.done()
        for process in processes:
            process.ended.set()
        scaling.cancel()

    asyncio.run(asyncio.wait_for(main(), 10))
