"""A job's records answered on Ray Data (a server on a Ray cluster, a job with its own model): its input read by
read tasks on the cluster (one per file, from where the job stands), `map_batches` over a pool of `ReplicaBatch`
actors spread over the nodes, and the results streamed back to the runner in input order."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hubserve.errors import HubserveError
from hubserve.jobs.answers import Answered, JobFailed, read_failure, records_per_replica
from hubserve.jobs.output import JobLog
from hubserve.jobs.record_rows import answered_of, failure_table, records_table
from hubserve.jobs.records import read_records
from hubserve.jobs.replica_batch import ReplicaBatch
from hubserve.jobs.spec import TransformJobSpec
from hubserve.jobs.store import JobFile
from hubserve.serving.context import ServingContext
from hubserve.serving.ray_placement import RaySpawner, resource_options
from hubserve.serving.ray_shipping import Shipment, ShippingFailed
from hubserve.sources.endpoint_cache import release
from hubserve.worker.config import WorkerConfig

# A read task hands its records on in blocks of at most this many records, or bytes: the job streams through the
# cluster in bounded memory whatever the size of a file.
BLOCK_RECORDS = 1024
BLOCK_BYTES = 16 << 20
# Result blocks the iteration holds for the runner ahead of what it has taken.
AHEAD = 2


def read_file(file: JobFile, split_type: Any, limit: int) -> Iterator[pa.Table]:
    """A read task: the file's records from where the job stands, as jobs/records reads them on one machine."""
    records = []
    size = 0
    try:
        for record in read_records(file.url, split_type, start=file.records_done, limit=limit):
            records.append(record)
            size += len(record.data)
            if len(records) >= BLOCK_RECORDS or size >= BLOCK_BYTES:
                yield records_table(file.position, records)
                records, size = [], 0
    except (HubserveError, OSError) as exc:
        if records:
            yield records_table(file.position, records)
        yield failure_table(file.position, read_failure(file, exc))
        return
    if records:
        yield records_table(file.position, records)


def read_placement(files: list[JobFile], node: str) -> dict[str, Any]:
    """Where the read tasks run: an input on this server's disk is read on this server's node `node` (the only one
    sure to have it), a URL (s3://, https://) wherever Ray Data likes."""
    if any(urlsplit(file.url).scheme in ("", "file") for file in files):
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False)}
    return {}


class JobInput(Datasource):
    """The job's unpublished files, one read task each: Ray Data keeps their order, and each file's records stay
    in order within its task."""

    def __init__(self, files: list[JobFile], spec: TransformJobSpec) -> None:
        super().__init__()
        self._files = files
        self._spec = spec

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        return [ReadTask(functools.partial(read_file, file, self._spec.split_type, self._spec.max_payload_bytes),
                         BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(file.url,)),
                         per_task_row_limit=per_task_row_limit)
                for file in self._files]


class RayDataAnswers:
    def __init__(self, spec: TransformJobSpec, context: ServingContext, job_log: JobLog) -> None:
        self.spec = spec
        self._context = context
        self._log = job_log
        self._endpoint = spec.endpoint_spec()
        self._halt = threading.Event()
        self._iterating: threading.Thread | None = None
        self._ahead: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(AHEAD)
        self._shipment: Shipment | None = None
        self._threads: int | None = None

    async def start(self) -> None:
        spawner = self._context.spawner
        assert isinstance(spawner, RaySpawner), "Ray Data runs a job on a server placing replicas on Ray"
        try:
            self._shipment = await spawner.shipment(self._endpoint)
        except ShippingFailed as exc:
            raise JobFailed(f"the model could not be loaded: {exc}") from exc
        self._threads = spawner.threads(self._endpoint)
        resources = self._endpoint.resources
        self._log.write(f"runs on Ray Data: {self._endpoint.replicas} actor(s) of {self._endpoint.model}"
                        + (f", each with {resources.model_dump(exclude_none=True)}" if resources else ""))

    async def answered(self, files: list[JobFile]) -> AsyncGenerator[Answered, None]:
        by_position = {file.position: file for file in files}
        loop = asyncio.get_running_loop()
        self._iterating = threading.Thread(target=self._iterate, args=(self._dataset(files), loop),
                                           name=f"ray-data-{self.spec.name}", daemon=True)
        self._iterating.start()
        while True:
            kind, value = await self._ahead.get()
            if kind == "end":
                return
            if kind == "error":  # the answers a batch's failure carries are not in here (see ReplicaBatch)
                summary = str(value).strip().splitlines()[0] if str(value).strip() else ""
                raise JobFailed(f"Ray Data failed: {type(value).__name__}: {summary}")
            for answered in answered_of(value, by_position):
                yield answered

    async def close(self) -> None:
        """Stop the iteration (which shuts the dataset down, its actors with it) and wait for it."""
        self._halt.set()
        while not self._ahead.empty():  # the iteration may be waiting for room to hand on a block
            self._ahead.get_nowait()
        if self._iterating is not None:
            await asyncio.to_thread(self._iterating.join)
        await asyncio.to_thread(release, self._context.models_dir, self._endpoint.name)

    def _dataset(self, files: list[JobFile]) -> ray.data.Dataset:
        # Ray Data splits each read task's blocks further (to at least `read_op_min_num_blocks` in all) and hands an
        # actor bundles of about one batch: each a task for whichever actor is free, whose answers come back on their
        # own. Reading takes no CPU from the actors' share: a job that asks for whole nodes still gets read.
        here = ray.get_runtime_context().get_node_id()
        dataset = ray.data.read_datasource(JobInput(files, self.spec), num_cpus=0,
                                           ray_remote_args=read_placement(files, here))
        dataset.context.execution_options.preserve_order = True
        dataset.context.target_max_block_size = BLOCK_BYTES  # else a read task's blocks are joined up to 128 MiB
        dataset.context.enable_progress_bars = False  # the job's log tells its progress; the server's log stays quiet
        config = WorkerConfig(replica_id=f"{self._endpoint.name}-ray-data", spec=self._endpoint, host="", port=0,
                              secret="", models_dir=str(self._context.models_dir),
                              archive_limits=self._context.archive_limits, threads=self._threads)
        options = resource_options(self._endpoint.resources)
        return dataset.map_batches(
            ReplicaBatch,
            fn_constructor_kwargs={"config": config.model_dump_json(), "job": self.spec.model_dump_json(),
                                   "shipment": self._shipment},
            batch_size=records_per_replica(self.spec, self._endpoint.engine.max_batch_size), batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self._endpoint.replicas), **options)

    def _iterate(self, dataset: ray.data.Dataset, loop: asyncio.AbstractEventLoop) -> None:
        """In a thread: the result blocks, handed on in order. Leaving the loop (done, failed or halted) shuts the
        dataset down."""

        def hand_on(kind: str, value: Any) -> None:
            asyncio.run_coroutine_threadsafe(self._ahead.put((kind, value)), loop).result()

        blocks = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=AHEAD))
        try:
            for block in blocks:
                if self._halt.is_set():
                    return
                hand_on("block", block)
            if not self._halt.is_set():
                hand_on("end", None)
        except Exception as exc:
            if not self._halt.is_set():
                hand_on("error", exc)
        finally:
            blocks.close()  # type: ignore[attr-defined]  # a generator: closing it shuts the executor down

