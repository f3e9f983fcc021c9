"""Bounded work per request, inside a replica: generation limits from the model's context (as TGI sets them) on the
engine and the pipeline paths and for seq2seq, TGI's `truncate`, strict parameter types for every task (400s, never
424s), and long texts cut before an encoder's tokenizer sees them."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from conftest import nearly_equal
from hubserve.errors import BadRequest, HubserveError
from hubserve.worker.generation import GenerationLimits
from hubserve.worker.handlers import TaskModel
from hubserve.worker.tasks import LoadOptions, TaskAdapter, adapter_class
from hubserve.worker.tasks.pipeline import plain
from hubserve.worker.tasks.text_generation import TextGenerationAdapter
from hubserve.worker.tasks.truncation import context_length, leading_text, trailing_ids
from tiny_models import WORDS, bart_tokenizer, chat_tokenizer, nllb_tokenizer, wordpiece_tokenizer

torch.set_num_threads(1)

# The tiny models read 512 tokens; these prompts have more.
SENTENCE = "My name is Sarah and I live in London. "
LONG_TEXT = SENTENCE * 70
HUGE_TEXT = SENTENCE * 30_000  # about 1 MB
# A request parameter the continuous-batching engine does not take: the request goes to the transformers pipeline.
PIPELINE_PATH = {"skip_special_tokens": True}
PATHS = pytest.mark.parametrize("path", [{}, PIPELINE_PATH], ids=["engine", "pipeline"])

Adapters = Callable[[str], TaskAdapter]


@pytest.fixture(scope="module")
def adapter(tiny_model: Callable[[str], Path]) -> Iterator[Adapters]:
    """`adapter(task)`: the adapter for `task` over its tiny model, loaded once."""
    loaded: dict[str, TaskAdapter] = {}

    def get(task: str) -> TaskAdapter:
        if task not in loaded:
            model_task = "sentence-embeddings" if task == "sentence-similarity" else task
            loaded[task] = adapter_class(task)(tiny_model(model_task), LoadOptions(dtype="float32"))
        return loaded[task]

    yield get
    for loaded_adapter in loaded.values():
        if isinstance(loaded_adapter, TextGenerationAdapter) and loaded_adapter.engine is not None:
            loaded_adapter.engine.stop()


@pytest.fixture
def generator(adapter: Adapters) -> TextGenerationAdapter:
    loaded = adapter("text-generation")
    assert isinstance(loaded, TextGenerationAdapter) and loaded.engine is not None
    return loaded


def token_ids(adapter: TextGenerationAdapter, text: str) -> list[int]:
    return list(adapter.pipe.tokenizer(text, add_special_tokens=False)["input_ids"])


def reference_text(adapter: TextGenerationAdapter, prompt_ids: list[int], new_tokens: int) -> str:
    """What greedy `generate()` makes of exactly these prompt tokens."""
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = adapter.pipe.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    return str(adapter.pipe.tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True))


# --- text generation: limits from the model, on both paths --------------------------------------------------------


def test_generation_limits_default_to_the_model_context(generator: TextGenerationAdapter) -> None:
    assert generator.engine is not None
    for limits in (generator.limits, generator.engine.limits):
        assert (limits.max_input_tokens, limits.max_total_tokens) == (511, 512)


@PATHS
def test_an_over_long_prompt_is_a_bad_request_naming_the_limit(generator: TextGenerationAdapter,
                                                               path: dict[str, Any]) -> None:
    given = len(token_ids(generator, LONG_TEXT))
    assert given > 512
    # The engine stops tokenizing once the prompt is known to be too long; the pipeline counts every token.
    with pytest.raises(BadRequest, match=f"`inputs` must have less than 511 tokens. Given: (more than 512|{given})"):
        generator.predict(LONG_TEXT, {**path, "max_new_tokens": 2})


@PATHS
def test_truncate_keeps_the_last_tokens_of_the_prompt(generator: TextGenerationAdapter, path: dict[str, Any]) -> None:
    kept = token_ids(generator, LONG_TEXT)[-40:]
    answer = generator.predict(LONG_TEXT, {**path, "truncate": 40, "max_new_tokens": 4, "min_new_tokens": 4})
    assert answer == [{"generated_text": LONG_TEXT + reference_text(generator, kept, 4)}]  # the whole prompt, as TGI


@PATHS
@pytest.mark.parametrize("truncate", [0, 512, -3])
def test_truncate_is_checked(generator: TextGenerationAdapter, path: dict[str, Any], truncate: int) -> None:
    with pytest.raises(BadRequest, match=f"`truncate` must be strictly positive and less than 511. Given: {truncate}"):
        generator.predict("Hello", {**path, "truncate": truncate})


@PATHS
def test_a_max_new_tokens_over_the_limit_is_a_bad_request(generator: TextGenerationAdapter,
                                                          path: dict[str, Any]) -> None:
    message = r"`inputs` tokens \+ `max_new_tokens` must be <= 512. Given: 1 `inputs` tokens and 600 `max_new_tokens`"
    with pytest.raises(BadRequest, match=message):
        generator.predict("Hello", {**path, "max_new_tokens": 600})


def test_a_list_of_more_prompts_than_the_engine_takes_is_a_bad_request(generator: TextGenerationAdapter) -> None:
    assert generator.engine is not None
    most = generator.engine.limits.max_concurrent_requests
    with pytest.raises(BadRequest, match=f"at most {most} prompts"):
        generator.predict(["Hello"] * (most + 1), {"max_new_tokens": 1})


def test_a_defaulted_max_new_tokens_is_reduced_to_fit(generator: TextGenerationAdapter) -> None:
    prompt = generator.pipe.tokenizer.decode(token_ids(generator, LONG_TEXT)[:508])
    assert len(token_ids(generator, prompt)) == 508  # and the model's generation config asks 8 new tokens

    async def streamed() -> dict[str, Any]:
        events = [event async for event in await generator.stream_async(prompt, {"min_new_tokens": 4})]
        return dict(events[-1]["details"])

    assert asyncio.run(streamed())["generated_tokens"] == 4
    # The pipeline path: its answer's tokens are the prompt's and the new ones.
    answer = generator.predict(prompt, {**PIPELINE_PATH, "min_new_tokens": 4, "return_tensors": True})
    assert len(answer[0]["generated_token_ids"]) == 512


def test_spec_and_tgi_variables_override_the_model_limits(generator: TextGenerationAdapter,
                                                         tiny_model: Callable[[str], Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert generator.engine is not None
    generator.configure_generation(max_total_tokens=100, max_input_tokens=None)  # as an endpoint spec sets it
    try:
        assert generator.engine.limits.max_input_tokens == generator.limits.max_input_tokens == 99
        for path in ({}, PIPELINE_PATH):
            with pytest.raises(BadRequest, match="`inputs` must have less than 99 tokens"):
                generator.predict(SENTENCE * 12, {**path, "max_new_tokens": 1})
    finally:
        generator.configure_generation(max_total_tokens=512)
    monkeypatch.setenv("MAX_INPUT_TOKENS", "50")
    from_env = adapter_class("text-generation")(tiny_model("text-generation"), LoadOptions(dtype="float32"))
    assert isinstance(from_env, TextGenerationAdapter) and from_env.engine is not None
    try:
        assert (from_env.limits.max_input_tokens, from_env.limits.max_total_tokens) == (50, 512)
        assert from_env.engine.limits.max_input_tokens == 50
    finally:
        from_env.engine.stop()


def test_max_input_tokens_must_leave_room_for_a_new_token() -> None:
    limits = GenerationLimits().updated(max_total_tokens=512)
    assert limits.max_input_tokens == 511  # as TGI defaults it
    with pytest.raises(ValueError, match=r"max_input_tokens \(512\) must be less than max_total_tokens \(512\)"):
        limits.updated(max_input_tokens=512)


def test_context_length_reads_the_config_and_a_real_tokenizer_limit() -> None:
    config = SimpleNamespace(max_position_embeddings=1024)
    assert context_length(config, SimpleNamespace(model_max_length=int(1e30))) == 1024
    assert context_length(config, SimpleNamespace(model_max_length=512)) == 512
    assert context_length(SimpleNamespace(), SimpleNamespace(model_max_length=int(1e30))) is None


# --- seq2seq -------------------------------------------------------------------------------------------------------


def test_seq2seq_inputs_and_lengths_are_bounded(adapter: Adapters, monkeypatch: pytest.MonkeyPatch) -> None:
    summarize = adapter("summarization")
    with pytest.raises(BadRequest, match=r"`inputs` must have less than 512 tokens. Given: \d+"):
        summarize.predict(LONG_TEXT, {"max_new_tokens": 2})
    truncated = summarize.predict(HUGE_TEXT, {"max_new_tokens": 2, "truncation": True})
    assert truncated == summarize.predict(LONG_TEXT, {"max_new_tokens": 2, "truncation": True})
    with pytest.raises(BadRequest, match="`max_new_tokens` must be <= 512 for this model. Given: 600"):
        summarize.predict("My name is Sarah", {"generate_parameters": {"max_new_tokens": 600}})
    # A default too long for the decoder (here the model's task_specific_params) is reduced instead.
    monkeypatch.setattr(summarize, "defaults", {"max_new_tokens": 600, "min_new_tokens": 512})
    assert isinstance(summarize.predict("My name is Sarah", {})[0]["summary_text"], str)


# --- strict parameter types ----------------------------------------------------------------------------------------

QUESTION = {"question": "Where do I live?", "context": "My name is Sarah and I live in London"}
WRONG_TYPES = [
    ("text-generation", "Hello", {"max_new_tokens": 1.5}),
    ("text-generation", "Hello", {"max_new_tokens": True}),
    ("text-generation", "Hello", {"max_new_tokens": "ten"}),
    ("text-generation", "Hello", {"top_k": True}),
    ("text-generation", "Hello", {"seed": 1.5}),
    ("text-generation", "Hello", {"truncate": "ten"}),
    ("text-generation", "Hello", {"temperature": "x"}),
    ("text-generation", "Hello", {"temperature": True}),
    ("text-generation", "Hello", {"do_sample": 1}),
    ("text-generation", "Hello", {"return_full_text": "no"}),
    ("text-generation", "Hello", {"num_beams": 1.5, **PIPELINE_PATH}),
    ("summarization", "Hello", {"max_new_tokens": 1.5}),
    ("summarization", "Hello", {"generate_parameters": {"num_beams": True}}),
    ("translation", "Hello", {"do_sample": "yes"}),
    ("text-classification", "Hello", {"top_k": 1.5}),
    ("text-classification", "Hello", {"top_k": "ten"}),
    ("text-classification", "Hello", {"function_to_apply": True}),
    ("text-classification", "Hello", {"max_length": 1.5}),
    ("fill-mask", "Paris is the [MASK] of France.", {"top_k": True}),
    ("fill-mask", "Paris is the [MASK] of France.", {"top_k": 1.5}),
    ("fill-mask", "Paris is the [MASK] of France.", {"tokenizer_kwargs": "x"}),
    ("question-answering", QUESTION, {"top_k": True}),
    ("question-answering", QUESTION, {"max_answer_len": 1.5}),
    ("question-answering", QUESTION, {"doc_stride": "ten"}),
    ("question-answering", QUESTION, {"handle_impossible_answer": 1}),
    ("zero-shot-classification", "I love football", {"candidate_labels": ["a", "b"], "multi_label": "yes"}),
    ("zero-shot-classification", "I love football", {"candidate_labels": [1, 2]}),
    ("token-classification", "My name is Sarah", {"aggregation_strategy": True}),
    ("token-classification", "My name is Sarah", {"stride": 1.5}),
    ("token-classification", "My name is Sarah", {"ignore_labels": "O"}),
    ("feature-extraction", "Hello", {"tokenize_kwargs": "x"}),
    ("sentence-embeddings", "Hello", {"normalize_embeddings": "yes"}),
    ("sentence-embeddings", "Hello", {"batch_size": True}),
    ("sentence-embeddings", "Hello", {"truncate_dim": 1.5}),
    ("sentence-ranking", {"query": "a", "texts": ["b"]}, {"apply_softmax": 1}),
]


@pytest.mark.parametrize(("task", "inputs", "parameters"), WRONG_TYPES)
def test_a_wrong_parameter_type_is_a_bad_request_naming_it(adapter: Adapters, task: str, inputs: Any,
                                                            parameters: dict[str, Any]) -> None:
    model = TaskModel(task, adapter(task))
    try:
        outcome: Any = model.run_batch([model.work({"inputs": inputs, "parameters": parameters})])[0]
    except HubserveError as exc:
        outcome = exc
    assert isinstance(outcome, BadRequest), outcome
    name = next(name for name in reversed(parameters) if name != "skip_special_tokens")
    assert name in outcome.message


# --- encoders read the start of a long text, and tokenize only that ------------------------------------------------


@pytest.fixture
def tokenized_chars(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of the longest text any tokenizer is given from now on, listed per call."""
    seen: list[int] = []
    original = PreTrainedTokenizerBase.__call__

    def longest(value: Any) -> int:
        if isinstance(value, str):
            return len(value)
        if isinstance(value, list | tuple):
            return max((longest(item) for item in value), default=0)
        return 0

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(max((longest(value) for value in [*args, *kwargs.values()]), default=0))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", spy)
    return seen


