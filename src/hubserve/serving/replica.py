"""One replica: a worker process that holds the model, and the channel to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from hubserve.channel import Channel, ChannelClosed
from hubserve.errors import HubserveError, InvocationTimeout, ReplicaLost, error_from_dict
from hubserve.invocation import (
    InvocationRequest,
    InvocationResult,
    RecordResult,
    decode_record_results,
    records_request,
)
from hubserve.serving.context import ServingContext
from hubserve.serving.spawner import WorkerProcess
from hubserve.serving.worker_log import describe_exit, last_error, log_size
from hubserve.spec import EndpointSpec
from hubserve.worker.config import CONFIG_ENV, WorkerConfig

log = logging.getLogger("hubserve.serving")


class ReplicaState(StrEnum):
    starting = "starting"
    ready = "ready"
    failed = "failed"  # could not load the model
    exited = "exited"  # the process ended after it was ready, or was stopped


class Replica:
    def __init__(self, replica_id: str, spec: EndpointSpec, context: ServingContext,
                 on_change: Callable[[Replica], None]) -> None:
        self.id = replica_id
        self.spec = spec
        self.secret = secrets.token_hex(16)
        self.state = ReplicaState.starting
        self.failure: str | None = None
        self.task: str | None = None
        # What runs its model ("torch", "onnx", ...) and why not the backend meant for it: told when ready.
        self.backend: str | None = None
        self.backend_note: str | None = None
        self.dtype: str | None = None  # what a runtime computes in ("float32", "int8", "bfloat16"), if one runs it
        self.pid: int | None = None
        self.node: str | None = None  # the Ray node it was placed on; None for a process on this machine
        self.in_flight = 0
        self.stopping = False
        self._context = context
        self._hub = context.hub
        self._log_path = context.log_path(spec.name)
        self._on_change = on_change
        self._process: WorkerProcess | None = None
        self._ended = asyncio.Event()
        self._lost = False  # its channel or its process is gone: no more requests
        self._ready_at: float | None = None
        self._lost_at: float | None = None
        self._log_offset = 0
        self._channel: Channel | None = None
        self._line: socket.socket | None = None  # where streamed answers' client connections go (WorkerHub)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[Message] | Relay] = {}
        self._next_id = 0
        self._settled = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        config = WorkerConfig(replica_id=self.id, spec=self.spec, host=self._hub.advertised_host,
                              port=self._hub.port, secret=self.secret, line=self._hub.line_address,
                              models_dir=str(self._context.models_dir),
                              archive_limits=self._context.archive_limits,
                              threads=self._context.spawner.threads(self.spec))
        # The spawner lays this over the env of wherever the process runs (this server, or a Ray node).
        env = {**self.spec.env, CONFIG_ENV: config.model_dump_json(), "PYTHONUNBUFFERED": "1",
               "PYTHONFAULTHANDLER": "1"}
        self._hub.expect(self.id, self, line=self.attach_line)
        self._log_offset = log_size(self._log_path)  # where this worker's own output will start
        try:
            self._process = await self._context.spawner.start(self.spec, env, self._log_path)
        except OSError as exc:
            self._hub.forget(self.id)
            self.state = ReplicaState.failed
            self.failure = f"the worker process could not start: {exc}"
            self._settled.set()
            self._on_change(self)
            return
        self.pid = self._process.pid
        self.node = getattr(self._process, "node", None)
        self._spawn(self._watch_process())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def attach(self, channel: Channel, pid: int) -> None:
        self._channel = channel
        self._spawn(self._read_loop(channel))

    def attach_line(self, line: socket.socket) -> None:
        if self._lost:
            line.close()
        else:
            self._line = line

    async def wait_settled(self) -> None:
        """Until the replica is ready, failed, or gone."""
        await self._settled.wait()

    async def _read_loop(self, channel: Channel) -> None:
        while True:
            try:
                header, body = await channel.receive()
            except ChannelClosed:  # the process died, or is about to: its socket closes first
                self._lose()
                self._on_change(self)
                return
            op = header.get("op")
            if op == "state":
                self._set_state(header)
                continue
            request_id = int(header.get("id", 0))
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.put_nowait((str(op), error_from_dict(header["error"]) if op == "error" else body))
                continue
            future = self._pending.pop(request_id, None)
            if future is None or future.done():
                continue
            if op == "result":
                future.set_result(InvocationResult(body=body, content_type=str(header["content_type"])))
            elif op == "stats":
                future.set_result(header["stats"])
            elif op == "error":
                future.set_exception(error_from_dict(header["error"]))

    def _set_state(self, header: dict[str, object]) -> None:
        if header.get("state") == "ready":
            self.state = ReplicaState.ready
            self.task = str(header.get("task"))
            backend, note = header.get("backend"), header.get("backend_note")
            self.backend = str(backend) if backend is not None else None
            self.backend_note = str(note) if note is not None else None
            self.dtype = str(header["dtype"]) if header.get("dtype") is not None else None
            self._ready_at = time.monotonic()
        elif header.get("state") == "failed":
            self.state = ReplicaState.failed
            self.failure = str(header.get("message"))
        self._settled.set()
        self._on_change(self)

    async def _watch_process(self) -> None:
        assert self._process is not None
        code = await self._process.wait()
        self._ended.set()
        self._hub.forget(self.id)
        self._lose()
        if self.state == ReplicaState.starting:
            self.state = ReplicaState.failed
            self.failure = self.failure or self._load_failure(code)
        elif self.state == ReplicaState.ready:
            self.state = ReplicaState.exited
            if not self.stopping:
                self.failure = f"the worker process {describe_exit(code)}"
        self._settled.set()
        self._on_change(self)

    def _load_failure(self, code: int | None) -> str:
        """Why a worker died while loading without saying so itself: the error it left in the log."""
        error = last_error(self._log_path, self._log_offset)
        return f"the worker process {describe_exit(code)} while loading" + (f": {error}" if error else "")

    def _lose(self) -> None:
        """Take no more requests, and fail the ones it held: another replica can take them."""
        if self._lost:
            return
        self._lost = True
        self._lost_at = time.monotonic()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(_replica_lost())
        self._pending.clear()
        for stream in list(self._streams.values()):  # a relayed one leaves the dict as it ends
            stream.put_nowait(("error", _replica_lost()))
        if self._channel is not None:
            self._channel.close()
        self._drop_line()

    def _drop_line(self) -> None:
        if self._line is not None:
            self._line.close()
            self._line = None

    @property
    def ready_for(self) -> float:
        """Seconds it has been (or was, until it died) ready for requests."""
        if self._ready_at is None:
            return 0.0
        return (self._lost_at or time.monotonic()) - self._ready_at

    @property
    def ready(self) -> bool:
        return self.state == ReplicaState.ready and not self.stopping and not self._lost

    def _open(self) -> tuple[Channel, int]:
        if self._channel is None or not self.ready:
            raise HubserveError("replica is not ready")
        self._next_id += 1
        return self._channel, self._next_id

    async def invoke(self, request: InvocationRequest, timeout: float) -> InvocationResult:
        result: InvocationResult = await self._call({"op": "invoke", **request.header()}, request.body, timeout)
        return result

    async def invoke_records(self, records: Sequence[bytes], content_type: str, accept: str,
                             timeout: float) -> list[RecordResult]:
        """One answer per record, all sent in one RECORDS message (see `hubserve.invocation`). The message counts as
        as many requests in flight as it holds records, so that picking a replica weighs a job's mini-batches
        against single requests; a worker dying under it is a ReplicaLost for the whole message, to retry."""
        request = records_request(records, content_type, accept)
        result: InvocationResult = await self._call({"op": "invoke", **request.header()}, request.body, timeout,
                                                    weight=len(records))
        return decode_record_results(result.body)

    async def stats(self) -> dict[str, Any]:
        # Not a request: weight 0, so that polling the stats neither steers requests away nor counts as load.
        stats: dict[str, Any] = await self._call({"op": "stats"}, b"", 10.0, weight=0)
        return stats

    async def _call(self, header: dict[str, Any], body: bytes, timeout: float, weight: int = 1) -> Any:
        channel, request_id = self._open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.in_flight += weight
        try:
            await channel.send({**header, "id": request_id}, body)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            await self._cancel(request_id)
            raise timed_out(timeout) from None
        except asyncio.CancelledError:
            await self._cancel(request_id)
            raise
        except ChannelClosed as exc:
            raise _replica_lost() from exc
        finally:
            self.in_flight -= weight
            self._pending.pop(request_id, None)

    async def stream(self, request: InvocationRequest, timeout: float) -> StreamedAnswer:
        """The events of a streamed answer. Errors before the first event raise here, before any is sent;
        closing the answer early cancels the request in the worker."""
        channel, request_id = self._open()
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._streams[request_id] = queue
        self.in_flight += 1
        # With a line, the worker holds the events after the first until told whether it gets the client's
        # connection (`_hand_off`): every such answer must be told, once.
        handoff = self._line is not None
        try:
            await channel.send({"op": "invoke", **request.header(), "id": request_id, "handoff": handoff},
                               request.body)
            first = await asyncio.wait_for(queue.get(), timeout)
        except ChannelClosed as exc:
            await self._end_stream(request_id, cancel=False)
            raise _replica_lost() from exc
        except TimeoutError:
            await self._end_stream(request_id, cancel=True)
            raise timed_out(timeout) from None
        except BaseException:
            await self._end_stream(request_id, cancel=True)
            raise
        if first[0] == "error":
            await self._end_stream(request_id, cancel=False)
            raise first[1]
        return StreamedAnswer(self, request_id, queue, first, handoff)

    async def _stream_events(self, request_id: int, queue: asyncio.Queue[Message], first: Message,
                             ) -> AsyncGenerator[bytes, None]:
        message = first
        finished = False
        try:
            while True:
                op, value = message
                if op == "error":
                    finished = True
                    raise value
                if op == "end":
                    finished = True
                    return
                yield value
                message = await queue.get()
        finally:
            await self._end_stream(request_id, cancel=not finished)

    def _relay(self, request_id: int, queue: asyncio.Queue[Message], first: Message,
               write: Callable[[str, Any], None]) -> asyncio.Future[None]:
        """See `StreamedAnswer.relay`: the messages queued so far go to `write` now, the rest from the read loop."""
        relay = Relay(write, lambda: self._forget_stream(request_id))
        relay.put_nowait(first)
        while not relay.done.done() and not queue.empty():
            relay.put_nowait(queue.get_nowait())
        if not relay.done.done():
            self._streams[request_id] = relay
        return relay.done

    def _hand_off(self, request_id: int, target: HandOff | None) -> None:
        """Tell the worker whether it writes the rest of this answer to the client itself: the client's socket goes
        down the line (the worker writes each event framed by `target` as an HTTP chunk, from the event after the
        first until its last, which comes through here as before), or it is told to keep sending them here."""
        if target is not None and self._line is not None:
            message = orjson.dumps({"id": request_id, "prefix": target.prefix.decode("latin-1"),
                                    "suffix": target.suffix.decode("latin-1")})
            try:
                socket.send_fds(self._line, [message], [target.fileno])
                return
            except BlockingIOError:  # the worker is behind on its line: this answer comes through here
                pass
            except OSError as exc:
                log.warning("replica %s: its line failed (%s); streamed answers go through the server", self.id, exc)
                self._drop_line()
        if self._channel is not None:
            self._spawn(self._send_quietly({"op": "keep", "id": request_id}))

    async def _send_quietly(self, header: dict[str, Any]) -> None:
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed):
                await self._channel.send(header)

    def _forget_stream(self, request_id: int) -> bool:
        """Drop a stream's bookkeeping; False if it was already dropped."""
        if self._streams.pop(request_id, None) is None:
            return False
        self.in_flight -= 1
        return True

    async def _end_stream(self, request_id: int, cancel: bool) -> None:
        self._forget_stream(request_id)
        if cancel:
            await self._cancel(request_id)

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
        if process is None or self._ended.is_set():
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


