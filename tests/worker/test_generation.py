"""Continuous batching on the tiny Llama in float32: greedy output equals `generate()` token for token while requests
join and leave (long prompts prefilled in chunks), per-request settings stay apart, cancelling frees the slot, TGI's
limits; and the adapter's shapes."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from hubserve.errors import BadRequest, ModelError, Overloaded
from hubserve.worker.generation import GenerationEngine, SamplingParams, TokenEvent
from hubserve.worker.generation import engine as generation_engine
from hubserve.worker.generation.answers import tgi_chunk
from hubserve.worker.generation.decoding import TextStream, raw_decoder
from hubserve.worker.generation.direct import CHUNK_SINK, ChunkSink
from hubserve.worker.generation.params import limits_from_env
from hubserve.worker.generation.scheduler import Outbox, Request, Scheduler
from hubserve.worker.generation.types import GenerationLimits
from hubserve.worker.tasks import LoadOptions, adapter_class
from hubserve.worker.tasks.loading import cpu_has_native_bfloat16, torch_dtype
from hubserve.worker.tasks.text_generation import TextGenerationAdapter
from test_channel import threaded_pair

torch.set_num_threads(1)

PROMPTS = ["My name is Sarah and", "Hello", "The weather in Paris is very nice today and the", "I love", "What"]
LONG = 400  # tokens: long enough to still be running when a test acts on it (the tiny model allows 512 positions)


@pytest.fixture
def engine(lm: tuple[Any, Any]) -> Iterator[GenerationEngine]:
    running = GenerationEngine(*lm, max_concurrent_requests=4)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def adapter(tiny_model: Callable[[str], Path]) -> Iterator[TextGenerationAdapter]:
    loaded = adapter_class("text-generation")(tiny_model("text-generation"), LoadOptions(dtype="float32"))
    assert isinstance(loaded, TextGenerationAdapter) and loaded.engine is not None
    yield loaded
    loaded.engine.stop()


def encode(lm: tuple[Any, Any], text: str) -> list[int]:
    return list(lm[1](text, add_special_tokens=False)["input_ids"])


def reference(lm: tuple[Any, Any], prompt_ids: list[int], new_tokens: int, min_new_tokens: int = 0) -> list[int]:
    """Sequential greedy `generate()` of one unpadded prompt: what the engine must reproduce."""
    model = lm[0]
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                             min_new_tokens=min_new_tokens)
    return list(out[0, len(prompt_ids):].tolist())


def greedy(new_tokens: int, **settings: Any) -> SamplingParams:
    return SamplingParams(max_new_tokens=new_tokens, **settings)


async def settle(engine: GenerationEngine, key: str, value: int) -> dict[str, int]:
    """The engine's counters once `key` reaches `value` (it acts on a cancellation at its next step)."""
    deadline = time.monotonic() + 10
    while engine.counters[key] != value and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return engine.counters


# --- the scheduler, stepped by hand ------------------------------------------------------------------------------


def test_greedy_equals_generate_while_requests_join_and_leave(lm: tuple[Any, Any]) -> None:
    events: dict[int, list[TokenEvent]] = {}
    left = 0

    def publish(outbox: Outbox, ended: int) -> None:
        nonlocal left
        left += ended
        for request, event in outbox:
            assert isinstance(event, TokenEvent)
            events.setdefault(id(request), []).append(event)

    scheduler = Scheduler(lm[0], lm[1], GenerationLimits(max_batch_size=8), publish)
    lengths = [12, 5, 9, 16, 7]  # each leaves when its own length is reached
    requests = [Request(encode(lm, p), greedy(n), [2], lm[1], None) for p, n in zip(PROMPTS, lengths, strict=True)]
    arrivals = {0: requests[:1], 3: requests[1:3], 4: requests[3:4], 8: requests[4:]}  # at which step each joins
    step = 0
    while step < 40 and left < len(requests):
        scheduler.step(arrivals.get(step, []))
        step += 1
    assert left == len(requests) and not scheduler.busy and scheduler.batch is None
    for request, new_tokens in zip(requests, lengths, strict=True):
        assert request.token_ids == reference(lm, request.prompt_ids, new_tokens)
        stream = events[id(request)]
        assert [e.index for e in stream] == list(range(1, len(stream) + 1))
        assert stream[-1].result is not None and stream[-1].result.token_ids == request.token_ids
        assert all(e.result is None for e in stream[:-1])
    counters = scheduler.counters
    assert counters["max_batch_size"] >= 3 and counters["prefills"] == 4  # one per arrival step
    assert counters["finished"] == len(requests)