LABELS = {"candidate_labels": ["sports", "politics"]}
ENCODERS = [  # a task, a huge input, its parameters, and the answer on a prefix of it, truncated the library's way
    ("feature-extraction", HUGE_TEXT, {}, lambda a, text: a.pipe(text, truncation=True)),
    ("text-classification", HUGE_TEXT, {}, lambda a, text: a.pipe(text, truncation=True)),
    ("text-classification", {"text": HUGE_TEXT, "text_pair": HUGE_TEXT}, {},
     lambda a, text: a.pipe({"text": text, "text_pair": text}, truncation=True)),
    ("token-classification", HUGE_TEXT, {}, lambda a, text: a.pipe(text)),
    ("fill-mask", "Paris is the [MASK] of France. " + HUGE_TEXT, {},
     lambda a, text: a.pipe("Paris is the [MASK] of France. " + text, tokenizer_kwargs={"truncation": True})),
    ("zero-shot-classification", HUGE_TEXT, LABELS, lambda a, text: a.pipe(text, **LABELS)),
    ("sentence-embeddings", HUGE_TEXT, {}, lambda a, text: {"embeddings": a.model.encode(text).tolist()}),
    ("sentence-ranking", [["who?", HUGE_TEXT]], {},
     lambda a, text: {"scores": a.model.predict([("who?", text)]).tolist()}),
]


