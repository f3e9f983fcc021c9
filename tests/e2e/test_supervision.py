"""The server supervises what it starts: the zygote comes back when it dies and its replicas stay watched,
a worker that dies while loading says why, workers never see the server's secrets, and replicas are
capped against the machine."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import ADMIN_TOKEN, Server, start_server
from custom_models import write_echo_model, write_segfault_model
from hubserve.worker.config import CONFIG_ENV


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def zygotes_of(server: Server) -> list[int]:
    """The pids of the server's live zygote (normally one)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and parent_of(int(entry.name)) == server.process.pid
                    and b"hubserve.worker.zygote" in (entry / "cmdline").read_bytes()
                    and "Z" not in (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]):
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def replica_pids(server: Server, name: str) -> list[int]:
    return [r["pid"] for r in server.client().get_endpoint(name)["status"]["replicas"]]


def test_replicas_stay_watched_and_the_zygote_comes_back_when_it_dies(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home")
    model = str(write_echo_model(tmp_path / "echo"))
    client = server.client()
    try:
        client.create_endpoint({"name": "before", "model": model, "replicas": 2})
        client.wait("before", timeout=300)
        [zygote] = zygotes_of(server)
        victim, survivor = replicas = replica_pids(server, "before")
        assert {parent_of(pid) for pid in replicas} == {zygote}
        os.kill(zygote, signal.SIGKILL)

        # The orphaned replicas are alive and still counted as such...
        time.sleep(1.5)
        status = client.get_endpoint("before")["status"]
        assert (status["state"], status["restarts"], replica_pids(server, "before")) == ("running", 0, replicas)
        # ...and still watched: a death is noticed and the replica replaced.
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: client.get_endpoint("before")["status"]["restarts"] == 1, timeout=5)
        wait_for(lambda: client.get_endpoint("before")["status"]["ready_replicas"] == 2)
        assert survivor in replica_pids(server, "before") and victim not in replica_pids(server, "before")

        # The zygote comes back, and new endpoints fork from it.
        wait_for(lambda: zygotes_of(server) not in ([], [zygote]))
        [reborn] = zygotes_of(server)
        client.create_endpoint({"name": "after", "model": model})
        client.wait("after", timeout=120)
        assert parent_of(replica_pids(server, "after")[0]) == reborn
    finally:
        server.stop()


def test_a_segfault_while_loading_is_the_failure_message(deploy_fails: Callable[..., str], tmp_path: Path) -> None:
    message = deploy_fails("segfaults", str(write_segfault_model(tmp_path)))
    reason = message.splitlines()[0]
    assert "was killed by SIGSEGV (code -11) while loading" in reason
    assert "Fatal Python error: Segmentation fault" in reason


def test_an_exception_before_the_channel_is_up_is_the_failure_message(deploy_fails: Callable[..., str],
                                                                      tmp_path: Path) -> None:
    broken = tmp_path / "site"
    broken.mkdir()
    (broken / "uvloop.py").write_text("raise RuntimeError('this environment is broken')\n")
    message = deploy_fails("broken-env", str(write_echo_model(tmp_path / "echo")), env={"PYTHONPATH": str(broken)})
    reason = message.splitlines()[0]
    assert "exited with code 1 while loading: RuntimeError: this environment is broken" in reason


def test_workers_never_see_the_servers_settings(server: Server, deploy: Callable[..., str], tmp_path: Path) -> None:
    model = str(write_echo_model(tmp_path / "echo"))
    forked = deploy("env-forked", model)
    spawned = deploy("env-spawned", model, env={"HF_HUB_CACHE": str(tmp_path / "cache")})  # read at import time
    assert parent_of(replica_pids(server, "env-forked")[0]) in zygotes_of(server)
    assert parent_of(replica_pids(server, "env-spawned")[0]) == server.process.pid
    for url in (forked, spawned):
        names = httpx.post(url, json={"inputs": "env"}).json()["names"]
        assert "HF_HUB_OFFLINE" in names  # the server's env reaches the model...
        assert {n for n in names if n.startswith("HUBSERVE_")} <= {CONFIG_ENV}  # ...but not its settings
    for zygote in zygotes_of(server):
        assert b"HUBSERVE_ADMIN_TOKEN" not in Path(f"/proc/{zygote}/environ").read_bytes()


def test_replicas_beyond_the_cap_are_refused(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", env={"HUBSERVE_MAX_REPLICAS": "2"})
    model = str(write_echo_model(tmp_path / "echo"))
    api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    try:
        too_many = api.post("/endpoints", json={"name": "big", "model": model, "replicas": 3})
        assert too_many.status_code == 409
        assert too_many.json()["error_type"] == "replica_limit"
        assert "at most 2 replicas" in too_many.json()["error"] and "have 0" in too_many.json()["error"]
        assert api.post("/endpoints", json={"name": "a", "model": model, "replicas": 2}).status_code == 201
        refused = api.post("/endpoints", json={"name": "b", "model": model})
        assert refused.status_code == 409 and "have 2" in refused.json()["error"]
        assert api.patch("/endpoints/a", json={"replicas": 3}).status_code == 409
        assert api.patch("/endpoints/a", json={"replicas": 1}).status_code == 200
        assert api.post("/endpoints", json={"name": "b", "model": model}).status_code == 201
    finally:
        api.close()
        server.stop()
