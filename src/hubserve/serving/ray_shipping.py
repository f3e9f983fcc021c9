"""Models shipped to Ray nodes. A source only this server can read (a local folder, archive or GGUF file; a Hub id
while the Hub is offline, from this server's cache) is resolved here, as a worker would resolve it, packed once per
content into Ray's object store as a tar in chunks, and unpacked by each node into its model cache, where the
replica's worker loads it. URLs, and Hub ids while the Hub is reachable, are fetched by the node itself."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from hubserve.sources import ArchiveLimits, EndpointCache, resolve_source, source_location
from hubserve.sources.cache import sha256_text
from hubserve.spec import EndpointSpec
from hubserve.worker.config import CONFIG_ENV, WorkerConfig

# A 1 GB model is 16 objects: the server holds one chunk in memory at a time, never the whole tar, and a node
# unpacks it as the chunks arrive.
CHUNK_BYTES = 64 << 20
SHIPPED = "shipped"  # the kind of folder a shipped model is unpacked to, in a node's model cache


class ShippingFailed(Exception):
    """The model could not be shipped to a node; the message says why."""


@dataclass(frozen=True)
class Shipment:
    """A model in the object store: its content key and its tar's chunks, in order. A Hub model (`hub_repo`, the
    repo's folder in the Hugging Face cache) is packed in that cache's layout, so that the worker still loads it
    by its id (and reports that id) from the unpacked cache; any other source is packed as the folder it resolved
    to, which the worker then loads in its place."""

    key: str
    chunks: tuple[Any, ...]  # ray.ObjectRef[bytes]
    hub_repo: str | None = None

    def worker_env(self, env: dict[str, str], folder: str) -> dict[str, str]:
        """The replica's `env`, with its worker loading the model from `folder`, where the node unpacked it."""
        if self.hub_repo is not None:
            return {**env, "HF_HUB_CACHE": folder, "HF_HUB_OFFLINE": "1"}
        config = WorkerConfig.model_validate_json(env[CONFIG_ENV])
        spec = config.spec.model_copy(update={"model": folder})
        return {**env, CONFIG_ENV: config.model_copy(update={"spec": spec}).model_dump_json()}


def is_shipped(spec: EndpointSpec) -> bool:
    """Whether a node cannot fetch `spec`'s model itself: a path on this machine, or a Hub id while this server is
    offline (the nodes are taken to be offline too, and the model to be in this server's Hugging Face cache)."""
    assert spec.model is not None
    location = source_location(spec.model)
    if location == "hub":
        from huggingface_hub import constants

        return constants.HF_HUB_OFFLINE
    return location == "local"


class ModelShipper:
    """The models this server has shipped, by content key, kept in the object store for the replicas that start
    later; a source whose content changed replaces what was shipped of it."""

    def __init__(self, models_dir: Path, limits: ArchiveLimits) -> None:
        self._models_dir = models_dir
        self._limits = limits
        self._shipped: dict[str, Shipment] = {}
        self._keys: dict[tuple[str, str | None], str] = {}  # (source, revision) -> its content's key
        self._packing: dict[str, asyncio.Lock] = {}

    async def ship(self, spec: EndpointSpec) -> Shipment:
        """`spec`'s model in the object store, packed unless it already is; ShippingFailed says why not."""
        assert spec.model is not None
        try:
            folder = await asyncio.to_thread(self._resolve, spec)
            hub_repo = folder.parent.parent.name if source_location(spec.model) == "hub" else None
            key = await asyncio.to_thread(content_key, folder, hub_repo, spec.revision)
            async with self._packing.setdefault(key, asyncio.Lock()):
                if key not in self._shipped:
                    chunks = await asyncio.to_thread(pack, folder, hub_repo, spec.revision)
                    self._shipped[key] = Shipment(key, tuple(chunks), hub_repo)
        except Exception as exc:
            raise ShippingFailed(f"its model could not be shipped to the Ray nodes: {exc}") from exc
        stale = self._keys.get((spec.model, spec.revision))
        self._keys[(spec.model, spec.revision)] = key
        if stale is not None and stale != key:  # nodes that still unpack it hold their own references
            self._shipped.pop(stale, None)
        return self._shipped[key]

    def _resolve(self, spec: EndpointSpec) -> Path:
        """Where `spec`'s model is on this machine: resolved as a worker would (archives unpacked, a Hub snapshot
        found in the cache), into this server's model cache, recorded as `spec`'s endpoint's."""
        assert spec.model is not None
        # No token: a Hub id is shipped only while the Hub is offline, when the cache answers without one.
        return resolve_source(spec.model, revision=spec.revision, token=None, cache_dir=self._models_dir,
                              endpoint=spec.name, limits=self._limits).path


