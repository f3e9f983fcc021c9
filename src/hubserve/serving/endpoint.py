"""One endpoint at run time: its spec, its replica sets, its state, and the route to a replica."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from hubserve.errors import NoReadyReplica, PayloadTooLarge
from hubserve.invocation import InvocationRequest, InvocationResult, RecordResult
from hubserve.serving.context import ServingContext
from hubserve.serving.replica import Replica
from hubserve.serving.replica_set import ReplicaSet
from hubserve.spec import Endpoint, EndpointSpec, EndpointState, EndpointStatus, ReplicaInfo

log = logging.getLogger("hubserve.serving")

LOG_LINES_IN_FAILURE = 20


def tail_lines(path: Path, count: int) -> list[str]:
    if not path.exists():
        return []
    with open(path, errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=count)]


class EndpointRuntime:
    def __init__(self, spec: EndpointSpec, status: EndpointStatus, context: ServingContext) -> None:
        self.spec = spec
        self.status = status
        self.context = context
        self.active: ReplicaSet | None = None
        self._staged: ReplicaSet | None = None
        self._work: asyncio.Task[None] | None = None
        # A standing remark about how it runs (a GPU instance type on a machine without one), shown while running.
        self.notice: str | None = None

    @property
    def log_path(self) -> Path:
        return self.context.log_path(self.spec.name)

    def describe(self) -> Endpoint:
        return Endpoint(spec=self.spec, status=self.status)

    def _new_set(self, spec: EndpointSpec) -> ReplicaSet:
        return ReplicaSet(spec, self.context, self._refresh)

    def _save(self) -> None:
        self.status.updated_at = time.time()
        self.context.save(self.spec, self.status)

    def _run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._work = asyncio.ensure_future(work())

    # lifecycle
    def deploy(self) -> None:
        """Start the replicas in the background; the state tells how it goes."""
        self.status.state = EndpointState.initializing
        self.status.message = None
        self.status.target_replicas = self.spec.replicas
        self._save()
        self._run(self._deploy)

    async def _deploy(self) -> None:
        self.active = self._new_set(self.spec)
        self.active.note(f"deploying {self.spec.model} ({self.spec.replicas} replica(s))")
        await self.active.start()
        await self.active.wait_settled()
        self._refresh()

    def update(self, new_spec: EndpointSpec) -> None:
        old_spec, self.spec = self.spec, new_spec
        self.status.target_replicas = new_spec.replicas
        if self.active is None or self.status.state == EndpointState.failed:
            self._cancel_work()
            self._run(self._replace_failed)
        elif new_spec.needs_new_replicas(old_spec):
            self.status.state = EndpointState.updating
            self._cancel_work()
            self._run(lambda: self._roll(old_spec))
        elif new_spec.replicas != old_spec.replicas:
            self._run(self._scale)
        self._save()

    async def _replace_failed(self) -> None:
        if self.active is not None:
            await self.active.stop(0)
        self.deploy()

    async def _scale(self) -> None:
        assert self.active is not None
        self.active.spec = self.spec
        await self.active.scale(self.spec.replicas, self.context.drain_timeout_s)
        await self.active.wait_settled()
        self._refresh()

    async def _roll(self, old_spec: EndpointSpec) -> None:
        """Bring up replicas of the new spec while the old ones serve; switch only once they are ready."""
        staged = self._staged = self._new_set(self.spec)
        staged.note(f"updating to {self.spec.model}: starting {self.spec.replicas} new replica(s)")
        await staged.start()
        await staged.wait_settled()
        self._staged = None
        if staged.ready_count == 0:
            failure = staged.failure or "no new replica became ready"
            await staged.stop(0)
            self.spec = old_spec
            self.status.target_replicas = old_spec.replicas
            self.status.state = EndpointState.running
            self.status.message = f"update failed, still serving the previous version: {failure}"
            self._save()
            return
        old, self.active = self.active, staged
        staged.note("new replicas ready; draining the previous ones")
        self._refresh()
        if old is not None:
            await old.stop(self.context.drain_timeout_s)

    def _cancel_work(self) -> None:
        if self._work is not None and not self._work.done():
            self._work.cancel()

    async def stop(self) -> None:
        self._cancel_work()
        for replica_set in (self._staged, self.active):
            if replica_set is not None:
                await replica_set.stop(self.context.drain_timeout_s)

    def _refresh(self) -> None:
        """Derive the state from the replicas, and persist it."""
        active = self.active
        status = self.status
        status.ready_replicas = active.ready_count if active else 0
        status.restarts = active.restarts if active else 0
        status.replicas = [ReplicaInfo(id=r.id, state=r.state, pid=r.pid, backend=r.backend,
                                       backend_note=r.backend_note, dtype=r.dtype)
                           for r in active.replicas] if active else []
        if active is not None and active.task:
            status.task = active.task
        if active is not None and active.backend:
            status.backend = active.backend
        if self._staged is not None:
            status.state = EndpointState.updating
        elif active is None:
            status.state = EndpointState.pending
        elif status.ready_replicas > 0:
            status.state = EndpointState.running
            status.message = active.last_incident or self.notice or active.backend_note
        elif active.failure and all(r.state != "starting" for r in active.replicas):
            status.state = EndpointState.failed
            lines = "\n".join(tail_lines(self.log_path, LOG_LINES_IN_FAILURE))
            status.message = f"{active.failure}\n--- last log lines ---\n{lines}"
        else:
            status.state = EndpointState.initializing
        self._save()

    # data path
    def _pick(self) -> Replica:
        replica = self.active.pick() if self.active is not None else None
        if replica is None:
            raise NoReadyReplica(
                f"endpoint {self.spec.name} has no ready replica (state: {self.status.state})", retry_after=5
            )
        return replica

    @property
    def ready_count(self) -> int:
        return self.active.ready_count if self.active is not None else 0

    async def invoke(self, request: InvocationRequest, timeout_s: float | None = None) -> InvocationResult:
        """The answer, within `timeout_s` (an asynchronous request's own InvocationTimeoutSeconds), else the
        endpoint's timeout."""
        return await self._pick().invoke(request, timeout_s or self.spec.timeout_s)

    async def invoke_records(self, records: Sequence[bytes], content_type: str, accept: str,
                             timeout_s: float | None = None) -> list[RecordResult]:
        """One result per record (a batch transform's mini-batch), each answered as `invoke` answers that record
        alone. The records go in as few messages as the endpoint's max_payload_bytes allows (one, for a mini-batch
        made for it); a record over that limit is its own 413. ReplicaLost (the worker died), NoReadyReplica and
        InvocationTimeout raise for the whole call: the caller retries it."""
        limit = self.spec.max_payload_bytes
        results: list[RecordResult | None] = [None] * len(records)
        messages: list[list[int]] = []
        size = 0
        for index, record in enumerate(records):
            if len(record) > limit:
                results[index] = RecordResult(ok=False, status=PayloadTooLarge.status, message=(
                    f"the record ({len(record)} bytes) is over this endpoint's limit of {limit} bytes"))
                continue
            if not messages or size + len(record) > limit:
                messages.append([])
                size = 0
            messages[-1].append(index)
            size += len(record)
        timeout = timeout_s or self.spec.timeout_s
        answers = await asyncio.gather(*(self._pick().invoke_records([records[i] for i in message], content_type,
                                                                     accept, timeout) for message in messages))
        for message, answer in zip(messages, answers, strict=True):
            for index, result in zip(message, answer, strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    async def stream(self, request: InvocationRequest) -> AsyncIterator[bytes]:
        """Streamed events; the timeout bounds the wait for the first one."""
        return await self._pick().stream(request, self.spec.timeout_s)

    async def stats(self) -> list[dict[str, Any]]:
        """Each ready replica's engine counters."""
        replicas = [r for r in (self.active.replicas if self.active else []) if r.ready]
        stats = await asyncio.gather(*(r.stats() for r in replicas), return_exceptions=True)
        return [{"id": r.id, "pid": r.pid, "in_flight": r.in_flight, "backend": r.backend,
                 "backend_note": r.backend_note, "dtype": r.dtype, **(s if isinstance(s, dict) else {"error": str(s)})}
                for r, s in zip(replicas, stats, strict=True)]