# What the read loop hands a stream: ("chunk", an event's bytes), then ("end", b"") or ("error", HubserveError).
Message = tuple[str, Any]


class Relay:
    """Where the read loop puts a relayed stream's messages: straight into `write`, in the loop's own turn, with no
    task woken per event. `done` resolves after the last message (or with what `write` raised); `last` runs then."""

    def __init__(self, write: Callable[[str, Any], None], last: Callable[[], object]) -> None:
        self.write = write
        self.last = last
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def put_nowait(self, message: Message) -> None:
        if self.done.done():
            return
        op, value = message
        try:
            self.write(op, value)
        except Exception as exc:  # the response's fault, not the read loop's: it ends that stream only
            log.exception("relaying a streamed answer failed")
            self.done.set_exception(exc)
            return
        if op in ("end", "error"):
            self.last()
            self.done.set_result(None)


@dataclass(frozen=True)
class HandOff:
    """A client's connection, for the worker to write the rest of a streamed answer to: its socket's descriptor (it
    has sent all the server wrote to it), and what goes before and after each event (the response's framing)."""

    fileno: int
    prefix: bytes
    suffix: bytes


class StreamedAnswer:
    """A streamed answer's events (bytes), read as an async iterator; or relayed: handed to a writer by the
    replica's read loop as each arrives, the fast path for a response that can write them itself; and from a
    replica with a line, written by the worker itself to the client's connection (`relay`'s `hand_off`)."""

    def __init__(self, replica: Replica, request_id: int, queue: asyncio.Queue[Message], first: Message,
                 handoff: bool = False) -> None:
        self._replica = replica
        self._request_id = request_id
        self._queue = queue
        self._first = first
        self._events = replica._stream_events(request_id, queue, first)
        self._relayed: asyncio.Future[None] | None = None
        self._handoff_open = handoff  # the worker waits to hear whether it gets the connection

    def __aiter__(self) -> StreamedAnswer:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        self._answer_handoff(None)
        return self._events.__anext__()

    def relay(self, write: Callable[[str, Any], None],
              hand_off: Callable[[], HandOff | None] | None = None) -> asyncio.Future[None]:
        """From now on each message goes to `write(op, value)` as it arrives, called from the read loop (so it must
        not block): op "chunk" with an event's bytes, then "end", or "error" with the HubserveError. The future
        resolves after the last one. Only for an answer not iterated yet.

        Once what came so far is written, `hand_off()` may name the client's connection: the worker then writes the
        events after those to it itself (whatever comes through the channel meanwhile still goes to `write`, in
        order), until its last event, which comes to `write` as before. Until the future resolves nothing else may
        write to that connection."""
        if self._relayed is None:
            self._relayed = self._replica._relay(self._request_id, self._queue, self._first, write)
            self._answer_handoff(hand_off() if hand_off is not None and not self._relayed.done() else None)
        return self._relayed

    def _answer_handoff(self, target: HandOff | None) -> None:
        if self._handoff_open:
            self._handoff_open = False
            self._replica._hand_off(self._request_id, target)

    async def aclose(self) -> None:
        """Stop early: the worker is told to cancel the request, unless its answer already ended."""
        if self._relayed is None:
            await self._events.aclose()
        elif self._replica._forget_stream(self._request_id):  # still in flight
            await self._replica._cancel(self._request_id)


def _replica_lost() -> ReplicaLost:
    # One per request: an exception raised in several tasks would collect all their tracebacks.
    return ReplicaLost("the replica's worker process died during the request; retry it", retry_after=1)


def timed_out(timeout: float) -> InvocationTimeout:
    return InvocationTimeout(f"the model did not answer within the endpoint's timeout of {timeout:g} s")