def _files(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file under `folder` (through symlinks: a Hub snapshot's files link to its blobs), by relative path."""
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            path = Path(root, name)
            yield str(path.relative_to(folder)), path.stat()


def content_key(folder: Path, hub_repo: str | None, revision: str | None) -> str:
    """A key that changes when any file of `folder` does (its name, size or modification time): reading 1 GB of
    weights to hash them at every replica start would cost more than shipping it again now and then."""
    listing = (f"{name}:{stat.st_size}:{stat.st_mtime_ns}" for name, stat in _files(folder))
    return sha256_text(hub_repo or "", revision or "", str(folder), *listing)[:32]


def _hub_layout(hub_repo: str, snapshot: Path, revision: str | None) -> tuple[str, tarfile.TarInfo, bytes]:
    """Where a snapshot goes in a Hugging Face cache, and the ref that names it for `revision`."""
    commit = snapshot.name.encode()
    ref = tarfile.TarInfo(f"{hub_repo}/refs/{revision or 'main'}")
    ref.size = len(commit)
    return f"{hub_repo}/snapshots/{snapshot.name}", ref, commit


class _ChunkWriter(io.RawIOBase):
    """A file a tar is streamed into, put in the object store every CHUNK_BYTES."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK_BYTES:
            with memoryview(self._buffer) as view:  # one copy of the chunk, not a slice and then its bytes
                chunk = bytes(view[:CHUNK_BYTES])
            self.chunks.append(ray.put(chunk))
            del self._buffer[:CHUNK_BYTES]
        return len(data)

    def close(self) -> None:
        if not self.closed and self._buffer:
            self.chunks.append(ray.put(bytes(self._buffer)))
            self._buffer.clear()
        super().close()


def pack(folder: Path, hub_repo: str | None, revision: str | None) -> list[Any]:
    """`folder` as a tar (plain: weights do not compress) in the object store; the chunks' references."""
    writer = _ChunkWriter()
    with writer, tarfile.open(fileobj=writer, mode="w|", dereference=True) as tar:
        if hub_repo is None:
            for item in sorted(folder.iterdir()):
                tar.add(item, arcname=item.name)
        else:
            arcname, ref, commit = _hub_layout(hub_repo, folder, revision)
            tar.add(folder, arcname=arcname)
            tar.addfile(ref, io.BytesIO(commit))
    return writer.chunks


class _ChunkReader(io.RawIOBase):
    """The shipped tar, read one chunk at a time from the object store."""

    def __init__(self, chunks: tuple[Any, ...]) -> None:
        self._chunks = iter(chunks)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(ray.get(chunk))
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size


def unpack(shipment: Shipment, models_dir: Path, endpoint: str) -> Path:
    """On a node: the folder `shipment` is unpacked to in its model cache, unpacked there unless it already is
    (once per node, however many replicas start at once), and recorded as used by `endpoint`."""

    def build(work: Path) -> None:
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(shipment.chunks)), mode="r|") as tar:
            tar.extractall(work, filter="data")

    return EndpointCache(models_dir, endpoint).folder(SHIPPED, shipment.key, build)
