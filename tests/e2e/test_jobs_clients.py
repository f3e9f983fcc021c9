"""Batch transform jobs from the clients, against a real server: the `hubserve transform` and `hubserve jobs`
commands as processes (to completion, a failure's exit code and reason, Ctrl-C detaching and `--attach` showing the
bar again on a terminal), and the SDK's `Model(...).transformer(...).transform(...)`."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Server
from custom_models import write_echo_model

ECHO = "clients-jobs-echo"


def hubserve(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hubserve", *args], env=cli_env(server), capture_output=True,
                          text=True, timeout=300)


def cli_env(server: Server) -> dict[str, str]:
    return {**os.environ, "HUBSERVE_URL": server.url, "HUBSERVE_TOKEN": server.token}


def write_lines(folder: Path, name: str, records: list[Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return folder


def answers(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def echo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_echo_model(tmp_path_factory.mktemp("echo"))


@pytest.fixture(scope="module")
def echo_endpoint(server: Server, echo_model: Path) -> Iterator[str]:
    """A running endpoint the jobs that need no replicas of their own run on."""
    server.client().create_endpoint({"name": ECHO, "model": str(echo_model)})
    server.client().wait(ECHO, timeout=300)
    yield ECHO
    server.client().delete_endpoint(ECHO)


def slow_input(folder: Path, records: int) -> Path:
    return write_lines(folder, "slow.jsonl", [{"inputs": "sleep", "parameters": {"seconds": 0.4}}] * records)


def test_cli_transform_runs_a_job_to_completion(server: Server, echo_model: Path, tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in", "a.jsonl", [{"inputs": f"record {i}"} for i in range(5)])
    done = hubserve(server, "transform", "cli-complete", "--model", str(echo_model), "--input", str(inputs),
                    "--output", str(tmp_path / "out"), "--strategy", "MultiRecord", "--content-type",
                    "application/json", "--split-type", "Line", "--assemble-with", "Line")
    assert done.returncode == 0, done.stderr
    # Not a terminal: plain progress lines, the last one the end, then where the answers are.
    assert done.stdout.splitlines()[-2:] == ["cli-complete  Completed  5/5 records  100%",
                                             f"answers in {tmp_path / 'out'}"]
    assert "\r" not in done.stdout
    assert [a["echo"] for a in answers(tmp_path / "out" / "a.jsonl.out")] == [f"record {i}" for i in range(5)]

    described = json.loads(hubserve(server, "jobs", "describe", "cli-complete").stdout)
    assert described["state"] == "Completed" and described["progress"]["records_done"] == 5
    assert described["spec"]["batch_strategy"] == "MultiRecord"
    listed = hubserve(server, "jobs", "list").stdout
    assert any(line.split()[:3] == ["cli-complete", "Completed", "5/5"] for line in listed.splitlines())
    logs = hubserve(server, "jobs", "logs", "cli-complete", "--tail", "2").stdout.splitlines()
    assert len(logs) == 2 and logs[-1].endswith("Completed: 5 record(s) done, 0 failed")
    followed = hubserve(server, "jobs", "logs", "cli-complete", "--follow")  # the job has ended: so does this
    assert followed.returncode == 0 and "replicas ready" in followed.stdout
    stopped = hubserve(server, "jobs", "stop", "cli-complete")
    assert stopped.returncode == 1 and "409" in stopped.stderr


def test_cli_failing_job_exits_nonzero_with_its_reason(server: Server, echo_endpoint: str, tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in", "bad.jsonl", [{"inputs": "fine"}, '{"inputs": ', {"inputs": "fine"}])
    failed = hubserve(server, "transform", "cli-fails", "--endpoint", echo_endpoint, "--input", str(inputs),
                      "--output", str(tmp_path / "out"))
    assert failed.returncode == 1
    reason = failed.stderr.strip().splitlines()[-1]
    assert reason.startswith("hubserve: job cli-fails Failed: ") and "bad.jsonl" in reason and "line 2" in reason
    assert "cli-fails  Failed" in failed.stdout

    missing = hubserve(server, "transform", "cli-missing", "--endpoint", echo_endpoint, "--input",
                       str(tmp_path / "nothing-here"), "--output", str(tmp_path / "out"))
    assert missing.returncode == 1 and "error 400" in missing.stderr


def test_ctrl_c_detaches_and_attach_shows_the_bar_again(server: Server, echo_endpoint: str, tmp_path: Path) -> None:
    inputs = slow_input(tmp_path / "in", 15)
    command = [sys.executable, "-m", "hubserve", "transform", "cli-attach", "--endpoint", echo_endpoint, "--input",
               str(inputs), "--output", str(tmp_path / "out"), "--strategy", "SingleRecord",
               "--max-concurrent-transforms", "1"]
    watching = subprocess.Popen(command, env=cli_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        assert "cli-attach  InProgress" in watching.stdout.readline()  # type: ignore[union-attr]
        watching.send_signal(signal.SIGINT)
        _, stderr = watching.communicate(timeout=60)
    finally:
        watching.kill()
    assert watching.returncode == 130
    assert "hubserve transform --attach cli-attach" in stderr and "hubserve jobs stop cli-attach" in stderr
    assert server.client().get_job("cli-attach")["state"] == "InProgress"  # detached, not stopped

    # Reattached on a terminal: the bar, redrawn in place, until the job completes.
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # rows, columns
    attached = subprocess.Popen([sys.executable, "-m", "hubserve", "transform", "--attach", "cli-attach"],
                                env=cli_env(server), stdout=follower, stderr=follower)
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the command has ended
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert attached.wait(timeout=60) == 0
    text = screen.decode()
    assert "\r[" in text and "] cli-attach  InProgress" in text and "ETA" in text
    assert "] cli-attach  Completed  15/15 records  100%" in text
    assert len(answers(tmp_path / "out" / "slow.jsonl.out")) == 15


def test_sdk_transformer_runs_a_job_and_waits(server: Server, echo_model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from hubserve import Model

    inputs = write_lines(tmp_path / "in", "records.jsonl",
                         [{"id": i, "payload": {"inputs": f"text {i}"}} for i in range(4)])
    transformer = Model(model=str(echo_model), client=server.client()).transformer(
        instance_count=1, strategy="MultiRecord", max_payload=1, max_concurrent_transforms=2,
        output_path=str(tmp_path / "out"), accept="application/json", assemble_with="Line")
    assert transformer.transform(data=str(inputs), content_type="application/json", split_type="Line",
                                 input_filter="$.payload", join_source="Input", job_name="sdk-job",
                                 wait=False) is None
    assert transformer.latest_transform_job == "sdk-job"
    transformer.wait(logs=True)
    printed = capsys.readouterr().out
    assert "replicas ready" in printed and "Completed: 4 record(s) done" in printed
    described = transformer.describe()
    assert described["state"] == "Completed" and described["spec"]["max_payload_mb"] == 1
    assert described["spec"]["data_processing"] == {"input_filter": "$.payload", "output_filter": "$",
                                                    "join_source": "Input"}
    joined = answers(tmp_path / "out" / "records.jsonl.out")
    assert [(a["id"], a["SageMakerOutput"]["echo"]) for a in joined] == [(i, f"text {i}") for i in range(4)]


def test_sdk_failed_job_raises_and_stop_stops(server: Server, echo_endpoint: str, tmp_path: Path) -> None:
    from hubserve.client import HubserveAPIError
    from hubserve.sdk import Transformer

    transformer = Transformer({"endpoint": echo_endpoint}, output_path=str(tmp_path / "out"), client=server.client())
    bad = write_lines(tmp_path / "bad", "bad.jsonl", [{"inputs": "fine"}, {"inputs": "fine"}, "not json"])
    with pytest.raises(HubserveAPIError, match="line 3"):
        transformer.transform(data=str(bad), content_type="application/json", logs=False)
    assert transformer.describe()["state"] == "Failed"
    assert transformer.latest_transform_job is not None and transformer.latest_transform_job.startswith("transform-")

    transformer.transform(data=str(slow_input(tmp_path / "slow", 50)), job_name="sdk-stop", wait=False)
    attached = Transformer.attach("sdk-stop", client=server.client())
    assert attached.source == {"endpoint": echo_endpoint} and attached.output_path == str(tmp_path / "out")
    attached.stop()
    assert transformer.describe()["state"] == "Stopped"
