"""A set of replicas of one spec: starts them, restarts the ones that die, and picks one per request."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from hubserve.serving.backoff import RestartBackoff
from hubserve.serving.context import ServingContext
from hubserve.serving.replica import Replica, ReplicaState
from hubserve.spec import EndpointSpec

log = logging.getLogger("hubserve.serving")

# Waits before replacing a replica that died, growing while replicas die soon after they became ready.
RESTART_BACKOFF_S = (0.0, 1.0, 2.0, 5.0, 10.0)


def write_note(log_path: Path, message: str) -> None:
    """Record a lifecycle event in the endpoint's log, where `hubserve logs` shows it."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(log_path, "a") as handle:
        handle.write(f"{stamp} [hubserve] {message}\n")


class ReplicaSet:
    def __init__(self, spec: EndpointSpec, context: ServingContext, on_change: Callable[[], None]) -> None:
        self.spec = spec
        self.replicas: list[Replica] = []
        self.restarts = 0
        self.last_incident: str | None = None
        self._context = context
        self._log_path = context.log_path(spec.name)
        self._on_change = on_change
        self._round_robin = itertools.count()
        self._backoff = RestartBackoff(RESTART_BACKOFF_S)
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, message: str) -> None:
        write_note(self._log_path, message)

    async def start(self, count: int) -> None:
        await self.scale(count, 0)

    def _new(self) -> Replica:
        """A replica of the set, counted at once (before it starts): a scale that runs meanwhile sees it."""
        replica_id = f"{self.spec.name}-{uuid.uuid4().hex[:8]}"
        replica = Replica(replica_id, self.spec, self._context, self._replica_changed)
        self.replicas.append(replica)
        return replica

    async def _launch(self, replica: Replica) -> None:
        await replica.start()
        if replica.pid is not None:  # (one whose process could not start has said why)
            self.note(f"replica {replica.id} started (pid {replica.pid})")

    def _replica_changed(self, replica: Replica) -> None:
        if replica.state == ReplicaState.exited and not replica.stopping and not self._closed:
            self.last_incident = f"replica {replica.id} died ({replica.failure}); a new one was started"
            self.note(self.last_incident)
            self.replicas.remove(replica)
            self.restarts += 1
            task = asyncio.ensure_future(self._replace(self._backoff.next_delay(replica.ready_for)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif replica.state == ReplicaState.failed:
            self.note(f"replica {replica.id} failed to load: {replica.failure}")
        elif replica.ready:  # (one that just lost its worker is no longer ready, nor dead yet)
            runs = f" on {replica.backend}" if replica.backend else ""
            runs += f" in {replica.dtype}" if replica.dtype else ""
            why = f" ({replica.backend_note})" if replica.backend_note else ""
            self.note(f"replica {replica.id} ready{runs}{why}")
        self._on_change()

    async def _replace(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._closed:
            await self._launch(self._new())
            self._on_change()

    async def wait_settled(self) -> None:
        """Until every replica is ready or has failed."""
        await asyncio.gather(*(r.wait_settled() for r in list(self.replicas)))

    @property
    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.ready)

    @property
    def failure(self) -> str | None:
        failed = [r for r in self.replicas if r.state == ReplicaState.failed]
        return failed[0].failure if failed else None

    @property
    def task(self) -> str | None:
        return next((r.task for r in self.replicas if r.task), None)

    @property
    def backend(self) -> str | None:
        """What runs the model in its ready replicas (the first one's, as they load alike)."""
        return next((r.backend for r in self.replicas if r.ready and r.backend), None)

    @property
    def backend_note(self) -> str | None:
        """Why a ready replica runs the model on another backend than the one meant for it, if one does."""
        return next((r.backend_note for r in self.replicas if r.ready and r.backend_note), None)

    def pick(self) -> Replica | None:
        """The ready replica with the fewest requests in flight (round robin among equals)."""
        ready = [r for r in self.replicas if r.ready]
        if not ready:
            return None
        offset = next(self._round_robin) % len(ready)
        rotated = ready[offset:] + ready[:offset]
        return min(rotated, key=lambda r: r.in_flight)

    async def scale(self, count: int, drain_timeout: float) -> None:
        """Start replicas up to `count`, or stop the surplus: those not serving first, then the least busy, each
        let finish its requests (up to `drain_timeout`)."""
        if len(self.replicas) < count and not self._closed:
            # Side by side: on Ray each start waits until Ray places its replica, and one that no node has room for
            # must not hold back the others.
            await asyncio.gather(*(self._launch(self._new()) for _ in range(count - len(self.replicas))))
        if len(self.replicas) <= count:
            return
        keep = sorted(self.replicas, key=lambda r: (not r.ready, -r.in_flight))[:count]
        surplus = [r for r in self.replicas if r not in keep]
        self.replicas = [r for r in self.replicas if r in keep]
        self._on_change()
        await asyncio.gather(*(r.stop(drain_timeout) for r in surplus))

    async def stop(self, drain_timeout: float) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(r.stop(drain_timeout) for r in self.replicas))
