"""What every Ray node gets from the server (`hubserve serve --ray`): the model when the node cannot fetch it itself,
shipped through the object store into the node's model cache; its worker's output, copied into the endpoint's log;
as many threads as the CPUs its replica asked for; and replicas added and removed by the autoscaler, spread over the
nodes. A local cluster of a head that runs nothing and two nodes of two CPUs, with a real server whose Hugging Face
cache the nodes' processes are not told of."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, start_server
from custom_models import write_echo_model
from hubserve.serving.ray_shipping import content_key
from ray_clusters import LOOPBACK_ONLY, endpoints, local_cluster, replicas
from sources_fixtures import build_hub_cache

# Answers with where it was loaded from, and the torch threads it loaded and runs with.
WHERE_LOADED = '''
import os

import torch


def model_fn(model_dir):
    return {"model_dir": model_dir, "load_threads": torch.get_num_threads()}


def predict_fn(data, model):
    return {**model, "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}
'''
# The same, as an Inference Endpoints handler (at the repo's root, where a hand-made Hub cache can link it).
WHERE_LOADED_HANDLER = '''
import os

import torch


class EndpointHandler:
    def __init__(self, path):
        self.model = {"model_dir": path, "load_threads": torch.get_num_threads()}

    def __call__(self, data):
        return {**self.model, "threads": torch.get_num_threads(), "pid": os.getpid()}
'''
# Dies while loading without telling the server why: only its log says.
DIES_LOADING = '''
import os
import traceback


def model_fn(model_dir):
    try:
        raise LookupError("shard 7 of the weights is missing on this node")
    except LookupError:
        traceback.print_exc()
    os._exit(3)


def predict_fn(data, model):
    return data
'''
HUB_REPO = "hubserve-tests/where-loaded"
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_model(folder: Path, code: str) -> Path:
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "inference.py").write_text(textwrap.dedent(code))
    return folder


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(("node_a", "node_b"), cpus=2) as running:
        yield running


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache that only the server's env names."""
    cache = tmp_path_factory.mktemp("server-hf-cache")
    build_hub_cache(cache, HUB_REPO, {HUB_COMMIT: {"handler.py": textwrap.dedent(WHERE_LOADED_HANDLER).encode()}},
                    {"main": HUB_COMMIT})
    return cache


