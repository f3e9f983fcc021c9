"""A data-plane server (`hubserve serve --ray ADDRESS --data-plane`): the endpoints its owner server publishes in the
cluster's registry, each one the same EndpointRuntime as on the owner, with the owner's replicas reached through
their actors' relays. It starts no replica and keeps no state of its own: managing endpoints is the owner's, and so
is scaling them, for which this server reports its load to the registry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import ray
from ray.exceptions import RayError

from hubserve.errors import DataPlaneOnly, NoReadyReplica
from hubserve.security import TokenRegistry
from hubserve.serving.context import ServingContext
from hubserve.serving.endpoint import RETRY_AFTER_S, EndpointRuntime
from hubserve.serving.manager import EndpointManager, hub_addresses
from hubserve.serving.ray_placement import NAMESPACE
from hubserve.serving.ray_registry import POLL_TIMEOUT_S, REGISTRY_RETRY_S, LoadReporter, Snapshot, registry
from hubserve.serving.replica import Replica, ReplicaState
from hubserve.serving.replica_set import ReplicaSet
from hubserve.settings import ServerSettings
from hubserve.spec import Endpoint, EndpointSpec, EndpointState, EndpointStatus, EndpointUpdate, ReplicaInfo
from hubserve.store import Store

log = logging.getLogger("hubserve.serving")


def _spawn(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class AttachedReplicas(ReplicaSet):
    """An endpoint's replicas as a data-plane server reaches them: each ready replica its owner lists is attached
    through its actor's relay, is ready once the relay replays the worker's state, and is dropped once its channel
    closes (the worker died: its requests get 503 with Retry-After) or once the owner stops listing it."""

    def __init__(self, spec: EndpointSpec, context: ServingContext, on_change: Callable[[], None]) -> None:
        super().__init__(spec, context, on_change)
        self._dialling: set[asyncio.Task[None]] = set()

    def follow(self, listed: list[ReplicaInfo]) -> None:
        ready = {info.id: info for info in listed if info.state == ReplicaState.ready}
        for replica in [r for r in self.replicas if r.id not in ready]:
            replica.stopping = True  # it takes no new request; those in flight end as the worker ends them
            self.replicas.remove(replica)
        known = {r.id for r in self.replicas}
        for info in ready.values():
            if info.id not in known:
                replica = Replica(info.id, self.spec, self._context, self._replica_changed)
                replica.pid, replica.node = info.pid, info.node
                self.replicas.append(replica)
                _spawn(self._dialling, self._attach(replica))

    async def _attach(self, replica: Replica) -> None:
        hub = self._context.hub
        hub.expect(replica.id, replica)
        try:
            # Each replica's actor is named after it (ray_placement.py).
            actor = await asyncio.to_thread(ray.get_actor, replica.id, namespace=NAMESPACE)
            await actor.attach.remote(hub.advertised_host, hub.port, replica.secret)
        except (RayError, ValueError) as exc:  # gone, or not connected yet: the owner's next snapshot says which
            log.info("replica %s of endpoint %s could not be attached: %s", replica.id, self.spec.name, exc)
            hub.forget(replica.id)
            if replica in self.replicas:
                self.replicas.remove(replica)

    def _replica_changed(self, replica: Replica) -> None:
        if replica.state != ReplicaState.starting and not replica.ready and replica in self.replicas:
            self.replicas.remove(replica)
        self._on_change()

    async def stop(self, drain_timeout: float) -> None:
        for task in list(self._dialling):
            task.cancel()
        await super().stop(drain_timeout)


class PublishedEndpoint(EndpointRuntime):
    """An endpoint as its owner published it: the owner's spec and status, served through the same data path as on
    the owner, holding requests while a replica starts as the owner does. Scaling it, from zero too, is the owner's:
    `on_request` tells this server's load reporter of each request taken."""

    def __init__(self, published: Endpoint, context: ServingContext, owner_url: str,
                 on_request: Callable[[], None]) -> None:
        super().__init__(published.spec, published.status, context)
        self.owner_url = owner_url
        self.requests = 0  # taken so far: the owner counts a request that came and went as activity
        self._on_request = on_request
        self.attached = AttachedReplicas(published.spec, context, self._refresh)
        self.active = self.attached
        self.follow(published, owner_url)

    def follow(self, published: Endpoint, owner_url: str) -> None:
        self.spec = self.attached.spec = published.spec
        self.status = published.status
        self.owner_url = owner_url
        self.paused = published.status.state == EndpointState.paused
        self.attached.follow(published.status.replicas)
        self._refresh()

    def _refresh(self) -> None:
        """The status stays the owner's; the requests held for a replica look again."""
        if not self._stopped:
            self._held.changed()

    def _wake(self) -> None:
        """The request is held here, and so reported as load: the owner starts the replicas it waits for, or
        refuses to for want of room, which answers the request at once, as on the owner."""
        if self.status.scale_up_refused is not None:
            raise NoReadyReplica(self.status.scale_up_refused, retry_after=RETRY_AFTER_S)

    def _take_request(self) -> None:
        super()._take_request()
        self.requests += 1
        self._on_request()

    @property
    def load(self) -> tuple[int, int]:
        """The requests in flight here and held here, and those taken so far."""
        return self.in_flight + self.held, self.requests


