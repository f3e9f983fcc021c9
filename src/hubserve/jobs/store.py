"""The durable state of transform jobs (tables `transform_jobs` and `transform_job_files` in the store): each job's
spec and state, and per input file how far its answers are staged, so that a restart resumes where it was."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hubserve.env_secrets import is_secret
from hubserve.errors import Conflict
from hubserve.jobs.spec import JobState, TransformJob, TransformJobSpec
from hubserve.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS transform_jobs (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    sealed_env TEXT,
    state TEXT NOT NULL,
    failure_reason TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS transform_job_files (
    job TEXT NOT NULL,
    position INTEGER NOT NULL,
    url TEXT NOT NULL,
    name TEXT NOT NULL,
    records_total INTEGER,
    records_done INTEGER NOT NULL DEFAULT 0,
    records_failed INTEGER NOT NULL DEFAULT 0,
    staged_bytes INTEGER NOT NULL DEFAULT 0,
    errors_bytes INTEGER NOT NULL DEFAULT 0,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, position)
);
"""
FILE_COLUMNS = "position, url, name, records_total, records_done, records_failed, staged_bytes, errors_bytes, published"


@dataclass
class JobFile:
    """One input file of a job: where it is, its name under the input (and so under the output), and its progress.
    `staged_bytes` / `errors_bytes` are the lengths of its staged answers and errors that hold `records_done`
    records; anything past them was written after the last checkpoint and is cut off on resume."""

    position: int
    url: str
    name: str
    records_total: int | None = None
    records_done: int = 0
    records_failed: int = 0
    staged_bytes: int = 0
    errors_bytes: int = 0
    published: bool = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> JobFile:
        return cls(position=row[0], url=row[1], name=row[2], records_total=row[3], records_done=row[4],
                   records_failed=row[5], staged_bytes=row[6], errors_bytes=row[7], published=bool(row[8]))


class JobStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        store.ensure_schema(SCHEMA)

    def add(self, job: TransformJob, files: list[JobFile]) -> None:
        """Store a new job and its input files at once; Conflict when the name is taken."""
        spec = job.spec
        secrets = {name: value for name, value in spec.env.items() if is_secret(name)}
        public = spec.model_copy(update={"env": {n: v for n, v in spec.env.items() if n not in secrets}})
        sealed = self._store.seal(json.dumps(secrets)) if secrets else None
        statements: list[tuple[str, Sequence[Any]]] = [(
            "INSERT INTO transform_jobs(name, spec, sealed_env, state, created_at) VALUES (?, ?, ?, ?, ?)",
            (spec.name, public.model_dump_json(), sealed, job.state.value, job.created_at))]
        statements += [(f"INSERT INTO transform_job_files(job, {FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, 0, 0, 0, 0)",
                        (spec.name, f.position, f.url, f.name, f.records_total)) for f in files]
        try:
            self._store.transaction(statements)
        except sqlite3.IntegrityError:
            raise Conflict(f"transform job {spec.name} already exists; a job's name can not be reused") from None

    def load(self) -> list[tuple[TransformJob, list[JobFile]]]:
        """Every job, oldest first, with its files in input order."""
        rows = self._store.query("SELECT name, spec, sealed_env, state, failure_reason, created_at, started_at, "
                                 "ended_at FROM transform_jobs ORDER BY created_at")
        jobs = []
        for name, spec_json, sealed, state, reason, created_at, started_at, ended_at in rows:
            spec = TransformJobSpec.model_validate_json(spec_json)
            if sealed is not None:
                spec = spec.model_copy(update={"env": {**spec.env, **json.loads(self._store.unseal(sealed))}})
            job = TransformJob(spec=spec, state=JobState(state), failure_reason=reason, created_at=created_at,
                               started_at=started_at, ended_at=ended_at)
            jobs.append((job, self.files(name)))
        return jobs

    def files(self, name: str) -> list[JobFile]:
        rows = self._store.query(f"SELECT {FILE_COLUMNS} FROM transform_job_files WHERE job = ? ORDER BY position",
                                 (name,))
        return [JobFile.from_row(row) for row in rows]

    def save_state(self, job: TransformJob) -> None:
        self._store.query("UPDATE transform_jobs SET state = ?, failure_reason = ?, started_at = ?, ended_at = ? "
                          "WHERE name = ?", (job.state.value, job.failure_reason, job.started_at, job.ended_at,
                                             job.spec.name))

    def save_file(self, job: str, file: JobFile) -> None:
        """One file's progress, in one write: its counts and staged lengths always agree."""
        self._store.query(
            "UPDATE transform_job_files SET records_done = ?, records_failed = ?, staged_bytes = ?, errors_bytes = ?, "
            "published = ? WHERE job = ? AND position = ?",
            (file.records_done, file.records_failed, file.staged_bytes, file.errors_bytes, file.published, job,
             file.position))

    def save_total(self, job: str, file: JobFile) -> None:
        """The file's count of records, found beside the run (so apart from its progress)."""
        self._store.query("UPDATE transform_job_files SET records_total = ? WHERE job = ? AND position = ?",
                          (file.records_total, job, file.position))
