"""The `hubserve` command and the Python SDK against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import Server
from custom_models import write_echo_model


def hubserve(server: Server, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUBSERVE_URL": server.url, "HUBSERVE_TOKEN": token or server.token}
    return subprocess.run([sys.executable, "-m", "hubserve", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_round_trip(server: Server, tmp_path: Path) -> None:
    model = write_echo_model(tmp_path / "model")
    deployed = hubserve(server, "deploy", "cli-echo", "--model", str(model), "--env", "ECHO_VERSION=7", "--wait")
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["status"]["state"] == "running"
    try:
        listed = hubserve(server, "list")
        assert "cli-echo" in listed.stdout and "running" in listed.stdout
        described = json.loads(hubserve(server, "describe", "cli-echo").stdout)
        assert described["spec"]["env"] == {"ECHO_VERSION": "7"}

        body = tmp_path / "in.json"
        body.write_text(json.dumps({"inputs": "pid"}))
        out = tmp_path / "out.json"
        invoked = hubserve(server, "invoke", "cli-echo", "--body", f"fileb://{body}", str(out))
        assert invoked.returncode == 0, invoked.stderr
        assert json.loads(out.read_text())["version"] == "7"
        assert json.loads(invoked.stdout)["ContentType"].startswith("application/json")

        updated = hubserve(server, "update", "cli-echo", "--env", "ECHO_VERSION=8", "--wait")
        assert updated.returncode == 0, updated.stderr
        invoked = hubserve(server, "invoke", "cli-echo", "--body", '{"inputs": "pid"}', "-")
        assert json.loads(invoked.stdout)["version"] == "8"

        logs = hubserve(server, "logs", "cli-echo")
        assert "ready" in logs.stdout
    finally:
        deleted = hubserve(server, "delete", "cli-echo")
    assert deleted.returncode == 0
    missing = hubserve(server, "describe", "cli-echo")
    assert missing.returncode == 1
    assert "404" in missing.stderr and "cli-echo" in missing.stderr


def test_cli_follows_logs(server: Server, tmp_path: Path) -> None:
    model = write_echo_model(tmp_path / "model")
    assert hubserve(server, "deploy", "follow", "--model", str(model), "--wait").returncode == 0
    try:
        env = {**os.environ, "HUBSERVE_URL": server.url, "HUBSERVE_TOKEN": server.token}
        follower = subprocess.Popen([sys.executable, "-m", "hubserve", "logs", "follow", "--follow"], env=env,
                                    stdout=subprocess.PIPE, text=True)
        watchdog = threading.Timer(120, follower.kill)
        watchdog.start()
        try:
            hubserve(server, "update", "follow", "--replicas", "2", "--wait")
            seen = ""
            while len(re.findall(r"\[hubserve\] replica \S+ ready", seen)) < 2 and follower.poll() is None:
                seen += follower.stdout.readline()  # type: ignore[union-attr]
            assert len(re.findall(r"\[hubserve\] replica \S+ ready", seen)) == 2
        finally:
            watchdog.cancel()
            follower.terminate()
            follower.communicate()
    finally:
        hubserve(server, "delete", "follow")


def test_cli_tokens(server: Server) -> None:
    created = json.loads(hubserve(server, "token", "create", "robot", "--endpoint", "a").stdout)
    assert created["endpoints"] == ["a"] and created["token"].startswith("hs_")
    listed = json.loads(hubserve(server, "token", "list").stdout)
    assert created["id"] in [t["id"] for t in listed]
    assert hubserve(server, "token", "revoke", created["id"]).returncode == 0
    assert hubserve(server, "list", token="wrong").returncode == 1


def test_sdk_model_deploy_predict_delete(server: Server, tmp_path: Path) -> None:
    from hubserve import Client, Model

    with Client(url=server.url, token=server.token) as client:
        model = Model(model=str(write_echo_model(tmp_path / "m")), env={"ECHO_VERSION": "sdk"}, client=client)
        predictor = model.deploy(name="sdk-echo", replicas=1)
        try:
            assert predictor.predict({"inputs": "pid"})["version"] == "sdk"
            assert predictor.predict({"inputs": "hello"})["echo"] == "hello"
        finally:
            predictor.delete_endpoint()
        assert all(e["spec"]["name"] != "sdk-echo" for e in client.list_endpoints())


def test_client_reads_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubserve import Client

    monkeypatch.setenv("HUBSERVE_URL", server.url)
    monkeypatch.setenv("HUBSERVE_TOKEN", server.token)
    with Client() as client:
        assert isinstance(client.list_endpoints(), list)
