"""What every endpoint and replica needs from the server around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hubserve.serving.hub import WorkerHub
from hubserve.serving.spawner import ReplicaSpawner
from hubserve.sources import ArchiveLimits
from hubserve.spec import EndpointSpec, EndpointStatus


def admit_any(_name: str, _adding: int) -> str | None:
    return None


@dataclass(frozen=True)
class RemoteLoad:
    """An endpoint's load on the cluster's data-plane servers, as this server last heard it."""

    load: int = 0  # requests in flight there, plus the requests they hold for a replica
    last_request: float = float("-inf")  # when one last came there, on this server's monotonic clock


NO_REMOTE_LOAD = RemoteLoad()


def no_remote_load(_name: str) -> RemoteLoad:
    return NO_REMOTE_LOAD


@dataclass
class ServingContext:
    hub: WorkerHub
    spawner: ReplicaSpawner
    logs_dir: Path
    models_dir: Path
    drain_timeout_s: float
    save: Callable[[EndpointSpec, EndpointStatus], None]
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    # Why endpoint `name` may not start `adding` more replicas now (the server's replica cap, its memory budget),
    # or None when it may.
    admit: Callable[[str, int], str | None] = admit_any
    # Endpoint `name`'s load elsewhere in the cluster (an owner server on Ray: its data-plane servers' requests),
    # which the autoscaler counts with the load here.
    remote_load: Callable[[str], RemoteLoad] = no_remote_load

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"
