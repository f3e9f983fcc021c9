"""One transform job at run time: its replicas, each input file's records through them in mini-batches (a window of
them in flight), the answers staged and checkpointed in order, and each finished file published whole."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace

from hubserve.errors import HubserveError, NoReadyReplica, NotFound, Overloaded, PayloadTooLarge, ReplicaLost
from hubserve.invocation import RecordResult
from hubserve.jobs.filters import RecordFilter
from hubserve.jobs.output import ANSWERS, ERRORS, JobLog, Staging, output_url
from hubserve.jobs.records import Batch, mini_batches, read_records
from hubserve.jobs.spec import JobProgress, JobState, TransformJob, TransformJobSpec
from hubserve.jobs.store import JobFile, JobStore
from hubserve.serving.async_objects import write_object
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.manager import EndpointManager
from hubserve.sources.endpoint_cache import release
from hubserve.spec import EndpointState, EndpointStatus

log = logging.getLogger("hubserve.jobs")

# How often the runner looks again at replicas that are not ready yet.
READY_POLL_S = 0.5
# A checkpoint (staged answers fsync'd, their count stored) at least this often, and whenever this much is pending:
# what a crash can make the job run again, and what the runner holds in memory.
CHECKPOINT_S = 0.5
CHECKPOINT_BYTES = 8 << 20
# Waits before sending again a mini-batch whose replica died under it; then the job fails.
RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# Records in flight per replica when the job leaves it to hubserve (max_concurrent_transforms 0): two of the
# model's batches, so that the next is queued while one runs; and always two messages per replica at least.
BATCHES_IN_FLIGHT = 2
DEFAULT_BATCH_SIZE = 32
# Records/s is measured over this last stretch of the run.
RATE_WINDOW_S = 30.0


class JobFailed(Exception):
    """The job can not go on; `reason` names the file and line when one record is to blame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Pending:
    """Answers and errors taken since the last checkpoint, in input order."""

    answers: list[bytes] = field(default_factory=list)
    errors: list[bytes] = field(default_factory=list)
    records: int = 0
    failed: int = 0
    size: int = 0
    since: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        return self.size >= CHECKPOINT_BYTES or (self.records > 0 and time.monotonic() - self.since >= CHECKPOINT_S)


