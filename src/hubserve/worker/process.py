"""The replica process: connect back to the server, load the model, then serve invocations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import sys
import traceback

import orjson
import uvloop

from hubserve.channel import Channel, ChannelClosed, FrameLimits, Preamble, ThreadedChannel
from hubserve.errors import HubserveError, ModelError
from hubserve.invocation import InvocationRequest
from hubserve.spec import MAX_PAYLOAD_BYTES
from hubserve.worker.backends import check_backend
from hubserve.worker.config import CONFIG_ENV, WorkerConfig
from hubserve.worker.engine import Engine
from hubserve.worker.generation.direct import ChunkSink, Handoff
from hubserve.worker.torch_threads import on_passing_thread

log = logging.getLogger("hubserve.worker")

# Request headers carry content types and protocol attributes (HTTP header values): kilobytes.
REQUEST_HEADER_LIMIT = 1 << 20


class ReplicaServer:
    """Reads requests from the channel and answers them; the model runs off the event loop."""

    def __init__(self, config: WorkerConfig, channel: Channel, line: socket.socket | None = None) -> None:
        self.config = config
        self.channel = channel
        self.engine: Engine | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}
        # The server's line (`WorkerHub`): client connections of streams we may write to ourselves, by request id.
        self.line = line
        self.handoffs: dict[int, Handoff] = {}
        self.handed_off = 0  # streams whose client connection the server handed over

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
        if self.line is not None:
            asyncio.get_running_loop().add_reader(self.line.fileno(), self._read_line)
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
                work = (self._stream(request_id, request, bool(header.get("handoff"))) if request.stream
                        else self._invoke(request_id, request))
                task = asyncio.create_task(work)
                self.tasks[request_id] = task
                task.add_done_callback(functools.partial(self._forget, request_id))
            elif op == "stats":
                stats = {**self.engine.stats(), "streams_handed_off": self.handed_off}
                await self._reply({"op": "stats", "id": header["id"], "stats": stats})
            elif op == "keep":
                handoff = self.handoffs.get(int(header["id"]))
                if handoff is not None:
                    handoff.keep()
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

    def _read_line(self) -> None:
        """A client connection from the server (a message naming the stream, and its descriptor)."""
        assert self.line is not None
        try:
            message, fds, _flags, _address = socket.recv_fds(self.line, 4096, 4)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not message:  # the server closed it: streams go through the channel from now on
            asyncio.get_running_loop().remove_reader(self.line.fileno())
            self.line.close()
            self.line = None
            return
        handoff = None
        try:
            header = orjson.loads(message)
            handoff = self.handoffs.get(int(header["id"]))
            prefix, suffix = str(header["prefix"]).encode("latin-1"), str(header["suffix"]).encode("latin-1")
        except (ValueError, KeyError, TypeError):
            log.warning("the server's line sent what is not a stream's connection: %r", message[:200])
            handoff = None
        if handoff is None or len(fds) != 1:  # that stream ended, or was cancelled, meanwhile
            for fd in fds:
                os.close(fd)
            if handoff is not None:
                handoff.keep()
            return
        self.handed_off += 1
        handoff.grant(fds[0], prefix, suffix)

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

    async def _stream(self, request_id: int, request: InvocationRequest, handoff: bool = False) -> None:
        assert self.engine is not None
        # Generation may write this stream's token frames itself (see generation.direct), and the events after the
        # first to the client, if the server hands its connection over.
        sink = None
        if isinstance(self.channel, ThreadedChannel):
            held = Handoff(self.channel, request_id) if handoff and self.line is not None else None
            if held is not None:
                self.handoffs[request_id] = held
            sink = ChunkSink(self.channel, request_id, held)
        try:
            # Closed at once when cancelled.
            async with contextlib.aclosing(self.engine.stream(request, sink)) as events:
                async for event in events:
                    if sink is not None and sink.handoff is not None:  # what the client was sent comes first
                        await sink.handoff.finish()
                    body = event if isinstance(event, bytes) else json.dumps(event).encode()
                    await self._reply({"op": "chunk", "id": request_id}, body)
            if sink is not None and sink.handoff is not None:
                await sink.handoff.finish()
        except asyncio.CancelledError:
            return
        except Exception as exc:
            if sink is not None and sink.handoff is not None:
                await sink.handoff.finish()
            await self._fail(request_id, exc)
            return
        finally:
            if sink is not None and sink.handoff is not None:
                self.handoffs.pop(request_id, None)
                sink.handoff.abandon()  # the stream was cancelled, or gave the connection back already
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
    line = open_line(config.line, preamble) if config.line else None
    try:
        return await ReplicaServer(config, channel, line).run()
    finally:
        channel.close()
        if line is not None:
            line.close()


def open_line(address: str, preamble: Preamble) -> socket.socket | None:
    """The server's line (`WorkerHub.line_address`), proven ours by the channel's preamble; None if it cannot be
    had (then every streamed event goes through the channel)."""
    line = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        line.connect("\0" + address)
        line.sendall(preamble.pack())
    except OSError as exc:
        log.warning("the server's line could not be reached (%s): streamed answers go through the server", exc)
        line.close()
        return None
    line.setblocking(False)
    return line


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    # Out of the env once read: it holds the hub secret, which pip and the model's code need not inherit.
    config = WorkerConfig.model_validate_json(os.environ.pop(CONFIG_ENV))
    # The server stops replicas over the channel; a terminal's Ctrl-C is the server's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(_amain(config)))