@pytest.mark.parametrize(("task", "inputs", "parameters", "expected"), ENCODERS, ids=[e[0] for e in ENCODERS])
def test_a_huge_text_costs_what_its_first_tokens_cost(adapter: Adapters, tokenized_chars: list[int], task: str,
                                                       inputs: Any, parameters: dict[str, Any],
                                                       expected: Callable[[Any, str], Any]) -> None:
    loaded = adapter(task)
    reference = plain(expected(loaded, HUGE_TEXT[:20_000]))  # a prefix far longer than what the model reads
    tokenized_chars.clear()
    model = TaskModel(task, loaded)
    answer = model.run_batch([model.work({"inputs": inputs, "parameters": parameters})])[0]
    if task == "zero-shot-classification":  # its answer holds the text it classified: the part the model read
        assert HUGE_TEXT.startswith(answer.pop("sequence")) and reference.pop("sequence")
    assert nearly_equal(answer, reference), answer
    assert 0 < max(tokenized_chars) < 8_000


def test_a_mask_token_past_what_the_model_reads_is_a_bad_request(adapter: Adapters) -> None:
    with pytest.raises(BadRequest, match=r"mask token \[MASK\] within its first 510 tokens"):
        adapter("fill-mask").predict(LONG_TEXT + " Paris is the [MASK] of France.", {})


