"""What the owner server and the data-plane servers share on a Ray cluster, through one named detached actor: the owner
publishes versioned snapshots of its endpoints (spec with secrets masked, status, replicas) and of its bearer tokens'
digests, which data-plane servers long-poll; data-plane servers report their load per endpoint, which the owner
long-polls for its autoscaler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import ray
from pydantic import BaseModel, Field
from ray.exceptions import RayError

from hubserve.serving.context import NO_REMOTE_LOAD, RemoteLoad
from hubserve.serving.manager import WILDCARDS
from hubserve.serving.ray_placement import NAMESPACE
from hubserve.spec import Endpoint
from hubserve.store import TokenRecord

log = logging.getLogger("hubserve.serving")

REGISTRY_NAME = "hubserve-registry"
# How long a data-plane server's long poll waits for a new version before it asks again.
POLL_TIMEOUT_S = 10.0
# The owner publishes at least this often, changes or not: a registry that Ray restarted (empty) is filled again.
REPUBLISH_S = 30.0
# How long to wait before asking a registry that did not answer (Ray restarting it) again.
REGISTRY_RETRY_S = 1.0
# A data-plane server reports its load as it changes, at most this often (the autoscaler samples every 0.25 s)...
REPORT_EVERY_S = 0.2
# ... and at least this often, changed or not; one silent for LOAD_TTL_S (it died) is forgotten, so that the load
# it last reported does not hold replicas up.
HEARTBEAT_S = 1.0
LOAD_TTL_S = 5.0


class Snapshot(BaseModel):
    """One version of what the owner publishes. Only bearer tokens are in it, as digests: an AWS key's secret is
    derived from the owner's key file, which does not leave its machine."""

    owner_url: str = ""
    admin_digest: str | None = None
    tokens: list[TokenRecord] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=list)


class Registry:
    """The detached actor that holds the latest snapshot (as JSON) and the data-plane servers' latest loads, and
    wakes the long polls of each when it changes."""

    def __init__(self, load_ttl_s: float = LOAD_TTL_S) -> None:
        self._version = 0
        self._snapshot = Snapshot().model_dump_json()
        self._changed = asyncio.Event()
        self._load_ttl_s = load_ttl_s
        self._reports: dict[str, tuple[float, dict[str, int]]] = {}  # server -> when it reported, its loads
        self._came: dict[str, float] = {}  # endpoint -> when a request last came to a data-plane server
        self._loads_version = 0
        self._loads_changed = asyncio.Event()

    async def publish(self, snapshot: str) -> int:
        self._version += 1
        self._snapshot = snapshot
        # Every waiter of this version wakes on this event; later ones wait on a new one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._version

    async def wait(self, version: int, timeout_s: float) -> tuple[int, str]:
        """The snapshot once its version is not `version` (at once if it is not already), or the same one after
        `timeout_s`."""
        if version == self._version:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout_s)
        return self._version, self._snapshot


    async def report(self, server: str, loads: dict[str, int], came: list[str]) -> None:
        """Data-plane server `server`'s load per endpoint now (requests in flight there and held there), and the
        endpoints a request came to since its last report (for the idle time before scaling to zero)."""
        now = time.monotonic()
        before = self._totals()
        self._reports[server] = (now, loads)
        for name in came:
            self._came[name] = now
        if came or self._totals() != before:
            self._loads_moved()

    async def wait_loads(self, version: int, timeout_s: float) -> tuple[int, dict[str, tuple[int, float]]]:
        """Each endpoint's load on every live data-plane server together and the seconds since a request came to
        one, once their version is not `version` (at once if it is not already), or as they are after
        `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._expire()
            now = time.monotonic()
            if version != self._loads_version or now >= deadline:
                break
            changed = self._loads_changed
            # Woken by a report, else when the next silent server is to be forgotten.
            until = min([deadline, *(at + self._load_ttl_s for at, _ in self._reports.values())])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), until - now)
        totals = self._totals()
        return self._loads_version, {name: (totals.get(name, 0), now - self._came.get(name, -math.inf))
                                     for name in totals.keys() | self._came.keys()}

    def _totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, loads in self._reports.values():
            for name, load in loads.items():
                if load:
                    totals[name] = totals.get(name, 0) + load
        return totals

    def _expire(self) -> None:
        now = time.monotonic()
        silent = [server for server, (at, _) in self._reports.items() if now - at >= self._load_ttl_s]
        if not silent:
            return
        before = self._totals()
        for server in silent:
            del self._reports[server]
        if self._totals() != before:
            self._loads_moved()

    def _loads_moved(self) -> None:
        self._loads_version += 1
        changed, self._loads_changed = self._loads_changed, asyncio.Event()
        changed.set()


# Detached: it outlives the servers, so a data-plane server may start before the owner and an owner may restart.
# It holds no CPU, so it fits on a head that runs nothing else.
RegistryActor = ray.remote(num_cpus=0, max_restarts=-1)(Registry)


def registry() -> Any:
    """The cluster's registry actor, created by whichever server asks first."""
    return RegistryActor.options(name=REGISTRY_NAME, namespace=NAMESPACE, lifetime="detached",
                                 get_if_exists=True).remote()


