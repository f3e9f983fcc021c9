"""Replicas placed on a Ray cluster: each worker process runs under a Ray actor on whichever node Ray picks for the
replica's resources. The worker connects to the actor's relay (ray_relay.py) as a local one connects to the server's
worker hub, and the relay carries its channel to this server and to any data-plane server. What runs inside the
worker, and the protocol on its channel, are the same as on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import ray
from ray.exceptions import NodeDiedError, RayActorError, RayError, RayTaskError, WorkerCrashedError

from hubserve.serving.ray_relay import Relay
from hubserve.serving.ray_shipping import ModelShipper, Shipment, ShippingFailed, is_shipped, unpack
from hubserve.serving.spawner import WorkerProcess, inherited_env
from hubserve.sources import ArchiveLimits
from hubserve.spec import EndpointSpec, ResourcesSpec
from hubserve.worker.config import CONFIG_ENV, WorkerConfig

log = logging.getLogger("hubserve.serving")

NAMESPACE = "hubserve"
PR_SET_PDEATHSIG = 1
# A replica's output reaches the endpoint's log within LOG_POLL_S of being written; an idle replica costs one call
# to its actor every LOG_WAIT_S.
LOG_POLL_S = 0.1
LOG_WAIT_S = 5.0
LOG_READ_BYTES = 1 << 20
# A replica whose actor is lost while being placed (its node died before Ray noticed) is placed again, as many times
# in all; each new one waits up to NAME_RELEASE_S for Ray to release the dead one's name.
PLACEMENT_ATTEMPTS = 3
NAME_RELEASE_S = 30.0


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


def replica_threads(resources: ResourcesSpec | None) -> int:
    """The threads a replica runs its model with: the CPUs it asked Ray for, as Ray sizes OMP_NUM_THREADS (at least
    one; a fraction rounds down), not the cores of the node it shares with other replicas."""
    return max(1, math.floor((resources or ResourcesSpec()).cpus))


def _die_with_actor() -> None:
    """In the worker, before it runs: die when the actor does (the actor killed, its node gone), so that a worker
    never outlives the resources Ray reserved for it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ReplicaHost:
    """The actor that holds one replica's worker process on its node."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._relay: Relay | None = None
        self._log: IO[bytes] | None = None

    async def start(self, env: dict[str, str]) -> tuple[int, str]:
        """Start the worker with the replica's `env` over this node's; its pid and this node's id. Its output goes
        to a file on this node that no path names (it goes with the actor), which the server copies into the
        endpoint's log through `read_log`."""
        env = await self._open_relay(env)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (open for the actor's life, as the worker writes)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hubserve.worker", env={**inherited_env(), **env},
            stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_actor,
        )
        return self._process.pid, ray.get_runtime_context().get_node_id()

    async def read_log(self, offset: int, wait_s: float) -> tuple[bytes, bool]:
        """The worker's output from byte `offset` on (up to LOG_READ_BYTES), as soon as there is some or after
        `wait_s`; and whether the worker has ended, so that an empty answer then means all of it was read."""
        assert self._process is not None and self._log is not None
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            ended = self._process.returncode is not None  # before the size: what it wrote before it ended counts
            size = os.fstat(self._log.fileno()).st_size
            if size > offset or ended or asyncio.get_running_loop().time() >= deadline:
                return os.pread(self._log.fileno(), min(size - offset, LOG_READ_BYTES), offset), ended
            await asyncio.sleep(LOG_POLL_S)

    async def receive(self, shipment: Shipment, models_dir: str, endpoint: str) -> str:
        """The folder of this node's model cache where the shipped model is (unpacked now unless it already was)."""
        return str(await asyncio.to_thread(unpack, shipment, Path(models_dir), endpoint))

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def signal(self, sig: int) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    async def _open_relay(self, env: dict[str, str]) -> dict[str, str]:
        """The replica's env with its worker sent to this actor's relay, which dials the hub the config named."""
        config = WorkerConfig.model_validate_json(env[CONFIG_ENV])
        self._relay = Relay(config.replica_id, (config.host, config.port, config.secret))
        host, port = await self._relay.listen()
        relayed = config.model_copy(update={"host": host, "port": port, "secret": self._relay.secret, "line": None})
        return {**env, CONFIG_ENV: relayed.model_dump_json()}

    async def attach(self, host: str, port: int, secret: str) -> None:
        """Carry the worker's channel also to the hub at `host:port` (a data-plane server's), presenting `secret`.
        Raises ConnectionError when the worker is not connected (not yet, or no more)."""
        if self._relay is None:
            raise ConnectionError("the replica's worker has not started")
        await self._relay.add_server(host, port, secret)


