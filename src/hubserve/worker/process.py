"""The replica process: connect back to the server, load the model, then serve invocations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import traceback

import uvloop

from hubserve.channel import Channel, ChannelClosed, FrameLimits, Preamble, ThreadedChannel
from hubserve.errors import HubserveError, ModelError
from hubserve.invocation import InvocationRequest
from hubserve.spec import MAX_PAYLOAD_BYTES
from hubserve.worker.backends import check_backend
from hubserve.worker.config import CONFIG_ENV, WorkerConfig
from hubserve.worker.engine import Engine
from hubserve.worker.generation.direct import ChunkSink
from hubserve.worker.torch_threads import on_passing_thread

log = logging.getLogger("hubserve.worker")

# Request headers carry content types and protocol attributes (HTTP header values): kilobytes.
REQUEST_HEADER_LIMIT = 1 << 20


class ReplicaServer:
    """Reads requests from the channel and answers them; the model runs off the event loop."""

    def __init__(self, config: WorkerConfig, channel: Channel) -> None:
        self.config = config
        self.channel = channel
        self.engine: Engine | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def run(self) -> int:
        try:
            self.engine = await on_passing_thread(Engine.load, self.config)
            model = self.engine.model
            if model is not None:
                check_backend(model.adapter)
        except Exception as exc:  # any load failure fails the endpoint with its reason
            traceback.print_exc()
            await self.channel.send({"op": "state", "state": "failed", "message": _describe(exc)})
            return 3
        self.engine.start()
        backend = model.backend if model is not None else None
        note = model.backend_note if model is not None else None
        dtype = model.backend_dtype if model is not None else None
        await self.channel.send({"op": "state", "state": "ready", "task": self.engine.task, "backend": backend,
                                 "backend_note": note, "dtype": dtype})
        log.info("replica %s ready (task %s on %s)", self.config.replica_id, self.engine.task, backend or "custom code")
        return await self._serve()

    async def _serve(self) -> int:
        assert self.engine is not None
        while True:
            try:
                header, body = await self.channel.receive()
            except ChannelClosed:
                log.info("server went away; exiting")
                return 0
            op = header.get("op")
            if op == "invoke":
                request_id = int(header["id"])
                request = InvocationRequest.from_header(header, body)
                work = self._stream(request_id, request) if request.stream else self._invoke(request_id, request)
                task = asyncio.create_task(work)
                self.tasks[request_id] = task
                task.add_done_callback(functools.partial(self._forget, request_id))
            elif op == "stats":
                await self._reply({"op": "stats", "id": header["id"], "stats": self.engine.stats()})
            elif op == "cancel":
                running = self.tasks.get(int(header["id"]))
                if running is not None:
                    running.cancel()
            elif op == "stop":
                if self.tasks:
                    await asyncio.wait(list(self.tasks.values()))
                return 0

    def _forget(self, request_id: int, _task: asyncio.Task[None]) -> None:
        self.tasks.pop(request_id, None)

    async def _invoke(self, request_id: int, request: InvocationRequest) -> None:
        assert self.engine is not None
        try:
            result = await self.engine.invoke(request)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            await self._fail(request_id, exc)
            return
        await self._reply({"op": "result", "id": request_id, "content_type": result.content_type}, result.body)

    async def _stream(self, request_id: int, request: InvocationRequest) -> None:
        assert self.engine is not None
        # Generation may write this stream's token frames itself (see generation.direct).
        sink = ChunkSink(self.channel, request_id) if isinstance(self.channel, ThreadedChannel) else None
        try:
            # Closed at once when cancelled.
            async with contextlib.aclosing(self.engine.stream(request, sink)) as events:
                async for event in events:
                    body = event if isinstance(event, bytes) else json.dumps(event).encode()
                    await self._reply({"op": "chunk", "id": request_id}, body)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            await self._fail(request_id, exc)
            return
        await self._reply({"op": "end", "id": request_id})

    async def _fail(self, request_id: int, exc: Exception) -> None:
        if not isinstance(exc, HubserveError):  # the engine maps model failures; this is a last guard
            traceback.print_exc()
            exc = ModelError(_describe(exc))
        await self._reply({"op": "error", "id": request_id, "error": exc.to_dict()})

    async def _reply(self, header: dict[str, object], body: bytes = b"") -> None:
        with contextlib.suppress(ChannelClosed):
            await self.channel.send(header, body)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, HubserveError) else exc.message


async def _amain(config: WorkerConfig) -> int:
    preamble = Preamble(replica_id=config.replica_id, secret=config.secret.encode(), pid=os.getpid())
    # A request body is at most the endpoint's max_payload_bytes, but an update may raise that without restarting
    # this replica: bodies are held to the most any endpoint may take.
    limits = FrameLimits(header=REQUEST_HEADER_LIMIT, body=MAX_PAYLOAD_BYTES)
    channel = await ThreadedChannel.connect(config.host, config.port, preamble, limits)
    log.info("replica %s connected to the server's worker hub at %s:%d", config.replica_id, config.host, config.port)
    try:
        return await ReplicaServer(config, channel).run()
    finally:
        channel.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    # Out of the env once read: it holds the hub secret, which pip and the model's code need not inherit.
    config = WorkerConfig.model_validate_json(os.environ.pop(CONFIG_ENV))
    # The server stops replicas over the channel; a terminal's Ctrl-C is the server's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(_amain(config)))
