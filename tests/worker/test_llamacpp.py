"""The llama.cpp backend on the real SmolLM2 Q4_1 GGUF: a lone request's greedy answer equals llama.cpp's own
generation token for token (with flash attention, as llama-server runs, by default; without it when batch-invariant);
batch-invariant, so do requests of different lengths joining and leaving the batch (prompts sharing a prefix, a long
prompt prefilled in chunks); by default, many rows at once (prompts prefilled packed together) finish as asked;
sequences are freed when rows end or are cancelled; and the adapter's side: the backend choice and its fallback, the
cache sized to the limits, seeds, stop strings, grammars."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from hubserve.errors import BadRequest
from hubserve.worker.backends import check_backend
from hubserve.worker.backends.session import BackendUnavailable
from hubserve.worker.generation import GenerationEngine, SamplingParams
from hubserve.worker.generation.batch import PAD
from hubserve.worker.generation.gguf_pipeline import tokenizer_mismatch
from hubserve.worker.generation.llamacpp import (
    FORWARD_TOKENS,
    TOKEN_ROOM,
    CacheShape,
    LlamaBatch,
    LlamaCppModel,
    Sequences,
    Span,
)
from hubserve.worker.generation.sampling import RowSampling, choose
from hubserve.worker.generation.scheduler import Outbox, Request, Scheduler
from hubserve.worker.generation.types import GenerationLimits, GenerationResult, TokenEvent
from hubserve.worker.huge_pages import unavailable as huge_pages_unavailable
from hubserve.worker.tasks import LoadOptions, adapter_class
from hubserve.worker.tasks.text_generation import TextGenerationAdapter
from llama_reference import REFERENCE_THREADS, SMOLLM_FILE, SMOLLM_FOLDER, SMOLLM_GGUF, llama_greedy, llama_tokens
from tiny_models import TINY_GGUF_FILE

torch.set_num_threads(1)

SYSTEM = ("<|im_start|>system\nYou are a helpful assistant. You answer questions about geography, history and "
          "science in a few sentences.<|im_end|>\n")
QUESTIONS = ["What is the capital of France?", "Why is the sky blue?", "Name three rivers in Africa.", "Hi"]


def chat(question: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def llama() -> LlamaCppModel:
    """As an endpoint runs it by default: flash attention on, prompts prefilled together."""
    model = LlamaCppModel(SMOLLM_GGUF, threads=REFERENCE_THREADS)
    model.reshape(CacheShape(rows=16, row_tokens=1024))
    return model


@pytest.fixture(scope="module")
def invariant() -> LlamaCppModel:
    model = LlamaCppModel(SMOLLM_GGUF, threads=REFERENCE_THREADS, batch_invariant=True)
    model.reshape(CacheShape(rows=8, row_tokens=2048))
    return model


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(SMOLLM_FOLDER, gguf_file=SMOLLM_FILE)


@pytest.fixture(scope="module")
def smollm() -> Iterator[TextGenerationAdapter]:
    loaded = adapter_class("text-generation")(SMOLLM_FOLDER, LoadOptions(gguf_file=SMOLLM_FILE))
    assert isinstance(loaded, TextGenerationAdapter) and loaded.engine is not None
    yield loaded
    loaded.engine.stop()


def free_sequences(model: LlamaCppModel) -> int:
    sequences = model._context().sequences  # (made here if no forward made it yet)
    sequences.flush()
    return len(sequences.free)


def generate_alone(model: LlamaCppModel, tokenizer: Any, prompt: list[int], new_tokens: int) -> GenerationResult:
    """One greedy request through an engine of its own."""
    engine = GenerationEngine(model, tokenizer)
    try:
        return asyncio.run(engine.generate(prompt, SamplingParams(max_new_tokens=new_tokens)))
    finally:
        engine.stop()


def step_through(scheduler: Scheduler, arrivals: dict[int, list[Request]], total: int) -> int:
    """Step `scheduler`, letting `arrivals[step]` in at each step, until `total` requests ended; the steps taken."""
    step = 0
    while step < 400 and sum(request.done for group in arrivals.values() for request in group) < total:
        scheduler.step(arrivals.get(step, []))
        step += 1
    return step


# --- the model under the scheduler ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_invariant", [False, True])
def test_one_request_equals_llama_cpp(request: pytest.FixtureRequest, tokenizer: Any, batch_invariant: bool) -> None:
    """Alone, a request decodes as llama.cpp's own generation with the same attention: flash attention by default
    (llama-server's), none when batch-invariant (`Llama(...)`'s default)."""
    llama = request.getfixturevalue("invariant" if batch_invariant else "llama")
    prompt = llama_tokens(chat(QUESTIONS[1]))
    result = generate_alone(llama, tokenizer, prompt, 64)
    assert result.token_ids == llama_greedy(prompt, 64, flash_attn=not batch_invariant)
    assert result.text == tokenizer.decode(result.token_ids, skip_special_tokens=True) and len(result.text) > 40


def test_the_weights_are_read_into_memory_and_moved_onto_huge_pages(llama: LlamaCppModel) -> None:
    moved = llama.huge_pages.result(timeout=120)
    reason = huge_pages_unavailable()
    if reason is not None:  # this machine has none: mapped from the file, as llama.cpp does
        assert moved.failure == reason and moved.size == 0
        return
    assert moved.failure is None
    assert moved.size >= 0.9 * SMOLLM_GGUF.stat().st_size  # the weights (the file is little more)
    assert moved.huge >= 0.95 * moved.size  # on huge pages, as the kernel counts them


def test_without_huge_pages_the_file_is_mapped_and_answers_the_same(tokenizer: Any) -> None:
    mapped = LlamaCppModel(SMOLLM_GGUF, threads=REFERENCE_THREADS, huge_pages=False)
    assert mapped.huge_pages.result(timeout=10).failure == "engine.huge_pages is off"
    assert str(SMOLLM_GGUF) in Path("/proc/self/maps").read_text()
    mapped.reshape(CacheShape(rows=2, row_tokens=512))
    prompt = llama_tokens(chat(QUESTIONS[0]))
    assert generate_alone(mapped, tokenizer, prompt, 24).token_ids == llama_greedy(prompt, 24, flash_attn=True)


def test_requests_joining_and_leaving_equal_llama_cpp(invariant: LlamaCppModel, tokenizer: Any) -> None:
    """Batch-invariant: every row answers as it would alone, whatever joins and leaves beside it."""
    llama = invariant
    left = 0

    def publish(outbox: Outbox, ended: int) -> None:
        nonlocal left
        left += ended

    free = free_sequences(llama)
    limits = GenerationLimits(max_batch_size=8, max_prefill_tokens=512, prefill_chunk_tokens=512)
    scheduler = Scheduler(llama, tokenizer, limits, publish)
    long_prompt = llama_tokens("The history of the river Nile. " * 110)[:700]  # two chunks: 512, then 188
    prompts = [llama_tokens(chat(question)) for question in QUESTIONS] + [long_prompt, llama_tokens("Once upon")]
    lengths = [40, 23, 31, 12, 9, 27]

    def request(index: int) -> Request:
        return Request(prompts[index], SamplingParams(max_new_tokens=lengths[index]), llama.eos_ids, tokenizer, None)

    requests = [request(index) for index in range(len(prompts))]
    # Three sharing the system prompt at once; a long one while they decode; then one more with the prefix, and one
    # without it.
    arrivals = {0: requests[:3], 2: requests[4:5], 5: requests[3:4], 9: requests[5:]}
    step_through(scheduler, arrivals, len(requests))
    assert left == len(requests) and not scheduler.busy
    for prompt, length, done in zip(prompts, lengths, requests, strict=True):
        assert done.token_ids == llama_greedy(prompt, length)
    counters = scheduler.counters
    assert counters["prefix_tokens_reused"] > 0 and counters["prefill_chunks"] == 1 and counters["max_batch_size"] >= 4
    scheduler.prefix = None  # the kept prefix's sequence goes too
    assert free_sequences(llama) == free


def test_prompts_are_prefilled_packed_unless_batch_invariant(llama: LlamaCppModel, invariant: LlamaCppModel) -> None:
    """By default prompts share forwards of FORWARD_TOKENS tokens (one split across two), in sequence order; batch-
    invariant, each prompt goes alone in pieces from its start, as llama.cpp's own prefill."""
    spans = [Span(range(300), 0, 300, seq=2, row=0), Span(range(700), 100, 700, seq=1, row=1),
             Span(range(30), 0, 30, seq=3, row=2)]
    packed = [[(span.seq, span.start, span.end) for span in forward] for forward in llama.forwards(spans)]
    assert packed == [[(1, 100, 612)], [(1, 612, 700), (2, 0, 300), (3, 0, 30)]]
    alone = [[(span.seq, span.start, span.end) for span in forward] for forward in invariant.forwards(spans)]
    assert alone == [[(2, 0, 300)], [(1, 100, 512)], [(1, 512, 700)], [(3, 0, 30)]]
    assert [sum(end - start for _, start, end in forward) for forward in packed] == [FORWARD_TOKENS, 418]