class RateMeter:
    """Records per second over the last RATE_WINDOW_S."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> None:
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW_S:
            self._samples.popleft()

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        return (last - first) / (end - start) if end > start else None


def progress_of(files: list[JobFile], rate: float | None) -> JobProgress:
    totals = [f.records_total for f in files]
    total = None if None in totals else sum(t or 0 for t in totals)
    done = sum(f.records_done for f in files)
    eta = (total - done) / rate if total is not None and rate else None
    return JobProgress(records_done=done, records_total=total, records_failed=sum(f.records_failed for f in files),
                       files_done=sum(f.published for f in files), files_total=len(files),
                       records_per_s=rate, eta_s=eta)


class JobRunner:
    """Runs one job to its end. Cancelled, it leaves the job as it stands (InProgress, resumed at the next start),
    unless the job is Stopping: then it ends Stopped."""

    def __init__(self, job: TransformJob, files: list[JobFile], store: JobStore, manager: EndpointManager,
                 staging: Staging, job_log: JobLog, on_end: Callable[[TransformJob], None]) -> None:
        self.job = job
        self.files = files
        self._store = store
        self._manager = manager
        self._staging = staging
        self._log = job_log
        self._on_end = on_end
        self._filter = RecordFilter(job.spec.data_processing, job.spec.content_type, job.spec.accept)
        self._transient: EndpointRuntime | None = None
        self._meter = RateMeter()
        self._halt = threading.Event()  # tells the threads reading input to give up
        # Staged writes and publishing: never cut in two by a stop.
        self._settling: set[asyncio.Future[None]] = set()

    @property
    def spec(self) -> TransformJobSpec:
        return self.job.spec

    def progress(self) -> JobProgress:
        return progress_of(self.files, self._meter.rate())

    async def run(self) -> None:
        """The job to its end, which is declared once its replicas are stopped and its staged writes are done."""
        counting = asyncio.ensure_future(asyncio.to_thread(self._count_records))
        end: tuple[JobState, str | None] | None = None
        try:
            await self._run()
            end = (JobState.completed, None)
        except JobFailed as failed:
            end = (JobState.failed, failed.reason)
        except asyncio.CancelledError:
            if self.job.state == JobState.stopping:
                end = (JobState.stopped, None)
            raise
        except Exception as exc:  # a bug of ours: the job fails, loudly, and the server goes on
            log.exception("job %s failed", self.spec.name)
            end = (JobState.failed, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._halt.set()
            counting.cancel()
            try:
                await self._settled()
                await self._stop_transient()
            finally:
                if end is not None:
                    self._end(*end)
                else:
                    self._log.write(f"paused at record {self.progress().records_done}, as the server stops; the job "
                                    "resumes when it starts again")

    async def _run(self) -> None:
        resumed = self.job.started_at is not None
        if not resumed:
            self.job.started_at = time.time()
            self._store.save_state(self.job)
        done = sum(f.records_done for f in self.files)
        self._log.write(f"resumed at record {done}" if resumed else
                        f"started: {len(self.files)} input file(s) from {self.spec.input}")
        runtime = await self._replicas()
        self._log.write(f"replicas ready: {runtime.ready_count} of {runtime.spec.replicas} "
                        f"({runtime.status.backend} backend)")
        self._meter.add(done)
        for file in self.files:
            if not file.published:
                await self._run_file(file)

    def _end(self, state: JobState, reason: str | None = None) -> None:
        self.job.state = state
        self.job.failure_reason = reason
        self.job.ended_at = time.time()
        self._store.save_state(self.job)
        progress = self.progress()
        self._log.write(f"{state.value}: {progress.records_done} record(s) done, {progress.records_failed} failed"
                        + (f": {reason}" if reason else ""))
        self._on_end(self.job)

    # replicas
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
                raise JobFailed(f"the model could not be loaded: {runtime.status.message}")
            await asyncio.sleep(READY_POLL_S)

    def _runtime(self) -> EndpointRuntime:
        if self._transient is not None:
            return self._transient
        assert self.spec.endpoint is not None
        try:
            return self._manager.get(self.spec.endpoint)
        except NotFound:
            raise JobFailed(f"endpoint {self.spec.endpoint} was deleted while the job ran on it") from None

    async def _stop_transient(self) -> None:
        if self._transient is not None:
            await self._transient.stop()
            await asyncio.to_thread(release, self._manager.settings.models_dir, self._transient.spec.name)

    def _window(self, runtime: EndpointRuntime) -> tuple[int, int]:
        """(messages, records) the job keeps in flight: SageMaker's MaxConcurrentTransforms is requests per
        instance; else enough records to keep each replica's batcher fed."""
        replicas = max(1, runtime.ready_count)
        if self.spec.max_concurrent_transforms:
            return self.spec.max_concurrent_transforms * replicas, 0
        batch_size = runtime.spec.engine.max_batch_size or DEFAULT_BATCH_SIZE
        return BATCHES_IN_FLIGHT * replicas, BATCHES_IN_FLIGHT * batch_size * replicas

    # one input file
    async def _run_file(self, file: JobFile) -> None:
        await asyncio.to_thread(self._staging.resume, file)
        self._log.write(f"file {file.name} started" + (f" at record {file.records_done}" if file.records_done else ""))
        window: deque[tuple[Batch, asyncio.Task[list[RecordResult]]]] = deque()
        try:
            await self._stream(file, window)
        finally:
            for _, task in window:
                task.cancel()
        await self._settle(self._publish(file))

    async def _stream(self, file: JobFile, window: deque[tuple[Batch, asyncio.Task[list[RecordResult]]]]) -> None:
        """The file's records through the replicas, `window` of mini-batches in flight, answers taken in order."""
        batches = self._batches(file)
        pending = Pending()
        exhausted = False
        while True:
            messages, records = self._window(await self._replicas())
            while not exhausted and (len(window) < messages or sum(len(b.records) for b, _ in window) < records):
                batch = await asyncio.to_thread(self._next, batches, file)
                if batch is None:
                    exhausted = True
                else:
                    window.append((batch, asyncio.ensure_future(self._results(batch))))
            if not window:
                break
            batch, task = window[0]
            results = await task
            window.popleft()
            self._take(file, batch, results, pending)
            if pending.due():
                pending = await self._checkpoint(file, pending)
        await self._checkpoint(file, pending)

    def _batches(self, file: JobFile) -> Iterator[Batch]:
        records = read_records(file.url, self.spec.split_type, start=file.records_done,
                               limit=self.spec.max_payload_bytes)
        return mini_batches(records, self.spec.batch_strategy, self.spec.max_payload_bytes)

    def _next(self, batches: Iterator[Batch], file: JobFile) -> Batch | None:
        try:
            return next(batches, None)
        except HubserveError as exc:
            raise JobFailed(f"{file.name}: {exc.message}") from exc
        except OSError as exc:
            raise JobFailed(f"could not read {file.url}: {type(exc).__name__}: {exc}") from exc

    async def _results(self, batch: Batch) -> list[RecordResult]:
        """Each record's answer or error: the input filter applied, the records it left sent in one message, the
        message sent again when its replica died under it."""
        if batch.error is not None:
            return [RecordResult(ok=False, status=PayloadTooLarge.status, message=batch.error)]
        results: list[RecordResult | None] = []
        inputs: list[bytes] = []
        for record in batch.records:
            try:
                inputs.append(self._filter.input(record.data))
                results.append(None)
            except HubserveError as exc:
                results.append(RecordResult(ok=False, status=exc.status, message=exc.message))
        answers = iter(await self._invoke(inputs) if inputs else [])
        return [result if result is not None else next(answers) for result in results]

    async def _invoke(self, inputs: list[bytes]) -> list[RecordResult]:
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
            except HubserveError as exc:  # the whole message failed: each of its records did
                return [RecordResult(ok=False, status=exc.status, message=exc.message)] * len(inputs)

    def _take(self, file: JobFile, batch: Batch, results: list[RecordResult], pending: Pending) -> None:
        """The batch's answers, in order, into `pending`: each answer joined and filtered, each error the job's
        failure or, with on_error skip, a line of the file's errors."""
        separator = b"\n" if self.spec.assemble_with == "Line" else b""
        for record, result in zip(batch.records, results, strict=True):
            message = result.message
            if result.ok:
                try:
                    answer = self._filter.output(record.data, result.body) + separator
                    pending.answers.append(answer)
                    pending.size += len(answer)
                    pending.records += 1
                    continue
                except HubserveError as exc:
                    message = exc.message
            where = f"{file.name} line {record.line}"
            if self.spec.on_error == "fail":
                raise JobFailed(f"{where}: {message}")
            self._log.write(f"skipped {where}: {message}")
            error = json.dumps({"line": record.line, "error": message}).encode() + b"\n"
            pending.errors.append(error)
            pending.size += len(error)
            pending.records += 1
            pending.failed += 1

    async def _checkpoint(self, file: JobFile, pending: Pending) -> Pending:
        """Stage the pending answers durably, then record in one write how many records they hold."""
        if pending.records:
            await self._settle(asyncio.to_thread(self._stage, file, pending))
            self._meter.add(sum(f.records_done for f in self.files))
        return Pending()

    def _stage(self, file: JobFile, pending: Pending) -> None:
        staged, errors = self._staging.append(file, b"".join(pending.answers), b"".join(pending.errors))
        saved = replace(file, records_done=file.records_done + pending.records, staged_bytes=staged,
                        errors_bytes=errors, records_failed=file.records_failed + pending.failed)
        self._store.save_file(self.spec.name, saved)
        file.records_done, file.records_failed = saved.records_done, saved.records_failed
        file.staged_bytes, file.errors_bytes = saved.staged_bytes, saved.errors_bytes

    async def _publish(self, file: JobFile) -> None:
        outputs = [(ANSWERS, self.spec.accept)] + ([(ERRORS, "application/jsonlines")] if file.errors_bytes else [])
        for suffix, content_type in outputs:
            url = output_url(self.spec.output, file.name, suffix)
            try:
                await asyncio.to_thread(write_object, url, self._staging.path(file, suffix), content_type)
            except Exception as exc:
                raise JobFailed(f"could not write {url}: {type(exc).__name__}: {exc}") from exc
        file.published = True
        await asyncio.to_thread(self._store.save_file, self.spec.name, file)
        for suffix in (ANSWERS, ERRORS):
            self._staging.path(file, suffix).unlink(missing_ok=True)
        self._log.write(f"file {file.name} finished: {file.records_done} record(s), {file.records_failed} failed, "
                        f"written to {output_url(self.spec.output, file.name, ANSWERS)}")

    async def _settle(self, work: Awaitable[None]) -> None:
        """Run `work` to its end even if the job is cancelled meanwhile (the cancel still ends the job after it)."""
        future = asyncio.ensure_future(work)
        self._settling.add(future)
        future.add_done_callback(self._settling.discard)
        await asyncio.shield(future)

    async def _settled(self) -> None:
        await asyncio.gather(*self._settling, return_exceptions=True)

    # counting
    def _count_records(self) -> None:
        """Count each file's records, for the total and the ETA (in a thread, beside the run; a file that can not
        be read is the run's failure to report, so here it only leaves the total unknown)."""
        for file in self.files:
            if file.records_total is not None:
                continue
            total = 0
            try:
                for _ in read_records(file.url, limit=0) if self.spec.split_type == "Line" else [None]:
                    if self._halt.is_set():
                        return
                    total += 1
            except (HubserveError, OSError):
                return
            file.records_total = total
            self._store.save_total(self.spec.name, file)
