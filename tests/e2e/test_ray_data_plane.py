"""More API servers for the data plane (`hubserve serve --ray ADDRESS --data-plane`): on a local Ray cluster, an owner
server and a data-plane server. The owner's endpoints answer through both, from the same replicas, on every front
door and with the owner's tokens; the data-plane server refuses what changes state, naming the owner. Its load
scales the owner's endpoints, from zero too, until it stops reporting."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_TOKEN, Server, start_server
from custom_models import write_echo_model
from hubserve.serving.ray_registry import LOAD_TTL_S
from ray_clusters import LOOPBACK_ONLY, add_node, data_plane_server, local_cluster, ray_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Two replicas share a node's CPU: the tests' endpoints fit on the two nodes together.
HALF_A_CPU = {"resources": {"cpus": 0.5}}
# Autoscaling that acts within a test's time: up once more than one request per replica lasts half a second.
QUICK = {"target": 1, "scale_up_after_s": 0.5, "scale_down_after_s": 600}
AT_ZERO = "scaledToZero"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(("node_a", "node_b")) as running:
        yield running


@pytest.fixture(scope="module")
def owner(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ray_server(cluster, tmp_path_factory.mktemp("owner") / "home") as running:
        yield running


@pytest.fixture(scope="module")
def echo(owner: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An endpoint of two replicas, created before the data-plane server starts."""
    model = write_echo_model(tmp_path_factory.mktemp("echo") / "echo")
    owner.client().create_endpoint({"name": "echo", "model": str(model), "replicas": 2, **HALF_A_CPU})
    owner.client().wait("echo", timeout=300)
    return "echo"


