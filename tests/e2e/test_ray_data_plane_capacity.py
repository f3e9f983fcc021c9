"""A wake the owner refuses for want of room, on the data plane: an owner that may run one replica in all, with a
data-plane server, on a local Ray cluster. Requests held on the data-plane server for an endpoint at zero are
answered at once with the owner's refusal (as the owner answers its own), not when their hold runs out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server
from custom_models import write_echo_model
from ray_clusters import data_plane_server, local_cluster, ray_server

AT_ZERO = "scaledToZero"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(("node_a",), cpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def owner(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ray_server(cluster, tmp_path_factory.mktemp("owner") / "home", env={"HUBSERVE_MAX_REPLICAS": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def data_plane(cluster: Any, owner: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with data_plane_server(cluster, tmp_path_factory.mktemp("data-plane") / "home") as running:
        yield running


def state_on(server: Server, name: str) -> str | None:
    response = httpx.get(f"{server.url}/api/v1/endpoints/{name}", headers={"Authorization": f"Bearer {server.token}"},
                         timeout=10)
    return response.json()["status"]["state"] if response.status_code == 200 else None


def until(reached: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not reached():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_wake_the_owner_refuses_answers_the_requests_held_on_the_data_plane_at_once(
        owner: Server, data_plane: Server, tmp_path: Path) -> None:
    model = str(write_echo_model(tmp_path / "echo"))
    client = owner.client()
    client.create_endpoint({"name": "sleepy", "model": model, "autoscaling": {
        "min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": 1}})
    until(lambda: state_on(owner, "sleepy") == AT_ZERO, "sleepy did not scale to zero")
    client.create_endpoint({"name": "busy", "model": model})  # the one replica the owner may run
    client.wait("busy", timeout=300)
    until(lambda: state_on(data_plane, "sleepy") == AT_ZERO, "the data-plane server does not serve sleepy")
    started = time.monotonic()
    answer = httpx.post(f"{data_plane.url}/endpoints/sleepy", json={"inputs": "pid"}, timeout=120,
                        headers={"X-Scale-Up-Timeout": "90"})
    waited = time.monotonic() - started
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["error"].startswith("scale-up refused: ")
    assert waited < 60  # the refusal, not the end of its hold
    refused = client.get_endpoint("sleepy")["status"]
    assert refused["state"] == AT_ZERO and refused["scale_up_refused"].startswith("scale-up refused: ")
    # Once there is room, the data plane's next request wakes it.
    client.delete_endpoint("busy")
    until(lambda: client.get_endpoint("sleepy")["status"]["scale_up_refused"] is None, "the refusal stays")
    woken = httpx.post(f"{data_plane.url}/endpoints/sleepy", json={"inputs": "pid"}, timeout=120)
    assert woken.status_code == 200, woken.text
