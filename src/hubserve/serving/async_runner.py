"""Asynchronous inference at run time: per endpoint, a runner that takes queued requests to its replicas
(`max_concurrency` per ready replica) and writes each answer, or failure, to its object before the request is
done; webhooks tell of each outcome."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from hubserve.errors import (
    HubserveError,
    InvocationTimeout,
    ModelError,
    NoReadyReplica,
    NotFound,
    Overloaded,
    ReplicaLost,
    model_error_body,
)
from hubserve.invocation import InvocationRequest
from hubserve.serving.async_objects import object_exists, read_input, write_object
from hubserve.serving.async_queue import AsyncBacklog, AsyncQueue, AsyncRequest
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.spec import EndpointState
from hubserve.store import Store

log = logging.getLogger("hubserve.async")

# How often a runner looks at its queue unprompted: replicas that became ready, retries that fell due.
POLL_S = 1.0
# Requests past their TTL are failed this many at a time, whether or not a replica is ready.
EXPIRED_BATCH = 32
# Waits before running again a request that met trouble not of its own making (the replica died under it, the
# store refused its object); one more and it fails.
RETRY_DELAYS_S = (1.0, 5.0, 15.0, 30.0, 60.0)
# No ready replica, or a full one: the request waits its turn again, this much later.
NOT_READY_DELAY_S = 2.0
WEBHOOK_TIMEOUT_S = 5.0
PURGE_EVERY_S = 600.0
JSON = "application/json"


@dataclass
class Outcome:
    """What a request's object holds: its answer (`ok`), or its failure as SageMaker writes it."""

    ok: bool
    body: bytes
    content_type: str
    reason: str | None = None


def failure(code: str, message: str, **extra: Any) -> Outcome:
    body = json.dumps({"ErrorCode": code, "Message": message, **extra}).encode()
    return Outcome(ok=False, body=body, content_type=JSON, reason=message)


def model_failure(endpoint: str, original: str) -> Outcome:
    """The body SageMaker's ModelError has, as InvokeEndpoint answers it."""
    body = model_error_body(endpoint, original)
    return Outcome(ok=False, body=json.dumps(body).encode(), content_type=JSON, reason=str(body["Message"]))


def error_outcome(endpoint: str, request: AsyncRequest, exc: HubserveError) -> Outcome:
    if isinstance(exc, ModelError):
        return model_failure(endpoint, exc.message)
    if isinstance(exc, InvocationTimeout):
        return failure("ModelInvocationTimeExceeded", f"the model did not answer within the request's "
                       f"InvocationTimeoutSeconds ({request.timeout_s:g} s)")
    return failure("ValidationError" if exc.status < 500 else "InternalFailure", exc.message)


Notify = Callable[[EndpointRuntime, AsyncRequest, "Outcome"], Awaitable[None]]


