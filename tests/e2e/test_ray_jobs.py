"""Batch transform jobs on a Ray cluster (`hubserve serve --ray`): a job with its own model runs on Ray Data, its
actors spread over the nodes (two of four CPUs each, where Ray's default placement would pack both onto one), with
the same output as on one machine: every record answered once, in input order per file, bad ones in `.errors`; a
stop frees the actors, a killed server's job resumes from its checkpoint, a model that does not load fails the job
with the reason. A job on a running endpoint still uses that endpoint's replicas."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Server
from custom_models import write_echo_model
from ray_clusters import local_cluster, ray_server, raylet_pid

# Answers each record with the node that ran it (every process Ray starts on a node knows its raylet's pid). The
# job starts sending as soon as one replica is ready; no record is answered before both are, so that the other
# replica is ready while most of the records are still to send, however fast one node loads.
NODE_REPORTING = '''
import os
import time


def model_fn(model_dir):
    open(os.path.join(os.environ["LOADED_DIR"], str(os.getpid())), "w").close()


def predict_fn(data, model):
    deadline = time.monotonic() + 60
    while len(os.listdir(os.environ["LOADED_DIR"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    if data["inputs"] == "bad":
        raise ValueError("the model refused this input")
    return {"id": data["inputs"], "node": int(os.environ["RAY_RAYLET_PID"])}
'''

# Writes each record's id to a file as it answers it (so a test sees what ran, and what ran twice), slowly.
COUNTING = '''
import os
import time


def model_fn(model_dir):
    return None


def predict_fn(data, model):
    with open(os.environ["COUNT_FILE"], "a") as handle:
        handle.write(f"{data['inputs']}\\n")
    time.sleep(float(os.environ["SECONDS_PER_RECORD"]))
    return {"id": data["inputs"], "node": int(os.environ["RAY_RAYLET_PID"])}
'''

FAILING_LOAD = '''
def model_fn(model_dir):
    raise ValueError("no weights in this folder")


def predict_fn(data, model):
    return data
'''


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(("node_a", "node_b"), cpus=4) as running:
        yield running


@pytest.fixture(scope="module")
def server(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ray_server(cluster, tmp_path_factory.mktemp("ray-jobs") / "home") as running:
        yield running


def write_input(path: Path, ids: list[object]) -> None:
    path.write_text("".join(json.dumps({"inputs": i}) + "\n" for i in ids))


def code_model(folder: Path, code: str) -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "inference.py").write_text(textwrap.dedent(code))
    return folder


def wait_until(client: Any, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
    """The job once `done` holds for it, or once it has ended (for the caller to judge)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get_job(name)
        if done(job) or job["state"] in ("Completed", "Failed", "Stopped"):
            return job
        assert time.monotonic() < deadline, f"job {name} is still {job['state']} after {timeout:g} s"
        time.sleep(0.1)