def test_prompts_sharing_a_prefix_compute_it_once_and_still_equal_generate(lm: tuple[Any, Any]) -> None:
    left = 0

    def publish(outbox: Outbox, ended: int) -> None:
        nonlocal left
        left += ended

    system = "You are a helpful assistant who answers every question about the weather briefly. "
    prompts = [system + "Hello", system + "What is the weather in Paris today and", system + "I love",
               "Something else entirely", system + "Tell me"]
    assert len(encode(lm, system)) >= 12
    scheduler = Scheduler(lm[0], lm[1], GenerationLimits(max_batch_size=8), publish)
    lengths = [9, 2, 6, 4, 5]  # the longest prompt leaves first: the others keep a gap after the prefix
    requests = [Request(encode(lm, p), greedy(n), [2], lm[1], None) for p, n in zip(prompts, lengths, strict=True)]
    arrivals = {0: requests[:3], 2: requests[3:4], 5: requests[4:]}  # then one without it, then one alone with it
    step = 0
    while step < 40 and left < len(requests):
        scheduler.step(arrivals.get(step, []))
        step += 1
    assert left == len(requests) and scheduler.batch is None
    for request, new_tokens in zip(requests, lengths, strict=True):
        assert request.token_ids == reference(lm, request.prompt_ids, new_tokens)
    assert scheduler.prefix is not None and len(scheduler.prefix.token_ids) >= 12
    # computed once for the first three (two spared), then kept for the lone fifth request
    assert scheduler.counters["prefix_tokens_reused"] == 3 * len(scheduler.prefix.token_ids)


def test_requests_over_the_batch_size_wait_for_a_free_row(lm: tuple[Any, Any]) -> None:
    left = 0

    def publish(outbox: Outbox, ended: int) -> None:
        nonlocal left
        left += ended

    scheduler = Scheduler(lm[0], lm[1], GenerationLimits(max_batch_size=2, max_prefill_tokens=1), publish)
    requests = [Request(encode(lm, p), greedy(n), [2], lm[1], None) for p, n in zip(PROMPTS, [4, 9, 6], strict=False)]
    scheduler.step(requests)
    assert len(scheduler.running) == 2 and len(scheduler.waiting) == 1  # and each prompt had its own prefill
    while scheduler.busy:
        scheduler.step()
    assert left == 3 and scheduler.counters["max_batch_size"] == 2 and scheduler.counters["prefills"] == 3
    for request, new_tokens in zip(requests, [4, 9, 6], strict=False):
        assert request.token_ids == reference(lm, request.prompt_ids, new_tokens)


