"""`GenerationEngine`: the scheduler on one background thread, with an asyncio face. Requests are checked on the
caller's side (BadRequest, Overloaded), token events come back through `loop.call_soon_threadsafe`, once per step
(a whole answer's all at once with its last; a direct stream's straight to the worker's channel, see `direct`).

Why not transformers' `ContinuousBatchingManager` (5.23): on this CPU it ran no faster than one padded
`generate()` even offline, `transformers serve --continuous-batching` reached about half of it, it has one seed
for the whole manager (not per request), and no stop strings nor per-token text; this scheduler keeps generate()'s
own DynamicCache and forward, so its greedy output equals generate()'s token for token.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import torch

from hubserve.channel import ChannelClosed, ThreadedChannel
from hubserve.errors import ModelError, NoReadyReplica, Overloaded
from hubserve.worker.generation.direct import Shape, direct_route
from hubserve.worker.generation.forward import as_batch_model
from hubserve.worker.generation.grammar import GrammarCompiler
from hubserve.worker.generation.scheduler import Outbox, Outcome, Request, Scheduler
from hubserve.worker.generation.stream import TokenStream
from hubserve.worker.generation.types import GenerationLimits, GenerationResult, SamplingParams, TokenEvent
from hubserve.worker.torch_threads import adopt_torch_threads

# Requests of one burst arrive this close together: an idle engine waits this long for the next one, while requests
# come in bursts. Once a request has come alone (none within BURST_GAP_S before or after it), an idle engine waits
# only LONE_GAP_S (requests sent at once by one caller), until two requests come that close again: a client asking
# one thing at a time does not pay BURST_GAP_S on every request's first token.
BURST_GAP_S = 0.002
LONE_GAP_S = 0.0002

log = logging.getLogger("hubserve.worker.generation")
T = TypeVar("T")


class GenerationEngine:
    """Continuous batching over a causal LM (a transformers model, or any `BatchModel`): `open` (or `stream`,
    `generate`) from any event loop's thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        max_input_tokens: int | None = None,
        max_total_tokens: int | None = None,
        max_concurrent_requests: int = 128,
        max_prefill_tokens: int | None = None,
        max_batch_delay_ms: float = 5.0,
        prefill_chunk_tokens: int | None = None,
    ) -> None:
        model = as_batch_model(model)
        step_tokens = model.step_tokens
        limits = GenerationLimits(
            max_batch_size,
            max_input_tokens,
            max_total_tokens,
            max_concurrent_requests,
            max_prefill_tokens or step_tokens,
            max_batch_delay_ms,
            prefill_chunk_tokens or step_tokens,
        )
        # The generation thread decodes with its own copy: fast tokenizers may refuse use from two threads at once.
        self.scheduler = Scheduler(model, copy.deepcopy(tokenizer), limits, self._deliver)
        self.eos_ids = model.eos_ids
        # Requests' grammars are compiled on the callers' side, with the callers' tokenizer.
        self.grammars = GrammarCompiler(tokenizer, self.scheduler.grammar_vocab, self.eos_ids)
        self._condition = threading.Condition()
        self._arrivals: list[Request] = []
        self._calls: list[Callable[[], None]] = []
        self._active = 0
        self._stopping = False
        # Whether requests come in bursts (see BURST_GAP_S); when the last one came, and how long after the one before.
        self._expect_company = True
        self._last_arrival = -math.inf
        self._last_gap = math.inf
        self._thread: threading.Thread | None = None

    @property
    def limits(self) -> GenerationLimits:
        return self.scheduler.limits

    def configure(self, **limits: Any) -> None:
        """Change limits (`GenerationLimits` field names, see its `updated`); None leaves one as it is."""
        self.scheduler.limits = self.scheduler.limits.updated(**limits)

    @property
    def counters(self) -> dict[str, int]:
        """Totals: `steps` (decode forwards), `prefills`, `prefill_chunks` (of long prompts), `tokens_generated`,
        `max_batch_size` (rows decoded together, the most so far), requests `finished`, `cancelled` and `failed`; now:
        `running` rows, `waiting` requests (a long prompt's included while its chunks are prefilled), `active`
        (both, as counted against max_concurrent_requests)."""
        with self._condition:
            return {
                **self.scheduler.counters,
                "running": len(self.scheduler.running),
                "waiting": len(self.scheduler.waiting) + (self.scheduler.chunked is not None) + len(self._arrivals),
                "active": self._active,
            }

    @property
    def token_times(self) -> dict[str, dict[str, Any]]:
        """Histograms (see hubserve.histogram) of the time to the first token and between tokens, in seconds."""
        times = self.scheduler.token_times
        return {"time_to_first_token_s": times.first.to_dict(), "inter_token_s": times.between.to_dict()}

    def start(self) -> None:
        with self._condition:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="generation", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop the thread; requests still running or waiting end with a NoReadyReplica error."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None

    def open(self, prompt_ids: Sequence[int], params: SamplingParams, streamed: bool = True,
             shape: Shape | None = None) -> TokenStream:
        """Queue a request (from a running event loop); BadRequest or Overloaded here, before any event. Not
        `streamed`, its events all come at once with the last one. Streamed with a `shape`, under a ChunkSink
        (`direct`), its token events are written by the generation thread, and only the last one comes here."""
        loop = asyncio.get_running_loop()
        self.limits.check(len(prompt_ids), params.max_new_tokens)
        eos = params.eos_token_ids if params.eos_token_ids is not None else self.eos_ids
        queue: asyncio.Queue[Outcome] = asyncio.Queue()
        request = Request(prompt_ids, params, eos, self.scheduler.tokenizer, (loop, queue), streamed)
        request.direct = direct_route(shape) if streamed else None
        with self._condition:
            if self._active >= self.limits.max_concurrent_requests:
                raise Overloaded(
                    f"Model is overloaded: {self._active} requests are running or waiting, the most this replica "
                    f"takes (max_concurrent_requests={self.limits.max_concurrent_requests}); retry later",
                    retry_after=1,
                )
            self._active += 1
            self._arrivals.append(request)
            now = time.monotonic()
            self._last_gap, self._last_arrival = now - self._last_arrival, now
            if self._last_gap <= BURST_GAP_S:
                self._expect_company = True
            self._condition.notify()
        self.start()
        return TokenStream(request, queue)

    async def stream(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[TokenEvent]:
        """The token events of a new request; the last carries the result. Closing the iterator cancels it."""
        tokens = self.open(prompt_ids, params)
        try:
            async for event in tokens:
                yield event
        finally:
            tokens.cancel()

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> GenerationResult:
        tokens = self.open(prompt_ids, params, streamed=False)
        try:
            return await tokens.result()
        finally:
            tokens.cancel()

    async def run(self, function: Callable[[], T]) -> T:
        """Run `function` on the generation thread between two steps (other work on the model, e.g. a pipeline)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def call() -> None:
            try:
                outcome: Any = function()
            except BaseException as exc:  # handed over to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, outcome, None)

        with self._condition:
            self._calls.append(call)
            self._condition.notify()
        self.start()
        return await future

    def _run(self) -> None:
        adopt_torch_threads()  # this thread runs every forward of the engine
        threads = getattr(self.scheduler.model, "torch_threads", None)
        if threads is not None:  # torch only samples here: the model's own threads run its forwards
            torch.set_num_threads(threads)
        with torch.inference_mode():
            while True:
                with self._condition:
                    while not (self._arrivals or self._calls or self.scheduler.busy or self._stopping):
                        self._condition.wait()
                    if self._arrivals and not self.scheduler.busy:  # a burst may be starting: let it gather
                        self._gather_burst()
                    if self._stopping:
                        break
                    arrivals, self._arrivals = self._arrivals, []
                    calls, self._calls = self._calls, []
                for call in calls:
                    call()
                try:
                    self.scheduler.step(arrivals, self._take_arrivals)
                except Exception as exc:  # a bug outside the model: fail what is in flight rather than hang it
                    log.exception("generation loop failed")
                    self.scheduler.fail_all(ModelError(f"{type(exc).__name__}: {exc}"))
            self.scheduler.waiting.extend(self._take_arrivals())
            self.scheduler.fail_all(NoReadyReplica("the replica is stopping"))
            with self._condition:
                calls, self._calls = self._calls, []
            for call in calls:  # their callers are waiting: finish them
                call()

    def _gather_burst(self) -> None:
        """Wait while requests keep arriving (each within BURST_GAP_S of the last; the first within LONE_GAP_S since
        a request came alone), at most the batch delay; called holding the condition."""
        deadline = time.monotonic() + self.limits.max_batch_delay_ms / 1000
        gap = BURST_GAP_S if self._expect_company else LONE_GAP_S
        count = len(self._arrivals)
        while not self._stopping:
            remaining = min(deadline - time.monotonic(), gap)
            if remaining <= 0:
                break
            self._condition.wait(remaining)
            if len(self._arrivals) == count:  # no one new: the burst is over
                break
            count = len(self._arrivals)
            gap = BURST_GAP_S
        if count == 1 and self._last_gap > BURST_GAP_S and gap == BURST_GAP_S:  # waited, and it came alone
            self._expect_company = False

    def _take_arrivals(self) -> list[Request]:
        with self._condition:
            arrivals, self._arrivals = self._arrivals, []
        return arrivals

    def _deliver(self, outbox: Outbox, left: int) -> None:
        """Hand each event loop its requests' outcomes in one callback (the events of a request not streamed only
        with its last one)."""
        if left:
            with self._condition:
                self._active -= left
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Request, Outcome]]] = defaultdict(list)
        written: dict[ThreadedChannel, tuple[list[bytes], list[Request]]] = {}
        for request, outcome in outbox:
            if request.direct is not None and isinstance(outcome, TokenEvent) and outcome.result is None:
                if request.cancelled:  # its reader is gone: nothing to write
                    continue
                sink = request.direct.sink
                try:
                    bodies = request.direct.shape(outcome)
                except Exception:  # a bug: this and the rest of its events go the event loop's way
                    log.exception("a token event could not be shaped on the generation thread")
                    request.direct = None
                else:
                    for body in bodies:
                        if sink.handoff is not None and sink.handoff.take(body):  # to its client, or held
                            continue
                        frames, requests = written.setdefault(sink.channel, ([], []))
                        frames += sink.frame(body)
                        requests.append(request)
                    continue
            if not request.streamed:
                if isinstance(outcome, TokenEvent) and outcome.result is None:
                    request.held.append(outcome)
                    continue
                by_loop[request.sink[0]].extend((request, held) for held in request.held)
                request.held = []
            by_loop[request.sink[0]].append((request, outcome))
        for channel, (frames, requests) in written.items():  # before the loops hear of any last event
            try:
                channel.write_now(frames)
            except ChannelClosed:  # the server went away: nobody is listening any more
                for request in requests:
                    request.cancelled = True
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                for request, _ in items:
                    request.cancelled = True


def _put_all(items: list[tuple[Request, Outcome]]) -> None:
    for request, outcome in items:
        request.sink[1].put_nowait(outcome)


def _settle(future: asyncio.Future[Any], outcome: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outcome)

