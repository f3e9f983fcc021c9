"""One actor of a job's Ray Data pool: the same worker engine a replica runs, loaded in this process, answering each
batch of records through its RECORDS path, so that each record gets its own answer or error as InvokeEndpoint
gives it."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import uvloop

from hubserve.errors import HubserveError
from hubserve.invocation import RecordResult, decode_record_results, records_request
from hubserve.jobs.answers import answer_batch, load_failure
from hubserve.jobs.filters import RecordFilter
from hubserve.jobs.record_rows import failure_table, records_of, results_table
from hubserve.jobs.records import mini_batches
from hubserve.jobs.spec import TransformJobSpec
from hubserve.serving.ray_shipping import Shipment, unpack
from hubserve.serving.replica import timed_out
from hubserve.serving.spawner import SERVER_ENV_PREFIX
from hubserve.worker.config import CONFIG_ENV, WorkerConfig
from hubserve.worker.torch_threads import on_passing_thread

if TYPE_CHECKING:
    from hubserve.worker.engine import Engine

T = TypeVar("T")


class ReplicaBatch:
    """Ray Data's callable class: built once per actor (the model loaded), then called with each batch of rows. A
    model that does not load answers every batch with the reason, as a failure's row: the job fails with it (an
    exception in here would reach the server as an ActorDiedError that has lost it)."""

    def __init__(self, config: str, job: str, shipment: Shipment | None = None) -> None:
        self._job = TransformJobSpec.model_validate_json(job)
        self._config = WorkerConfig.model_validate_json(config)
        self._filter = RecordFilter(self._job.data_processing, self._job.content_type, self._job.accept)
        # The engine lives on its own event loop (its batcher, its generation steps), as in a replica process.
        self._loop = uvloop.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="engine-loop", daemon=True).start()
        self._engine: Engine | None = None
        self._failure: str | None = None
        try:
            env = self._receive(shipment) if shipment is not None else {}
            # As a replica's process env: this node's without the server's settings, then the job's own env, then
            # where a model shipped to this node is.
            for name in [n for n in os.environ if n.startswith(SERVER_ENV_PREFIX)]:
                del os.environ[name]
            os.environ.update({**self._config.spec.env, **env})
            self._engine = self._on_loop(self._load())
        except Exception as exc:  # as a replica reports its failed load
            self._failure = load_failure(exc.message if isinstance(exc, HubserveError) else
                                         f"{type(exc).__name__}: {exc}")

    def _receive(self, shipment: Shipment) -> dict[str, str]:
        """Unpack the model the server shipped into this node's model cache (once per node), as a replica's actor
        does, and load it from there: the env that says where it is."""
        folder = unpack(shipment, Path(self._config.models_dir), self._config.spec.name)
        env = shipment.worker_env({CONFIG_ENV: self._config.model_dump_json()}, str(folder))
        self._config = WorkerConfig.model_validate_json(env.pop(CONFIG_ENV))
        return env

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._failure is not None:
            return results_table(failure_table(table["position"][0].as_py(), self._failure), [None], keep_data=False)
        records = records_of(table)
        batches = list(mini_batches([r for r in records if r is not None], self._job.batch_strategy,
                                    self._job.max_payload_bytes))
        answers = iter(self._on_loop(self._answer_all(batches)))
        results: list[RecordResult | None] = [None if r is None else next(answers) for r in records]
        return results_table(table, results, keep_data=self._filter.join)

    async def _load(self) -> Engine:
        # Only in the actor: the server imports this module to name the class, and must not import torch.
        from hubserve.worker.backends import check_backend
        from hubserve.worker.engine import Engine

        engine = await on_passing_thread(Engine.load, self._config)
        if engine.model is not None:
            check_backend(engine.model.adapter)
        engine.start()
        return engine

    async def _answer_all(self, batches: list[Any]) -> list[RecordResult]:
        """Every mini-batch's messages sent at once (they share the engine's batches), the results in order."""
        answered = await asyncio.gather(*(answer_batch(batch, self._filter, self._invoke) for batch in batches))
        return [result for results in answered for result in results]

    async def _invoke(self, inputs: list[bytes]) -> list[RecordResult]:
        assert self._engine is not None
        request = records_request(inputs, self._job.content_type, self._job.accept)
        try:
            result = await asyncio.wait_for(self._engine.invoke(request), self._job.timeout_s)
        except TimeoutError:
            raise timed_out(self._job.timeout_s) from None
        return decode_record_results(result.body)

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()
