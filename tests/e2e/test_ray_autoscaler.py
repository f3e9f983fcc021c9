"""Ray's own autoscaler under `hubserve serve --ray`: replicas that find no room wait as pending actors, Ray's
autoscaler starts nodes for them, and stops the nodes once the endpoint is gone. The cluster is a head started by
`ray start` with an autoscaling config whose fake provider starts each node as local processes on 127.0.0.1, as a
cloud provider would start a machine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Server
from custom_models import write_echo_model
from ray_clusters import AUTOSCALING_ENV, AutoscalingCluster, autoscaling_cluster, ray_server, replicas


@pytest.fixture(scope="module")
def cluster() -> Iterator[AutoscalingCluster]:
    with autoscaling_cluster(worker_cpus=1, max_workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def server(cluster: AutoscalingCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ray_server(cluster, tmp_path_factory.mktemp("autoscaled") / "home", env=AUTOSCALING_ENV) as running:
        yield running


def test_rays_autoscaler_starts_nodes_for_replicas_and_stops_them_when_the_endpoint_goes(
        server: Server, cluster: AutoscalingCluster, tmp_path: Path) -> None:
    assert cluster.nodes() == 1  # the head alone, which has no CPU for a replica
    client = server.client()
    client.create_endpoint({"name": "grown", "model": str(write_echo_model(tmp_path / "echo")), "replicas": 2})
    client.wait("grown", timeout=300)
    placed = replicas(server, "grown")
    assert [r["state"] for r in placed] == ["ready", "ready"]
    assert len({r["node"] for r in placed}) == 2  # one new node each: a node has one CPU
    assert cluster.nodes() == 3
    url = f"{server.url}/endpoints/grown/invocations"
    answered = {httpx.post(url, json={"inputs": "pid"}, timeout=60).json()["pid"] for _ in range(8)}
    assert answered == {r["pid"] for r in placed}  # both replicas answer, each on its node
    client.delete_endpoint("grown")
    deadline = time.monotonic() + 120
    while cluster.nodes() > 1:
        assert time.monotonic() < deadline, f"Ray's autoscaler kept {cluster.nodes() - 1} idle nodes"
        time.sleep(0.5)
