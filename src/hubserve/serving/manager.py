"""All endpoints of a server: create, update, delete, restore after a restart, and look up."""

from __future__ import annotations

import asyncio

from hubserve.errors import Conflict, NotFound
from hubserve.serving.context import ServingContext
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.hub import WorkerHub
from hubserve.serving.spawner import Spawner
from hubserve.settings import ServerSettings
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
        )
        self._endpoints: dict[str, EndpointRuntime] = {}

    async def start(self) -> None:
        await self.hub.start()
        if self.settings.zygote:
            await self.spawner.start_zygote()
        for saved in self.store.load_endpoints():
            runtime = EndpointRuntime(saved.spec, saved.status, self.context)
            self._endpoints[saved.spec.name] = runtime
            runtime.deploy()

    async def shutdown(self) -> None:
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

    def create(self, spec: EndpointSpec) -> Endpoint:
        if spec.name in self._endpoints:
            raise Conflict(f"endpoint {spec.name} already exists; update it or delete it first")
        runtime = EndpointRuntime(spec, EndpointStatus(target_replicas=spec.replicas), self.context)
        self._endpoints[spec.name] = runtime
        runtime.deploy()
        return runtime.describe()

    def update(self, name: str, change: EndpointUpdate) -> Endpoint:
        runtime = self.get(name)
        runtime.update(runtime.spec.updated(change))
        return runtime.describe()

    async def delete(self, name: str) -> None:
        runtime = self.get(name)
        del self._endpoints[name]
        self.store.delete_endpoint(name)
        await runtime.stop()