def _saved_by_the_owner(_spec: EndpointSpec, _status: EndpointStatus) -> None:
    return None


class DataPlaneManager(EndpointManager):
    """The endpoints of a data-plane server: those in the registry's latest snapshot. Tokens are checked against the
    owner's (their digests, published with the endpoints); everything that changes state is refused with the
    owner's address."""

    def __init__(self, settings: ServerSettings, store: Store, tokens: TokenRegistry) -> None:
        super().__init__(settings, store)
        self.tokens = tokens
        self.owner_url: str | None = None
        self.context.save = _saved_by_the_owner
        self._following: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self.reporter = LoadReporter(self._loads)

    async def start(self) -> None:
        assert self.ray is not None
        self.hub.host, self.hub.advertised_host = hub_addresses(self.settings, self.ray.connect())
        await self.hub.start()
        self._following = asyncio.ensure_future(self._follow())
        self.reporter.start()

    async def _follow(self) -> None:
        actor, version = registry(), 0
        while True:
            try:
                version, raw = await actor.wait.remote(version, POLL_TIMEOUT_S)
            except RayError as exc:
                log.warning("the data plane's registry did not answer (%s); asking again", exc)
                await asyncio.sleep(REGISTRY_RETRY_S)
                actor = registry()
                continue
            self._apply(Snapshot.model_validate_json(raw))

    def _apply(self, snapshot: Snapshot) -> None:
        if not snapshot.owner_url:  # no owner has published yet: nothing to serve
            return
        self.owner_url = snapshot.owner_url
        self.tokens.mirror(snapshot.tokens, snapshot.admin_digest)
        published = {e.spec.name: e for e in snapshot.endpoints}
        for name in [n for n in self._endpoints if n not in published]:
            _spawn(self._stopping, self._endpoints.pop(name).stop())
        for name, endpoint in published.items():
            runtime = self._endpoints.get(name)
            if isinstance(runtime, PublishedEndpoint):
                runtime.follow(endpoint, snapshot.owner_url)
            else:
                self._endpoints[name] = PublishedEndpoint(endpoint, self.context, snapshot.owner_url,
                                                          self.reporter.changed)

    def _loads(self) -> dict[str, tuple[int, int]]:
        return {name: runtime.load for name, runtime in self._endpoints.items()
                if isinstance(runtime, PublishedEndpoint)}

    async def shutdown(self) -> None:
        if self._following is not None:
            self._following.cancel()
        await self.reporter.close()
        await super().shutdown()

    def require_owner(self) -> NoReturn:
        where = f"at {self.owner_url}" if self.owner_url else "on the owner server (none has published yet)"
        raise DataPlaneOnly(f"this server serves the data plane only; manage endpoints, tokens and jobs {where}")

    def create(self, spec: EndpointSpec) -> Endpoint:
        self.require_owner()

    def update(self, name: str, change: EndpointUpdate | EndpointSpec) -> Endpoint:
        self.require_owner()

    async def pause(self, name: str) -> Endpoint:
        self.require_owner()

    def resume(self, name: str) -> Endpoint:
        self.require_owner()

    async def delete(self, name: str) -> None:
        self.require_owner()