def test_prompts_prefilled_together_give_each_its_own_logits(llama: LlamaCppModel) -> None:
    """Prompts of different lengths prefilled in shared forwards (one longer than a forward): each row's logits are
    its own prompt's, as prefilled alone (to flash attention's rounding: its kernels change with the rows)."""
    prompts = [llama_tokens(chat(question)) for question in QUESTIONS]
    prompts.insert(2, llama_tokens("The history of the river Nile. " * 110)[:600])
    together = llama.prefill(prompts)[1].copy()
    alone = np.concatenate([llama.prefill([prompt])[1] for prompt in prompts])
    assert together.argmax(axis=-1).tolist() == alone.argmax(axis=-1).tolist()
    assert np.abs(together - alone).max() < 0.05 * np.abs(alone).max()



def test_rows_out_of_sequence_order_get_their_own_logits(llama: LlamaCppModel) -> None:
    """A step's rows go to llama.cpp in sequence order: rows held in another order get their own logits back, as the
    same rows held in order do (one forward of the same rows either way); a lone row's too."""
    prompts = [llama_tokens(chat(question)) for question in QUESTIONS[:3]]
    in_order, shuffled, lone = (llama.prefill(prompts)[0] for _ in range(3))
    shuffled.keep([2, 0, 1])
    lone.keep([1])
    assert in_order.seqs == sorted(in_order.seqs) and shuffled.seqs != sorted(shuffled.seqs)
    expected = llama.decode(in_order).copy()
    assert np.array_equal(llama.decode(shuffled), expected[[2, 0, 1]])
    alone = llama.decode(lone)  # to flash attention's rounding: its kernels change with the rows
    assert alone.shape == (1, llama.vocab_size) and int(alone.argmax()) == int(expected[1].argmax())
    assert np.abs(alone[0] - expected[1]).max() < 0.05 * np.abs(expected[1]).max()