def owner_url(host: str, port: int) -> str:
    """Where clients reach the owner server: its address, or, when it listens on every address, the one Ray knows
    this machine by."""
    reachable = ray.util.get_node_ip_address() if host in WILDCARDS else host
    return f"http://{reachable}:{port}" if ":" not in reachable else f"http://[{reachable}]:{port}"


def snapshot_of(owner_url: str, admin_digest: str | None, tokens: Iterable[TokenRecord],
                endpoints: Iterable[Endpoint]) -> str:
    return Snapshot(owner_url=owner_url, admin_digest=admin_digest,
                    tokens=[t for t in tokens if t.kind == "bearer"], endpoints=list(endpoints)).model_dump_json()


class Publisher:
    """The owner's side: publishes `snapshot()` at start, after every `changed()` (a burst of changes, such as a
    deploy's status updates, as one version) and every REPUBLISH_S; and keeps the data-plane servers' latest load
    per endpoint (`remote_load`), which the autoscaler reads without waiting on Ray."""

    def __init__(self, snapshot: Callable[[], str]) -> None:
        self._snapshot = snapshot
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loads: dict[str, RemoteLoad] = {}

    def start(self) -> None:
        self._changed.set()
        actor = registry()
        self._tasks = [asyncio.ensure_future(self._run(actor)), asyncio.ensure_future(self._follow_loads(actor))]

    def changed(self) -> None:
        self._changed.set()

    def remote_load(self, name: str) -> RemoteLoad:
        return self._loads.get(name, NO_REMOTE_LOAD)

    async def _follow_loads(self, actor: Any) -> None:
        version = 0
        while True:
            try:
                version, loads = await actor.wait_loads.remote(version, POLL_TIMEOUT_S)
            except RayError as exc:
                log.warning("could not read the data-plane servers' load from the registry (%s); asking again", exc)
                self._loads = {}  # a load nobody confirms would hold replicas up
                await asyncio.sleep(REGISTRY_RETRY_S)
                continue
            self._loads = {name: self._followed(name, *loads.get(name, (0, math.inf)))
                           for name in loads.keys() | self._loads.keys()}

    def _followed(self, name: str, load: int, idle_s: float) -> RemoteLoad:
        """Requests in flight there, or ended since the last version, are activity now: the owner's samples stop
        while it starts replicas, and so do not see the requests held there for them."""
        previous, now = self.remote_load(name), time.monotonic()
        busy = load or previous.load
        return RemoteLoad(load, now if busy else max(now - idle_s, previous.last_request))

    async def _run(self, actor: Any) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REPUBLISH_S)
            self._changed.clear()
            try:
                await actor.publish.remote(self._snapshot())
            except RayError as exc:  # the next change tries again
                log.warning("could not publish the endpoints to the data plane's registry: %s", exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()


class LoadReporter:
    """A data-plane server's side: reports `loads()` (each endpoint's load here, and how many requests it has taken
    so far) when it changes, at most every REPORT_EVERY_S (at once after a quiet spell when told `changed()`), and
    every HEARTBEAT_S."""

    def __init__(self, loads: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self._loads = loads
        self.server = secrets.token_hex(8)  # a restarted server is a new one; the old one's load expires
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run(registry()))

    def changed(self) -> None:
        self._changed.set()

    async def _run(self, actor: Any) -> None:
        loop = asyncio.get_running_loop()
        sent: dict[str, tuple[int, int]] = {}
        sent_at = -math.inf
        while True:
            loads = self._loads()
            if loads == sent and loop.time() - sent_at < HEARTBEAT_S:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), REPORT_EVERY_S)
                continue
            came = [name for name, (_, taken) in loads.items() if taken != sent.get(name, (0, 0))[1]]
            try:
                await actor.report.remote(self.server, {name: load for name, (load, _) in loads.items()}, came)
            except RayError as exc:
                log.warning("could not report this server's load to the data plane's registry (%s); trying again",
                            exc)
                await asyncio.sleep(REGISTRY_RETRY_S)
                actor = registry()
                continue
            sent, sent_at = loads, loop.time()
            await asyncio.sleep(REPORT_EVERY_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