TOKENIZERS = pytest.mark.parametrize(
    "tokenizer", [wordpiece_tokenizer(), chat_tokenizer(), bart_tokenizer(), nllb_tokenizer()],
    ids=["wordpiece", "byte-level-bpe", "bart", "metaspace-bpe"])


def random_texts(seed: int) -> Iterator[tuple[str, int]]:
    """100 texts of words, punctuation, accents, emoji and long runs, each with a token count to cut it to."""
    rng = random.Random(seed)
    pieces = [*WORDS, ".", ",", "!", "\n", "caf\u00e9", "\U0001f600", "na\u00efve", "12345", "a" * 150, "[SEP]"]
    for _ in range(100):
        yield ("".join(rng.choice(pieces) + rng.choice([" ", "", "  "]) for _ in range(rng.randint(1, 250))),
               rng.randint(1, 300))


@TOKENIZERS
def test_leading_text_tokenizes_to_the_first_tokens(tokenizer: Any) -> None:
    for text, tokens in random_texts(0):
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        kept = tokenizer(leading_text(tokenizer, text, tokens), add_special_tokens=False)["input_ids"]
        # Exactly the first tokens; a few fewer only where the cut would split a character (an emoji's bytes).
        assert kept == full[: len(kept)] and min(tokens, len(full)) - 4 <= len(kept) <= tokens