def test_many_rows_with_flash_attention_finish_as_asked(llama: LlamaCppModel, tokenizer: Any) -> None:
    """Sixteen rows at once, as llama-server runs them: every one ends as asked (its length, its stop string, or
    cancelled, its sequence freed), and a row's tokens, which may differ from its lone run's as llama-server's do,
    mostly do not."""
    results: dict[int, GenerationResult] = {}

    def publish(outbox: Outbox, ended: int) -> None:
        results.update((id(request), outcome.result) for request, outcome in outbox
                       if isinstance(outcome, TokenEvent) and outcome.result is not None)

    questions = [*QUESTIONS, "Tell me a story about a dragon.", "What is the boiling point of water?",
                 "Write a haiku about the sea.", "Explain photosynthesis.", "Who wrote Hamlet?", "List three colours.",
                 "What is 2 + 2?", "Describe a cat.", "Name a planet.", "What is rain?", "Why do birds sing?"]
    prompts = [llama_tokens(chat(question)) for question in questions]
    lengths = [12 + 2 * row for row in range(len(prompts))]
    free = free_sequences(llama)
    limits = GenerationLimits(max_batch_size=16, max_prefill_tokens=512, prefill_chunk_tokens=512)
    scheduler = Scheduler(llama, tokenizer, limits, publish)

    def request(prompt: list[int], **params: Any) -> Request:
        return Request(prompt, SamplingParams(**params), llama.eos_ids, tokenizer, None)

    rows = [request(prompt, max_new_tokens=length) for prompt, length in zip(prompts, lengths, strict=True)]
    stopped = request(llama_tokens("The capital of France is"), max_new_tokens=40, stop=(".",))
    cancelled = request(prompts[0], max_new_tokens=500, min_new_tokens=500)  # waits for a free row
    scheduler.step([*rows, stopped, cancelled])
    assert scheduler.counters["max_batch_size"] == 16 and scheduler.counters["prefix_tokens_reused"] > 0
    steps = 0
    while scheduler.busy and steps < 400:
        cancelled.cancelled = bool(cancelled.token_ids)
        scheduler.step()
        steps += 1
    scheduler.prefix = None  # the kept shared prefix's sequence goes too
    assert not scheduler.busy and scheduler.counters["cancelled"] == 1 and free_sequences(llama) == free
    assert cancelled.token_ids and id(cancelled) not in results
    for row, length in zip(rows, lengths, strict=True):
        result = results[id(row)]
        assert result.finish_reason == "length" and len(result.token_ids) == length or (
            result.finish_reason == "eos_token" and len(result.token_ids) < length)
        assert result.text == tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert results[id(stopped)].finish_reason == "stop_sequence" and results[id(stopped)].text.endswith(".")
    alone = [llama_greedy(prompt, length, flash_attn=True) for prompt, length in zip(prompts, lengths, strict=True)]
    same = sum(results[id(row)].token_ids == tokens for row, tokens in zip(rows, alone, strict=True))
    assert same >= len(rows) * 3 // 4, f"{same} of {len(rows)} rows as alone"


