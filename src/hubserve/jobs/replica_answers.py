"""A job's records answered by replicas: the job's own transient ones, or a running endpoint's. Each file is read
here and sent in mini-batches, a window of them in flight, a message sent again when its replica died under it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from dataclasses import replace

from hubserve.errors import HubserveError, NoReadyReplica, NotFound, Overloaded, ReplicaLost
from hubserve.invocation import RecordResult
from hubserve.jobs.answers import (
    Answered,
    JobFailed,
    answer_batch,
    load_failure,
    read_failure,
    window_per_replica,
)
from hubserve.jobs.filters import RecordFilter
from hubserve.jobs.output import JobLog
from hubserve.jobs.records import Batch, mini_batches, read_records
from hubserve.jobs.spec import TransformJobSpec
from hubserve.jobs.store import JobFile
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.manager import EndpointManager
from hubserve.sources.endpoint_cache import release
from hubserve.spec import EndpointState, EndpointStatus

# How often to look again at replicas that are not ready yet.
READY_POLL_S = 0.5
# Waits before sending again a mini-batch whose replica died under it; then the job fails.
RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class ReplicaAnswers:
    def __init__(self, spec: TransformJobSpec, manager: EndpointManager, job_log: JobLog) -> None:
        self.spec = spec
        self._manager = manager
        self._log = job_log
        self._filter = RecordFilter(spec.data_processing, spec.content_type, spec.accept)
        self._transient: EndpointRuntime | None = None

    async def start(self) -> None:
        runtime = await self._replicas()
        self._log.write(f"replicas ready: {runtime.ready_count} of {runtime.spec.replicas} "
                        f"({runtime.status.backend} backend)")

    async def answered(self, files: list[JobFile]) -> AsyncGenerator[Answered, None]:
        """Each file's records through the replicas, a window of mini-batches in flight, answers taken in order."""
        for file in files:
            batches = self._batches(file)
            window: deque[tuple[Batch, asyncio.Task[list[RecordResult]]]] = deque()
            exhausted = False
            try:
                while True:
                    messages, records = self._window(await self._replicas())
                    while not exhausted and (len(window) < messages
                                             or sum(len(b.records) for b, _ in window) < records):
                        batch = await asyncio.to_thread(self._next, batches, file)
                        if batch is None:
                            exhausted = True
                        else:
                            answering = answer_batch(batch, self._filter, self._invoke)
                            window.append((batch, asyncio.ensure_future(answering)))
                    if not window:
                        break
                    batch, task = window[0]
                    results = await task
                    window.popleft()
                    yield Answered(file, batch, results)
            finally:
                for _, task in window:
                    task.cancel()

    async def close(self) -> None:
        if self._transient is not None:
            transient, self._transient = self._transient, None
            await transient.stop()
            await asyncio.to_thread(release, self._manager.settings.models_dir, transient.spec.name)

    async def _replicas(self) -> EndpointRuntime:
        """A runtime with a ready replica: the job's own (started on first call), or the named endpoint's."""
        if self.spec.model is not None and self._transient is None:
            spec = self.spec.endpoint_spec()
            context = replace(self._manager.context, save=lambda _spec, _status: None)
            self._transient = EndpointRuntime(spec, EndpointStatus(target_replicas=spec.replicas), context)
            self._log.write(f"starting {spec.replicas} replica(s) of {spec.model}")
            self._transient.deploy()
        while True:
            runtime = self._runtime()
            if runtime.ready_count:
                return runtime
            if runtime.status.state == EndpointState.failed:
                raise JobFailed(load_failure(runtime.status.message or "its replicas failed"))
            await asyncio.sleep(READY_POLL_S)

    def _runtime(self) -> EndpointRuntime:
        if self._transient is not None:
            return self._transient
        assert self.spec.endpoint is not None
        try:
            return self._manager.get(self.spec.endpoint)
        except NotFound:
            raise JobFailed(f"endpoint {self.spec.endpoint} was deleted while the job ran on it") from None

    def _window(self, runtime: EndpointRuntime) -> tuple[int, int]:
        """(messages, records) the job keeps in flight over all ready replicas."""
        replicas = max(1, runtime.ready_count)
        messages, records = window_per_replica(self.spec, runtime.spec.engine.max_batch_size)
        return messages * replicas, records * replicas

    def _batches(self, file: JobFile) -> Iterator[Batch]:
        records = read_records(file.url, self.spec.split_type, start=file.records_done,
                               limit=self.spec.max_payload_bytes)
        return mini_batches(records, self.spec.batch_strategy, self.spec.max_payload_bytes)

    @staticmethod
    def _next(batches: Iterator[Batch], file: JobFile) -> Batch | None:
        try:
            return next(batches, None)
        except (HubserveError, OSError) as exc:
            raise JobFailed(read_failure(file, exc)) from exc

    async def _invoke(self, inputs: list[bytes]) -> list[RecordResult]:
        """One message's answers; sent again when its replica died under it (a HubserveError fails it whole)."""
        attempt = 0
        while True:
            runtime = await self._replicas()
            try:
                return await runtime.invoke_records(inputs, self.spec.content_type, self.spec.accept,
                                                    self.spec.timeout_s)
            except (NoReadyReplica, Overloaded):
                await asyncio.sleep(READY_POLL_S)
            except ReplicaLost as exc:
                if attempt >= len(RETRY_DELAYS_S):
                    raise JobFailed(f"replicas kept dying under the job: {exc.message}") from exc
                self._log.write(f"{exc.message}; sending its records again in {RETRY_DELAYS_S[attempt]:g} s")
                await asyncio.sleep(RETRY_DELAYS_S[attempt])
                attempt += 1
