"""One endpoint at run time: its spec, its replica sets, its state (scaling, at zero, paused), and the route to a
replica, holding requests while one starts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from hubserve.errors import NoReadyReplica, Overloaded
from hubserve.invocation import InvocationRequest, InvocationResult, RecordResult
from hubserve.serving.autoscaler import Autoscaler, Decision, Sample
from hubserve.serving.capacity import process_memory
from hubserve.serving.context import ServingContext
from hubserve.serving.replica import Replica, StreamedAnswer
from hubserve.serving.replica_set import ReplicaSet, write_note
from hubserve.serving.router import HeldRequests, split_records
from hubserve.spec import AutoscalingSpec, Endpoint, EndpointSpec, EndpointState, EndpointStatus, ReplicaInfo

log = logging.getLogger("hubserve.serving")

LOG_LINES_IN_FAILURE = 20
# What a request refused for want of a ready replica is told to wait before it tries again.
RETRY_AFTER_S = 5
# How long a request waits for a starting replica when the endpoint has no autoscaling to say.
DEFAULT_HOLD_S = AutoscalingSpec().scale_up_hold_s
# How often the replicas' memory is read.
MEASURE_EVERY_S = 1.0


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
        self._scaling: asyncio.Task[None] | None = None
        # A standing remark about how it runs (a GPU instance type on a machine without one), shown while running.
        self.notice: str | None = None
        self.paused = False
        self._stopped = False
        self.last_request = time.monotonic()
        # The most memory (PSS) one ready replica was seen to use: the estimate for the next one, kept at zero.
        self.replica_memory: int | None = None
        self._measured_at = -MEASURE_EVERY_S
        self._memory = 0
        # Why the last scale-up was refused (the server's capacity), shown in the status until one goes through.
        self._refusal: str | None = None
        self._zero_reason: str | None = None
        self._held = HeldRequests()
        self._autoscaler: Autoscaler | None = None

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
        self.paused = False
        self.status.state = EndpointState.initializing
        self.status.message = None
        self.status.target_replicas = self.spec.initial_replicas
        self.last_request = time.monotonic()
        self._save()
        self._run(self._deploy)
        self._follow_autoscaling()

    async def _deploy(self) -> None:
        count = self.status.target_replicas
        self.active = self._new_set(self.spec)
        self.active.note(f"deploying {self.spec.model} ({count} replica(s))")
        await self.active.start(count)
        await self.active.wait_settled()
        self._refresh()

    def restore(self) -> None:
        """Take the endpoint up again as the store kept it, after a restart: a paused one stays paused, one scaled
        to zero stays at zero until a request comes; the others deploy."""
        scaling = self.spec.autoscaling
        if self.status.state == EndpointState.paused:
            self.paused = True
            self.status.target_replicas = 0
            self._refresh()
        elif self.status.state == EndpointState.scaled_to_zero and scaling is not None and scaling.min_replicas == 0:
            self._zero_reason = self.status.message
            self.status.target_replicas = 0
            self.active = self._new_set(self.spec)
            self._refresh()
            self._follow_autoscaling()
        else:
            self.deploy()

    @property
    def counted_replicas(self) -> int:
        """The replicas this endpoint holds a share of the server for: its target, none while paused."""
        return 0 if self.paused else self.status.target_replicas

    def target_for(self, spec: EndpointSpec) -> int:
        """The replicas `spec` would run here now: its fixed count, else the current count within its autoscaling
        bounds (an endpoint at zero stays there while min_replicas allows)."""
        scaling = spec.autoscaling
        if self.paused:
            return 0
        if scaling is None:
            return spec.replicas
        if self.active is None or self.status.state == EndpointState.failed:
            return spec.initial_replicas
        current = self.status.target_replicas
        if current == 0 and scaling.min_replicas == 0:
            return 0
        return min(max(current, scaling.min_replicas, 1), scaling.max_replicas)

    def update(self, new_spec: EndpointSpec) -> None:
        old_spec, old_count, self.spec = self.spec, self.status.target_replicas, new_spec
        count = self.target_for(new_spec)
        if self.paused:  # it keeps the new spec, and stays paused
            self._save()
            return
        self.status.target_replicas = count
        if self.active is None or self.status.state == EndpointState.failed:
            self._cancel_work()
            self._run(self._replace_failed)
        elif new_spec.needs_new_replicas(old_spec) and count == 0:
            self.active = self._new_set(new_spec)  # nothing runs the old spec: the next request starts the new one
        elif new_spec.needs_new_replicas(old_spec):
            self.status.state = EndpointState.updating
            self._cancel_work()
            self._run(lambda: self._roll(old_spec, old_count))
        elif count != old_count:
            self._scale_in_background(count)
        self._follow_autoscaling()
        self._save()

    async def _replace_failed(self) -> None:
        if self.active is not None:
            await self.active.stop(0)
        self.deploy()

    def _scale_in_background(self, count: int) -> None:
        self._scaling = asyncio.ensure_future(self._scale(count))

    async def _scale(self, count: int) -> None:
        active = self.active
        if active is None:
            return
        active.spec = self.spec
        await active.scale(count, self.context.drain_timeout_s)
        await active.wait_settled()
        self._refresh()

    async def _roll(self, old_spec: EndpointSpec, old_count: int) -> None:
        """Bring up replicas of the new spec while the old ones serve; switch only once they are ready."""
        count = self.status.target_replicas
        staged = self._staged = self._new_set(self.spec)
        staged.note(f"updating to {self.spec.model}: starting {count} new replica(s)")
        await staged.start(count)
        await staged.wait_settled()
        self._staged = None
        if staged.ready_count == 0:
            failure = staged.failure or "no new replica became ready"
            await staged.stop(0)
            self.spec = old_spec
            self.status.target_replicas = old_count
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
        for work in (self._work, self._scaling):
            if work is not None and not work.done():
                work.cancel()

    async def _stop_replicas(self) -> None:
        if self._autoscaler is not None:
            self._autoscaler.stop()
            self._autoscaler = None
        self._cancel_work()
        sets = [s for s in (self._staged, self.active) if s is not None]
        self._staged = self.active = None
        await asyncio.gather(*(s.stop(self.context.drain_timeout_s) for s in sets))

    async def stop(self) -> None:
        """Stop for good (a delete, a shutdown): the state saved last stays, for a restart to take up."""
        self._stopped = True
        self._held.changed()
        await self._stop_replicas()

    async def pause(self) -> None:
        """Stop the replicas (letting them finish their requests) and keep the spec; requests are refused until
        `resume`. Requests held for a replica are refused at once."""
        write_note(self.log_path, "paused: stopping the replicas")
        self.paused = True
        self.status.target_replicas = 0
        stopping = asyncio.ensure_future(self._stop_replicas())
        self._refresh()
        await stopping

    def resume(self) -> None:
        write_note(self.log_path, "resumed")
        self.deploy()

    # autoscaling
    @property
    def autoscaling(self) -> AutoscalingSpec | None:
        return self.spec.autoscaling

    def _follow_autoscaling(self) -> None:
        if self.spec.autoscaling is not None and not self.paused:
            if self._autoscaler is None:
                self._autoscaler = Autoscaler(self)
                self._autoscaler.start()
        elif self._autoscaler is not None:
            self._autoscaler.stop()
            self._autoscaler = None

    def sample(self) -> Sample | None:
        """The load now, here and on the cluster's data-plane servers, for the autoscaler; None while the replicas
        are changing anyway."""
        active = self.active
        # At zero, the replicas still stopping do not hold back a wake, as they do not hold back a request's here.
        busy = self.status.target_replicas > 0 and \
            any(work is not None and not work.done() for work in (self._work, self._scaling))
        if active is None or busy or self.paused or self._staged is not None \
                or self.status.state == EndpointState.failed:
            return None
        ready = [r for r in active.replicas if r.ready]
        remote = self.context.remote_load(self.spec.name)
        load = sum(r.in_flight for r in ready) + self.held + remote.load
        now = time.monotonic()
        if load:
            self.last_request = now
        self.last_request = max(self.last_request, remote.last_request)
        scaling = self.spec.autoscaling
        if self._refusal is not None and scaling is not None and load <= scaling.target * len(ready):
            self._refusal = None  # the load it was refused for has passed
            self._refresh()
        self.memory_used()
        return Sample(replicas=self.status.target_replicas, ready=len(ready), load=load,
                      idle_s=now - self.last_request)

    def scale_to(self, decision: Decision) -> None:
        """Apply the autoscaler's decision, unless the server has no room for the replicas it adds."""
        adding = decision.replicas - self.status.target_replicas
        refusal = self.context.admit(self.spec.name, adding) if adding > 0 else None
        if refusal is not None:
            self._refuse(refusal)
            return
        self._refusal = None
        write_note(self.log_path, f"autoscaler: {decision.reason}")
        if decision.replicas == 0:
            self._zero_reason = decision.reason
        self.status.target_replicas = decision.replicas
        self._scale_in_background(decision.replicas)
        self._refresh()

    def _refuse(self, refusal: str) -> None:
        if refusal != self._refusal:
            write_note(self.log_path, f"autoscaler: {refusal}")
        self._refusal = refusal
        self._refresh()

    def _wake(self) -> None:
        """Start replicas for the requests that come at zero: once, however many come."""
        scaling = self.spec.autoscaling
        count = max(scaling.min_replicas, 1) if scaling is not None else self.spec.replicas
        refusal = self.context.admit(self.spec.name, count)
        if refusal is not None:
            self._refuse(refusal)
            raise NoReadyReplica(refusal, retry_after=RETRY_AFTER_S)
        self._refusal = None
        write_note(self.log_path, f"a request came at zero replicas: starting {count} replica(s)")
        self.status.target_replicas = count
        self._scale_in_background(count)
        self._refresh()

    def memory_used(self) -> int:
        """The memory (PSS) this endpoint's replicas use (read at most once a second); the largest ready one's is
        kept as the estimate for the next."""
        now = time.monotonic()
        if now - self._measured_at < MEASURE_EVERY_S:
            return self._memory
        total = 0
        for replica_set in (self._staged, self.active):
            for replica in replica_set.replicas if replica_set is not None else ():
                # A replica Ray placed may run on another machine: its pid means nothing here.
                size = process_memory(replica.pid) if replica.pid is not None and replica.node is None else None
                if size is None:
                    continue
                total += size
                if replica.ready:
                    self.replica_memory = max(self.replica_memory or 0, size)
        self._measured_at, self._memory = now, total
        return total

    def _refresh(self) -> None:
        """Derive the state from the replicas, persist it, and wake the requests held for a replica."""
        if self._stopped:
            return
        active = self.active
        status = self.status
        status.ready_replicas = active.ready_count if active else 0
        status.restarts = active.restarts if active else 0
        status.scale_up_refused = self._refusal
        status.replicas = [ReplicaInfo(id=r.id, state=r.state, pid=r.pid, node=r.node, backend=r.backend,
                                       backend_note=r.backend_note, dtype=r.dtype)
                           for r in active.replicas] if active else []
        if active is not None and active.task:
            status.task = active.task
        if active is not None and active.backend:
            status.backend = active.backend
        if self.paused:
            status.state = EndpointState.paused
            status.message = f"endpoint {self.spec.name} is paused; resume it to serve it again"
        elif self._staged is not None:
            status.state = EndpointState.updating
        elif active is None:
            status.state = EndpointState.pending
        elif status.ready_replicas > 0:
            status.state = EndpointState.running
            status.message = self._refusal or active.last_incident or self.notice or active.backend_note
        elif not active.replicas and status.target_replicas == 0:
            status.state = EndpointState.scaled_to_zero
            status.message = self._refusal or self._zero_reason or "scaled to zero; the next request starts a replica"
        elif active.failure and all(r.state != "starting" for r in active.replicas):
            status.state = EndpointState.failed
            lines = "\n".join(tail_lines(self.log_path, LOG_LINES_IN_FAILURE))
            status.message = f"{active.failure}\n--- last log lines ---\n{lines}"
        else:
            status.state = EndpointState.initializing
        self._save()
        self._held.changed()

    # data path
    @property
    def hold_s(self) -> float:
        """How long a request waits for a replica to be ready, unless it says (`X-Scale-Up-Timeout`)."""
        scaling = self.spec.autoscaling
        return scaling.scale_up_hold_s if scaling is not None else DEFAULT_HOLD_S

    def _refuse_unless_servable(self) -> None:
        """Refuse at once what no replica will come for: the endpoint is paused, or its replicas failed."""
        name = self.spec.name
        if self._stopped:
            raise NoReadyReplica(f"endpoint {name} is being deleted, or the server is stopping")
        if self.paused:
            raise NoReadyReplica(f"endpoint {name} is paused; resume it to serve it again")
        if self.status.state == EndpointState.failed:
            failure = self.active.failure if self.active is not None else None
            raise NoReadyReplica(f"endpoint {name} has no ready replica (state: failed)"
                                 + (f": {failure}" if failure else ""), retry_after=RETRY_AFTER_S)
        if self.active is not None and self.status.target_replicas == 0:
            self._wake()

    async def _pick(self, hold_s: float | None = None) -> Replica:
        """A ready replica: at once, or, while one is starting (from zero, after a create, after a crash), once
        it is ready, waiting up to `hold_s` (else the endpoint's scale_up_hold_s)."""
        self.last_request = time.monotonic()
        replica = self._ready_replica()
        if replica is not None:
            return replica
        self._refuse_unless_servable()
        hold = self.hold_s if hold_s is None else hold_s
        if hold <= 0:
            raise NoReadyReplica(f"endpoint {self.spec.name} has no ready replica yet (state: {self.status.state}); "
                                 "one is starting", retry_after=RETRY_AFTER_S)
        return await self._hold(hold)

    async def _hold(self, hold: float) -> Replica:
        def timed_out() -> NoReadyReplica:
            return NoReadyReplica(f"no replica of endpoint {self.spec.name} became ready within {hold:g} s "
                                  f"(state: {self.status.state})", retry_after=RETRY_AFTER_S)

        return await self._held.wait(self._ready_replica, self._refuse_unless_servable, hold, timed_out)

    def _ready_replica(self) -> Replica | None:
        return self.active.pick() if self.active is not None else None

    @property
    def held(self) -> int:
        """Requests waiting for a ready replica right now."""
        return self._held.count

    def _take_request(self) -> None:
        """Refuse a request over the endpoint's max_concurrency (those in flight and held count)."""
        limit = self.spec.max_concurrency
        if limit is not None and self.in_flight + self.held >= limit:
            raise Overloaded(f"endpoint {self.spec.name} takes at most {limit} requests at once (max_concurrency)",
                             retry_after=1)

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.active.replicas) if self.active is not None else 0

    @property
    def ready_count(self) -> int:
        return self.active.ready_count if self.active is not None else 0

    async def invoke(self, request: InvocationRequest, timeout_s: float | None = None) -> InvocationResult:
        """The answer, within `timeout_s` (an asynchronous request's own InvocationTimeoutSeconds), else the
        endpoint's timeout."""
        self._take_request()
        replica = await self._pick(request.scale_up_timeout_s)
        try:
            return await replica.invoke(request, timeout_s or self.spec.timeout_s)
        finally:
            self.last_request = time.monotonic()

    async def invoke_records(self, records: Sequence[bytes], content_type: str, accept: str,
                             timeout_s: float | None = None) -> list[RecordResult]:
        """One result per record (a batch transform's mini-batch), each answered as `invoke` answers that record
        alone. The records go in as few messages as the endpoint's max_payload_bytes allows (one, for a mini-batch
        made for it); a record over that limit is its own 413. ReplicaLost (the worker died), NoReadyReplica and
        InvocationTimeout raise for the whole call: the caller retries it."""
        results, messages = split_records(records, self.spec.max_payload_bytes)
        timeout = timeout_s or self.spec.timeout_s

        async def send(message: list[int]) -> list[RecordResult]:
            replica = await self._pick()
            return await replica.invoke_records([records[i] for i in message], content_type, accept, timeout)

        answers = await asyncio.gather(*(send(message) for message in messages))
        for message, answer in zip(messages, answers, strict=True):
            for index, result in zip(message, answer, strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    async def stream(self, request: InvocationRequest) -> StreamedAnswer:
        """Streamed events; the timeout bounds the wait for the first one."""
        self._take_request()
        replica = await self._pick(request.scale_up_timeout_s)
        return await replica.stream(request, self.spec.timeout_s)

    async def stats(self) -> list[dict[str, Any]]:
        """Each ready replica's engine counters."""
        replicas = [r for r in (self.active.replicas if self.active else []) if r.ready]
        stats = await asyncio.gather(*(r.stats() for r in replicas), return_exceptions=True)
        return [{"id": r.id, "pid": r.pid, "in_flight": r.in_flight, "backend": r.backend,
                 "backend_note": r.backend_note, "dtype": r.dtype, **(s if isinstance(s, dict) else {"error": str(s)})}
                for r, s in zip(replicas, stats, strict=True)]