@TOKENIZERS
def test_trailing_ids_are_the_last_tokens(tokenizer: Any) -> None:
    for text, tokens in random_texts(1):
        assert trailing_ids(tokenizer, text, tokens) == tokenizer(text, add_special_tokens=False)["input_ids"][-tokens:]


def test_a_huge_prompt_costs_what_the_limit_lets_the_model_read(generator: TextGenerationAdapter,
                                                                tokenized_chars: list[int]) -> None:
    """Prompts are tokenized on the replica's event loop: a 1 MB one is refused, or truncated, from a few thousand
    characters, not tokenized whole (seconds during which no other caller of the replica gets a token)."""
    with pytest.raises(BadRequest, match="`inputs` must have less than 511 tokens. Given: more than 512"):
        generator.predict(HUGE_TEXT, {"max_new_tokens": 2})
    chat = [{"role": "user", "content": HUGE_TEXT}]
    with pytest.raises(BadRequest, match="`inputs` must have less than 511 tokens. Given: more than 512"):
        generator.predict(chat, {"max_new_tokens": 2})
    assert 0 < max(tokenized_chars) < 16_000
    kept = token_ids(generator, HUGE_TEXT[-2_000:])[-40:]
    tokenized_chars.clear()
    answer = generator.predict(HUGE_TEXT, {"truncate": 40, "max_new_tokens": 4, "min_new_tokens": 4,
                                           "return_full_text": False})
    assert 0 < max(tokenized_chars) < 16_000
    assert answer == [{"generated_text": reference_text(generator, kept, 4)}]


def test_a_cancelled_pipeline_request_stops_generating(generator: TextGenerationAdapter) -> None:
    """A request the engine does not serve runs generate() on the engine's thread: cancelling it (as a replica does
    past the endpoint's timeout) ends that generate() at its next token."""
    assert generator.engine is not None
    engine = generator.engine
    parameters = {"num_beams": 4, "max_new_tokens": 500, "min_new_tokens": 500}  # seconds of beam search

    async def main() -> float:
        request = asyncio.ensure_future(generator.predict_async("Hello", parameters))
        await asyncio.sleep(0.2)
        request.cancel()
        cancelled = time.monotonic()
        await engine.run(lambda: None)  # the thread is free again
        return time.monotonic() - cancelled

    assert asyncio.run(main()) < 0.5
