"""Replicas placed on a Ray cluster (`hubserve serve --ray`): a local cluster of three nodes on loopback, a head
that runs nothing and two single-CPU nodes, with the real server placing replicas on it."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server
from custom_models import write_echo_model
from ray_clusters import add_node, endpoints, local_cluster, ray_server, replicas


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(("node_a", "node_b")) as running:
        yield running


@pytest.fixture(scope="module")
def server(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ray_server(cluster, tmp_path_factory.mktemp("ray") / "home") as running:
        yield running


@pytest.fixture
def endpoint(server: Server) -> Iterator[Callable[..., str]]:
    with endpoints(server) as make:
        yield make


def test_replicas_of_one_endpoint_run_on_different_nodes_and_all_answer(
        server: Server, endpoint: Callable[..., str], tmp_path: Path) -> None:
    url = endpoint("spread", write_echo_model(tmp_path / "echo"), replicas=2)
    placed = replicas(server, "spread")
    assert len({r["node"] for r in placed}) == 2
    answered = {httpx.post(url, json={"inputs": "pid"}, timeout=60).json()["pid"] for _ in range(6)}
    assert answered == {r["pid"] for r in placed}


def test_generation_streams_through_a_replica_on_another_node(
        server: Server, endpoint: Callable[..., str], tiny_model: Callable[[str], Path], cluster: Any) -> None:
    url = endpoint("gen", tiny_model("text-generation"))
    assert replicas(server, "gen")[0]["node"] != cluster.head_node.node_id
    body = {"inputs": "the day is", "parameters": {"max_new_tokens": 4}}
    with httpx.stream("POST", f"{url}/generate_stream", json=body, timeout=120) as response:
        assert response.status_code == 200
        events = [json.loads(line.removeprefix("data:")) for line in response.iter_lines() if line]
    assert len(events) == 4
    assert events[-1]["generated_text"] is not None


def test_a_dead_nodes_requests_fail_with_503_and_its_replica_comes_back_on_a_live_node(
        server: Server, endpoint: Callable[..., str], tmp_path: Path, cluster: Any) -> None:
    url = endpoint("survivor", write_echo_model(tmp_path / "echo"), replicas=2)
    before = replicas(server, "survivor")
    spare = add_node(cluster, "node_c")  # where the lost replica can go: the other node's CPU is taken
    doomed = next(n for n in cluster.worker_nodes if n.node_id == before[0]["node"])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(httpx.post, url, json={"inputs": "sleep", "parameters": {"seconds": 6}}, timeout=60)
                 for _ in range(4)]
        time.sleep(2)  # all four in flight, two on each replica
        cluster.remove_node(doomed, allow_graceful=False)
        answers = [call.result() for call in calls]
    lost = [a for a in answers if a.status_code == 503]
    assert len(lost) == 2 and all(a.headers["retry-after"] == "1" for a in lost)
    assert [a.status_code for a in answers].count(200) == 2
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = replicas(server, "survivor")
        if [r["state"] for r in now] == ["ready", "ready"] and spare.node_id in {r["node"] for r in now}:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the lost replica did not come back on the spare node: {now}")
    assert httpx.post(url, json={"inputs": "pid"}, timeout=60).status_code == 200