def test_a_long_prompt_is_prefilled_in_chunks_while_others_decode(lm: tuple[Any, Any]) -> None:
    left = 0

    def publish(outbox: Outbox, ended: int) -> None:
        nonlocal left
        left += ended

    limits = GenerationLimits(max_batch_size=8, max_prefill_tokens=64, prefill_chunk_tokens=64)
    scheduler = Scheduler(lm[0], lm[1], limits, publish)
    text = encode(lm, "The weather in Paris is very nice today and the sun is warm. " * 21)
    first, second = Request(text[:300], greedy(6), [2], lm[1], None), Request(text[7:180], greedy(5), [2], lm[1], None)
    short = Request(encode(lm, "Hello"), greedy(40, min_new_tokens=40), [2], lm[1], None)
    scheduler.step([first, second, short])  # the short one does not wait behind the long ones
    assert scheduler.chunked is not None and scheduler.chunked.request is first and list(scheduler.waiting) == [second]
    assert len(short.token_ids) == 2  # its prefill's token, then a decode
    steps = 1
    while not first.token_ids:
        scheduler.step()
        steps += 1
        assert len(short.token_ids) == steps + 1  # a decode at every step: no stall while the long prompt prefills
    assert steps == 5 and scheduler.counters["prefill_chunks"] == 4  # 300 tokens: 4 chunks of 64, then the last 44
    while scheduler.busy:
        scheduler.step()
    assert left == 3 and scheduler.counters["prefill_chunks"] == 6  # the second's 173 tokens: 2 chunks, then 45
    for request, new_tokens in [(first, 6), (second, 5)]:
        assert request.token_ids == reference(lm, request.prompt_ids, new_tokens)
    assert short.token_ids == reference(lm, short.prompt_ids, 40, min_new_tokens=40)


def test_a_cancelled_long_prompt_is_dropped_between_its_chunks(lm: tuple[Any, Any]) -> None:
    outcomes: list[int] = []
    scheduler = Scheduler(lm[0], lm[1], GenerationLimits(prefill_chunk_tokens=32),
                          lambda outbox, ended: outcomes.append(ended))
    request = Request(encode(lm, "My name is Sarah and I live in London. " * 20), greedy(5), [2], lm[1], None)
    scheduler.step([request])
    assert scheduler.counters["prefill_chunks"] == 1 and scheduler.chunked is not None
    request.cancelled = True
    scheduler.step()
    assert scheduler.counters["cancelled"] == 1 and scheduler.counters["prefill_chunks"] == 1 and not scheduler.busy
    assert request.done and not request.token_ids and sum(outcomes) == 1


def test_text_stream_holds_back_partial_utf8(lm: tuple[Any, Any]) -> None:
    tokenizer = lm[1]
    ids = encode(lm, "caf\u00e9 \U0001f600 ok")
    stream = TextStream(tokenizer, encode(lm, "Hello"), stop=["\U0001f600"])
    pieces, stops = [], []
    for token in ids:
        pieces.append(stream.push(token, special=False))
        stops.append(stream.stopped(pieces[-1]))
    assert "".join(pieces) == tokenizer.decode(ids) and "\ufffd" not in "".join(pieces)
    assert "" in pieces  # the emoji's first bytes waited for the rest
    assert stops.index(True) == next(i for i, piece in enumerate(pieces) if "\U0001f600" in piece)



def test_text_stream_decodes_as_the_tokenizer_does(lm: tuple[Any, Any]) -> None:
    """TextStream decodes straight from the Rust tokenizer, as transformers' decode (special tokens kept, no clean-up)
    does; a tokenizer class with its own decoding is decoded through it."""
    tokenizer = lm[1]
    ids = [*tokenizer.all_special_ids, *encode(lm, "caf\u00e9 , isn't  it ?"), *tokenizer.all_special_ids]
    expected = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert raw_decoder(tokenizer)(ids) == expected and expected != tokenizer.decode(ids, skip_special_tokens=True)

    class Shouting(type(tokenizer)):  # type: ignore[misc]
        def _decode(self, token_ids: Any, **kwargs: Any) -> str:
            return str(super()._decode(token_ids, **kwargs)).upper()

    shouting = copy.copy(tokenizer)
    shouting.__class__ = Shouting
    assert raw_decoder(shouting)(ids) == expected.upper()

# --- the engine, from asyncio ------------------------------------------------------------------------------------