def test_greedy_rows_choose_in_numpy_as_torch_would(llama: LlamaCppModel) -> None:
    """Plain greedy rows take the numpy path over llama.cpp's own logits: each row's argmax and its log-probability,
    EOS held back under min_new_tokens."""
    prompts = [llama_tokens(chat(question)) for question in QUESTIONS[:3]]
    batch, logits = llama.prefill(prompts)
    assert isinstance(logits, np.ndarray)  # a step of a llama.cpp model touches no torch
    eos = list(llama.eos_ids)
    logits[1, eos[0]] = logits[1].max() + 5  # row 1 would end at once, but must make 4 tokens first
    params = [SamplingParams(max_new_tokens=8), SamplingParams(max_new_tokens=8, min_new_tokens=4),
              SamplingParams(max_new_tokens=8)]
    rows = RowSampling.build(params, [None] * 3, [eos] * 3, llama.vocab_size, torch.device("cpu"))
    expected = torch.from_numpy(logits.copy())
    expected[1, eos] = -float("inf")
    choice = choose(logits, rows, batch.token_ids, [0, 0, 0])
    assert rows.plain_greedy and rows.scratch is not None  # the numpy path ran
    assert isinstance(choice.tokens, np.ndarray) and isinstance(choice.logprobs, np.ndarray)
    assert choice.tokens.tolist() == expected.argmax(dim=-1).tolist() and int(choice.tokens[1]) not in eos
    # Against float64 (torch's float32 log_softmax is itself off by up to ~1e-5 over a 49k vocabulary).
    reference = expected.double().log_softmax(dim=-1).gather(1, torch.from_numpy(choice.tokens)[:, None]).squeeze(1)
    assert choice.logprobs.tolist() == pytest.approx(reference.tolist(), abs=1e-6) and not choice.top


