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

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"
