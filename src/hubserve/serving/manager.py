"""All endpoints of a server: create, update, pause, resume, delete, restore after a restart, and look up; where
their replicas run (local processes, or a Ray cluster); and what the server has room for (its replica cap and
memory budget)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from hubserve.errors import Conflict, NotFound
from hubserve.serving.async_runner import AsyncRunners
from hubserve.serving.capacity import (
    MEMORY_PER_REPLICA,
    ensure_room,
    machine_replica_limit,
    memory_budget,
    memory_refusal,
    replica_limit_message,
)
from hubserve.serving.context import ServingContext
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.hub import WorkerHub
from hubserve.serving.spawner import ReplicaSpawner, Spawner
from hubserve.settings import ServerSettings
from hubserve.sources.endpoint_cache import release
from hubserve.spec import Endpoint, EndpointSpec, EndpointStatus, EndpointUpdate
from hubserve.store import Store

if TYPE_CHECKING:
    from hubserve.serving.ray_placement import RaySpawner

LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::", "")
# On Ray the cluster, not this machine, bounds the replicas: Ray holds back those no node has room for.
CLUSTER_REPLICA_LIMIT = 4096


def hub_addresses(settings: ServerSettings, node_address: str | None) -> tuple[str, str]:
    """Where the worker hub listens, and what replicas dial: loopback for local processes; on Ray by default the
    address Ray knows this machine by (`node_address`), which the other nodes reach."""
    default = node_address or LOOPBACK
    listen = settings.hub_host or default
    advertised = settings.hub_advertised_host or (default if listen in WILDCARDS else listen)
    return listen, advertised


class EndpointManager:
    def __init__(self, settings: ServerSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        # Local replicas write streamed answers to the client themselves (the hub's line); on Ray, through here.
        self.hub = WorkerHub(port=settings.hub_port, line=settings.stream_handoff and not settings.ray_address)
        self.local_spawner: Spawner | None = None
        self.ray: RaySpawner | None = None
        self.spawner: ReplicaSpawner
        if settings.ray_address:
            from hubserve.serving.ray_placement import RaySpawner  # ray is imported only by servers that use it

            self.spawner = self.ray = RaySpawner(settings.ray_address, settings.models_dir,
                                                 settings.archive_limits)
        else:
            self.spawner = self.local_spawner = Spawner(settings.logs_dir / "zygote.log")
        self.context = ServingContext(
            hub=self.hub, spawner=self.spawner, logs_dir=settings.logs_dir, models_dir=settings.models_dir,
            drain_timeout_s=settings.drain_timeout_s, save=self._save,
            archive_limits=settings.archive_limits, admit=self._refusal,
        )
        self._endpoints: dict[str, EndpointRuntime] = {}
        # Told after every change of an endpoint's spec or status (on Ray: to publish them to the data plane).
        self.on_change: Callable[[], None] = _nothing
        # Asynchronous inference: the durable queue, and a runner per endpoint that has async_inference.
        self.async_runners = AsyncRunners(store)
        self.max_replicas = settings.max_replicas or (CLUSTER_REPLICA_LIMIT if self.ray else machine_replica_limit())
        # On Ray, replicas ask the cluster for their memory (the spec's resources) instead.
        self.memory_budget = None if self.ray and not settings.max_memory else memory_budget(settings.max_memory)

    async def start(self) -> None:
        node_address = self.ray.connect() if self.ray is not None else None
        self.hub.host, self.hub.advertised_host = hub_addresses(self.settings, node_address)
        await self.hub.start()
        if self.settings.zygote and self.local_spawner is not None:
            self.local_spawner.start_zygote()
        for saved in self.store.load_endpoints():
            runtime = EndpointRuntime(saved.spec, saved.status, self.context)
            self._endpoints[saved.spec.name] = runtime
            runtime.restore()
        self.async_runners.recover(self._endpoints)
        for runtime in self._endpoints.values():
            self.async_runners.watch(runtime)

    async def shutdown(self) -> None:
        await self.async_runners.stop()
        await asyncio.gather(*(r.stop() for r in self._endpoints.values()))
        await self.hub.close()
        await self.spawner.close()

    def _save(self, spec: EndpointSpec, status: EndpointStatus) -> None:
        self.store.save_endpoint(spec, status)
        self.on_change()

    def require_owner(self) -> None:
        """Refuse what only the server that owns the endpoints does: this one does (a data-plane server does not)."""

    def get(self, name: str) -> EndpointRuntime:
        runtime = self._endpoints.get(name)
        if runtime is None:
            raise NotFound(f"endpoint {name} not found")
        return runtime

    def list(self) -> list[Endpoint]:
        return [r.describe() for r in self._endpoints.values()]

    @property
    def counted_replicas(self) -> int:
        """The replicas the endpoints hold a share of the server for: each one's target (configured, not live
        processes: a failed or rolling endpoint keeps its share), none for a paused one."""
        return sum(r.counted_replicas for r in self._endpoints.values())

    def _refusal(self, name: str, adding: int) -> str | None:
        """Why endpoint `name` may not start `adding` more replicas now: the replica cap, or the memory budget
        (what the replicas use now, as PSS, and about what its largest replica used for each new one)."""
        if adding <= 0:
            return None
        current = self.counted_replicas
        if current + adding > self.max_replicas:
            return f"scale-up refused: {replica_limit_message(self.max_replicas, current, adding)}"
        if self.memory_budget is None:
            return None
        used = sum(r.memory_used() for r in self._endpoints.values())
        runtime = self._endpoints.get(name)
        estimate = runtime.replica_memory if runtime is not None and runtime.replica_memory else MEMORY_PER_REPLICA
        return memory_refusal(name, used, self.memory_budget, estimate, adding)

    def _ensure_room(self, name: str, adding: int) -> None:
        ensure_room(self.max_replicas, self.counted_replicas, adding)
        refusal = self._refusal(name, adding)
        if refusal is not None:
            raise Conflict(refusal)

    def create(self, spec: EndpointSpec) -> Endpoint:
        if spec.name in self._endpoints:
            raise Conflict(f"endpoint {spec.name} already exists; update it or delete it first")
        self._ensure_room(spec.name, spec.initial_replicas)
        runtime = EndpointRuntime(spec, EndpointStatus(target_replicas=spec.initial_replicas), self.context)
        # Saved before it is registered or started: a spec the store refuses leaves nothing behind.
        self.store.save_endpoint(spec, runtime.status)
        self._endpoints[spec.name] = runtime
        runtime.deploy()
        self.async_runners.watch(runtime)
        return runtime.describe()

    def update(self, name: str, change: EndpointUpdate | EndpointSpec) -> Endpoint:
        """Apply a change, or replace the spec whole (SageMaker's UpdateEndpoint: fields the new config leaves
        out are cleared, not kept). A paused endpoint takes the change and stays paused."""
        runtime = self.get(name)
        new_spec = change if isinstance(change, EndpointSpec) else runtime.spec.updated(change)
        self._ensure_room(name, runtime.target_for(new_spec) - runtime.counted_replicas)
        runtime.update(new_spec)
        self.async_runners.watch(runtime)
        return runtime.describe()

    async def pause(self, name: str) -> Endpoint:
        """Stop the endpoint's replicas and keep its spec; it stays paused across restarts until resumed."""
        runtime = self.get(name)
        if not runtime.paused:
            await runtime.pause()
        return runtime.describe()

    def resume(self, name: str) -> Endpoint:
        runtime = self.get(name)
        if not runtime.paused:
            raise Conflict(f"endpoint {name} is not paused (state: {runtime.status.state}); only a paused endpoint "
                           "resumes")
        self._ensure_room(name, runtime.spec.initial_replicas)
        runtime.resume()
        return runtime.describe()

    async def delete(self, name: str) -> None:
        runtime = self.get(name)
        del self._endpoints[name]
        self.store.delete_endpoint(name)
        self.on_change()
        await self.async_runners.forget(name)
        await runtime.stop()
        # Its workers are gone: free the cache they used, unless a new endpoint took the name meanwhile.
        if name not in self._endpoints:
            await asyncio.to_thread(release, self.settings.models_dir, name)


def _nothing() -> None:
    return None
