"""One transform job at run time: its records answered in input order (by replicas, or on Ray Data: see
jobs/answers.py), the answers staged and checkpointed in order, and each finished file published whole."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from hubserve.errors import HubserveError
from hubserve.invocation import RecordResult
from hubserve.jobs.answers import AnswerSource, JobFailed
from hubserve.jobs.filters import RecordFilter
from hubserve.jobs.output import ANSWERS, ERRORS, JobLog, Staging, output_url
from hubserve.jobs.records import Batch, read_records
from hubserve.jobs.replica_answers import ReplicaAnswers
from hubserve.jobs.spec import JobProgress, JobState, TransformJob, TransformJobSpec
from hubserve.jobs.store import JobFile, JobStore
from hubserve.serving.async_objects import write_object
from hubserve.serving.manager import EndpointManager

log = logging.getLogger("hubserve.jobs")

# A checkpoint (staged answers fsync'd, their count stored) at least this often, and whenever this much is pending:
# what a crash can make the job run again, and what the runner holds in memory.
CHECKPOINT_S = 0.5
CHECKPOINT_BYTES = 8 << 20
# Records/s is measured over this last stretch of the run.
RATE_WINDOW_S = 30.0


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
        self._source = self._answer_source()
        self._meter = RateMeter()
        self._halt = threading.Event()  # tells the threads reading input to give up
        # Staged writes and publishing: never cut in two by a stop.
        self._settling: set[asyncio.Future[None]] = set()

    @property
    def spec(self) -> TransformJobSpec:
        return self.job.spec

    def progress(self) -> JobProgress:
        return progress_of(self.files, self._meter.rate())

    def _answer_source(self) -> AnswerSource:
        """On a Ray cluster a job with its own model runs on Ray Data; otherwise (and on a running endpoint) on
        replicas."""
        if self._manager.ray is not None and self.spec.model is not None:
            from hubserve.jobs.ray_data import RayDataAnswers  # Ray Data (numpy, pyarrow) only on the Ray path

            return RayDataAnswers(self.spec, self._manager.context, self._log)
        return ReplicaAnswers(self.spec, self._manager, self._log)

    async def run(self) -> None:
        """The job to its end, which is declared once what answered it has let go and its staged writes are done."""
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
                await self._source.close()
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
        await self._source.start()
        self._meter.add(done)
        files = deque(f for f in self.files if not f.published)
        if not files:
            return
        await self._begin(files[0])
        pending = Pending()
        async with contextlib.aclosing(self._source.answered(list(files))) as answered:
            async for item in answered:
                while item.file is not files[0]:  # the files before it are all answered
                    await self._finish(files.popleft(), pending)
                    pending = Pending()
                    await self._begin(files[0])
                self._take(item.file, item.batch, item.results, pending)
                if pending.due():
                    pending = await self._checkpoint(item.file, pending)
        while files:
            await self._finish(files.popleft(), pending)
            pending = Pending()
            if files:
                await self._begin(files[0])

    def _end(self, state: JobState, reason: str | None = None) -> None:
        self.job.state = state
        self.job.failure_reason = reason
        self.job.ended_at = time.time()
        self._store.save_state(self.job)
        progress = self.progress()
        self._log.write(f"{state.value}: {progress.records_done} record(s) done, {progress.records_failed} failed"
                        + (f": {reason}" if reason else ""))
        self._on_end(self.job)

    # one input file
    async def _begin(self, file: JobFile) -> None:
        await asyncio.to_thread(self._staging.resume, file)
        self._log.write(f"file {file.name} started" + (f" at record {file.records_done}" if file.records_done else ""))

    async def _finish(self, file: JobFile, pending: Pending) -> None:
        await self._checkpoint(file, pending)
        await self._settle(self._publish(file))

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
