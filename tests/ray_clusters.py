"""A local Ray cluster for the tests of `hubserve serve --ray`: a head that runs nothing and worker nodes, every
node on 127.0.0.1, and a real server placing replicas on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import Server, start_server

# Ray otherwise takes this machine's network address as every node's, and dials it.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@contextmanager
def local_cluster(names: tuple[str, ...], cpus: int = 1) -> Iterator[Any]:
    """A head with no CPU, so that every replica goes to a worker node, and one node of `cpus` per name (each also
    declares a resource of its name)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in LOOPBACK_ONLY.items():
            env.setenv(name, value)
        from ray.cluster_utils import Cluster

        running = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        try:
            for name in names:
                add_node(running, name, cpus)
            yield running
        finally:
            running.shutdown()


@pytest.fixture(scope="module")
def ray_node() -> Iterator[None]:
    """This process connected to a one-node Ray of one CPU started for the module's tests."""
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def add_node(cluster: Any, name: str, cpus: int = 1) -> Any:
    return cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1", resources={name: 1})


def raylet_pid(node: Any) -> int:
    """The pid of a node's raylet, which every process Ray starts on that node finds in RAY_RAYLET_PID."""
    pid: int = node.all_processes["raylet"][0].process.pid
    return pid


@contextmanager
def ray_server(cluster: Any, home: Path) -> Iterator[Server]:
    running = start_server(home, env=LOOPBACK_ONLY, args=["--ray", cluster.address])
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def endpoints(server: Server) -> Iterator[Callable[..., str]]:
    """`make(name, model, **spec)`: an endpoint created on `server` and ready, its URL; deleted on the way out."""
    client = server.client()
    created: list[str] = []

    def make(name: str, model: str | Path, **spec: object) -> str:
        client.create_endpoint({"name": name, "model": str(model), **spec})
        created.append(name)
        client.wait(name, timeout=300)
        return f"{server.url}/endpoints/{name}"

    yield make
    for name in created:
        client.delete_endpoint(name)


def replicas(server: Server, name: str) -> list[dict[str, Any]]:
    described: dict[str, Any] = server.client().get_endpoint(name)
    return list(described["status"]["replicas"])
