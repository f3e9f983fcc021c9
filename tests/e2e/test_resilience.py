"""Replicas survive what happens to them: server restarts, killed workers, updates under load, and
requests are spread over the ready replicas; protected endpoints check tokens."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import Server, sagemaker_runtime, start_server
from custom_models import write_echo_model


def wait_for(predicate: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_endpoints_come_back_after_a_server_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    model = write_echo_model(tmp_path / "echo")
    first = start_server(home)
    try:
        first.client().create_endpoint({"name": "again", "model": str(model)})
        first.client().wait("again", timeout=300)
    finally:
        first.stop()
    second = start_server(home)
    try:
        second.client().wait("again", timeout=300)
        response = httpx.post(f"{second.url}/endpoints/again", json={"inputs": "back"})
        assert response.json()["echo"] == "back"
    finally:
        second.stop()


def test_killed_worker_is_replaced(server: Server, tmp_path: Path) -> None:
    client = server.client()
    client.create_endpoint({"name": "phoenix", "model": str(write_echo_model(tmp_path))})
    try:
        status = client.wait("phoenix", timeout=300)["status"]
        pid = status["replicas"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: client.get_endpoint("phoenix")["status"]["restarts"] >= 1)
        status = client.wait("phoenix", timeout=300)["status"]
        assert status["replicas"][0]["pid"] != pid
        assert "died" in (status["message"] or "")
        response = httpx.post(f"{server.url}/endpoints/phoenix", json={"inputs": "pid"})
        assert response.status_code == 200
        assert response.json()["pid"] != pid
    finally:
        client.delete_endpoint("phoenix")


def test_worker_crash_during_a_request(server: Server, tmp_path: Path) -> None:
    """A replica dying under a request is the server's trouble, not the caller's: a 503 to retry."""
    client = server.client()
    client.create_endpoint({"name": "crashy", "model": str(write_echo_model(tmp_path))})
    try:
        client.wait("crashy", timeout=300)
        response = httpx.post(f"{server.url}/endpoints/crashy", json={"inputs": "crash"})
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["error_type"] == "replica_lost"
        wait_for(lambda: client.get_endpoint("crashy")["status"]["ready_replicas"] == 1, timeout=60)
        sagemaker = httpx.post(f"{server.url}/endpoints/crashy/invocations", json={"inputs": "crash"})
        assert sagemaker.status_code == 503
        assert sagemaker.headers["x-amzn-errortype"] == "ServiceUnavailable"
        assert sagemaker.headers["retry-after"]
        wait_for(lambda: client.get_endpoint("crashy")["status"]["ready_replicas"] == 1, timeout=60)
        assert httpx.post(f"{server.url}/endpoints/crashy", json={"inputs": "ok"}).status_code == 200
    finally:
        client.delete_endpoint("crashy")


def test_a_dying_replica_loses_only_its_requests_in_flight(deploy: Callable[..., str], server: Server,
                                                          tmp_path: Path) -> None:
    url = deploy("busy", str(write_echo_model(tmp_path)), replicas=2)
    victim = server.client().get_endpoint("busy")["status"]["replicas"][0]["pid"]
    threads, per_thread = 4, 50
    failures: list[httpx.Response] = []
    answered = 0
    halfway = threading.Event()
    lock = threading.Lock()

    def hammer() -> None:
        nonlocal answered
        with httpx.Client(timeout=30) as http:
            for _ in range(per_thread):
                response = http.post(url, json={"inputs": "pid"})
                with lock:
                    if response.status_code != 200:
                        failures.append(response)
                    answered += 1
                    if answered == threads * per_thread // 2:
                        halfway.set()

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    assert halfway.wait(60)
    os.kill(victim, signal.SIGKILL)
    for worker in workers:
        worker.join()
    assert answered == threads * per_thread
    # Each thread has one request in flight at a time: at most that many were on the dead replica.
    assert len(failures) <= threads
    assert all(f.status_code == 503 and f.headers["retry-after"] for f in failures)
    assert httpx.post(url, json={"inputs": "pid"}).json()["pid"] != victim


def test_boto3_retries_past_a_dying_replica(deploy: Callable[..., str], server: Server, tmp_path: Path) -> None:
    deploy("flaky", str(write_echo_model(tmp_path / "model")), replicas=2)
    runtime = sagemaker_runtime(server.url, attempts=3)
    try:
        body = {"inputs": "crash-once", "parameters": {"marker": str(tmp_path / "died")}}
        response = runtime.invoke_endpoint(EndpointName="flaky", Body=json.dumps(body),
                                           ContentType="application/json")
    finally:
        runtime.close()
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert json.loads(response["Body"].read())["pid"]  # from the survivor, or the dead one's replacement


def test_requests_are_spread_over_replicas(server: Server, tmp_path: Path) -> None:
    client = server.client()
    model = str(write_echo_model(tmp_path))
    client.create_endpoint({"name": "spread", "model": model, "replicas": 2})
    try:
        client.wait("spread", timeout=300)
        pids = Counter(httpx.post(f"{server.url}/endpoints/spread", json={"inputs": "pid"}).json()["pid"]
                       for _ in range(10))
        assert len(pids) == 2
        client.update_endpoint("spread", {"replicas": 1})
        wait_for(lambda: len(client.get_endpoint("spread")["status"]["replicas"]) == 1)
    finally:
        client.delete_endpoint("spread")


def test_update_under_steady_requests_fails_none(server: Server, tmp_path: Path) -> None:
    client = server.client()
    model = str(write_echo_model(tmp_path))
    client.create_endpoint({"name": "rolling", "model": model, "env": {"ECHO_VERSION": "1"}})
    try:
        client.wait("rolling", timeout=300)
        statuses: list[int] = []
        versions: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client() as http:
                while not stop.is_set() and len(statuses) < 5000:
                    response = http.post(f"{server.url}/endpoints/rolling", json={"inputs": "pid"})
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        versions.append(response.json()["version"])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        updated = client.update_endpoint("rolling", {"env": {"ECHO_VERSION": "2"}})
        assert updated["status"]["state"] == "updating"
        wait_for(lambda: versions and versions[-1] == "2", timeout=300)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        assert statuses and set(statuses) == {200}
        assert versions[0] == "1" and versions[-1] == "2"
        assert client.get_endpoint("rolling")["status"]["state"] == "running"
    finally:
        client.delete_endpoint("rolling")


@pytest.fixture
def protected(server: Server, tmp_path: Path) -> object:
    client = server.client()
    client.create_endpoint({"name": "secret", "model": str(write_echo_model(tmp_path)),
                            "security": "protected"})
    client.wait("secret", timeout=300)
    yield client
    client.delete_endpoint("secret")


def test_protected_endpoint_tokens(server: Server, protected: object) -> None:
    url = f"{server.url}/endpoints/secret"
    assert httpx.post(url, json={"inputs": "x"}).status_code == 401
    assert httpx.post(url, json={"inputs": "x"}, headers={"authorization": "Bearer wrong"}).status_code == 403
    scoped = protected.create_token("scoped", ["secret"])
    other = protected.create_token("other", ["elsewhere"])
    ok = httpx.post(url, json={"inputs": "x"}, headers={"authorization": f"Bearer {scoped['token']}"})
    assert ok.status_code == 200
    denied = httpx.post(url, json={"inputs": "x"}, headers={"authorization": f"Bearer {other['token']}"})
    assert denied.status_code == 403
    assert "not valid for endpoint secret" in denied.json()["error"]
    protected.revoke_token(scoped["id"])
    revoked = httpx.post(url, json={"inputs": "x"}, headers={"authorization": f"Bearer {scoped['token']}"})
    assert revoked.status_code == 403
    sagemaker = httpx.post(f"{url}/invocations", json={"inputs": "x"})
    assert sagemaker.status_code == 401
    assert sagemaker.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
