"""Starting replica processes: forked from a warm zygote (torch already imported) for CPU replicas, or
spawned fresh (CUDA cannot survive a fork; some env is read only at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Protocol

from hubserve.channel import Channel, ChannelClosed
from hubserve.spec import EndpointSpec

log = logging.getLogger("hubserve.serving")

# Env that libraries read when they are imported: a replica that sets any of it must be spawned fresh.
IMPORT_TIME_ENV = ("HF_HUB_", "HF_HOME", "HF_ENDPOINT", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH", "PYTORCH_",
                   "OMP_", "MKL_", "CUDA_", "TOKENIZERS_", "SENTENCE_TRANSFORMERS_", "PYTHON")


class WorkerProcess(Protocol):
    pid: int

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class ForkedProcess:
    """A replica forked by the zygote: not our child, so its exit code comes from the zygote."""

    def __init__(self, pid: int, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self._exited = exited

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


def can_fork(spec: EndpointSpec) -> bool:
    if spec.device.startswith("cuda") or (spec.device == "auto" and Path("/dev/nvidiactl").exists()):
        return False
    return not any(name.startswith(IMPORT_TIME_ENV) for name in spec.env)


class Spawner:
    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._zygote: asyncio.subprocess.Process | None = None
        self._channel: Channel | None = None
        self._ready = asyncio.Event()
        self._tickets = itertools.count()
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def start_zygote(self) -> None:
        with open(self._log_path, "ab") as log_file:
            self._zygote = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubserve.worker.zygote", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log_file, start_new_session=True,
            )
        assert self._zygote.stdout is not None and self._zygote.stdin is not None
        self._channel = Channel(self._zygote.stdout, self._zygote.stdin)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._channel is not None
        while True:
            try:
                header, _ = await self._channel.receive()
            except ChannelClosed:
                break
            if header["op"] == "ready":
                self._ready.set()
            elif header["op"] == "forked":
                future = self._forks.pop(int(header["ticket"]), None)
                if future is not None and not future.done():
                    future.set_result(int(header["pid"]))
            elif header["op"] == "exited":
                self._exits.setdefault(int(header["pid"]), asyncio.get_running_loop().create_future())
                exit_future = self._exits[int(header["pid"])]
                if not exit_future.done():
                    exit_future.set_result(int(header["code"]))
        log.warning("the zygote exited; replicas will be spawned fresh")
        self._ready.clear()
        self._channel = None
        for future in self._exits.values():  # its children are orphans now: we cannot learn their codes
            if not future.done():
                future.set_result(-1)

    async def start(self, spec: EndpointSpec, env: dict[str, str], log_path: Path) -> WorkerProcess:
        if can_fork(spec) and self._channel is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 60)
            if self._ready.is_set():
                return await self._fork(env, log_path)
        return await self._spawn(env, log_path)

    async def _fork(self, env: dict[str, str], log_path: Path) -> WorkerProcess:
        assert self._channel is not None
        ticket = next(self._tickets)
        loop = asyncio.get_running_loop()
        self._forks[ticket] = loop.create_future()
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
        async with self._lock:
            await self._channel.send({"op": "fork", "ticket": ticket, "env": changed, "log": str(log_path)})
        pid = await self._forks[ticket]
        exited = self._exits.setdefault(pid, loop.create_future())
        return ForkedProcess(pid, exited)

    @staticmethod
    async def _spawn(env: dict[str, str], log_path: Path) -> WorkerProcess:
        with open(log_path, "ab") as log_file:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubserve.worker", env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )

    async def close(self) -> None:
        if self._zygote is not None and self._zygote.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._zygote.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._zygote.wait(), 10)
        if self._reader is not None:
            self._reader.cancel()
