"""All endpoints of a server: create, update, delete, restore after a restart, and look up."""

from __future__ import annotations

import asyncio

from hubserve.errors import Conflict, NotFound
from hubserve.serving.async_runner import AsyncRunners
from hubserve.serving.capacity import ensure_room, machine_replica_limit
from hubserve.serving.context import ServingContext
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.hub import WorkerHub
from hubserve.serving.spawner import Spawner
from hubserve.settings import ServerSettings
from hubserve.sources.endpoint_cache import release
from hubserve.spec import Endpoint, EndpointSpec, EndpointStatus, EndpointUpdate
from hubserve.store import Store


class EndpointManager:
    def __init__(self, settings: ServerSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.hub = WorkerHub()
        self.spawner = Spawner(settings.logs_dir / "zygote.log")
        self.context = ServingContext(
            hub=self.hub, spawner=self.spawner, logs_dir=settings.logs_dir, models_dir=settings.models_dir,
            drain_timeout_s=settings.drain_timeout_s, save=store.save_endpoint,
            archive_limits=settings.archive_limits,
        )
        self._endpoints: dict[str, EndpointRuntime] = {}
        # Asynchronous inference: the durable queue, and a runner per endpoint that has async_inference.
        self.async_runners = AsyncRunners(store)
        self.max_replicas = settings.max_replicas or machine_replica_limit()

    async def start(self) -> None:
        await self.hub.start()
        if self.settings.zygote:
            self.spawner.start_zygote()
        for saved in self.store.load_endpoints():
            runtime = EndpointRuntime(saved.spec, saved.status, self.context)
            self._endpoints[saved.spec.name] = runtime
            runtime.deploy()
        self.async_runners.recover(self._endpoints)
        for runtime in self._endpoints.values():
            self.async_runners.watch(runtime)

    async def shutdown(self) -> None:
        await self.async_runners.stop()
        await asyncio.gather(*(r.stop() for r in self._endpoints.values()))
        await self.hub.close()
        await self.spawner.close()

    def get(self, name: str) -> EndpointRuntime:
        runtime = self._endpoints.get(name)
        if runtime is None:
            raise NotFound(f"endpoint {name} not found")
        return runtime

    def list(self) -> list[Endpoint]:
        return [r.describe() for r in self._endpoints.values()]

    def _ensure_room(self, adding: int) -> None:
        # Configured replicas count, not live processes: a failed or rolling endpoint keeps its share.
        current = sum(r.spec.replicas for r in self._endpoints.values())
        ensure_room(self.max_replicas, current, adding)

    def create(self, spec: EndpointSpec) -> Endpoint:
        if spec.name in self._endpoints:
            raise Conflict(f"endpoint {spec.name} already exists; update it or delete it first")
        self._ensure_room(spec.replicas)
        runtime = EndpointRuntime(spec, EndpointStatus(target_replicas=spec.replicas), self.context)
        # Saved before it is registered or started: a spec the store refuses leaves nothing behind.
        self.store.save_endpoint(spec, runtime.status)
        self._endpoints[spec.name] = runtime
        runtime.deploy()
        self.async_runners.watch(runtime)
        return runtime.describe()

    def update(self, name: str, change: EndpointUpdate | EndpointSpec) -> Endpoint:
        """Apply a change, or replace the spec whole (SageMaker's UpdateEndpoint: fields the new config leaves
        out are cleared, not kept)."""
        runtime = self.get(name)
        new_spec = change if isinstance(change, EndpointSpec) else runtime.spec.updated(change)
        self._ensure_room(new_spec.replicas - runtime.spec.replicas)
        runtime.update(new_spec)
        self.async_runners.watch(runtime)
        return runtime.describe()

    async def delete(self, name: str) -> None:
        runtime = self.get(name)
        del self._endpoints[name]
        self.store.delete_endpoint(name)
        await self.async_runners.forget(name)
        await runtime.stop()
        # Its workers are gone: free the cache they used, unless a new endpoint took the name meanwhile.
        if name not in self._endpoints:
            await asyncio.to_thread(release, self.settings.models_dir, name)
