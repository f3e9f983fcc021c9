"""Batch transform jobs on a Ray cluster (`hubserve serve --ray`): a job's own replicas spread over the nodes (two of
four CPUs each, where Ray's default placement would pack both replicas onto one), and its records through them with
the same output as on one machine: every record answered once, in input order per file, bad ones in `.errors`."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Server
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(("node_a", "node_b"), cpus=4) as running:
        yield running


@pytest.fixture(scope="module")
def server(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ray_server(cluster, tmp_path_factory.mktemp("ray-jobs") / "home") as running:
        yield running


def write_input(path: Path, ids: list[str]) -> None:
    path.write_text("".join(json.dumps({"inputs": i}) + "\n" for i in ids))


def test_a_job_splits_across_nodes_and_answers_every_record_once_in_order(
        server: Server, cluster: Any, tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(textwrap.dedent(NODE_REPORTING))
    (tmp_path / "loaded").mkdir()
    inputs = {"a.jsonl": [f"a-{n}" for n in range(200)], "b.jsonl": [f"b-{n}" for n in range(200)]}
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
    assert job["state"] == "Completed", client.job_logs("spread")

    answered = {name: [json.loads(line) for line in (out / f"{name}.out").read_text().splitlines()]
                for name in inputs}
    for name, ids in inputs.items():
        assert [a["id"] for a in answered[name]] == [i for i in ids if i != "bad"]
    errors = [json.loads(line) for line in (out / "b.jsonl.errors").read_text().splitlines()]
    assert [e["line"] for e in errors] == [11, 151]
    assert all("the model refused this input" in e["error"] for e in errors)
    assert (job["progress"]["records_done"], job["progress"]["records_failed"]) == (400, 2)

    nodes = [a["node"] for name in inputs for a in answered[name]]
    assert set(nodes) == {raylet_pid(node) for node in cluster.worker_nodes}