def test_concurrent_requests_batch_and_match_generate(engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    prompts = [encode(lm, p) for p in PROMPTS[:4]]

    async def main() -> list[list[int]]:
        first = engine.open(prompts[0], greedy(30, min_new_tokens=30))
        await anext(first)  # the others join a running batch
        later = [engine.generate(p, greedy(n)) for p, n in zip(prompts[1:], [6, 20, 11], strict=True)]
        results = await asyncio.gather(first.result(), *later)
        return [r.token_ids for r in results]

    outputs = asyncio.run(main())
    assert outputs[0] == reference(lm, prompts[0], 30, min_new_tokens=30)
    for prompt, new_tokens, output in zip(prompts[1:], [6, 20, 11], outputs[1:], strict=True):
        assert output == reference(lm, prompt, new_tokens)
    counters = engine.counters
    assert counters["max_batch_size"] >= 2 and counters["running"] == 0 and counters["active"] == 0
    assert counters["finished"] == 4


def test_an_idle_engine_waits_for_company_only_after_requests_that_had_some(
    lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst's requests are prefilled together; a request that found the engine idle and had no company lets the
    next one start without the burst's wait, until company shows up again. (Gaps scaled up for a busy machine.)"""
    monkeypatch.setattr(generation_engine, "BURST_GAP_S", 0.5)
    monkeypatch.setattr(generation_engine, "LONE_GAP_S", 0.05)
    engine = GenerationEngine(*lm, max_batch_delay_ms=5000)
    prompts = [encode(lm, p) for p in PROMPTS[:2]]

    async def pair() -> int:
        """Two requests 0.2 s apart: the prefills they took."""
        await asyncio.sleep(0.6)  # after the last: no company of it
        before = engine.counters["prefills"]
        first = asyncio.ensure_future(engine.generate(prompts[0], greedy(4)))
        await asyncio.sleep(0.2)
        await asyncio.gather(first, engine.generate(prompts[1], greedy(4)))
        return engine.counters["prefills"] - before

    async def alone() -> int:
        await asyncio.sleep(0.6)
        before = engine.counters["prefills"]
        await engine.generate(prompts[0], greedy(4))
        return engine.counters["prefills"] - before

    async def main() -> list[int]:
        return [await pair(), await alone(), await pair(), await pair()]

    try:
        # A new engine expects company; a lone request teaches it otherwise (the next pair's first one starts
        # alone), and that pair's second one, close behind, teaches it back.
        assert asyncio.run(main()) == [1, 1, 2, 1]
    finally:
        engine.stop()


def test_settings_stay_per_request_and_seeds_reproduce(engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    prompt = encode(lm, PROMPTS[0])
    sampled = dict(max_new_tokens=12, min_new_tokens=12, do_sample=True, temperature=1.5, top_k=0, top_p=0.95)

    async def main() -> tuple[Any, ...]:
        return tuple(await asyncio.gather(
            engine.generate(prompt, greedy(12, min_new_tokens=12)),
            engine.generate(prompt, SamplingParams(**sampled, seed=7)),
            engine.generate(prompt, SamplingParams(**sampled, seed=7, repetition_penalty=1.3)),
            engine.generate(prompt, SamplingParams(**sampled, seed=8)),
        ))

    plain, seeded, penalized, other = asyncio.run(main())
    assert plain.token_ids == reference(lm, prompt, 12, min_new_tokens=12) and plain.seed is None
    again = asyncio.run(engine.generate(prompt, SamplingParams(**sampled, seed=7)))
    assert again.token_ids == seeded.token_ids and again.seed == seeded.seed == 7
    assert other.token_ids != seeded.token_ids and penalized.token_ids != seeded.token_ids
    unseeded = asyncio.run(engine.generate(prompt, SamplingParams(**sampled)))
    assert isinstance(unseeded.seed, int)  # reported, so that the client can reproduce it


def test_stop_sequence_ends_generation(engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    prompt = encode(lm, PROMPTS[2])

    async def collect(params: SamplingParams) -> list[TokenEvent]:
        return [event async for event in engine.stream(prompt, params)]

    free = asyncio.run(collect(greedy(20, min_new_tokens=20)))
    texts = [event.text for event in free]
    # A stop sequence first completed by token `cut`: that token's text, found nowhere earlier.
    cut = next(i for i, text in enumerate(texts) if len(text.strip()) >= 2
               and text.strip() not in "".join(texts[: i + 1])[:-1])
    stop = texts[cut].strip()
    stopped = asyncio.run(collect(greedy(20, min_new_tokens=20, stop=("zzz", stop))))
    result = stopped[-1].result
    assert result is not None and result.finish_reason == "stop_sequence" and len(stopped) == cut + 1
    assert stop in result.text and result.token_ids == [e.id for e in free[: cut + 1]]
    assert free[-1].result is not None and free[-1].result.finish_reason == "length"


def test_cancelling_a_stream_frees_its_slot(engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    prompts = [encode(lm, p) for p in PROMPTS[:2]]

    async def main() -> tuple[list[int], dict[str, int], float, float]:
        other = asyncio.ensure_future(engine.generate(prompts[1], greedy(25)))
        stream = engine.stream(prompts[0], greedy(LONG, min_new_tokens=LONG))
        started = time.monotonic()
        await anext(stream)
        first = time.monotonic() - started
        await stream.aclose()
        counters = await settle(engine, "cancelled", 1)
        result = await other
        return result.token_ids, counters, first, time.monotonic() - started

    output, counters, first_token_s, total_s = asyncio.run(main())
    assert output == reference(lm, prompts[1], 25)
    assert counters["cancelled"] == 1
    assert counters["tokens_generated"] < LONG  # cancelled long before its end: the first token came early
    assert first_token_s < total_s
    assert engine.counters["running"] == 0 and engine.counters["active"] == 0


def test_tokens_arrive_as_they_are_generated(engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    async def main() -> tuple[float, list[float]]:
        started = time.monotonic()
        arrivals = [time.monotonic() async for _ in engine.stream(encode(lm, "Hello"), greedy(150, min_new_tokens=150))]
        return started, arrivals

    started, arrivals = asyncio.run(main())
    assert len(arrivals) == 150
    # Not all at the end: most of the time passes between the first token and the last.
    assert arrivals[-1] - arrivals[0] > 0.3 * (arrivals[-1] - started)


def test_a_request_not_streamed_gets_its_events_at_once_with_the_last(
        engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    """A whole answer wakes its event loop once, not once per token: its queue goes from empty to every event."""
    new_tokens = 40

    async def main(streamed: bool) -> tuple[set[int], list[int]]:
        tokens = engine.open(encode(lm, "Hello"), greedy(new_tokens, min_new_tokens=new_tokens), streamed=streamed)
        queue = tokens._queue
        seen = set()
        while queue.qsize() < new_tokens:
            seen.add(queue.qsize())
            await asyncio.sleep(0)
        return seen, [event.id async for event in tokens]

    seen, ids = asyncio.run(main(streamed=False))
    assert seen == {0}
    assert ids == reference(lm, encode(lm, "Hello"), new_tokens)
    seen, ids = asyncio.run(main(streamed=True))
    assert len(seen) > 1  # streamed, they come as they are made
    assert ids == reference(lm, encode(lm, "Hello"), new_tokens)


def test_a_streams_token_frames_are_written_by_the_generation_thread(
        engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    """Under a ChunkSink, a stream opened with a shape has its token events (but the last) written to the channel by
    the generation thread: its event loop gets only the last one, and the frames come in order."""
    new_tokens = 30
    prompt = encode(lm, "Hello")

    async def main() -> tuple[list[TokenEvent], list[tuple[dict[str, Any], bytes]]]:
        receiver, sender = await threaded_pair()
        CHUNK_SINK.set(ChunkSink(sender, 7))
        tokens = engine.open(prompt, greedy(new_tokens, min_new_tokens=new_tokens), shape=tgi_chunk)
        events = [event async for event in tokens]
        frames = [await asyncio.wait_for(receiver.receive(), 10) for _ in range(new_tokens - 1)]
        sender.close()
        receiver.close()
        return events, frames

    events, frames = asyncio.run(main())
    assert len(events) == 1 and events[0].result is not None  # the last only came through the event loop
    assert all(header == {"op": "chunk", "id": 7} for header, _ in frames)
    shaped = [json.loads(body) for _, body in frames]
    assert [event["index"] for event in shaped] == list(range(1, new_tokens))
    assert [event["token"]["id"] for event in shaped] + [events[0].id] == reference(lm, prompt, new_tokens)
    assert all(event["generated_text"] is None and event["details"] is None for event in shaped)


def test_cancelling_the_consuming_task_cancels_the_request(engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    async def consume(stream: AsyncIterator[TokenEvent]) -> None:
        async for _ in stream:
            pass

    async def main() -> dict[str, int]:
        task = asyncio.ensure_future(consume(engine.open(encode(lm, "Hello"), greedy(LONG, min_new_tokens=LONG))))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await settle(engine, "active", 0)

    counters = asyncio.run(main())
    assert counters["cancelled"] == 1 and counters["running"] == 0 and counters["active"] == 0


def test_limits_answer_before_any_event(engine: GenerationEngine, lm: tuple[Any, Any]) -> None:
    prompt = encode(lm, PROMPTS[0])

    async def main() -> None:
        streams = [engine.open(prompt, greedy(LONG, min_new_tokens=LONG)) for _ in range(4)]
        with pytest.raises(Overloaded, match="max_concurrent_requests=4") as overloaded:
            engine.open(prompt, greedy(4))
        assert overloaded.value.status == 429
        for stream in streams:
            await stream.aclose()
        await settle(engine, "active", 0)
        engine.open(prompt, greedy(1)).cancel()  # room again

    asyncio.run(main())
    engine.configure(max_input_tokens=4, max_total_tokens=10)

    async def too_long() -> None:
        with pytest.raises(BadRequest, match=r"`inputs` must have less than 4 tokens. Given: 5"):
            engine.open(prompt, greedy(1))
        message = r"`inputs` tokens \+ `max_new_tokens` must be <= 10. Given: 3 `inputs` tokens and 8 `max_new_tokens`"
        with pytest.raises(BadRequest, match=message):
            engine.open(encode(lm, "Hello there"), greedy(8))

    assert len(prompt) == 5 and len(encode(lm, "Hello there")) == 3
    asyncio.run(too_long())
    with pytest.raises(BadRequest, match="top_p"):
        SamplingParams(do_sample=True, top_p=0.0)


def test_a_failing_forward_fails_its_requests_and_the_engine_goes_on(
    engine: GenerationEngine, lm: tuple[Any, Any]
) -> None:
    async def main() -> list[int]:
        with pytest.raises(ModelError, match="IndexError"):
            await engine.generate([10_000], greedy(3))  # no such token: the embedding lookup fails
        return (await engine.generate(encode(lm, "Hello"), greedy(5))).token_ids

    assert asyncio.run(main()) == reference(lm, encode(lm, "Hello"), 5)
    assert engine.counters["failed"] == 1 and engine.counters["active"] == 0


# --- the task adapter --------------------------------------------------------------------------------------------


def test_adapter_answers_as_the_pipeline_does(adapter: TextGenerationAdapter) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, how are you?"}]
    greedy_parameters = {"max_new_tokens": 6, "do_sample": False}
    cases: list[tuple[Any, dict[str, Any]]] = [
        ("My name is", greedy_parameters),
        (["Hello", "The weather"], {**greedy_parameters, "return_full_text": False}),
        (chat, greedy_parameters),
        ({"messages": chat}, {**greedy_parameters, "return_full_text": False}),
        ([*chat, {"role": "assistant", "content": "I am"}], greedy_parameters),
        ("Hello", {}),  # the model's own defaults (greedy, 8 tokens)
    ]
    for inputs, parameters in cases:
        assert adapter.predict(inputs, dict(parameters)) == adapter._pipeline_predict(inputs, dict(parameters))
    # Requests the engine does not serve still work, through the pipeline.
    tokens = adapter.predict("Hello", {"max_new_tokens": 2, "return_tensors": True})
    assert all(isinstance(token, int) for token in tokens[0]["generated_token_ids"])


def test_adapter_predict_async_batches_concurrent_requests(adapter: TextGenerationAdapter) -> None:
    assert adapter.engine is not None
    before = adapter.engine.counters["prefills"]

    async def main() -> list[Any]:
        return list(await asyncio.gather(
            *(adapter.predict_async(p, {"max_new_tokens": 10, "seed": 3, "do_sample": True}) for p in PROMPTS)
        ))

    answers = asyncio.run(main())
    assert [a[0]["generated_text"][: len(p)] for a, p in zip(answers, PROMPTS, strict=True)] == PROMPTS
    assert adapter.engine.counters["prefills"] - before < len(PROMPTS)  # they shared prefills, hence the batch
    assert asyncio.run(main()) == answers  # seeded


def test_adapter_streams_tgi_events(adapter: TextGenerationAdapter) -> None:
    chat = [{"role": "user", "content": "Hello, how are you?"}]

    async def collect(inputs: Any, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        return [event async for event in await adapter.stream_async(inputs, parameters)]

    events = asyncio.run(collect("My name is", {"max_new_tokens": 5, "do_sample": False}))
    assert [e["index"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    assert all(set(e["token"]) == {"id", "text", "logprob", "special"} for e in events)
    last = events[-1]
    assert last["details"] == {"finish_reason": "length", "generated_tokens": 5, "seed": None}
    predicted = adapter.predict("My name is", {"max_new_tokens": 5, "do_sample": False, "return_full_text": False})
    assert last["generated_text"] == predicted[0]["generated_text"]  # not the prompt: TGI's streaming default
    full = asyncio.run(collect("My name is", {"max_new_tokens": 5, "return_full_text": True}))
    assert full[-1]["generated_text"] == "My name is" + last["generated_text"]
    replies = asyncio.run(collect({"messages": chat}, {"max_new_tokens": 3, "stop": ["zz"], "details": True}))
    reply = adapter.predict(chat, {"max_new_tokens": 3})[0]["generated_text"][-1]["content"]
    assert replies[-1]["generated_text"] == reply


def test_adapter_refuses_before_streaming(adapter: TextGenerationAdapter) -> None:
    async def refused(inputs: Any, parameters: dict[str, Any], match: str) -> None:
        with pytest.raises(BadRequest, match=match):
            await adapter.stream_async(inputs, parameters)

    for inputs, parameters, match in [
        ("Hello", {"max_new_tokens": -1}, "max_new_tokens"),
        ("Hello", {"num_beams": 2}, "num_beams"),
        (["Hello", "Hi"], {}, "one prompt"),
        ("Hello", {"stop": [""]}, "stop"),
        ("Hello", {"seed": -1}, "seed"),
        ("Hello", {"unknown": 1}, "unknown"),
        (42, {}, "string"),
    ]:
        asyncio.run(refused(inputs, parameters, match))
    assert adapter.supports_streaming


def test_limits_come_from_tgi_variables() -> None:
    assert limits_from_env({}) == {}
    env = {"MAX_TOTAL_TOKENS": "1024", "MAX_CONCURRENT_REQUESTS": "8", "MAX_BATCH_PREFILL_TOKENS": " "}
    assert limits_from_env(env) == {"max_total_tokens": 1024, "max_input_tokens": 1023, "max_concurrent_requests": 8}
    assert limits_from_env({"MAX_INPUT_LENGTH": "100", "MAX_BATCH_SIZE": "4"}) == {
        "max_input_tokens": 100, "max_batch_size": 4}


def test_auto_dtype_is_bfloat16_for_generation_only_on_native_bfloat16_cpus() -> None:
    expected = torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
    assert torch_dtype(LoadOptions(), "text-generation") is expected
    assert torch_dtype(LoadOptions(), "fill-mask") is torch.float32
    assert torch_dtype(LoadOptions(dtype="float32"), "text-generation") is torch.float32
