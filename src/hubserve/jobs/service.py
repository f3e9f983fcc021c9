"""The server's batch transform jobs: create, look up, stop; resumed at start, left as they stand at shutdown.
Every front door (the control API, SageMaker's, the clients) goes through this one service."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hubserve.env_secrets import masked
from hubserve.errors import Conflict, NotFound
from hubserve.jobs.filters import RecordFilter
from hubserve.jobs.output import JobLog, Staging
from hubserve.jobs.records import list_inputs
from hubserve.jobs.runner import JobRunner, progress_of
from hubserve.jobs.spec import JobState, TransformJob, TransformJobSpec
from hubserve.jobs.store import JobFile, JobStore
from hubserve.serving.capacity import ensure_room
from hubserve.serving.manager import EndpointManager
from hubserve.settings import ServerSettings
from hubserve.store import Store

log = logging.getLogger("hubserve.jobs")


@dataclass
class JobEntry:
    job: TransformJob
    files: list[JobFile]
    runner: JobRunner | None = None
    task: asyncio.Task[None] | None = None


class JobService:
    def __init__(self, settings: ServerSettings, store: Store, manager: EndpointManager) -> None:
        self._settings = settings
        self._store = JobStore(store)
        self._manager = manager
        self._jobs: dict[str, JobEntry] = {}
        self._lock = threading.Lock()  # create may run in a worker thread (it lists the input)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Load every job; resume those in progress, and end those that were stopping."""
        self._loop = asyncio.get_running_loop()
        for job, files in self._store.load():
            entry = self._jobs[job.spec.name] = JobEntry(job, files)
            if job.state == JobState.stopping:
                self._end_now(entry, JobState.stopped)
            elif job.state == JobState.in_progress:
                self._launch(entry)
            else:  # ended as the server died, before its staged files were removed
                self._ended(job)

    async def shutdown(self) -> None:
        """Cancel the runners: their jobs stay InProgress (or Stopping) and resume at the next start."""
        tasks = [entry.task for entry in self._jobs.values() if entry.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def create(self, spec: TransformJobSpec) -> TransformJob:
        """Check the job can run (its endpoint, its filters, its input: listed here), store it, and start it.
        Nothing is stored for a job refused. Callable from a worker thread, as listing the input takes IO."""
        if spec.name in self._jobs:
            raise Conflict(f"transform job {spec.name} already exists; a job's name can not be reused")
        if spec.endpoint is not None:
            self._manager.get(spec.endpoint)
        else:
            self._ensure_room(spec.instance_count)
        RecordFilter(spec.data_processing, spec.content_type, spec.accept)
        inputs = list_inputs(spec.input)  # BadRequest when there is none
        files = [JobFile(position=i, url=item.url, name=item.name) for i, item in enumerate(inputs)]
        job = TransformJob(spec=spec)
        with self._lock:
            self._store.add(job, files)
            entry = self._jobs[spec.name] = JobEntry(job, files)
        assert self._loop is not None, "the service is not started"
        self._loop.call_soon_threadsafe(self._launch, entry)
        return self._describe(entry)

    def _ensure_room(self, adding: int) -> None:
        """The job's own replicas count against the server's max_replicas, beside the endpoints' (as configured)."""
        running = sum(entry.job.spec.instance_count for entry in list(self._jobs.values())
                      if entry.job.spec.model is not None and not entry.job.state.ended)
        ensure_room(self._manager.max_replicas, self._manager.counted_replicas + running, adding)

    def get(self, name: str) -> TransformJob:
        return self._describe(self._entry(name))

    def list(self) -> list[TransformJob]:
        return [self._describe(entry) for entry in list(self._jobs.values())]

    def stop(self, name: str) -> TransformJob:
        """Stop the job: Stopping until its runner has let go of its replicas and staged files, then Stopped.
        Conflict for a job that has ended."""
        entry = self._entry(name)
        if entry.job.state.ended:
            raise Conflict(f"transform job {name} has ended ({entry.job.state.value}); there is nothing to stop")
        if entry.job.state == JobState.in_progress:
            entry.job.state = JobState.stopping
            self._store.save_state(entry.job)
            self._log(name).write("stopping, as asked")
            if entry.task is None or entry.task.done():
                self._end_now(entry, JobState.stopped)
            else:
                entry.task.cancel()
        return self._describe(entry)

    def log_path(self, name: str) -> Path:
        self._entry(name)
        return self._log(name).path

    def _entry(self, name: str) -> JobEntry:
        entry = self._jobs.get(name)
        if entry is None:
            raise NotFound(f"transform job {name} not found")
        return entry

    def _log(self, name: str) -> JobLog:
        return JobLog(self._settings.logs_dir / "jobs" / f"{name}.log")

    def _staging(self, name: str) -> Staging:
        return Staging(self._settings.jobs_dir / name)

    def _launch(self, entry: JobEntry) -> None:
        name = entry.job.spec.name
        entry.runner = JobRunner(entry.job, entry.files, self._store, self._manager, self._staging(name),
                                 self._log(name), self._ended)
        entry.task = asyncio.ensure_future(entry.runner.run())

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("job %s: its runner failed", name, exc_info=task.exception())

        entry.task.add_done_callback(done)

    def _ended(self, job: TransformJob) -> None:
        """A job reached its end: its staged files are of no more use."""
        self._staging(job.spec.name).remove()

    def _end_now(self, entry: JobEntry, state: JobState) -> None:
        """End a job that has no runner working on it."""
        entry.job.state = state
        entry.job.ended_at = time.time()
        self._store.save_state(entry.job)
        self._log(entry.job.spec.name).write(f"{state.value}")
        self._ended(entry.job)

    def _describe(self, entry: JobEntry) -> TransformJob:
        """The job as the API shows it: its progress now, and its env's secrets masked."""
        job = entry.job
        progress = entry.runner.progress() if entry.runner is not None else progress_of(entry.files, None)
        if job.state.ended:
            progress.records_per_s = progress.eta_s = None
        spec = job.spec.model_copy(update={"env": masked(job.spec.env)})
        return job.model_copy(update={"spec": spec, "progress": progress})