def test_a_cancelled_stream_frees_its_sequence(llama: LlamaCppModel, tokenizer: Any) -> None:
    engine = GenerationEngine(llama, tokenizer)

    async def main() -> list[int]:
        prompt = llama_tokens(chat(QUESTIONS[0]))
        stream = engine.open(prompt, SamplingParams(max_new_tokens=500, min_new_tokens=500))
        await stream.__anext__()
        held = free_sequences_now()
        await stream.aclose()
        deadline = time.monotonic() + 10
        while engine.counters["cancelled"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        after = (await engine.generate(prompt, SamplingParams(max_new_tokens=3))).token_ids
        return [held, free_sequences_now(), len(after)]

    def free_sequences_now() -> int:
        return len(llama.context.sequences.free) if llama.context is not None else 0

    try:
        before = free_sequences(llama)
        held, after, generated = asyncio.run(main())
    finally:
        engine.stop()
    assert held == before - 1 and generated == 3 and after >= held
    assert engine.counters["cancelled"] == 1 and free_sequences(llama) == before


def test_the_cache_is_shaped_by_the_limits(llama: LlamaCppModel) -> None:
    per_token = llama.bytes_per_token()
    assert per_token == 30 * 3 * 64 * 4  # SmolLM2-135M: 30 layers, 3 KV heads of 64, keys and values in 16 bits
    assert llama.fit(16, None, total_tokens=18 * 4096) == CacheShape(rows=16, row_tokens=4096)
    assert llama.fit(32, None, total_tokens=18 * 4096) == CacheShape(rows=32, row_tokens=2048)  # at least 2048
    assert llama.fit(32, 8192, total_tokens=18 * 4096) == CacheShape(rows=7, row_tokens=8192)  # fewer rows
    assert llama.fit(4, None, total_tokens=10**9) == CacheShape(rows=4, row_tokens=8192)  # the model's context


# --- the adapter -----------------------------------------------------------------------------------------------------


def test_auto_serves_a_gguf_on_llama_cpp_with_the_files_tokenizer(smollm: TextGenerationAdapter) -> None:
    assert smollm.backend == "llamacpp" and smollm.backend_note is None
    assert smollm.llama is not None and smollm.limits.max_total_tokens == smollm.llama.shape.row_tokens
    assert not any(parameter.device.type != "meta" for parameter in smollm.pipe.model.parameters())
    assert tokenizer_mismatch(smollm.pipe.tokenizer, smollm.llama.tokenize) is None
    greedy = {"max_new_tokens": 32, "do_sample": False, "return_full_text": False}
    answer = smollm.predict([{"role": "user", "content": QUESTIONS[0]}], greedy)
    prompt = llama_tokens(smollm.render_chat([{"role": "user", "content": QUESTIONS[0]}]))
    reply = answer[0]["generated_text"]
    assert reply == smollm.pipe.tokenizer.decode(llama_greedy(prompt, 32, flash_attn=True), skip_special_tokens=True)
    with pytest.raises(BadRequest, match=r"llama\.cpp, which does not implement these parameters: \['num_beams'\]"):
        smollm.predict("Hello", {"num_beams": 2})


def test_seeds_stop_strings_and_lengths(smollm: TextGenerationAdapter) -> None:
    def run(prompt: str, **parameters: Any) -> Any:
        return asyncio.run(smollm.predict_async(prompt, {"return_full_text": False, **parameters}))[0]

    sampled = {"do_sample": True, "temperature": 1.3, "top_k": 50, "top_p": 0.95, "max_new_tokens": 24}
    prompt = chat("Tell me a story.")
    one, same, other = run(prompt, seed=7, **sampled), run(prompt, seed=7, **sampled), run(prompt, seed=8, **sampled)
    assert one == same and one != other
    stopped = smollm.predict("The capital of France is", {"max_new_tokens": 40, "do_sample": False, "stop": ["."],
                                                           "details": True, "return_full_text": False})
    assert stopped[0]["generated_text"].endswith(".") and stopped[0]["generated_text"].count(".") == 1
    events = asyncio.run(collect(smollm, "Once upon a time", {"max_new_tokens": 7, "do_sample": False}))
    assert len(events) == 7 and events[-1]["details"]["finish_reason"] == "length"


async def collect(adapter: TextGenerationAdapter, inputs: Any, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [event async for event in await adapter.stream_async(inputs, parameters)]


def test_json_schema_answers_validate(smollm: TextGenerationAdapter) -> None:
    text = {"type": "string", "maxLength": 40}
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
              "properties": {"city": text, "country": text}}
    grammar = {"type": "json_schema", "value": {"name": "place", "schema": schema}}

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(
            smollm.predict_async([{"role": "user", "content": question}], {"max_new_tokens": 60, "grammar": grammar})
            for question in ["What is the capital of France?", "What is the capital of Japan?"])))

    answers = asyncio.run(main())
    for answer in answers:
        jsonschema.validate(json.loads(answer[0]["generated_text"][-1]["content"]), schema)