class TryLater(Exception):
    """The request goes back to the queue; `counts` when the trouble was an attempt that failed."""

    def __init__(self, reason: str, delay_s: float, counts: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s
        self.counts = counts


def retry_delay(request: AsyncRequest) -> float:
    return RETRY_DELAYS_S[min(request.attempts, len(RETRY_DELAYS_S) - 1)]


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notice(request: AsyncRequest, outcome: Outcome) -> dict[str, Any]:
    """The webhook's JSON, shaped as SageMaker's SNS notification of an asynchronous inference."""
    response = ({"outputLocation": request.output_location, "contentType": outcome.content_type} if outcome.ok
                else {"failureLocation": request.failure_location, "contentType": outcome.content_type})
    return {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "InferenceResult",
            "eventTime": _iso(time.time()), "receivedTime": _iso(request.created_at),
            "invocationStatus": "Completed" if outcome.ok else "Failed",
            **({} if outcome.ok else {"failureReason": outcome.reason}),
            "inferenceId": request.id,
            "requestParameters": {"endpointName": request.endpoint, "inputLocation": request.input_location,
                                  "contentType": request.content_type, "accept": request.accept},
            "responseParameters": response}


class AsyncRunner:
    """One endpoint's runner. A claimed request is `running`; it is `done` only once its object is written, and a
    cancelled runner leaves it `running`, which the next start turns back into `queued` (async_queue.recover)."""

    def __init__(self, runtime: EndpointRuntime, queue: AsyncQueue, notify: Notify) -> None:
        self.runtime = runtime
        self._queue = queue
        self._notify = notify
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._invoking = 0
        # Writing an object and marking its request done: never cut in two by a stop.
        self._settling: set[asyncio.Future[None]] = set()
        self._purged_at = 0.0

    @property
    def name(self) -> str:
        return self.runtime.spec.name

    @property
    def capacity(self) -> int:
        settings = self.runtime.spec.async_inference
        # At zero, one request is let through: it wakes a replica (and waits for it), the rest follow once ready.
        replicas = self.runtime.ready_count or int(self.runtime.status.state == EndpointState.scaled_to_zero)
        return settings.max_concurrency * replicas if settings else 0

    def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self._loop())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the claims in flight (they stay `running`); the objects being written are finished first."""
        await cancel([t for t in (self._loop_task, *self._tasks) if t is not None])
        await asyncio.gather(*self._settling, return_exceptions=True)
        await cancel(self._tasks)  # the webhook notices of those

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._claim(time.time())
            except Exception:  # the store failing once must not end the endpoint's async service
                log.exception("async %s: could not claim queued requests", self.name)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)

    def _claim(self, now: float) -> None:
        for request in self._queue.claim(self.name, EXPIRED_BATCH, now, expired_only=True):
            self._spawn(self._process(request))
        room = self.capacity - self._invoking
        if room > 0:
            for request in self._queue.claim(self.name, room, now):
                self._invoking += 1
                self._spawn(self._process(request), invoking=True)
        if now - self._purged_at > PURGE_EVERY_S:
            self._queue.purge(self.name, now)
            self._purged_at = now

    def _spawn(self, work: Awaitable[None], invoking: bool = False) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if invoking:
                self._invoking -= 1
            if not finished.cancelled() and finished.exception() is not None:
                log.error("async %s: a request's work failed", self.name, exc_info=finished.exception())
            self._wake.set()

        task.add_done_callback(done)

    async def _process(self, request: AsyncRequest) -> None:
        try:
            if request.resumed and await self._found(request):
                return
            outcome = await self._outcome(request)
        except TryLater as later:
            await self._try_later(request, later)
            return
        except Exception as exc:  # a bug of ours: the request fails, loudly, and the runner goes on
            log.exception("async %s/%s failed", self.name, request.id)
            outcome = failure("InternalFailure", f"{type(exc).__name__}: {exc}")
        try:
            await self._settle(request, outcome)
        except TryLater as later:
            await self._try_later(request, later)

    async def _found(self, request: AsyncRequest) -> bool:
        """Whether a request that was running when the server stopped has written its object: then it is done."""
        for location, outcome in ((request.output_location, "output"), (request.failure_location, "failure")):
            try:
                exists = await asyncio.to_thread(object_exists, location)
            except Exception as exc:
                raise TryLater(f"could not look for '{location}': {type(exc).__name__}: {exc}",
                               retry_delay(request), counts=False) from exc
            if exists:
                self._queue.finish(request, outcome)
                log.info("async %s/%s: its %s was written before the restart", self.name, request.id, outcome)
                return True
        return False

    async def _outcome(self, request: AsyncRequest) -> Outcome:
        if request.expired(time.time()):
            return failure("RequestExpired", f"the request waited in the queue longer than its RequestTTLSeconds "
                                             f"({request.ttl_s:g} s) and was not run")
        try:
            body, content_type = await self._input(request)
            invocation = InvocationRequest(body=body, content_type=content_type, accept=request.accept,
                                           attributes=request.attributes)
            result = await self.runtime.invoke(invocation, request.timeout_s)
        except (NoReadyReplica, Overloaded) as exc:
            raise TryLater(exc.message, NOT_READY_DELAY_S, counts=False) from exc
        except ReplicaLost as exc:
            raise TryLater(exc.message, retry_delay(request), counts=True) from exc
        except HubserveError as exc:
            return error_outcome(self.name, request, exc)
        return Outcome(ok=True, body=result.body, content_type=result.content_type)

    async def _input(self, request: AsyncRequest) -> tuple[bytes, str]:
        if request.input_location is None:
            return request.body or b"", request.content_type or JSON
        data, stated = await asyncio.to_thread(read_input, request.input_location, self.runtime.spec.max_payload_bytes)
        return data, request.content_type or stated or JSON

    async def _try_later(self, request: AsyncRequest, later: TryLater) -> None:
        if later.counts and request.attempts + 1 >= len(RETRY_DELAYS_S):
            reason = f"{later.reason} (gave up after {request.attempts + 1} attempts)"
            await self._settle(request, failure("InternalFailure", reason), last=True)
            return
        log.info("async %s/%s: %s; trying again in %g s", self.name, request.id, later.reason, later.delay_s)
        self._queue.retry_later(request, later.delay_s, counts=later.counts)

    async def _settle(self, request: AsyncRequest, outcome: Outcome, last: bool = False) -> None:
        """Write the object, then mark the request done: shielded, so that a stop waits for both (or neither).
        TryLater when the object could not be written, unless this is the `last` try."""
        settling = asyncio.ensure_future(self._write(request, outcome, last))
        self._settling.add(settling)

        def done(finished: asyncio.Future[None]) -> None:
            self._settling.discard(finished)
            if not finished.cancelled():
                finished.exception()  # read here too: after a stop, no one awaits it

        settling.add_done_callback(done)
        await asyncio.shield(settling)

    async def _write(self, request: AsyncRequest, outcome: Outcome, last: bool) -> None:
        location = request.output_location if outcome.ok else request.failure_location
        try:
            await asyncio.to_thread(write_object, location, outcome.body, outcome.content_type)
        except Exception as exc:
            reason = f"could not write '{location}': {type(exc).__name__}: {exc}"
            if not last:
                raise TryLater(reason, retry_delay(request), counts=True) from exc
            # Neither its answer nor its failure could be written: all that is left is to say so.
            log.error("async %s/%s is dropped: %s", self.name, request.id, reason)
            self._queue.finish(request, "unwritten")
            self._spawn(self._notify(self.runtime, request, failure("InternalFailure", reason)))
            return
        self._queue.finish(request, "output" if outcome.ok else "failure")
        self._spawn(self._notify(self.runtime, request, outcome))


async def cancel(tasks: Iterable[asyncio.Future[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def written(request: AsyncRequest) -> bool:
    return object_exists(request.output_location) or object_exists(request.failure_location)


class AsyncRunners:
    """The runners of every endpoint with async_inference, started, kept and stopped with the endpoints."""

    def __init__(self, store: Store) -> None:
        self.queue = AsyncQueue(store)
        self._runners: dict[str, AsyncRunner] = {}
        self._http: httpx.AsyncClient | None = None  # made on first use, inside the server's event loop
        self._tasks: set[asyncio.Task[None]] = set()

    def recover(self, endpoints: Iterable[str]) -> None:
        """At start, before any runner: requests that were running are queued again, and those of endpoints that
        are gone fail."""
        self.queue.recover()
        for name in self.queue.endpoints() - set(endpoints):
            self._fail_dropped(None, self.queue.drop(name, time.time()), "its endpoint was deleted")

    def watch(self, runtime: EndpointRuntime) -> None:
        """Run `runtime`'s asynchronous requests once its spec has async_inference (it is never taken away)."""
        if runtime.spec.async_inference is not None and runtime.spec.name not in self._runners:
            runner = self._runners[runtime.spec.name] = AsyncRunner(runtime, self.queue, self.notify)
            runner.start()

    def submit(self, request: AsyncRequest) -> AsyncRequest:
        """Queue `request`; the request first queued under its InferenceId."""
        runner = self._runners.get(request.endpoint)
        if runner is None:  # deleted while the request's body came in
            raise NotFound(f"endpoint {request.endpoint} not found")
        stored = self.queue.submit(request)
        runner.wake()
        return stored

    async def notify(self, runtime: EndpointRuntime, request: AsyncRequest, outcome: Outcome) -> None:
        """POST the outcome to the endpoint's webhook for it, if it has one: best effort, failures logged."""
        settings = runtime.spec.async_inference
        url = settings and (settings.success_webhook if outcome.ok else settings.error_webhook)
        if not url:
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        try:
            response = await self._http.post(url, json=notice(request, outcome))
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("async %s/%s: the webhook %s failed: %s: %s", request.endpoint, request.id, url,
                        type(exc).__name__, exc)

    def backlog(self, name: str) -> AsyncBacklog | None:
        return self.queue.backlog(name) if name in self._runners else None

    async def forget(self, name: str) -> None:
        """The endpoint is deleted: stop its runner, and fail what it had not done."""
        deleted_at = time.time()
        runner = self._runners.pop(name, None)
        if runner is not None:
            await runner.stop()
        self._fail_dropped(runner.runtime if runner else None, self.queue.drop(name, deleted_at),
                           "its endpoint was deleted")

    def _fail_dropped(self, runtime: EndpointRuntime | None, requests: list[AsyncRequest], reason: str) -> None:
        if requests:
            task = asyncio.ensure_future(self._write_failures(runtime, requests, reason))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write_failures(self, runtime: EndpointRuntime | None, requests: list[AsyncRequest],
                              reason: str) -> None:
        """Best effort: the requests are out of the queue already (SageMaker drops them without a word)."""
        for request in requests:
            outcome = failure("ValidationError", f"the request was not run: {reason}")
            try:
                if request.resumed and await asyncio.to_thread(written, request):
                    continue
                await asyncio.to_thread(write_object, request.failure_location, outcome.body, outcome.content_type)
            except Exception as exc:
                log.warning("async %s/%s was dropped (%s), and its failure could not be written: %s",
                            request.endpoint, request.id, reason, exc)
                continue
            if runtime is not None:
                await self.notify(runtime, request, outcome)

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self._runners.values()))
        self._runners.clear()
        await cancel(self._tasks)
        if self._http is not None:
            await self._http.aclose()