@pytest.fixture(scope="module")
def data_plane(cluster: Any, echo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with data_plane_server(cluster, tmp_path_factory.mktemp("data-plane") / "home") as running:
        yield running


@pytest.fixture
def endpoint(owner: Server, data_plane: Server) -> Iterator[Callable[..., str]]:
    """`endpoint(name, model, **spec)`: an endpoint created on the owner, once the data-plane server serves it."""
    created: list[str] = []

    def make(name: str, model: Path, shown: tuple[str, ...] = ("running",), **spec: object) -> str:
        owner.client().create_endpoint({"name": name, "model": str(model), **HALF_A_CPU, **spec})
        created.append(name)
        owner.client().wait(name, timeout=300)
        served_on_data_plane(data_plane, name, shown)
        return name

    yield make
    for name in created:
        owner.client().delete_endpoint(name)


def served_on_data_plane(data_plane: Server, name: str, states: tuple[str, ...] = ("running",),
                         timeout: float = 60) -> dict[str, Any]:
    """The endpoint as the data-plane server shows it, once it shows it in one of `states`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{data_plane.url}/api/v1/endpoints/{name}", headers=ADMIN, timeout=10)
        if response.status_code == 200 and response.json()["status"]["state"] in states:
            described: dict[str, Any] = response.json()
            return described
        time.sleep(0.2)
    raise AssertionError(f"endpoint {name} is not served on the data-plane server: {response.text}")


def replica_pids(owner: Server, name: str) -> set[int]:
    return {r["pid"] for r in owner.client().get_endpoint(name)["status"]["replicas"]}


def invoke(server: Server, name: str, inputs: object, headers: dict[str, str] | None = None) -> httpx.Response:
    """A call on the Inference Endpoints route."""
    return httpx.post(f"{server.url}/endpoints/{name}", json={"inputs": inputs}, headers=headers, timeout=60)


def test_an_endpoint_answers_through_both_servers_from_the_same_replicas(
        owner: Server, data_plane: Server, echo: str) -> None:
    served_on_data_plane(data_plane, echo)
    pids = replica_pids(owner, echo)
    assert len(pids) == 2
    through_data_plane = {invoke(data_plane, echo, "pid").json()["pid"] for _ in range(8)}
    through_owner = {invoke(owner, echo, "pid").json()["pid"] for _ in range(8)}
    assert through_data_plane == through_owner == pids
    answer = httpx.post(f"{data_plane.url}/endpoints/{echo}/invocations", json={"inputs": "hello"}, timeout=60,
                        headers={"X-Amzn-SageMaker-Custom-Attributes": "trace=1"})
    assert answer.json() == {"echo": "hello", "parameters": None, "custom_attributes": "trace=1"}
    listed = httpx.get(f"{data_plane.url}/api/v1/endpoints", headers=ADMIN, timeout=10).json()["items"]
    assert [e["spec"]["name"] for e in listed] == [echo]


def test_an_endpoint_created_after_the_data_plane_started_appears_there_and_its_deletion_gives_404(
        owner: Server, data_plane: Server, tmp_path: Path) -> None:
    model = write_echo_model(tmp_path / "echo")
    owner.client().create_endpoint({"name": "later", "model": str(model), **HALF_A_CPU})
    owner.client().wait("later", timeout=300)
    served_on_data_plane(data_plane, "later")
    assert invoke(data_plane, "later", "pid").json()["pid"] in replica_pids(owner, "later")
    owner.client().delete_endpoint("later")
    deadline = time.monotonic() + 60
    while invoke(data_plane, "later", "pid").status_code != 404:
        assert time.monotonic() < deadline, "the deleted endpoint is still served on the data-plane server"
        time.sleep(0.2)
    assert invoke(data_plane, "later", "pid").json()["error"] == "endpoint later not found"


def test_generation_streams_through_the_data_plane_server(
        data_plane: Server, endpoint: Callable[..., str], tiny_model: Callable[[str], Path]) -> None:
    name = endpoint("gen", tiny_model("text-generation"))
    body = {"inputs": "the day is", "parameters": {"max_new_tokens": 4}}
    with httpx.stream("POST", f"{data_plane.url}/endpoints/{name}/generate_stream", json=body,
                      timeout=120) as response:
        assert response.status_code == 200
        events = [json.loads(line.removeprefix("data:")) for line in response.iter_lines() if line]
    assert len(events) == 4
    assert events[-1]["generated_text"] is not None
    chat = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{data_plane.url}/endpoints/{name}/v1/chat/completions", json=chat,
                      timeout=120) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_a_protected_endpoint_takes_the_owners_tokens_on_the_data_plane_server(
        owner: Server, data_plane: Server, endpoint: Callable[..., str], tmp_path: Path) -> None:
    name = endpoint("guarded", write_echo_model(tmp_path / "echo"), security="protected")
    created = httpx.post(f"{owner.url}/api/v1/tokens", headers=ADMIN, timeout=10,
                         json={"name": "caller", "endpoints": [name]}).json()
    token = {"Authorization": f"Bearer {created['token']}"}
    assert invoke(data_plane, name, "hi").status_code == 401
    assert invoke(data_plane, name, "hi", headers={"Authorization": "Bearer hs_nobody_x"}).status_code == 403
    deadline = time.monotonic() + 60
    while (answer := invoke(data_plane, name, "hi", headers=token)).status_code != 200:
        assert answer.status_code == 403 and time.monotonic() < deadline, answer.text  # until it is published
        time.sleep(0.2)
    assert answer.json()["echo"] == "hi"
    httpx.delete(f"{owner.url}/api/v1/tokens/{created['id']}", headers=ADMIN, timeout=10)
    while invoke(data_plane, name, "hi", headers=token).status_code != 403:
        assert time.monotonic() < deadline, "a revoked token still opens the endpoint on the data-plane server"
        time.sleep(0.2)


def test_control_routes_are_refused_on_the_data_plane_server_naming_the_owner(
        owner: Server, data_plane: Server, echo: str) -> None:
    refusals = [
        httpx.post(f"{data_plane.url}/api/v1/endpoints", headers=ADMIN, json={"name": "x", "model": "y"}),
        httpx.patch(f"{data_plane.url}/api/v1/endpoints/{echo}", headers=ADMIN, json={"replicas": 1}),
        httpx.delete(f"{data_plane.url}/api/v1/endpoints/{echo}", headers=ADMIN),
        httpx.post(f"{data_plane.url}/api/v1/endpoints/{echo}/pause", headers=ADMIN),
        httpx.post(f"{data_plane.url}/api/v1/tokens", headers=ADMIN, json={"name": "t"}),
        httpx.get(f"{data_plane.url}/api/v1/jobs", headers=ADMIN),
    ]
    message = f"this server serves the data plane only; manage endpoints, tokens and jobs at {owner.url}"
    for refused in refusals:
        assert refused.status_code == 421, refused.text
        assert refused.json()["error"] == message
    queued = httpx.post(f"{data_plane.url}/endpoints/{echo}/async-invocations", json={"inputs": "x"})
    assert queued.status_code == 421 and message in queued.text
    sagemaker = httpx.post(data_plane.url, headers={**ADMIN, "X-Amz-Target": "SageMaker.DeleteEndpoint",
                                                    "Content-Type": "application/x-amz-json-1.1"},
                           content=json.dumps({"EndpointName": echo}))
    assert sagemaker.status_code == 421
    assert sagemaker.json() == {"__type": "MisdirectedRequestException", "message": message}
    cli = subprocess.run([sys.executable, "-m", "hubserve", "--url", data_plane.url, "--token", ADMIN_TOKEN, "delete",
                          echo], capture_output=True, text=True, env=os.environ, timeout=60)
    assert cli.returncode == 1
    assert f"error 421: {message}" in cli.stderr
    assert invoke(owner, echo, "pid").status_code == 200  # nothing was deleted


def in_flight_by_pid(server: Server, name: str) -> dict[int, int]:
    stats = httpx.get(f"{server.url}/api/v1/endpoints/{name}/stats", headers=ADMIN, timeout=10).json()
    return {int(r["pid"]): int(r["in_flight"]) for r in stats["replicas"]}


def in_flight_on(server: Server, name: str) -> int:
    return sum(in_flight_by_pid(server, name).values())


def owner_status_until(owner: Server, name: str, reached: Callable[[dict[str, Any]], bool],
                       timeout: float = 120) -> dict[str, Any]:
    """The endpoint's status on the owner, once `reached` says so."""
    deadline = time.monotonic() + timeout
    while not reached(status := owner.client().get_endpoint(name)["status"]):
        assert time.monotonic() < deadline, f"endpoint {name} did not get there: {status}"
        time.sleep(0.1)
    return status


def test_load_through_the_data_plane_server_alone_scales_an_endpoint_up(
        owner: Server, data_plane: Server, endpoint: Callable[..., str], tmp_path: Path) -> None:
    name = endpoint("busy", write_echo_model(tmp_path / "echo"),
                    autoscaling={"min_replicas": 1, "max_replicas": 2, **QUICK})
    scaled = threading.Event()

    def keep_busy() -> list[int]:
        statuses = []
        while not scaled.is_set():
            statuses.append(httpx.post(f"{data_plane.url}/endpoints/{name}/invocations", timeout=60,
                                       json={"inputs": "sleep", "parameters": {"seconds": 0.5}}).status_code)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # three at once on one replica, over the target of one
        callers = [pool.submit(keep_busy) for _ in range(3)]
        try:
            owner_status_until(owner, name, lambda status: status["target_replicas"] == 2)
        finally:
            scaled.set()
        assert all(set(caller.result()) == {200} for caller in callers)
    owner_status_until(owner, name, lambda status: status["ready_replicas"] == 2)
    assert "scaling up to 2 replica(s)" in owner.client().logs(name)
    deadline = time.monotonic() + 60
    while {invoke(data_plane, name, "pid").json()["pid"] for _ in range(8)} != replica_pids(owner, name):
        assert time.monotonic() < deadline, "the new replica does not answer on the data-plane server"
        time.sleep(0.2)


def test_an_endpoint_at_zero_is_woken_by_requests_held_on_the_data_plane_server(
        owner: Server, data_plane: Server, endpoint: Callable[..., str], tmp_path: Path) -> None:
    name = endpoint("sleepy", write_echo_model(tmp_path / "echo"), shown=("running", AT_ZERO),
                    autoscaling={"min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": 2, **QUICK})
    served_on_data_plane(data_plane, name, (AT_ZERO,))
    no_wait = invoke(data_plane, name, "pid", headers={"X-Scale-Up-Timeout": "0"})
    assert no_wait.status_code == 503 and "has no ready replica yet" in no_wait.json()["error"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: invoke(data_plane, name, "pid"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    pids = {a.json()["pid"] for a in answers}
    assert len(pids) == 1
    assert "request(s) waiting at zero replicas on other servers of the cluster: starting 1 replica(s)" \
        in owner.client().logs(name)
    # A request in flight on the data-plane server keeps the replica up past the idle time before zero.
    slow = httpx.post(f"{data_plane.url}/endpoints/{name}/invocations", timeout=60,
                      json={"inputs": "sleep", "parameters": {"seconds": 3}})
    assert slow.status_code == 200
    assert invoke(data_plane, name, "pid").json()["pid"] in pids


def test_the_load_of_a_data_plane_server_that_died_expires(
        cluster: Any, owner: Server, endpoint: Callable[..., str], tmp_path: Path) -> None:
    name = endpoint("orphaned", write_echo_model(tmp_path / "echo"), shown=("running", AT_ZERO),
                    autoscaling={"min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": 1, **QUICK})
    doomed = start_server(tmp_path / "doomed", env=LOOPBACK_ONLY, args=["--ray", cluster.address, "--data-plane"])
    try:
        served_on_data_plane(doomed, name, ("running", AT_ZERO))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(httpx.post, f"{doomed.url}/endpoints/{name}/invocations", timeout=60,
                        json={"inputs": "sleep", "parameters": {"seconds": 4}})
            deadline = time.monotonic() + 120
            while in_flight_on(doomed, name) < 1:  # woken from zero (if it was there) by its load
                assert time.monotonic() < deadline, "the request did not get to a replica"
                time.sleep(0.1)
            doomed.process.kill()
            killed = time.monotonic()
        # Its last report (one request in flight) stands until it expires; then the endpoint idles down to zero.
        owner_status_until(owner, name, lambda status: status["state"] == AT_ZERO)
        assert time.monotonic() - killed >= LOAD_TTL_S - 1
    finally:
        doomed.stop()


def test_a_dead_nodes_requests_on_the_data_plane_server_get_503_and_the_others_go_on(
        owner: Server, data_plane: Server, echo: str, cluster: Any) -> None:
    served_on_data_plane(data_plane, echo)
    deadline = time.monotonic() + 60
    # Both replicas attached on the data-plane server (its stats list those), or the first would take three requests.
    while len(in_flight_by_pid(data_plane, echo)) < 2:
        assert time.monotonic() < deadline, "the data-plane server did not attach both replicas"
        time.sleep(0.2)
    placed = owner.client().get_endpoint(echo)["status"]["replicas"]
    add_node(cluster, "node_c")  # where the lost replica comes back
    doomed = next(n for n in cluster.worker_nodes if n.node_id == placed[0]["node"])
    sleep = {"inputs": "sleep", "parameters": {"seconds": 8}}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(httpx.post, f"{data_plane.url}/endpoints/{echo}/invocations", json=sleep, timeout=60)
                 for _ in range(4)]
        deadline = time.monotonic() + 30
        while sorted(in_flight_by_pid(data_plane, echo).values()) != [2, 2]:  # two on each replica
            assert time.monotonic() < deadline, \
                f"the four requests did not get two to each replica: {in_flight_by_pid(data_plane, echo)}"
            time.sleep(0.1)
        assert in_flight_by_pid(data_plane, echo)[placed[0]["pid"]] == 2
        cluster.remove_node(doomed, allow_graceful=False)
        answers = [call.result() for call in calls]
    lost = [a for a in answers if a.status_code == 503]
    assert len(lost) == 2 and all(a.headers["retry-after"] == "1" for a in lost)
    assert [a.status_code for a in answers].count(200) == 2
    assert invoke(data_plane, echo, "pid").status_code == 200  # the other replica goes on
    deadline = time.monotonic() + 120
    while (now := owner.client().get_endpoint(echo)["status"])["ready_replicas"] != 2 \
            or placed[0]["pid"] in {r["pid"] for r in now["replicas"]}:
        assert time.monotonic() < deadline, f"the lost replica did not come back: {now}"
        time.sleep(0.5)
    while {invoke(data_plane, echo, "pid").json()["pid"] for _ in range(8)} != replica_pids(owner, echo):
        assert time.monotonic() < deadline, "the new replica does not answer on the data-plane server"
        time.sleep(0.2)


def test_the_owner_keeps_serving_when_the_data_plane_server_stops(
        owner: Server, data_plane: Server, echo: str) -> None:
    served_on_data_plane(data_plane, echo)
    before = owner.client().get_endpoint(echo)["status"]
    data_plane.stop()
    assert {invoke(owner, echo, "pid").json()["pid"] for _ in range(8)} == replica_pids(owner, echo)
    after = owner.client().get_endpoint(echo)["status"]
    assert after["restarts"] == before["restarts"]
    assert {r["pid"] for r in after["replicas"]} == {r["pid"] for r in before["replicas"]}
