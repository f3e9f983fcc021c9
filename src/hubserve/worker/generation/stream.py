"""`TokenStream`: one request's side of the engine, for the event loop that opened it: its token events as an
async iterator, and the cancellation when its reader goes away."""

from __future__ import annotations

import asyncio

from hubserve.errors import HubserveError
from hubserve.worker.generation.scheduler import Outcome, Request
from hubserve.worker.generation.types import GenerationResult, TokenEvent


class TokenStream:
    """One request's token events, as an async iterator that ends after the event carrying the result. Closing it
    (`aclose`, or cancelling the task that awaits it) cancels the request: its row is freed at the next step."""

    def __init__(self, request: Request, queue: asyncio.Queue[Outcome]) -> None:
        self.request = request
        self._queue = queue
        self._finished = False

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if isinstance(item, HubserveError):
            self._finished = True
            raise item
        self._finished = item.result is not None
        return item

    async def result(self) -> GenerationResult:
        """Wait for the end, dropping the token events."""
        async for event in self:
            if event.result is not None:
                return event.result
        raise RuntimeError("the token stream ended without a result")  # pragma: no cover - events always end so

    def cancel(self) -> None:
        if not self._finished:
            self._finished = True
            self.request.cancelled = True

    async def aclose(self) -> None:
        self.cancel()

    def __del__(self) -> None:
        self.cancel()
