"""What the data plane needs to know, shared on a Ray cluster through one named detached actor: the owner server
publishes versioned snapshots of its endpoints (spec with secrets masked, status, replicas) and of its bearer
tokens' digests; data-plane servers long-poll them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import ray
from pydantic import BaseModel, Field
from ray.exceptions import RayError

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


class Snapshot(BaseModel):
    """One version of what the owner publishes. Only bearer tokens are in it, as digests: an AWS key's secret is
    derived from the owner's key file, which does not leave its machine."""

    owner_url: str = ""
    admin_digest: str | None = None
    tokens: list[TokenRecord] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=list)


class Registry:
    """The detached actor that holds the latest snapshot (as JSON) and wakes the long polls when it changes."""

    def __init__(self) -> None:
        self._version = 0
        self._snapshot = Snapshot().model_dump_json()
        self._changed = asyncio.Event()

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
    deploy's status updates, as one version) and every REPUBLISH_S."""

    def __init__(self, snapshot: Callable[[], str]) -> None:
        self._snapshot = snapshot
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._changed.set()
        self._task = asyncio.ensure_future(self._run(registry()))

    def changed(self) -> None:
        self._changed.set()

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
        if self._task is not None:
            self._task.cancel()