def answers(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_job_splits_across_nodes_and_answers_every_record_once_in_order(
        server: Server, cluster: Any, tmp_path: Path) -> None:
    model = code_model(tmp_path / "model", NODE_REPORTING)
    (tmp_path / "loaded").mkdir()
    inputs: dict[str, list[object]] = {"a.jsonl": [f"a-{n}" for n in range(200)],
                                       "b.jsonl": [f"b-{n}" for n in range(200)], "c.jsonl": []}
    inputs["b.jsonl"][10] = inputs["b.jsonl"][150] = "bad"
    (tmp_path / "in").mkdir()
    for name, ids in inputs.items():
        write_input(tmp_path / "in" / name, ids)
    out = tmp_path / "out"

    client = server.client()
    client.create_job({"name": "spread", "model": str(model), "env": {"LOADED_DIR": str(tmp_path / "loaded")},
                       "instance_count": 2, "input": f"{tmp_path / 'in'}/", "output": str(out),
                       "batch_strategy": "SingleRecord", "on_error": "skip"})
    job = client.wait_job("spread", timeout=120, poll=0.2)
    log = client.job_logs("spread")
    assert job["state"] == "Completed", log
    assert "runs on Ray Data: 2 actor(s)" in log

    answered = {name: answers(out / f"{name}.out") for name in inputs}
    for name, ids in inputs.items():
        assert [a["id"] for a in answered[name]] == [i for i in ids if i != "bad"]
    assert (out / "c.jsonl.out").read_bytes() == b""  # a file with no records is published too
    errors = answers(out / "b.jsonl.errors")
    assert [e["line"] for e in errors] == [11, 151]
    assert all("the model refused this input" in e["error"] for e in errors)
    assert (job["progress"]["records_done"], job["progress"]["records_failed"]) == (400, 2)

    nodes = [a["node"] for name in inputs for a in answered[name]]
    assert set(nodes) == {raylet_pid(node) for node in cluster.worker_nodes}


def test_a_stopped_job_frees_its_actors(server: Server, cluster: Any, tmp_path: Path) -> None:
    """Stopped mid-job: nothing is published, and its actors are gone, as a job that then takes every CPU of the
    cluster (a whole node for each of its actors) runs to its end."""
    model = code_model(tmp_path / "slow", COUNTING)
    write_input(tmp_path / "in.jsonl", list(range(400)))
    client = server.client()
    env = {"COUNT_FILE": str(tmp_path / "seen"), "SECONDS_PER_RECORD": "0.02"}
    client.create_job({"name": "halted", "model": str(model), "env": env, "instance_count": 2,
                       "input": str(tmp_path / "in.jsonl"), "output": str(tmp_path / "out"),
                       "batch_strategy": "SingleRecord"})
    running = wait_until(client, "halted", lambda j: j["progress"]["records_done"] > 0)
    assert running["state"] == "InProgress", client.job_logs("halted")
    client.stop_job("halted")
    job = client.wait_job("halted", timeout=60, poll=0.1)
    assert job["state"] == "Stopped" and job["progress"]["records_done"] < 400
    assert not (tmp_path / "out").exists()

    write_input(tmp_path / "all.jsonl", list(range(20)))
    client.create_job({"name": "whole-nodes", "model": str(model), "env": {**env, "SECONDS_PER_RECORD": "0"},
                       "instance_count": 2, "resources": {"cpus": 4}, "input": str(tmp_path / "all.jsonl"),
                       "output": str(tmp_path / "all"), "max_concurrent_transforms": 1})
    job = client.wait_job("whole-nodes", timeout=120, poll=0.2)
    assert job["state"] == "Completed", client.job_logs("whole-nodes")
    answered = answers(tmp_path / "all" / "all.jsonl.out")
    assert [a["id"] for a in answered] == list(range(20))


def test_a_killed_server_resumes_on_ray_data_every_record_exactly_once(cluster: Any, tmp_path: Path) -> None:
    """SIGKILL mid-job (Ray ends the server's actors with it), restart on the same home: the job goes on from its
    last checkpoint; its output holds every line once, in order; only records after that checkpoint ran again."""
    model = code_model(tmp_path / "counting", COUNTING)
    total = 400
    write_input(tmp_path / "in.jsonl", list(range(total)))
    out, home, seen = tmp_path / "out", tmp_path / "home", tmp_path / "seen"
    spec = {"name": "survivor", "model": str(model), "env": {"COUNT_FILE": str(seen), "SECONDS_PER_RECORD": "0.02"},
            "instance_count": 2, "input": str(tmp_path / "in.jsonl"), "output": str(out),
            "batch_strategy": "SingleRecord"}
    with ray_server(cluster, home) as first:
        first.client().create_job(spec)
        before = wait_until(first.client(), "survivor", lambda j: j["progress"]["records_done"] >= 50)
        assert before["state"] == "InProgress", first.client().job_logs("survivor")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    done_before = before["progress"]["records_done"]
    assert done_before < total and not out.exists()
    with ray_server(cluster, home) as second:
        job = second.client().wait_job("survivor", timeout=120, poll=0.2)
        log = second.client().job_logs("survivor")
    assert job["state"] == "Completed", log
    assert "resumed at record" in log and "runs on Ray Data" in log
    assert [a["id"] for a in answers(out / "in.jsonl.out")] == list(range(total))
    ran = [int(x) for x in seen.read_text().split()]
    assert set(ran) == set(range(total))
    ran_twice = {i for i in set(ran) if ran.count(i) > 1}
    assert all(i >= done_before for i in ran_twice), "a record checkpointed before the kill ran again"


def test_a_model_that_does_not_load_fails_the_job_with_the_reason(server: Server, tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", ["x"])
    client = server.client()
    client.create_job({"name": "unloadable", "model": str(code_model(tmp_path / "broken", FAILING_LOAD)),
                       "input": str(tmp_path / "in.jsonl"), "output": str(tmp_path / "out")})
    job = client.wait_job("unloadable", timeout=120, poll=0.2)
    assert job["state"] == "Failed", client.job_logs("unloadable")
    assert job["failure_reason"].startswith("the model could not be loaded: ")
    assert "ValueError: no weights in this folder" in job["failure_reason"]
    assert not (tmp_path / "out").exists()


def test_a_job_on_an_endpoint_uses_its_replicas_not_ray_data(server: Server, tmp_path: Path) -> None:
    client = server.client()
    client.create_endpoint({"name": "standing", "model": str(write_echo_model(tmp_path / "echo"))})
    try:
        client.wait("standing", timeout=120)
        pid = client.get_endpoint("standing")["status"]["replicas"][0]["pid"]
        write_input(tmp_path / "in.jsonl", ["pid"] * 30)
        client.create_job({"name": "on-standing", "endpoint": "standing", "input": str(tmp_path / "in.jsonl"),
                           "output": str(tmp_path / "out")})
        job = client.wait_job("on-standing", timeout=120, poll=0.2)
        log = client.job_logs("on-standing")
    finally:
        client.delete_endpoint("standing")
    assert job["state"] == "Completed", log
    assert "Ray Data" not in log and "replicas ready: 1 of 1" in log
    assert {a["pid"] for a in answers(tmp_path / "out" / "in.jsonl.out")} == {pid}


# Answers with where its model was loaded from and how many threads torch runs it with.
WHERE_LOADED = '''
def model_fn(model_dir):
    return model_dir


def predict_fn(data, model):
    import torch

    return {"id": data["inputs"], "model_dir": model, "threads": torch.get_num_threads()}
'''


def test_a_jobs_model_on_the_servers_disk_is_shipped_to_the_actors_nodes(
        server: Server, tmp_path: Path) -> None:
    model = code_model(tmp_path / "head-only", WHERE_LOADED)
    write_input(tmp_path / "in.jsonl", list(range(40)))
    client = server.client()
    client.create_job({"name": "shipped", "model": str(model), "instance_count": 2, "resources": {"cpus": 2},
                       "input": str(tmp_path / "in.jsonl"), "output": str(tmp_path / "out"),
                       "batch_strategy": "SingleRecord"})
    job = client.wait_job("shipped", timeout=120, poll=0.2)
    assert job["state"] == "Completed", client.job_logs("shipped")
    answered = answers(tmp_path / "out" / "in.jsonl.out")
    assert [a["id"] for a in answered] == list(range(40))
    # The actors load the copy the server shipped into their node's model cache, not the server's folder, and run
    # torch with the CPUs the job asked for.
    assert {Path(a["model_dir"]).parent for a in answered} == {server.home / "models" / "shipped"}
    assert {a["threads"] for a in answered} == {2}


def test_an_input_on_the_servers_disk_is_read_on_the_servers_node() -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from hubserve.jobs.ray_data import read_placement
    from hubserve.jobs.store import JobFile

    def file(url: str) -> JobFile:
        return JobFile(position=0, url=url, name="in.jsonl")

    node = "ab" * 28  # a node id as Ray writes one

    assert read_placement([file("s3://bucket/in.jsonl"), file("https://example.com/in.jsonl")], node) == {}
    placement = read_placement([file("file:///data/in.jsonl")], node)["scheduling_strategy"]
    assert isinstance(placement, NodeAffinitySchedulingStrategy)
    assert (placement.node_id, placement.soft) == (node, False)
