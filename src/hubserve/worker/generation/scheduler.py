"""The continuous-batching loop body, single-threaded and synchronous: each `step` admits waiting requests (one
batched prefill, merged into the running batch), prefills one chunk of a long prompt, runs one batched decode
forward, and drops finished rows."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hubserve.errors import HubserveError, ModelError
from hubserve.histogram import EXPORTED_LATENCY_BOUNDS_S, Histogram
from hubserve.worker.generation.batch import shared_prefix_length
from hubserve.worker.generation.decoding import TextStream
from hubserve.worker.generation.direct import Direct
from hubserve.worker.generation.forward import Logits, RunningBatch, SharedPrefix, as_batch_model, serves
from hubserve.worker.generation.grammar import grammar_vocab_size, refused_tokens
from hubserve.worker.generation.sampling import RowSampling, choose
from hubserve.worker.generation.types import (
    FinishReason,
    GenerationLimits,
    GenerationResult,
    SamplingParams,
    TokenEvent,
    TopToken,
)

log = logging.getLogger("hubserve.worker.generation")
# Prefills in a row (for requests arriving during the previous one) before the running rows get their decode.
MAX_PREFILLS = 4
# Prompts prefilled together that share at least this many leading tokens compute them once (see batch.Prefix).
MIN_SHARED_PREFIX = 8

# What a request's consumer receives: token events, then (instead of a last event) an error.
Outcome = TokenEvent | HubserveError
Outbox = list[tuple["Request", Outcome]]
# Where outcomes go as soon as a forward's tokens are chosen, with how many requests left (ended or cancelled).
Publish = Callable[[Outbox, int], None]


class Request:
    """One generation: prompt, settings, text so far; `sink` is whatever the engine routes its outcomes to.
    `cancelled` may be set from any thread: the scheduler drops the request at its next step."""

    def __init__(
        self, prompt_ids: Sequence[int], params: SamplingParams, eos_ids: Sequence[int], tokenizer: Any, sink: Any,
        streamed: bool = True,
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.eos_ids = frozenset(eos_ids)
        self.sink = sink
        # Whether its consumer takes each token's event as it comes; if not, the events are held (`held`) and handed
        # over with the last one, so that a whole answer costs its event loop one wake, not one per token.
        self.streamed = streamed
        self.held: list[Outcome] = []
        # Where its token events (not the last) are written straight from the generation thread, if anywhere.
        self.direct: Direct | None = None
        self.cancelled = False
        self.done = False
        self.token_ids: list[int] = []
        self.text = TextStream(tokenizer, self.prompt_ids, params.stop)
        self.seed: int | None = None
        self.generator: torch.Generator | None = None
        self.matcher = params.grammar.matcher() if params.grammar is not None else None
        self.arrived_at = time.monotonic()
        self.last_token_at: float | None = None

    def start(self, device: torch.device) -> None:
        """Called when admitted: sampling requests get their generator (a random seed unless they gave one)."""
        if self.params.do_sample:
            self.seed = self.params.seed if self.params.seed is not None else random.getrandbits(63)
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed)

    def accept(self, token_id: int, logprob: float, special: bool, decode: Callable[[list[int]], str],
               top_tokens: tuple[TopToken, ...] = ()) -> TokenEvent:
        """Record a generated token; the event to send (with the result when this token ends the request)."""
        self.token_ids.append(token_id)
        added = self.text.push(token_id, special)
        # TGI's order: the length first, then the EOS token (or a grammar complete), then the stop sequences.
        reason: FinishReason | None = None
        if len(self.token_ids) >= self.params.max_new_tokens:
            reason = "length"
        elif token_id in self.eos_ids or self._grammar_complete(token_id):
            reason = "eos_token"
        elif self.text.stopped(added):
            reason = "stop_sequence"
        result = None
        if reason is not None:
            self.done = True
            result = GenerationResult(decode(self.token_ids), list(self.token_ids), reason, self.seed)
        return TokenEvent(len(self.token_ids), token_id, added, logprob, special, result, top_tokens)

    def _grammar_complete(self, token_id: int) -> bool:
        """Feed the token to the row's grammar: whether the answer is complete (the grammar allows nothing more but
        EOS, so the row ends here rather than spend a forward on it)."""
        if self.matcher is None:
            return False
        if not self.matcher.consume_token(token_id):  # the mask allowed it: llguidance itself failed
            log.error("the grammar refused a token it allowed: %s", self.matcher.get_error())
        return bool(self.matcher.is_stopped())


class TokenTimes:
    """When tokens came, over every request served: time to the first token (from the request's arrival in the
    engine) and between the tokens of one request."""

    def __init__(self) -> None:
        self.first = Histogram(EXPORTED_LATENCY_BOUNDS_S)
        self.between = Histogram(EXPORTED_LATENCY_BOUNDS_S)

    def record(self, request: Request, now: float) -> None:
        if request.last_token_at is None:
            self.first.observe(now - request.arrived_at)
        else:
            self.between.observe(now - request.last_token_at)
        request.last_token_at = now


@dataclass
class ChunkedPrompt:
    """A prompt longer than one prefill chunk, and the prefix of it prefilled so far (a cache of its own)."""

    request: Request
    prefix: SharedPrefix | None = None

    @property
    def done(self) -> int:
        """Prompt tokens prefilled so far."""
        return 0 if self.prefix is None else len(self.prefix.token_ids)

    @property
    def left(self) -> int:
        """Prompt tokens not prefilled yet."""
        return len(self.request.prompt_ids) - self.done


class Scheduler:
    """Owns the model-side batch. Only one thread may call `step` (the engine's); outcomes go to `publish` after
    each forward (a prefill's first tokens do not wait for the decode forward that follows it). `model` is a
    `BatchModel`, or a transformers causal LM (run as `TorchModel`)."""

    def __init__(self, model: Any, tokenizer: Any, limits: GenerationLimits, publish: Publish) -> None:
        self.model = as_batch_model(model)
        self.publish = publish
        self.tokenizer = tokenizer
        self.limits = limits
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self.vocab_size = self.model.vocab_size
        self.grammar_vocab = grammar_vocab_size(self.vocab_size, tokenizer)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.batch: RunningBatch | None = None
        self.sampling: RowSampling | None = None
        self.prefix: SharedPrefix | None = None  # the last shared prefix: later prompts that start with it reuse it
        self.chunked: ChunkedPrompt | None = None  # the long prompt being prefilled a chunk per step
        self.token_texts: dict[int, str] = {}  # each token decoded alone, for the alternatives of `top_n_tokens`
        self.counters = {  # requests `finished` (length, EOS, stop sequence), `cancelled` or `failed` (model error)
            "steps": 0,
            "prefills": 0,
            "prefill_chunks": 0,  # chunks of long prompts prefilled ahead of their last one
            "prefix_tokens_reused": 0,  # prompt tokens a shared prefix spared the prefill
            "tokens_generated": 0,
            "max_batch_size": 0,
            "finished": 0,
            "cancelled": 0,
            "failed": 0,
        }
        self.token_times = TokenTimes()

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running or self.chunked)

    def step(
        self, arrivals: Sequence[Request] = (), newcomers: Callable[[], Sequence[Request]] | None = None
    ) -> None:
        """One iteration: prefill waiting requests, a group that fits `max_prefill_tokens` at a time, up to
        MAX_PREFILLS groups (with `newcomers()`, those that arrived meanwhile), so that a burst shares one decode;
        then one chunk of the long prompt in progress (see `_prefill_chunk`); then decode every running row."""
        self.waiting.extend(arrivals)
        cancelled = self._drop_cancelled()
        if cancelled:
            self.publish([], cancelled)
        for _ in range(MAX_PREFILLS):
            admitted = self._admit()
            if not admitted:
                break
            self._guarded(functools.partial(self._prefill, admitted), admitted)
            if newcomers is not None:
                self.waiting.extend(newcomers())
        if self.chunked is not None:
            self._prefill_chunk(self.chunked)
        if self.batch is not None:
            self._guarded(self._decode_step)

    def fail_all(self, error: HubserveError) -> None:
        """Fail every running and waiting request (the engine is stopping)."""
        outbox: Outbox = []
        left = self._fail_running(error, outbox)
        if self.chunked is not None:
            self.waiting.appendleft(self.chunked.request)
            self.chunked = None
        while self.waiting:
            outbox.append((self.waiting.popleft(), error))
            left += 1
        self.publish(outbox, left)

    def _admit(self) -> list[Request]:
        """Waiting requests that fit: free rows, and a prefill budget (one always fits). A prompt longer than a
        prefill chunk starts its chunked prefill instead, one at a time: the others wait, letting shorter ones by."""
        admitted: list[Request] = []
        passed: list[Request] = []
        room = self.limits.max_batch_size - len(self.running)
        while self.waiting and len(admitted) < room:
            if len(self.waiting[0].prompt_ids) > self.limits.prefill_chunk_tokens:
                request = self.waiting.popleft()
                if self.chunked is None:
                    request.start(self.model.device)
                    self.chunked = ChunkedPrompt(request)
                else:
                    passed.append(request)
                continue
            longest = max([len(self.waiting[0].prompt_ids), *(len(r.prompt_ids) for r in admitted)])
            if admitted and longest * (len(admitted) + 1) > self.limits.max_prefill_tokens:
                break
            request = self.waiting.popleft()
            request.start(self.model.device)
            admitted.append(request)
        self.waiting.extendleft(reversed(passed))
        return admitted

    def _prefill_chunk(self, chunked: ChunkedPrompt) -> None:
        """Extend the long prompt's own prefix by a chunk; once only its last chunk is left, prefill that after it
        into the batch (when a row is free). A failing chunk fails that request alone: the batch is untouched."""
        size = self.limits.prefill_chunk_tokens
        if chunked.left <= size:
            if len(self.running) < self.limits.max_batch_size:
                self.chunked = None
                request = chunked.request
                self._guarded(functools.partial(self._prefill, [request], own=chunked.prefix), [request])
            return
        done = chunked.done
        try:
            chunked.prefix = self.model.prefix(chunked.request.prompt_ids[done : done + size], after=chunked.prefix)
        except Exception as exc:  # the model failed on this prompt: fail it, keep serving
            log.exception("prefilling a chunk failed")
            self.chunked, chunked.request.done = None, True
            self.counters["failed"] += 1
            self.publish([(chunked.request, ModelError(f"{type(exc).__name__}: {exc}"))], 1)
            return
        self.counters["prefill_chunks"] += 1

    def _prefill(self, admitted: list[Request], outbox: Outbox, own: SharedPrefix | None = None) -> int:
        """Prefill `admitted` into the batch, after `own` (the prefix the one admitted request prefilled itself)
        or a shared prefix (see `_prefix_for`)."""
        prompts = [request.prompt_ids for request in admitted]
        # (Not holding on to the kept prefix meanwhile: a new one replaces it, and its cache goes first.)
        kept = own is None and self.prefix is not None and serves(self.prefix, prompts)
        prefix = own if own is not None else self._prefix_for(prompts)
        new, logits = self.model.prefill(prompts, prefix, adopt=own is not None)
        self.counters["prefills"] += 1
        if prefix is not None:  # a new prefix was computed once for these prompts, a kept one before them
            self.counters["prefix_tokens_reused"] += len(prefix.token_ids) * (len(prompts) - (not kept))
        left = self._advance(new, admitted, logits, outbox)
        if admitted:
            self._join(new, admitted)
        return left

    def _prefix_for(self, prompts: list[list[int]]) -> SharedPrefix | None:
        """The kept prefix if every prompt starts with it, else a new one if these prompts share enough tokens."""
        if self.prefix is not None and serves(self.prefix, prompts):
            return self.prefix
        shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
        if shared < MIN_SHARED_PREFIX:
            return None
        self.prefix = None  # the old one's cache goes before the new one is computed
        self.prefix = self.model.prefix(prompts[0][:shared])
        return self.prefix

    def _decode_step(self, outbox: Outbox) -> int:
        assert self.batch is not None
        logits = self.model.decode(self.batch)
        self.counters["steps"] += 1
        return self._advance(self.batch, self.running, logits, outbox)

    def _guarded(self, phase: Callable[[Outbox], int], pending: Sequence[Request] = ()) -> None:
        """Run a forward phase and publish its outcomes; if the model fails, fail every request in flight."""
        outbox: Outbox = []
        try:
            left = phase(outbox)
        except Exception as exc:  # the model failed: fail the requests in flight, keep serving
            log.exception("generation step failed")
            self.running.extend(r for r in pending if not r.done and all(r is not o for o in self.running))
            left = self._fail_running(ModelError(f"{type(exc).__name__}: {exc}"), outbox)
        self.publish(outbox, left)

    def _advance(self, batch: RunningBatch, requests: list[Request], logits: Logits, outbox: Outbox) -> int:
        """Choose and record every row's next token, emit the events, drop the rows that ended."""
        sampling = self.sampling if batch is self.batch and self.sampling is not None else self._sampling(requests)
        refused = None
        if sampling.constrained:
            matchers = [matcher for row in sampling.constrained if (matcher := requests[row].matcher) is not None]
            refused = refused_tokens(matchers, self.grammar_vocab, logits.shape[-1], self.model.device)
        # The rows' tokens as a torch batch only for penalties: right after a forward even that view costs 17 us.
        history = batch.token_ids if sampling.penalized else None
        choice = choose(logits, sampling, history, [len(r.token_ids) for r in requests], refused)
        batch.append(choice.tokens)
        ended = 0
        now = time.monotonic()
        for row, (request, token, logprob) in enumerate(
            zip(requests, choice.tokens.tolist(), choice.logprobs.tolist(), strict=True)
        ):
            top = self._top_tokens(*choice.top[row]) if row in choice.top else ()
            event = request.accept(token, logprob, token in self.special_ids, self._detokenize, top)
            outbox.append((request, event))
            self.token_times.record(request, now)
            ended += request.done
        self.counters["tokens_generated"] += len(requests)
        if ended:
            self.counters["finished"] += ended
            self._keep(batch, requests, [row for row, request in enumerate(requests) if not request.done])
        elif batch is self.batch:
            self.sampling = sampling
        return ended

    def _top_tokens(self, ids: list[int], logprobs: list[float]) -> tuple[TopToken, ...]:
        return tuple(TopToken(token, self._token_text(token), logprob, token in self.special_ids)
                     for token, logprob in zip(ids, logprobs, strict=True))

    def _token_text(self, token: int) -> str:
        """A token decoded alone (remembered: rows asking for alternatives decode the same few again and again)."""
        text = self.token_texts.get(token)
        if text is None:
            text = self.token_texts[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return text

    def _keep(self, batch: RunningBatch, requests: list[Request], rows: list[int]) -> None:
        """Keep only `rows` of `batch` (in place, `requests` too); an emptied running batch goes away."""
        requests[:] = [requests[row] for row in rows]
        if batch is self.batch:
            self.sampling = None
            if not rows:
                self.batch = None
                return
        if rows:
            batch.keep(rows)

    def _join(self, new: RunningBatch, admitted: list[Request]) -> None:
        if self.batch is None:
            self.batch = new
        else:
            self.batch.extend(new)
        self.running.extend(admitted)
        self.sampling = None
        self.counters["max_batch_size"] = max(self.counters["max_batch_size"], len(self.running))

    def _drop_cancelled(self) -> int:
        cancelled = [request for request in self.waiting if request.cancelled]
        self.waiting = deque(request for request in self.waiting if not request.cancelled)
        if self.chunked is not None and self.chunked.request.cancelled:
            cancelled.append(self.chunked.request)
            self.chunked = None
        rows = [row for row, request in enumerate(self.running) if not request.cancelled]
        dropped = len(self.running) - len(rows)
        if dropped and self.batch is not None:
            self._keep(self.batch, self.running, rows)
        for request in cancelled:
            request.done = True
        self.counters["cancelled"] += len(cancelled) + dropped
        return len(cancelled) + dropped

    def _fail_running(self, error: HubserveError, outbox: Outbox) -> int:
        failed = len(self.running)
        outbox.extend((request, error) for request in self.running)
        self.running, self.batch, self.sampling = [], None, None
        self.counters["failed"] += failed
        return failed

    def _sampling(self, requests: list[Request]) -> RowSampling:
        return RowSampling.build(
            [r.params for r in requests],
            [r.generator for r in requests],
            [sorted(r.eos_ids) for r in requests],
            self.vocab_size,
            self.model.device,
        )

    def _detokenize(self, token_ids: list[int]) -> str:
        text: str = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return text