@pytest.fixture(scope="module")
def server(cluster: Any, hub_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {**LOOPBACK_ONLY, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    running = start_server(tmp_path_factory.mktemp("ray-nodes") / "home", env=env, args=["--ray", cluster.address])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def endpoint(server: Server) -> Iterator[Callable[..., str]]:
    with endpoints(server) as make:
        yield make


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def answers(url: str, count: int) -> list[dict[str, Any]]:
    return [httpx.post(url, json={"inputs": "where"}, timeout=60).json() for _ in range(count)]


def test_a_local_folder_is_shipped_once_into_the_nodes_model_cache(
        server: Server, endpoint: Callable[..., str], tmp_path: Path) -> None:
    source = write_model(tmp_path / "head-only", WHERE_LOADED)
    url = endpoint("folder", str(source), replicas=2)
    placed = replicas(server, "folder")
    assert len({r["node"] for r in placed}) == 2
    seen = answers(url, 6)
    assert {a["pid"] for a in seen} == {r["pid"] for r in placed}
    loaded_from = {Path(a["model_dir"]) for a in seen}
    # Both replicas, on their two nodes, load the one copy of the content, from the model cache and not the source.
    assert len(loaded_from) == 1
    folder = loaded_from.pop()
    assert folder.parent == server.home / "models" / "shipped"
    assert (folder / "code" / "inference.py").read_text() == (source / "code" / "inference.py").read_text()
    # What the workers wrote while loading is in the endpoint's log, copied there by the server: each writes to a
    # file of its own node's (one that no path names), never to the server's log.
    for replica in placed:
        assert os.readlink(f"/proc/{replica['pid']}/fd/1").endswith(" (deleted)")
    loaded = f"loaded custom code (sagemaker) from {folder}"
    assert eventually(lambda: server.client().logs("folder").count(loaded) == 2)


def test_a_hub_id_in_the_servers_offline_cache_loads_on_a_node_by_its_id(
        server: Server, endpoint: Callable[..., str]) -> None:
    url = endpoint("hub", HUB_REPO)
    [seen] = answers(url, 1)
    snapshot = Path(seen["model_dir"])
    assert snapshot.parts[-3:] == (f"models--{HUB_REPO.replace('/', '--')}", "snapshots", HUB_COMMIT)
    assert snapshot.parents[3] == server.home / "models" / "shipped"


def test_a_source_the_server_cannot_read_fails_the_endpoint_with_the_reason(
        server: Server, tmp_path: Path) -> None:
    client = server.client()
    missing = tmp_path / "nowhere"
    client.create_endpoint({"name": "missing", "model": str(missing)})
    try:
        with pytest.raises(Exception, match="could not be shipped") as failed:
            client.wait("missing", timeout=120)
        assert f"the local path '{missing}' does not exist" in str(failed.value)
    finally:
        client.delete_endpoint("missing")


def test_a_model_a_node_cannot_unpack_fails_the_endpoint_with_the_reason(server: Server, tmp_path: Path) -> None:
    source = write_model(tmp_path / "model", WHERE_LOADED).resolve()
    # A file where the node would unpack it: as a full disk or a read-only cache would, the unpacking fails.
    blocked = server.home / "models" / "shipped" / content_key(source, None, None)
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("in the way")
    client = server.client()
    client.create_endpoint({"name": "blocked", "model": str(source)})
    try:
        with pytest.raises(Exception, match="its model could not be unpacked on its Ray node: NotADirectoryError"):
            client.wait("blocked", timeout=120)
    finally:
        client.delete_endpoint("blocked")
        blocked.unlink()


# On this machine's cores shared among the replicas, each would run 2 // replicas threads: 1 and 2.
@pytest.mark.parametrize(("cpus", "replicas", "threads"), [(2.0, 2, 2), (0.5, 1, 1)])
def test_a_replica_runs_as_many_threads_as_the_cpus_it_asked_for(
        server: Server, endpoint: Callable[..., str], tmp_path: Path, cpus: float, replicas: int,
        threads: int) -> None:
    url = endpoint("threads", str(write_model(tmp_path / "model", WHERE_LOADED)), replicas=replicas,
                   resources={"cpus": cpus})
    seen = {a["pid"]: a for a in answers(url, 3 * replicas)}
    assert len(seen) == replicas
    # torch's threads at load (what ONNX Runtime and llama.cpp take) and on the model thread, and OpenMP's.
    assert {(a["load_threads"], a["threads"], a["omp"]) for a in seen.values()} == {(threads, threads, str(threads))}


def test_a_remote_replicas_output_and_the_error_it_died_of_reach_the_endpoints_log(
        server: Server, tmp_path: Path) -> None:
    client = server.client()
    client.create_endpoint({"name": "dies", "model": str(write_model(tmp_path / "dies", DIES_LOADING))})
    try:
        with pytest.raises(Exception, match="LookupError: shard 7 of the weights is missing on this node"):
            client.wait("dies", timeout=120)
        described = client.get_endpoint("dies")
        assert described["status"]["message"].startswith("the worker process exited with code 3 while loading: ")
        logs = client.logs("dies")  # GET /api/v1/endpoints/dies/logs
        assert "Traceback (most recent call last):" in logs
        assert "LookupError: shard 7 of the weights is missing on this node" in logs
    finally:
        client.delete_endpoint("dies")


def test_an_autoscaled_endpoint_grows_onto_a_second_node_under_load_and_shrinks_when_idle(
        server: Server, endpoint: Callable[..., str], tmp_path: Path) -> None:
    url = endpoint("elastic", str(write_echo_model(tmp_path / "echo")), autoscaling={
        "min_replicas": 1, "max_replicas": 2, "target": 1, "scale_up_after_s": 0.5, "scale_down_after_s": 1.0})
    assert len(replicas(server, "elastic")) == 1
    done = threading.Event()
    codes: list[int] = []

    def keep_busy() -> None:  # until the second replica is ready: a fresh worker on a node takes seconds to load
        with httpx.Client(timeout=60) as http:
            while not done.is_set():
                codes.append(http.post(url, json={"inputs": "sleep", "parameters": {"seconds": 0.3}}).status_code)

    load = [threading.Thread(target=keep_busy) for _ in range(4)]
    for thread in load:
        thread.start()
    try:
        grown = eventually(lambda: [r["state"] for r in replicas(server, "elastic")] == ["ready", "ready"],
                           timeout=180)
        placed = replicas(server, "elastic")
    finally:
        done.set()
        for thread in load:
            thread.join()
    assert grown and len({r["node"] for r in placed}) == 2
    assert set(codes) == {200}
    assert eventually(lambda: len(replicas(server, "elastic")) == 1, timeout=60)
    described = server.client().get_endpoint("elastic")["status"]
    assert (described["state"], described["target_replicas"]) == ("running", 1)
    logs = server.client().logs("elastic")
    assert "scaling up to 2 replica(s)" in logs and "scaling down to 1 replica(s)" in logs
