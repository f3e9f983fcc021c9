"""One replica: a worker process that holds the model, and the channel to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from hubserve.channel import Channel, ChannelClosed
from hubserve.errors import HubserveError, InvocationTimeout, ModelError, error_from_dict
from hubserve.invocation import InvocationRequest, InvocationResult
from hubserve.serving.hub import WorkerHub
from hubserve.spec import EndpointSpec
from hubserve.worker.config import CONFIG_ENV, WorkerConfig

log = logging.getLogger("hubserve.serving")


class ReplicaState(StrEnum):
    starting = "starting"
    ready = "ready"
    failed = "failed"  # could not load the model
    exited = "exited"  # the process ended after it was ready, or was stopped


class Replica:
    def __init__(self, replica_id: str, spec: EndpointSpec, hub: WorkerHub, log_path: Path,
                 models_dir: Path, on_change: Callable[[Replica], None]) -> None:
        self.id = replica_id
        self.spec = spec
        self.secret = secrets.token_hex(16)
        self.state = ReplicaState.starting
        self.failure: str | None = None
        self.task: str | None = None
        self.pid: int | None = None
        self.in_flight = 0
        self.stopping = False
        self._hub = hub
        self._log_path = log_path
        self._models_dir = models_dir
        self._on_change = on_change
        self._process: asyncio.subprocess.Process | None = None
        self._channel: Channel | None = None
        self._pending: dict[int, asyncio.Future[InvocationResult]] = {}
        self._next_id = 0
        self._settled = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        config = WorkerConfig(replica_id=self.id, spec=self.spec, host=self._hub.host, port=self._hub.port,
                              secret=self.secret, models_dir=str(self._models_dir))
        env = {**os.environ, **self.spec.env, CONFIG_ENV: config.model_dump_json(),
               "PYTHONUNBUFFERED": "1"}
        self._hub.expect(self.id, self)
        with open(self._log_path, "ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubserve.worker", env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        self.pid = self._process.pid
        self._spawn(self._watch_process())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def attach(self, channel: Channel, pid: int) -> None:
        self._channel = channel
        self._spawn(self._read_loop(channel))

    async def wait_settled(self) -> None:
        """Until the replica is ready, failed, or gone."""
        await self._settled.wait()

    async def _read_loop(self, channel: Channel) -> None:
        while True:
            try:
                header, body = await channel.receive()
            except ChannelClosed:
                return
            op = header.get("op")
            if op == "state":
                self._set_state(header)
            elif op in ("result", "error"):
                future = self._pending.pop(int(header["id"]), None)
                if future is None or future.done():
                    continue
                if op == "result":
                    future.set_result(InvocationResult(body=body, content_type=str(header["content_type"])))
                else:
                    future.set_exception(error_from_dict(header["error"]))

    def _set_state(self, header: dict[str, object]) -> None:
        if header.get("state") == "ready":
            self.state = ReplicaState.ready
            self.task = str(header.get("task"))
        elif header.get("state") == "failed":
            self.state = ReplicaState.failed
            self.failure = str(header.get("message"))
        self._settled.set()
        self._on_change(self)

    async def _watch_process(self) -> None:
        assert self._process is not None
        code = await self._process.wait()
        self._hub.forget(self.id)
        if self.state == ReplicaState.starting:
            self.state = ReplicaState.failed
            self.failure = self.failure or f"the worker process exited with code {code} while loading"
        elif self.state == ReplicaState.ready:
            self.state = ReplicaState.exited
            if not self.stopping:
                self.failure = f"the worker process exited with code {code}"
        lost = ModelError(f"the replica's worker process exited (code {code}) during the request")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        self._pending.clear()
        if self._channel is not None:
            self._channel.close()
        self._settled.set()
        self._on_change(self)

    @property
    def ready(self) -> bool:
        return self.state == ReplicaState.ready and not self.stopping

    async def invoke(self, request: InvocationRequest, timeout: float) -> InvocationResult:
        if self._channel is None or not self.ready:
            raise HubserveError("replica is not ready")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[InvocationResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.in_flight += 1
        try:
            await self._channel.send({"op": "invoke", "id": request_id, **request.header()}, request.body)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            await self._cancel(request_id)
            raise InvocationTimeout(
                f"the model did not answer within the endpoint's timeout of {timeout:g} s") from None
        except asyncio.CancelledError:
            await self._cancel(request_id)
            raise
        except ChannelClosed as exc:
            raise ModelError("the replica's worker process went away during the request") from exc
        finally:
            self.in_flight -= 1
            self._pending.pop(request_id, None)

    async def _cancel(self, request_id: int) -> None:
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed):
                await self._channel.send({"op": "cancel", "id": request_id})

    async def stop(self, drain_timeout: float) -> None:
        """Let in-flight requests finish (up to `drain_timeout`), then end the process."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed):
                await self._channel.send({"op": "stop"})
        await self._terminate(grace=5.0)

    async def _terminate(self, grace: float) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            await asyncio.wait_for(process.wait(), grace)
            return
        except TimeoutError:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(process.wait(), grace)
                return
            except TimeoutError:
                continue
