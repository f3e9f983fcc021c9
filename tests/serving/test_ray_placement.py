"""What a replica asks Ray for (the spec's resources, placement spread over the nodes), and a replica whose actor is
lost while it is placed being placed again (on a one-node Ray started here)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from hubserve.serving import ray_placement
from hubserve.serving.ray_placement import PLACEMENT_ATTEMPTS, RaySpawner, ReplicaHost, actor_options, replica_threads
from hubserve.sources import ArchiveLimits
from hubserve.spec import EndpointSpec, ResourcesSpec
from hubserve.worker.config import CONFIG_ENV, WorkerConfig
from ray_clusters import ray_node  # noqa: F401 (a fixture)


def test_one_cpu_by_default_spread_over_the_nodes() -> None:
    assert actor_options(None) == {"num_cpus": 1.0, "num_gpus": 0.0, "scheduling_strategy": "SPREAD"}


def test_the_specs_resources() -> None:
    wanted = ResourcesSpec(cpus=2, gpus=1, memory=4 << 30, accelerator_type="L4")
    assert actor_options(wanted) == {"num_cpus": 2.0, "num_gpus": 1.0, "memory": 4 << 30, "accelerator_type": "L4",
                                     "scheduling_strategy": "SPREAD"}


def test_a_replica_runs_as_many_threads_as_whole_cpus_it_asked_for() -> None:
    assert replica_threads(None) == 1
    assert replica_threads(ResourcesSpec(cpus=4)) == 4
    assert replica_threads(ResourcesSpec(cpus=2.5)) == 2  # as Ray sizes OMP_NUM_THREADS
    assert replica_threads(ResourcesSpec(cpus=0.25)) == 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def replica_env(spec: EndpointSpec, tmp_path: Path) -> dict[str, str]:
    """A replica's env whose server is gone: its worker starts, finds no server behind its relay, and ends."""
    config = WorkerConfig(replica_id="e-1", spec=spec, host="127.0.0.1", port=closed_port(), secret="s",
                          models_dir=str(tmp_path / "models"), archive_limits=ArchiveLimits())
    return {CONFIG_ENV: config.model_dump_json()}


def hosts_that(action: str, tries: Path) -> Any:
    """The replica actor, whose `start` first notes the try in `tries`, then (`die_once`) kills its own process the
    first time, as an actor on a node that dies while it is placed, or (`raise`) fails as a start that cannot work."""
    import ray

    class Host(ReplicaHost):
        async def start(self, env: dict[str, str]) -> tuple[int, str]:
            tries.mkdir(exist_ok=True)
            count = len(list(tries.iterdir()))
            (tries / str(count)).touch()
            if action == "raise":
                raise RuntimeError("this start cannot work")
            if count == 0:
                os._exit(1)
            return await super().start(env)

    return ray.remote(max_restarts=0)(Host)


def placing(action: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Placing a replica through the actors `hosts_that(action)` gives: the coroutine that places it."""
    monkeypatch.setattr(ray_placement, "ReplicaHostActor", hosts_that(action, tmp_path / "tries"))
    spec = EndpointSpec(name="e", model="s3://bucket/model.tar.gz")
    return RaySpawner("local", tmp_path / "models", ArchiveLimits()).start(
        spec, replica_env(spec, tmp_path), tmp_path / "e.log")


@pytest.mark.usefixtures("ray_node")
def test_a_replica_whose_actor_dies_while_placed_is_placed_again_under_the_same_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def place() -> int | None:
        process = await placing("die_once", tmp_path, monkeypatch)
        assert process.pid > 0  # the second actor took the replica's id as its name (Ray refuses a name in use)
        return await process.wait()

    assert asyncio.run(place()) is not None  # the worker ran, and ended: its server was gone
    assert len(list((tmp_path / "tries").iterdir())) == 2


@pytest.mark.usefixtures("ray_node")
def test_a_start_that_raises_is_not_tried_again_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OSError, match="RuntimeError: this start cannot work"):
        asyncio.run(placing("raise", tmp_path, monkeypatch))
    assert len(list((tmp_path / "tries").iterdir())) == 1 < PLACEMENT_ATTEMPTS
