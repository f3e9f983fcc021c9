"""Dynamic batching inside a replica: queue requests, run them together, hand each caller its own result."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Work:
    """One decoded request waiting for the model: `size` counts its inputs (a list counts by its length)."""

    inputs: Any
    parameters: dict[str, Any]
    size: int = 1
    enqueued_at: float = 0.0


@dataclass
class BatchStats:
    """The engine's own counters, readable through the control API."""

    batches: int = 0
    requests: int = 0
    items: int = 0
    largest_batch: int = 0
    queue_wait_s: float = 0.0
    sizes: Counter[int] = field(default_factory=Counter)

    def record(self, batch: list[Work], now: float) -> None:
        items = sum(w.size for w in batch)
        self.batches += 1
        self.requests += len(batch)
        self.items += items
        self.largest_batch = max(self.largest_batch, items)
        self.sizes[items] += 1
        self.queue_wait_s += sum(now - w.enqueued_at for w in batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches, "requests": self.requests, "items": self.items,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
            "mean_queue_wait_ms": round(1000 * self.queue_wait_s / self.requests, 3) if self.requests else 0.0,
            "batch_sizes": {str(size): count for size, count in sorted(self.sizes.items())},
        }


RunBatch = Callable[[list[Work]], list[Any]]


class DynamicBatcher:
    """Runs queued work in batches of up to `max_batch_size` items on the model thread.

    An idle replica never waits: a lone request runs at once. Under load (requests arrived while the
    last batch ran) a batch that is not full waits at most `max_delay_s` for more. `run` returns one
    result or exception per work item, in order.
    """

    def __init__(self, run: RunBatch, executor: Executor, max_batch_size: int, max_delay_s: float) -> None:
        self.run = run
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.stats = BatchStats()
        self._queue: deque[tuple[Work, asyncio.Future[Any]]] = deque()
        self._arrived = asyncio.Event()
        self._under_load = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def submit(self, work: Work) -> Any:
        loop = asyncio.get_running_loop()
        work.enqueued_at = loop.time()
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
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        batch: list[tuple[Work, asyncio.Future[Any]]] = []
        size = self._take(batch)
        if self._under_load and size < self.max_batch_size and self.max_delay_s > 0:
            deadline = loop.time() + self.max_delay_s
            while size < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
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
            self.stats.record([w for w, _ in batch], loop.time())
            try:
                results = await loop.run_in_executor(self.executor, self.run, [w for w, _ in batch])
            except Exception as exc:  # run() isolates failures itself; this guards against its own bugs
                results = [exc] * len(batch)
            self._under_load = bool(self._queue)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
