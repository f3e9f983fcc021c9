"""The durable queue of asynchronous requests (table `async_requests` in the store): a request goes queued ->
running -> done, and survives a restart of the server in whatever state it was."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from hubserve.spec import AsyncInferenceSpec
from hubserve.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS async_requests (
    endpoint TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    input_location TEXT,
    body BLOB,
    content_type TEXT,
    accept TEXT NOT NULL,
    attributes TEXT NOT NULL,
    output_location TEXT NOT NULL,
    failure_location TEXT NOT NULL,
    ttl_s REAL NOT NULL,
    timeout_s REAL NOT NULL,
    created_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    resumed INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    finished_at REAL,
    PRIMARY KEY (endpoint, id)
);
CREATE INDEX IF NOT EXISTS async_requests_by_state ON async_requests(endpoint, state, created_at);
"""
COLUMNS = ("endpoint, id, input_location, body, content_type, accept, attributes, output_location, "
           "failure_location, ttl_s, timeout_s, created_at, attempts, resumed")
# A request whose answer or failure object is written, kept this long so that the same InferenceId sent again
# gets the same answer instead of running twice.
DONE_RETENTION_S = 24 * 3600.0


class AsyncState(StrEnum):
    queued = "queued"
    running = "running"  # claimed by a runner; after a restart, it may have written its object already
    done = "done"  # its output or failure object is written


@dataclass
class AsyncRequest:
    """One InvokeEndpointAsync call: where its input is (or the input itself), and where its answer goes."""

    endpoint: str
    id: str
    input_location: str | None
    body: bytes | None
    content_type: str | None  # None: the input object's own type
    accept: str
    attributes: dict[str, str]
    output_location: str
    failure_location: str
    ttl_s: float
    timeout_s: float
    created_at: float = field(default_factory=time.time)
    # Infrastructure failures so far (the replica died under it, its object could not be written).
    attempts: int = 0
    # It was running when the server stopped: its object may exist already.
    resumed: bool = False

    def expired(self, now: float) -> bool:
        return now > self.created_at + self.ttl_s

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> AsyncRequest:
        (endpoint, request_id, input_location, body, content_type, accept, attributes, output_location,
         failure_location, ttl_s, timeout_s, created_at, attempts, resumed) = row
        return cls(endpoint=endpoint, id=request_id, input_location=input_location, body=body,
                   content_type=content_type, accept=accept, attributes=json.loads(attributes),
                   output_location=output_location, failure_location=failure_location, ttl_s=ttl_s,
                   timeout_s=timeout_s, created_at=created_at, attempts=attempts, resumed=bool(resumed))


class AsyncBacklog(BaseModel):
    """An endpoint's asynchronous requests not done yet (SageMaker's ApproximateBacklogSize and
    ApproximateAgeOfOldestRequest)."""

    queued: int = 0
    running: int = 0
    oldest_age_s: float | None = None


def output_location(settings: AsyncInferenceSpec, request_id: str, extension: str | None = None,
                    filename: str | None = None) -> str:
    """Where a request's answer goes: `{output_path}[/{extension}]/{filename or id.out}`."""
    folder = settings.output_path.rstrip("/") + (f"/{extension.strip('/')}" if extension else "")
    return f"{folder}/{filename or request_id + '.out'}"


def failure_location(settings: AsyncInferenceSpec, request_id: str) -> str:
    return f"{settings.failures.rstrip('/')}/{request_id}-error.out"


