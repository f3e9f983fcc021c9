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