def test_backend_choice(tiny_model: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tiny_model("text-generation-gguf")
    on_llama = adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE))
    on_torch = adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE, backend="torch"))
    assert on_llama.backend == "llamacpp" and on_torch.backend == "torch" and on_torch.backend_note is None
    greedy = {"max_new_tokens": 12, "do_sample": False}
    assert on_llama.predict("Hello world", greedy) == on_torch.predict("Hello world", greedy)  # float32 weights
    invariant = adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE, batch_invariant=True))
    check_backend(invariant)
    assert invariant.llama.batch_invariant and not on_llama.llama.batch_invariant
    on_torch_only = r"engine.batch_invariant applies to text generation on llama\.cpp \(a GGUF file on the CPU\); " \
        r"this endpoint's task \(text-generation\) runs on torch"
    with pytest.raises(BackendUnavailable, match=on_torch_only):
        check_backend(adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE, backend="torch",
                                                                         batch_invariant=True)))
    with pytest.raises(BackendUnavailable, match="engine.backend llamacpp serves a GGUF file"):
        adapter_class("text-generation")(tiny_model("text-generation"), LoadOptions(backend="llamacpp"))
    with pytest.raises(BackendUnavailable, match="serves the CPU; this endpoint's device is cuda"):
        adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE, backend="llamacpp",
                                                           device="cuda"))
    # Without llama.cpp: auto falls back to torch and says why; asking for llama.cpp fails.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.delitem(sys.modules, "hubserve.worker.generation.llamacpp")
    fallback = adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE))
    assert fallback.backend == "torch" and "llama.cpp could not serve this model, so torch does" in str(
        fallback.backend_note) and "llama_cpp" in str(fallback.backend_note)
    assert fallback.predict("Hello world", greedy) == on_torch.predict("Hello world", greedy)
    with pytest.raises(BackendUnavailable, match="engine.backend llamacpp cannot serve this model: .*llama_cpp"):
        adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE, backend="llamacpp"))


def test_a_tokenizer_that_splits_otherwise_is_refused(llama: LlamaCppModel, tiny_model: Callable[[str], Path]) -> None:
    other = AutoTokenizer.from_pretrained(tiny_model("text-generation"))
    assert "into other tokens than llama.cpp's" in str(tokenizer_mismatch(other, llama.tokenize))