class AsyncQueue:
    """The queue's table. Each method is one statement (or one transaction), so no claim is ever made twice."""

    def __init__(self, store: Store) -> None:
        self._store = store
        store.ensure_schema(SCHEMA)

    def submit(self, request: AsyncRequest) -> AsyncRequest:
        """Queue `request`; an InferenceId the endpoint has already gives the request queued first."""
        self._store.query(
            f"INSERT INTO async_requests({COLUMNS}, state) VALUES ({', '.join('?' * 15)}) "
            "ON CONFLICT(endpoint, id) DO NOTHING",
            (request.endpoint, request.id, request.input_location, request.body, request.content_type,
             request.accept, json.dumps(request.attributes), request.output_location, request.failure_location,
             request.ttl_s, request.timeout_s, request.created_at, 0, 0, AsyncState.queued))
        rows = self._store.query(f"SELECT {COLUMNS} FROM async_requests WHERE endpoint = ? AND id = ?",
                                 (request.endpoint, request.id))
        return AsyncRequest.from_row(rows[0]) if rows else request

    def claim(self, endpoint: str, limit: int, now: float, *, expired_only: bool = False) -> list[AsyncRequest]:
        """Up to `limit` queued requests that are due, oldest first, now running (or only those past their TTL)."""
        expired = " AND created_at + ttl_s < ?" if expired_only else ""
        rows = self._store.query(
            f"UPDATE async_requests SET state = ? WHERE rowid IN (SELECT rowid FROM async_requests "
            f"WHERE endpoint = ? AND state = ? AND not_before <= ?{expired} ORDER BY created_at LIMIT ?) "
            f"RETURNING {COLUMNS}",
            (AsyncState.running, endpoint, AsyncState.queued, now, *((now,) if expired_only else ()), limit))
        return sorted((AsyncRequest.from_row(row) for row in rows), key=lambda r: r.created_at)

    def finish(self, request: AsyncRequest, outcome: str) -> None:
        """Its object is written: done (the inline body is no longer needed)."""
        self._store.query(
            "UPDATE async_requests SET state = ?, outcome = ?, finished_at = ?, body = NULL "
            "WHERE endpoint = ? AND id = ?", (AsyncState.done, outcome, time.time(), request.endpoint, request.id))

    def retry_later(self, request: AsyncRequest, delay_s: float, *, counts: bool) -> None:
        """Back to the queue, not to be claimed for `delay_s`; `counts` as one more failed attempt."""
        self._store.query(
            "UPDATE async_requests SET state = ?, not_before = ?, attempts = attempts + ? "
            "WHERE endpoint = ? AND id = ?",
            (AsyncState.queued, time.time() + delay_s, int(counts), request.endpoint, request.id))

    def recover(self) -> None:
        """After a restart: running requests go back to the queue, marked so that the runner first looks for the
        object they may have written (then they are done, not run again)."""
        self._store.query("UPDATE async_requests SET state = ?, resumed = 1 WHERE state = ?",
                          (AsyncState.queued, AsyncState.running))

    def drop(self, endpoint: str, before: float) -> list[AsyncRequest]:
        """Remove the requests `endpoint` took before `before` (a new endpoint of that name may take more); those
        not done yet."""
        rows = self._store.query(
            f"DELETE FROM async_requests WHERE endpoint = ? AND created_at <= ? RETURNING {COLUMNS}, state",
            (endpoint, before))
        return [AsyncRequest.from_row(row[:-1]) for row in rows if row[-1] != AsyncState.done]

    def endpoints(self) -> set[str]:
        return {row[0] for row in self._store.query("SELECT DISTINCT endpoint FROM async_requests")}

    def purge(self, endpoint: str, now: float) -> None:
        """Forget the endpoint's requests done longer ago than the retention."""
        self._store.query("DELETE FROM async_requests WHERE endpoint = ? AND state = ? AND finished_at < ?",
                          (endpoint, AsyncState.done, now - DONE_RETENTION_S))

    def backlog(self, endpoint: str) -> AsyncBacklog:
        rows = self._store.query(
            "SELECT state, COUNT(*), MIN(created_at) FROM async_requests WHERE endpoint = ? AND state != ? "
            "GROUP BY state", (endpoint, AsyncState.done))
        counts = {state: count for state, count, _ in rows}
        oldest = min((first for _, _, first in rows), default=None)
        return AsyncBacklog(queued=counts.get(AsyncState.queued, 0), running=counts.get(AsyncState.running, 0),
                            oldest_age_s=None if oldest is None else round(time.time() - oldest, 3))
