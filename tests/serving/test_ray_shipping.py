"""Shipping a model through Ray's object store: packed in chunks, unpacked once per node however many replicas
unpack it at once, keyed by its content, and the worker's env pointed at it (on a one-node Ray started here)."""

from __future__ import annotations

import concurrent.futures
import json
import os
from pathlib import Path

import pytest

from hubserve.serving import ray_shipping
from hubserve.serving.ray_shipping import Shipment, content_key, is_shipped, pack, unpack
from hubserve.sources import ArchiveLimits
from hubserve.spec import EndpointSpec
from hubserve.worker.config import CONFIG_ENV, WorkerConfig
from ray_clusters import ray_node  # noqa: F401 (a fixture)
from sources_fixtures import build_hub_cache

FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": os.urandom(5000),
         "code/inference.py": b"def model_fn(model_dir):\n    return model_dir\n"}


def write_folder(folder: Path) -> Path:
    for name, data in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def read_folder(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.usefixtures("ray_node")
def test_a_folder_in_many_chunks_is_unpacked_once_by_replicas_that_unpack_it_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_shipping, "CHUNK_BYTES", 1024)
    source = write_folder(tmp_path / "model")
    shipment = Shipment(content_key(source, None, None), tuple(pack(source, None, None)))
    assert len(shipment.chunks) > 5
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        folders = set(pool.map(lambda endpoint: unpack(shipment, tmp_path / "node", endpoint), ["a", "b", "c", "d"]))
    assert folders == {tmp_path / "node" / "shipped" / shipment.key}
    assert read_folder(folders.pop()) == FILES
    # No temp folder left behind: one build, renamed into place.
    assert sorted(os.listdir(tmp_path / "node" / "shipped")) == sorted([shipment.key, f".{shipment.key}.lock"])
    # Each endpoint recorded it: deleting one of them keeps it for the others.
    assert sorted(os.listdir(tmp_path / "node" / "in-use")) == ["a", "b", "c", "d"]


@pytest.mark.usefixtures("ray_node")
def test_a_hub_snapshot_is_shipped_as_a_cache_with_its_ref(tmp_path: Path) -> None:
    commit = "c" * 40
    repo = build_hub_cache(tmp_path / "hf", "acme/model", {commit: {"config.json": b"{}", "w.bin": b"weights"}},
                           {"main": commit})
    snapshot = repo / "snapshots" / commit
    shipment = Shipment(content_key(snapshot, repo.name, "v1"), tuple(pack(snapshot, repo.name, "v1")), repo.name)
    cache = unpack(shipment, tmp_path / "node", "a")
    # The links into the blobs are shipped as the files they point to.
    assert read_folder(cache) == {f"{repo.name}/snapshots/{commit}/config.json": b"{}",
                                  f"{repo.name}/snapshots/{commit}/w.bin": b"weights",
                                  f"{repo.name}/refs/v1": commit.encode()}
    assert shipment.worker_env({"A": "1"}, str(cache)) == {"A": "1", "HF_HUB_CACHE": str(cache),
                                                           "HF_HUB_OFFLINE": "1"}


def test_the_key_follows_the_content(tmp_path: Path) -> None:
    source = write_folder(tmp_path / "model")
    key = content_key(source, None, None)
    assert content_key(source, None, None) == key
    (source / "code" / "inference.py").write_bytes(b"def model_fn(model_dir):\n    return None\n")
    assert content_key(source, None, None) != key


def test_a_shipped_folder_replaces_the_source_in_the_workers_config(tmp_path: Path) -> None:
    spec = EndpointSpec(name="e", model="/head/only/model", revision="main")
    config = WorkerConfig(replica_id="e-1", spec=spec, host="h", port=1, secret="s", models_dir="/m",
                          archive_limits=ArchiveLimits())
    env = Shipment("k", ()).worker_env({CONFIG_ENV: config.model_dump_json(), "B": "2"}, "/node/shipped/k")
    assert env["B"] == "2"
    shipped = WorkerConfig.model_validate_json(env[CONFIG_ENV])
    assert shipped.spec == spec.model_copy(update={"model": "/node/shipped/k"})
    assert json.loads(env[CONFIG_ENV])["secret"] == "s"


def test_what_is_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    def shipped(model: str) -> bool:
        return is_shipped(EndpointSpec(name="e", model=model))

    assert shipped(str(tmp_path)) and shipped(f"file://{tmp_path}") and shipped(str(tmp_path / "missing"))
    assert not shipped("s3://bucket/model.tar.gz") and not shipped("https://example.com/m.gguf")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not shipped("acme/model")  # the node downloads it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert shipped("acme/model")  # from this server's cache