def test_limits_follow_the_cache(tiny_model: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BATCH_TOTAL_TOKENS", "2048")
    gguf = tiny_model("text-generation-gguf")
    adapter = adapter_class("text-generation")(gguf, LoadOptions(gguf_file=TINY_GGUF_FILE))
    assert isinstance(adapter, TextGenerationAdapter) and adapter.llama is not None
    # 2048 tokens hold two rows of the tiny model's whole context (512) beside the two spare sequences.
    assert adapter.llama.shape == CacheShape(rows=2, row_tokens=512)
    assert (adapter.limits.max_batch_size, adapter.limits.max_total_tokens, adapter.limits.max_input_tokens) == (
        2, 512, 511)
    adapter.configure_generation(max_batch_size=1, max_total_tokens=256)
    assert adapter.llama.shape == CacheShape(rows=1, row_tokens=256) and adapter.limits.max_input_tokens == 255
    with pytest.raises(BadRequest, match="must be <= 256"):
        adapter.predict("Hello", {"max_new_tokens": 300})
    assert adapter.predict("Hello", {"max_new_tokens": 4, "do_sample": False})  # the context is made again
    assert adapter.llama.context is not None and adapter.llama.context.shape == CacheShape(rows=1, row_tokens=256)


def test_a_prefix_outlives_a_resized_context(tiny_model: Callable[[str], Path]) -> None:
    model = LlamaCppModel(tiny_model("text-generation-gguf") / TINY_GGUF_FILE, threads=1)
    model.reshape(CacheShape(rows=2, row_tokens=256))
    prompt = list(range(10, 60))
    expected = model.prefill([prompt])[1][0].copy()
    prefix = model.prefix(prompt[:20])
    assert np.array_equal(model.prefill([prompt], prefix)[1][0], expected)
    model.reshape(CacheShape(rows=3, row_tokens=512))
    running, again = model.prefill([prompt], prefix)  # the old context's prefix: computed anew in the new one
    assert model.context is not None and model.context.shape.rows == 3 and np.array_equal(again[0], expected)
    model.reshape(CacheShape(rows=4, row_tokens=512))
    longer = model.prefix(prompt[20:30], after=prefix)  # not while a row runs: still the same context
    assert model.context.shape.rows == 3 and longer.token_ids == tuple(prompt[:30])
    adopted = model.prefill([prompt], longer, adopt=True)[1][0]
    assert np.array_equal(adopted, expected) and not longer.seqs
    del running
    model.prefill([prompt])
    assert model.context.shape.rows == 4


def test_a_context_made_in_the_background_serves_its_shape_and_not_another(tiny_model: Callable[[str], Path]) -> None:
    model = LlamaCppModel(tiny_model("text-generation-gguf") / TINY_GGUF_FILE, threads=1)
    prompt = list(range(10, 60))
    model.reshape(CacheShape(rows=2, row_tokens=256), background=True)
    making = model._making
    assert making is not None and model.context is None
    expected = model.prefill([prompt])[1][0].copy()  # waits for it, then uses it
    assert model.context is making.result() and model.context.shape == CacheShape(rows=2, row_tokens=256)
    other = LlamaCppModel(tiny_model("text-generation-gguf") / TINY_GGUF_FILE, threads=1)
    other.reshape(CacheShape(rows=2, row_tokens=256), background=True)
    other.reshape(CacheShape(rows=3, row_tokens=512))  # the limits changed before the first forward
    assert np.array_equal(other.prefill([prompt])[1][0], expected)
    assert other.context is not None and other.context.shape == CacheShape(rows=3, row_tokens=512)


def test_the_adapter_makes_the_default_cache_while_it_loads(smollm: TextGenerationAdapter) -> None:
    # The shape made in the background at load is the one the adapter's limits then asked for, so it was kept.
    smollm.predict("Hello", {"max_new_tokens": 1})  # its first forward, unless an earlier test made it
    assert smollm.llama.context is not None and smollm.llama.context.shape == smollm.llama.shape
    assert smollm.llama.shape == smollm.llama.fit(smollm.limits.max_batch_size, None)


def test_every_sequence_is_used_when_the_batch_is_full(tiny_model: Callable[[str], Path]) -> None:
    """Two rows, and the spares in use: a long prompt between its chunks, then a new shared prefix replacing the
    kept one just as the two rows that used it end (its sequence goes before the new one is taken)."""
    folder = tiny_model("text-generation-gguf")
    model = LlamaCppModel(folder / TINY_GGUF_FILE, threads=1)
    model.reshape(CacheShape(rows=2, row_tokens=256))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=TINY_GGUF_FILE)
    left = 0

    def publish(outbox: Outbox, ended: int) -> None:
        nonlocal left
        left += ended

    limits = GenerationLimits(max_batch_size=2, max_prefill_tokens=64, prefill_chunk_tokens=32)
    scheduler = Scheduler(model, tokenizer, limits, publish)
    first, second = list(range(100, 112)), list(range(200, 214))  # two shared prefixes
    prompts = [list(range(300, 380)), first + [5, 6, 7], first + [8, 9], second + [10, 11], second + [12, 13, 14]]
    lengths = [5, 6, 6, 4, 7]
    requests = [Request(prompt, SamplingParams(max_new_tokens=length), model.eos_ids, tokenizer, None)
                for prompt, length in zip(prompts, lengths, strict=True)]
    step_through(scheduler, {0: requests[:3], 2: requests[3:]}, len(requests))
    assert left == len(requests) and scheduler.counters["failed"] == 0 and scheduler.counters["prefill_chunks"] == 2
    assert scheduler.counters["prefix_tokens_reused"] == 12 + 14  # each prefix computed once for two rows
    for prompt, length, request in zip(prompts, lengths, requests, strict=True):
        assert request.token_ids == llama_greedy(prompt, length, folder / TINY_GGUF_FILE)