def ray_reason(exc: RayError) -> str:
    """What went wrong in a Ray call, in a line: the exception an actor raised (not Ray's copy of its traceback),
    or Ray's own error."""
    cause = exc.cause if isinstance(exc, RayTaskError) else None
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)


# Ray restarts nothing: a replica that dies is replaced by its replica set, through a new actor on a live node.
ReplicaHostActor = ray.remote(max_restarts=0)(ReplicaHost)


class RayWorkerProcess:
    """A worker process under a `ReplicaHost` actor, as `Replica` watches any worker process. The actor's death (it
    was killed, or its node is gone) is the process's end; the actor is killed once the process ends, freeing what
    Ray reserved for it. The worker's output is copied into the endpoint's log at `log_path` as it comes, and all of
    it by the time `wait` returns (for the error a worker that died while loading left there)."""

    def __init__(self, host: Any, pid: int, node: str, log_path: Path) -> None:
        self.pid = pid
        self.node = node
        self._host = host
        self._copying = asyncio.ensure_future(self._copy_log(log_path))
        self._ended = asyncio.ensure_future(self._watch(host.wait.remote()))

    async def _watch(self, waiting: Any) -> int | None:
        try:
            code: int = await waiting
            return code
        except RayError as exc:
            log.warning("the Ray actor of worker %d on node %s is gone: %s", self.pid, self.node, type(exc).__name__)
            return None
        finally:
            await self._copying
            ray.kill(self._host, no_restart=True)

    async def _copy_log(self, log_path: Path) -> None:
        """Append the worker's output to the endpoint's log, whole lines at a time (the endpoint's other replicas
        write there too), until the worker has ended and all it wrote is there, or its actor is gone."""
        offset, partial = 0, b""
        with contextlib.suppress(RayError):  # the actor is gone, with what it had not passed on yet
            while True:
                data, ended = await self._host.read_log.remote(offset, LOG_WAIT_S)
                offset += len(data)
                lines, newline, partial = (partial + data).rpartition(b"\n")
                _append(log_path, lines + newline)
                if ended and not data:
                    break
        _append(log_path, partial)

    async def wait(self) -> int | None:
        """Until the process ends; its exit code, or None when its actor or node died with it."""
        return await asyncio.shield(self._ended)

    def send_signal(self, sig: int) -> None:
        if self._ended.done():
            raise ProcessLookupError(self.pid)
        self._host.signal.remote(sig)


def lost_in_placement(exc: RayError) -> bool:
    """Whether the actor, rather than what it ran, failed: its node or process died (it may live on another
    node), as opposed to the start or unpack it ran raising (which would raise again)."""
    return isinstance(exc, RayActorError | NodeDiedError | WorkerCrashedError) and not isinstance(exc, RayTaskError)


async def _name_released(name: str) -> None:
    """Until Ray has let go of the name of a replica's dead actor, so that its next one can take it (data-plane
    servers find a replica's actor by the replica's id): Ray releases it once it has marked the actor dead."""
    deadline = asyncio.get_running_loop().time() + NAME_RELEASE_S
    while asyncio.get_running_loop().time() < deadline:
        try:
            await asyncio.to_thread(ray.get_actor, name)  # in this server's namespace, where it named it
        except ValueError:
            return
        await asyncio.sleep(LOG_POLL_S)


def _replica_id(env: dict[str, str]) -> str:
    """The replica's id, which names its actor: data-plane servers find the actor by it (data_plane.py)."""
    return WorkerConfig.model_validate_json(env[CONFIG_ENV]).replica_id


