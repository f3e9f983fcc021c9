"""Replicas placed on a Ray cluster: each worker process runs under a Ray actor on whichever node Ray picks for the
replica's resources, and connects back to this server's worker hub as a local one does. The actor only places and
watches the process: what runs inside it, and the channel to it, are the same as on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError

from hubserve.serving.spawner import WorkerProcess, inherited_env
from hubserve.spec import EndpointSpec, ResourcesSpec

log = logging.getLogger("hubserve.serving")

NAMESPACE = "hubserve"
PR_SET_PDEATHSIG = 1


def resource_options(resources: ResourcesSpec | None) -> dict[str, Any]:
    """Ray's options for what a replica (or a job's actor) asks for: one CPU when the spec says nothing."""
    wanted = resources or ResourcesSpec()
    options: dict[str, Any] = {"num_cpus": wanted.cpus, "num_gpus": wanted.gpus}
    if wanted.memory is not None:
        options["memory"] = wanted.memory
    if wanted.accelerator_type is not None:
        options["accelerator_type"] = wanted.accelerator_type
    return options


def actor_options(resources: ResourcesSpec | None) -> dict[str, Any]:
    """A replica's actor options: what it asks for, spread over the nodes."""
    # Ray's default packs actors onto one node until it is half full: an endpoint's (or a job's) replicas would
    # share a machine's memory bandwidth and die with it. Spread, as Ray Serve places its replicas (and as Ray Data
    # places its actor pools by default).
    return {**resource_options(resources), "scheduling_strategy": "SPREAD"}


def _die_with_actor() -> None:
    """In the worker, before it runs: die when the actor does (the actor killed, its node gone), so that a worker
    never outlives the resources Ray reserved for it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ReplicaHost:
    """The actor that holds one replica's worker process on its node."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, env: dict[str, str], log_path: str) -> tuple[int, str]:
        """Start the worker with the replica's `env` over this node's; its pid and this node's id."""
        # On the server's machine (or a shared filesystem) this is the endpoint's log; elsewhere the same path on
        # this node.
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubserve.worker", env={**inherited_env(), **env},
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_actor,
            )
        return self._process.pid, ray.get_runtime_context().get_node_id()

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def signal(self, sig: int) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)


# Ray restarts nothing: a replica that dies is replaced by its replica set, through a new actor on a live node.
ReplicaHostActor = ray.remote(max_restarts=0)(ReplicaHost)


class RayWorkerProcess:
    """A worker process under a `ReplicaHost` actor, as `Replica` watches any worker process. The actor's death (it
    was killed, or its node is gone) is the process's end; the actor is killed once the process ends, freeing what
    Ray reserved for it."""

    def __init__(self, host: Any, pid: int, node: str) -> None:
        self.pid = pid
        self.node = node
        self._host = host
        self._ended = asyncio.ensure_future(self._watch(host.wait.remote()))

    async def _watch(self, waiting: Any) -> int | None:
        try:
            code: int = await waiting
            return code
        except RayError as exc:
            log.warning("the Ray actor of worker %d on node %s is gone: %s", self.pid, self.node, type(exc).__name__)
            return None
        finally:
            ray.kill(self._host, no_restart=True)

    async def wait(self) -> int | None:
        """Until the process ends; its exit code, or None when its actor or node died with it."""
        return await asyncio.shield(self._ended)

    def send_signal(self, sig: int) -> None:
        if self._ended.done():
            raise ProcessLookupError(self.pid)
        self._host.signal.remote(sig)


class RaySpawner:
    """Starts replicas as `ReplicaHost` actors on the Ray cluster at `address` (`auto`: the one this machine is
    part of). Actors belong to this server: Ray ends them, and so their workers, if the server goes away."""

    def __init__(self, address: str) -> None:
        self._address = address

    def connect(self) -> str:
        """Join the cluster; the address Ray knows this machine by (where other nodes can reach it)."""
        ray.init(address=self._address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        address: str = ray.util.get_node_ip_address()
        return address

    async def start(self, spec: EndpointSpec, env: dict[str, str], log_path: Path) -> WorkerProcess:
        """A worker on the node Ray places it on; waits while no node has room for it (Ray's autoscaler may add
        one)."""
        # Ray types a handle's methods only where they are declared with @ray.method: this one's are plain.
        host: Any = ReplicaHostActor.options(**actor_options(spec.resources)).remote()
        try:
            pid, node = await host.start.remote(env, str(log_path))
        except BaseException as exc:
            ray.kill(host, no_restart=True)
            if isinstance(exc, RayError):  # as a local spawn fails: the replica fails with the reason
                raise OSError(f"its Ray actor failed: {exc}") from exc
            raise
        return RayWorkerProcess(host, pid, node)

    async def close(self) -> None:
        ray.shutdown()