def test_the_ggufs_tokenizer_and_config_are_built_once_then_loaded_as_saved(tmp_path: Path) -> None:
    """A replica loads the tokenizer and config transformers builds from a GGUF (seconds: its whole vocabulary)
    from where the first replica saved them, and they split text and configure the model alike."""
    import shutil

    from transformers import AutoConfig

    from hubserve.worker.generation.gguf_pipeline import PROBES, saved_metadata
    from hubserve.worker.tasks.loading import load_tokenizer, pretrained_kwargs

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(SMOLLM_GGUF, folder / SMOLLM_FILE)
    options = LoadOptions(gguf_file=SMOLLM_FILE, exports_dir=str(tmp_path / "exports"))
    saved, plain = saved_metadata(folder, options)
    assert plain.gguf_file is None and (saved / "config.json").is_file() and (saved / "tokenizer.json").is_file()
    assert saved_metadata(folder, options)[0] == saved
    built, loaded = load_tokenizer(folder, options), load_tokenizer(saved, plain)
    for text in PROBES:
        assert loaded(text)["input_ids"] == built(text)["input_ids"]
    assert loaded.chat_template == built.chat_template
    config = AutoConfig.from_pretrained(folder, **pretrained_kwargs(options)).to_dict()
    assert {k: v for k, v in AutoConfig.from_pretrained(saved).to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.items() if k != "_name_or_path"}
    (folder / SMOLLM_FILE).write_bytes((folder / SMOLLM_FILE).read_bytes())  # a changed file is read again
    assert saved_metadata(folder, options)[0] != saved
    assert saved_metadata(folder, LoadOptions(gguf_file=SMOLLM_FILE)) == (folder, LoadOptions(gguf_file=SMOLLM_FILE))


def test_a_batch_grows_its_token_ids_in_place_as_torch_cat_would() -> None:
    """LlamaBatch keeps room after its last column: appends across that room's end, and rows kept or added
    meanwhile, give the token ids a fresh concatenation gives."""
    owner = Sequences(memory=None, count=8)
    batch = LlamaBatch(owner.take(2), np.array([3, 2]), torch.tensor([[5, 6, 7], [PAD, 8, 9]]), owner)
    expected = batch.token_ids.clone()
    for step in range(TOKEN_ROOM + 10):
        tokens = torch.tensor([100 + step, 200 + step])
        batch.append(tokens)
        expected = torch.cat([expected, tokens[:, None]], dim=1)
        assert torch.equal(batch.token_ids, expected)
    other = LlamaBatch(owner.take(1), np.array([1]), torch.tensor([[42]]), owner)
    batch.extend(other)
    batch.append(torch.tensor([1, 2, 3]))
    assert batch.token_ids.shape == (3, expected.shape[1] + 1)
    assert batch.token_ids[2, -2:].tolist() == [42, 3] and batch.token_ids[:2, :-1].equal(expected)
    batch.keep([2])
    assert batch.token_ids.tolist() == [[42, 3]]  # the columns that were padding in every kept row went
