"""Dynamic batching inside a replica: queue requests, run them together, hand each caller its own result."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from hubserve.histogram import EXPORTED_LATENCY_BOUNDS_S, Histogram


@dataclass
class Work:
    """One decoded request waiting for the model: `size` counts its inputs (a list counts by its length); `accept`
    is the caller's Accept header, for encoding its answer; `finish`, when set, makes the answer of the adapter's
    output instead (a protocol's shape), on the model thread."""

    inputs: Any
    parameters: dict[str, Any]
    size: int = 1
    accept: str = "application/json"
    enqueued_at: float = 0.0
    finish: Callable[[Any], Any] | None = None


@dataclass
class BatchStats:
    """The engine's own counters, readable through the control API."""

    batches: int = 0
    requests: int = 0
    items: int = 0
    largest_batch: int = 0
    queue_wait_s: float = 0.0
    busy_s: float = 0.0  # time the model spent running batches
    sizes: Counter[int] = field(default_factory=Counter)
    # Each request's wait in the queue, for the API's Prometheus histogram (summed over replicas there).
    queue_waits: Histogram = field(default_factory=lambda: Histogram(EXPORTED_LATENCY_BOUNDS_S))

    def record(self, batch: list[Work], now: float) -> None:
        items = sum(w.size for w in batch)
        self.batches += 1
        self.requests += len(batch)
        self.items += items
        self.largest_batch = max(self.largest_batch, items)
        self.sizes[items] += 1
        for work in batch:
            self.queue_wait_s += now - work.enqueued_at
            self.queue_waits.observe(now - work.enqueued_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches, "requests": self.requests, "items": self.items,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
            "mean_queue_wait_ms": round(1000 * self.queue_wait_s / self.requests, 3) if self.requests else 0.0,
            "busy_s": round(self.busy_s, 3),
            "batch_sizes": {str(size): count for size, count in sorted(self.sizes.items())},
            "queue_wait_s": self.queue_waits.to_dict(),
        }


RunBatch = Callable[[list[Work]], list[Any]]


class DynamicBatcher:
    """Runs queued work in batches of up to `max_batch_size` items on the model thread.

    An idle replica never waits: a lone request runs at once (after a batch that served one caller). Under load (the
    last batch served several callers) a batch waits, at most `max_delay_s`, until it holds as many items as the last
    batch answered plus those queued meanwhile: those callers tend to send again after a round trip. `run` returns
    one result or exception per work item, in order.
    """

    def __init__(self, run: RunBatch, executor: Executor, max_batch_size: int, max_delay_s: float) -> None:
        self.run = run
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.stats = BatchStats()
        self._queue: deque[tuple[Work, asyncio.Future[Any]]] = deque()
        self._arrived = asyncio.Event()
        self._expected = 0  # items the next batch waits for
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def submit(self, work: Work) -> Any:
        loop = asyncio.get_running_loop()
        work.enqueued_at = time.monotonic()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((work, future))
        self._arrived.set()
        return await future

    def _take(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> int:
        """Move queued work into `batch` while it fits; returns the batch's size in items."""
        size = sum(w.size for w, _ in batch)
        while self._queue:
            work, future = self._queue[0]
            if future.cancelled():  # the caller went away before its turn: drop it
                self._queue.popleft()
                continue
            if batch and size + work.size > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            size += work.size
        return size

    async def _gather(self) -> list[tuple[Work, asyncio.Future[Any]]]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        batch: list[tuple[Work, asyncio.Future[Any]]] = []
        size = self._take(batch)
        # Under load, wait (at most the delay) until the batch holds as many items as the last one answered: in a
        # busy replica those callers send again, and one at a time they would each take a forward pass of their own.
        target = min(self.max_batch_size, self._expected)
        deadline = time.monotonic() + self.max_delay_s
        while size < target and not self._queue:  # a queue left means the next did not fit
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                break
            size = self._take(batch)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            started = time.monotonic()
            works = [work for work, _ in batch]
            self.stats.record(works, started)
            try:
                results = await loop.run_in_executor(self.executor, self.run, works)
            except Exception as exc:  # run() isolates failures itself; this guards against its own bugs
                results = [exc] * len(batch)
            answered_at = time.monotonic()
            self.stats.busy_s += answered_at - started
            # A lone caller answered means an idle replica: its next request runs at once.
            self._expected = sum(w.size for w in works) + sum(w.size for w, _ in self._queue) if len(batch) > 1 else 0
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
