"""Autoscaling on a real server: a scale-up under load and a scale-down once idle, scale to zero and the requests
held while a replica starts (a burst of 50 all answered, `X-Scale-Up-Timeout: 0` answered 503 at once, a replica
that fails to load failing them promptly, a stream held too), a PATCH of the bounds applied without reloading the
model; pause and resume, and scale to zero, across a restart; the host memory budget refusing a scale-up and a
create."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from conftest import Server, start_server
from custom_models import write_echo_model

# Short enough that each test takes seconds.
QUICK = {"scale_up_after_s": 0.5, "scale_down_after_s": 1.0, "scale_to_zero_after_s": 1.0}

FAILS_ONCE_MARKED = '''
import os


def model_fn(model_dir):
    if os.path.exists(os.path.join(model_dir, "broken")):
        raise RuntimeError("the weights are gone")
    return {}


def predict_fn(data, model):
    return {"ok": True}
'''


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def status(server: Server, name: str) -> dict[str, Any]:
    return dict(server.client().get_endpoint(name)["status"])


def at_zero(server: Server, name: str) -> None:
    wait_until(lambda: status(server, name)["state"] == "scaledToZero", timeout=30)


def test_scales_up_under_load_and_down_when_idle(deploy: Callable[..., str], server: Server,
                                                 tmp_path: Path) -> None:
    url = deploy("elastic", str(write_echo_model(tmp_path)),
                 autoscaling={"min_replicas": 1, "max_replicas": 2, "target": 1, **QUICK})
    assert status(server, "elastic")["target_replicas"] == 1
    answers: list[int] = []

    def slow_request() -> None:
        with httpx.Client(timeout=60) as http:
            answers.append(http.post(url, json={"inputs": "sleep", "parameters": {"seconds": 0.5}}).status_code)

    load = [threading.Thread(target=slow_request) for _ in range(8)]
    for thread in load:
        thread.start()
    wait_until(lambda: status(server, "elastic")["ready_replicas"] == 2, timeout=60)
    for thread in load:
        thread.join()
    assert answers == [200] * 8
    assert status(server, "elastic")["target_replicas"] == 2  # never above max_replicas
    wait_until(lambda: status(server, "elastic")["replicas"] and len(status(server, "elastic")["replicas"]) == 1)
    current = status(server, "elastic")
    assert (current["state"], current["target_replicas"]) == ("running", 1)  # never below min_replicas
    logs = server.client().logs("elastic")
    assert "scaling up to 2 replica(s)" in logs and "scaling down to 1 replica(s)" in logs


def test_scales_to_zero_and_the_next_request_wakes_it(deploy: Callable[..., str], server: Server,
                                                      tiny_model: Callable[[str], Path]) -> None:
    url = deploy("sleepy", str(tiny_model("text-classification")),
                 autoscaling={"min_replicas": 0, "max_replicas": 1, **QUICK})
    at_zero(server, "sleepy")
    asleep = status(server, "sleepy")
    assert (asleep["ready_replicas"], asleep["target_replicas"], asleep["replicas"]) == (0, 0, [])
    assert "scaled to zero after 1 s without requests" in asleep["message"]
    response = httpx.post(url, json={"inputs": "I love this"}, timeout=120)
    assert response.status_code == 200, response.text
    assert status(server, "sleepy")["state"] == "running"


def test_a_burst_of_held_requests_is_all_answered_after_a_cold_start(deploy: Callable[..., str], server: Server,
                                                                     tiny_model: Callable[[str], Path]) -> None:
    url = deploy("burst", str(tiny_model("text-classification")),
                 autoscaling={"min_replicas": 0, "max_replicas": 1, **QUICK})
    at_zero(server, "burst")
    codes: list[int] = []
    lock = threading.Lock()

    def call(index: int) -> None:
        with httpx.Client(timeout=120) as http:
            code = http.post(url, json={"inputs": f"request {index}"}).status_code
        with lock:
            codes.append(code)

    burst = [threading.Thread(target=call, args=(i,)) for i in range(50)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join()
    assert codes == [200] * 50
    # One replica was started for them all.
    assert server.client().logs("burst").count("a request came at zero replicas") == 1


def test_a_request_that_will_not_wait_is_a_503_and_still_starts_a_replica(
        deploy: Callable[..., str], server: Server, tiny_model: Callable[[str], Path]) -> None:
    url = deploy("impatient", str(tiny_model("text-classification")),
                 autoscaling={"min_replicas": 0, "max_replicas": 1, **QUICK, "scale_to_zero_after_s": 2.0})
    at_zero(server, "impatient")
    bad = httpx.post(url, json={"inputs": "x"}, headers={"X-Scale-Up-Timeout": "soon"})
    assert bad.status_code == 400 and "X-Scale-Up-Timeout" in bad.json()["error"]
    refused = httpx.post(url, json={"inputs": "x"}, headers={"X-Scale-Up-Timeout": "0"})
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 0
    wait_until(lambda: status(server, "impatient")["state"] == "running")
    assert httpx.post(url, json={"inputs": "x"}, headers={"X-Scale-Up-Timeout": "0"}).status_code == 200


def test_a_replica_that_fails_to_load_fails_the_held_requests_promptly(deploy: Callable[..., str], server: Server,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(textwrap.dedent(FAILS_ONCE_MARKED))
    url = deploy("fragile", str(tmp_path), autoscaling={"min_replicas": 0, "max_replicas": 1, **QUICK})
    at_zero(server, "fragile")
    (tmp_path / "broken").touch()
    started = time.monotonic()
    response = httpx.post(url, json={"inputs": "x"}, timeout=120)
    assert time.monotonic() - started < 60  # not the 120 s hold
    assert response.status_code == 503
    assert "the weights are gone" in response.json()["error"]


def test_a_patch_of_the_bounds_applies_without_reloading(deploy: Callable[..., str], server: Server,
                                                         tmp_path: Path) -> None:
    url = deploy("bounded", str(write_echo_model(tmp_path)), replicas=2,
                 autoscaling={"min_replicas": 2, "max_replicas": 3, **QUICK})
    pids = {r["pid"] for r in status(server, "bounded")["replicas"]}
    assert len(pids) == 2
    changed = httpx.patch(f"{server.url}/api/v1/endpoints/bounded", headers={"authorization": f"Bearer {server.token}"},
                          json={"autoscaling": {"min_replicas": 1, "max_replicas": 1, **QUICK}})
    assert changed.status_code == 200
    wait_until(lambda: len(status(server, "bounded")["replicas"]) == 1)
    assert {r["pid"] for r in status(server, "bounded")["replicas"]} < pids  # one of the same processes serves
    assert httpx.post(url, json={"inputs": "pid"}).json()["pid"] in pids


def admin(server: Server) -> dict[str, str]:
    return {"authorization": f"Bearer {server.token}"}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("Pss:"))


def test_pause_and_scale_to_zero_last_over_a_restart(tmp_path: Path, tiny_model: Callable[[str], Path]) -> None:
    home = tmp_path / "home"
    server = start_server(home)
    try:
        client = server.client()
        client.create_endpoint({"name": "resting", "model": str(write_echo_model(tmp_path / "echo"))})
        client.create_endpoint({"name": "dozing", "model": str(tiny_model("text-classification")),
                                "autoscaling": {"min_replicas": 0, "max_replicas": 1, **QUICK}})
        client.wait("resting", timeout=300)
        pid = status(server, "resting")["replicas"][0]["pid"]
        paused = httpx.post(f"{server.url}/api/v1/endpoints/resting/pause", headers=admin(server), timeout=60)
        assert paused.status_code == 200
        assert paused.json()["status"]["state"] == "paused" and paused.json()["url"].endswith("/endpoints/resting")
        assert gone(pid)
        refused = httpx.post(f"{server.url}/endpoints/resting", json={"inputs": "pid"})
        assert refused.status_code == 503
        assert "endpoint resting is paused; resume it to serve it again" in refused.json()["error"]
        assert "retry-after" not in refused.headers  # it will not come back by itself
        not_paused = httpx.post(f"{server.url}/api/v1/endpoints/dozing/resume", headers=admin(server))
        assert not_paused.status_code == 409
        updated = client.update_endpoint("resting", {"env": {"ECHO_VERSION": "2"}})
        assert updated["status"]["state"] == "paused" and updated["spec"]["env"] == {"ECHO_VERSION": "2"}
        at_zero(server, "dozing")
    finally:
        server.stop()
    server = start_server(home)
    try:
        client = server.client()
        resting, dozing = status(server, "resting"), status(server, "dozing")
        assert (resting["state"], resting["replicas"]) == ("paused", [])
        assert (dozing["state"], dozing["replicas"]) == ("scaledToZero", [])
        assert httpx.post(f"{server.url}/endpoints/dozing", json={"inputs": "hello"}, timeout=120).status_code == 200
        assert client.resume_endpoint("resting")["status"]["state"] == "initializing"
        client.wait("resting", timeout=300)
        assert httpx.post(f"{server.url}/endpoints/resting", json={"inputs": "pid"}).json()["version"] == "2"
        client.pause_endpoint("dozing")
        client.delete_endpoint("dozing")  # a paused endpoint deletes
        assert httpx.get(f"{server.url}/api/v1/endpoints/dozing", headers=admin(server)).status_code == 404
    finally:
        server.stop()


def test_the_memory_budget_refuses_a_scale_up_and_a_create(tmp_path: Path) -> None:
    """The replica's own footprint is measured first (on a server without a budget); the server is then restarted
    with a budget of 1.5 times that: the restored replica runs, a second one would pass it."""
    home = tmp_path / "home"
    spec = {"name": "hungry", "model": str(write_echo_model(tmp_path / "echo")),
            "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target": 1, **QUICK}}
    server = start_server(home)
    try:
        server.client().create_endpoint(spec)
        server.client().wait("hungry", timeout=300)
        footprint = pss(status(server, "hungry")["replicas"][0]["pid"])
    finally:
        server.stop()
    server = start_server(home, env={"HUBSERVE_MAX_MEMORY": str(int(footprint * 1.5))})
    try:
        server.client().wait("hungry", timeout=300)
        url = f"{server.url}/endpoints/hungry"
        load = [threading.Thread(target=httpx.post, args=(url,),
                                 kwargs={"json": {"inputs": "sleep", "parameters": {"seconds": 1}}, "timeout": 60})
                for _ in range(4)]
        for thread in load:
            thread.start()
        wait_until(lambda: "scale-up refused" in (status(server, "hungry")["message"] or ""), timeout=30)
        message = status(server, "hungry")["message"]
        assert "memory budget (--max-memory); another replica of hungry needs about" in message
        assert status(server, "hungry")["target_replicas"] == 1
        for thread in load:
            thread.join()
        assert "scale-up refused" in server.client().logs("hungry")
        created = httpx.post(f"{server.url}/api/v1/endpoints", headers=admin(server),
                             json={**spec, "name": "greedy", "replicas": 3, "autoscaling": None})
        assert created.status_code == 409
        assert "3 more replicas of greedy need about" in created.json()["error"]
        assert httpx.get(f"{server.url}/api/v1/endpoints/greedy", headers=admin(server)).status_code == 404
    finally:
        server.stop()


def test_a_stream_at_zero_is_held_too(deploy: Callable[..., str], server: Server,
                                      tiny_model: Callable[[str], Path]) -> None:
    url = deploy("drowsy", str(tiny_model("text-generation")), task="text-generation", dtype="float32",
                 autoscaling={"min_replicas": 0, "max_replicas": 1, **QUICK})
    at_zero(server, "drowsy")
    body = {"inputs": "the day is", "parameters": {"max_new_tokens": 3, "do_sample": False}, "stream": True}
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert len(events) >= 3
