"""Starting replica processes: forked from a warm zygote (torch already imported) for CPU replicas, or
spawned fresh (CUDA cannot survive a fork; some env is read only at import time; the zygote is down)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Protocol

from hubserve.serving.zygote import Zygote
from hubserve.spec import EndpointSpec

# Env that libraries read when they are imported: a replica that sets any of it must be spawned fresh.
IMPORT_TIME_ENV = ("HF_HUB_", "HF_HOME", "HF_ENDPOINT", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_",
                   "OMP_", "MKL_", "CUDA_", "TOKENIZERS_", "SENTENCE_TRANSFORMERS_", "PYTHON")
# The server's own settings (the admin token among them): model code must never see them.
SERVER_ENV_PREFIX = "HUBSERVE_"


class WorkerProcess(Protocol):
    pid: int

    async def wait(self) -> int | None:
        """Until the process ends; its exit code, None where it cannot be known."""
        ...

    def send_signal(self, sig: int) -> None: ...


class ReplicaSpawner(Protocol):
    """How replicas are placed: `Spawner` on this machine, `RaySpawner` (ray_placement.py) on a Ray cluster."""

    async def start(self, spec: EndpointSpec, env: dict[str, str], log_path: Path) -> WorkerProcess: ...

    def threads(self, spec: EndpointSpec) -> int | None:
        """The threads a replica of `spec` runs its model with where it is placed; None: as many as the machine's
        cores shared among the endpoint's replicas (the worker counts them)."""
        ...

    async def close(self) -> None: ...


def inherited_env() -> dict[str, str]:
    """What worker processes (and the zygote) inherit from the server: its env without its own settings."""
    return {name: value for name, value in os.environ.items() if not name.startswith(SERVER_ENV_PREFIX)}


def can_fork(spec: EndpointSpec) -> bool:
    if spec.device.startswith("cuda") or (spec.device == "auto" and Path("/dev/nvidiactl").exists()):
        return False
    return not any(name.startswith(IMPORT_TIME_ENV) for name in spec.env)


class Spawner:
    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._zygote: Zygote | None = None

    def threads(self, spec: EndpointSpec) -> int | None:
        return None  # replicas on this machine share its cores

    def start_zygote(self) -> None:
        """Keep a zygote running from now on, for `start` to fork from."""
        self._zygote = Zygote(self._log_path, inherited_env())
        self._zygote.start()

    async def start(self, spec: EndpointSpec, env: dict[str, str], log_path: Path) -> WorkerProcess:
        """A worker process with the replica's `env` over what workers inherit from the server, writing to
        `log_path`."""
        env = {**inherited_env(), **env}
        if self._zygote is not None and can_fork(spec):
            forked = await self._zygote.fork(env, log_path)
            if forked is not None:
                return forked
        return await self._spawn(env, log_path)

    @staticmethod
    async def _spawn(env: dict[str, str], log_path: Path) -> WorkerProcess:
        with open(log_path, "ab") as log_file:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubserve.worker", env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )

    async def close(self) -> None:
        if self._zygote is not None:
            await self._zygote.close()