def _append(log_path: Path, data: bytes) -> None:
    """Add `data` to the log; a log that cannot take it (its disk is full) loses it, and the replica runs on."""
    if not data:
        return
    try:
        with open(log_path, "ab") as handle:
            handle.write(data)
    except OSError as exc:
        log.warning("could not copy a Ray worker's output to %s: %s", log_path, exc)


class RaySpawner:
    """Starts replicas as `ReplicaHost` actors on the Ray cluster at `address` (`auto`: the one this machine is
    part of). Actors belong to this server: Ray ends them, and so their workers, if the server goes away."""

    def __init__(self, address: str, models_dir: Path, archive_limits: ArchiveLimits) -> None:
        self._address = address
        self._models_dir = models_dir
        self._shipper = ModelShipper(models_dir, archive_limits)

    def connect(self) -> str:
        """Join the cluster; the address Ray knows this machine by (where other nodes can reach it)."""
        ray.init(address=self._address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        address: str = ray.util.get_node_ip_address()
        return address

    async def start(self, spec: EndpointSpec, env: dict[str, str], log_path: Path) -> WorkerProcess:
        """A worker on the node Ray places it on; waits while no node has room for it (Ray's autoscaler may add
        one). A model the node cannot fetch itself is shipped to it first. An actor lost while it was being placed
        (its node died before Ray knew) is placed again, up to PLACEMENT_ATTEMPTS times in all."""
        try:
            shipment = await self.shipment(spec)
        except ShippingFailed as exc:  # as a local spawn fails: the replica fails with the reason
            raise OSError(str(exc)) from exc
        # Ray gives the actor OMP_NUM_THREADS for its CPUs unless the node's env sets one: the worker's OpenMP and
        # BLAS users get the replica's share either way (the spec's env may still say otherwise).
        env = {"OMP_NUM_THREADS": str(self.threads(spec)), **env}
        name = _replica_id(env)
        for attempt in range(1, PLACEMENT_ATTEMPTS + 1):
            try:
                return await self._place(spec, env, shipment, name, log_path)
            except RayError as exc:
                if not lost_in_placement(exc) or attempt == PLACEMENT_ATTEMPTS:
                    raise OSError(f"its Ray actor failed: {ray_reason(exc)}") from exc
                log.warning("replica %s of endpoint %s: its Ray actor was lost while being placed (%s); placing it "
                            "again", name, spec.name, type(exc).__name__)
                await _name_released(name)
        raise AssertionError("unreachable")

    async def _place(self, spec: EndpointSpec, env: dict[str, str], shipment: Shipment | None, name: str,
                     log_path: Path) -> WorkerProcess:
        # Ray types a handle's methods only where they are declared with @ray.method: this one's are plain.
        try:
            host: Any = ReplicaHostActor.options(**actor_options(spec.resources), name=name).remote()
        except ValueError as exc:  # the name is still taken (by a lost actor Ray has not let go of)
            raise OSError(f"its Ray actor could not be created: {exc}") from exc
        try:
            if shipment is not None:
                try:
                    folder = await host.receive.remote(shipment, str(self._models_dir), spec.name)
                except RayTaskError as exc:
                    raise OSError(f"its model could not be unpacked on its Ray node: {ray_reason(exc)}") from exc
                env = shipment.worker_env(env, folder)
            pid, node = await host.start.remote(env)
        except BaseException:
            ray.kill(host, no_restart=True)
            raise
        return RayWorkerProcess(host, pid, node, log_path)

    def threads(self, spec: EndpointSpec) -> int:
        return replica_threads(spec.resources)

    async def shipment(self, spec: EndpointSpec) -> Shipment | None:
        """What a node gets `spec`'s model from when it cannot fetch it itself (shipped once per content); None when
        it can. ShippingFailed says why a model cannot be shipped."""
        return await self._shipper.ship(spec) if is_shipped(spec) else None

    async def close(self) -> None:
        ray.shutdown()
