"""TGI's and OpenAI's generation protocols on a replica's engine (the tiny Llama, in process): the answers' and
chunks' shapes, usage counts, stop strings (cut for OpenAI, kept by TGI), n choices, logprobs, JSON schemas and tool
calls by constrained decoding, and bad requests refused by name before anything runs. A lone OpenAI choice's chunks
made on the generation thread (under a worker's channel) are those the event loop makes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from hubserve.errors import BadRequest
from hubserve.invocation import InvocationRequest, Route
from hubserve.spec import EngineSpec
from hubserve.worker import protocols
from hubserve.worker.engine import Engine
from hubserve.worker.generation.direct import ChunkSink
from hubserve.worker.handlers import TaskModel
from hubserve.worker.tasks import LoadOptions, adapter_class
from hubserve.worker.tasks.text_generation import TextGenerationAdapter
from test_channel import threaded_pair

torch.set_num_threads(1)

MESSAGES: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."},
                                  {"role": "user", "content": "Tell me about Paris."}]
GREEDY = {"temperature": 0}
ANSWER_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["answer", "sure"],
                                 "properties": {"answer": {"enum": ["yes", "no", "maybe"]},
                                                "sure": {"type": "boolean"}}}
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a unit", "parameters": {
        "type": "object", "additionalProperties": False, "required": ["unit"],
        "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}}}}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a zone", "parameters": {
        "type": "object", "additionalProperties": False, "required": ["zone"],
        "properties": {"zone": {"enum": ["UTC", "CET"]}}}}},
]


def load(folder: Path) -> Engine:
    adapter = adapter_class("text-generation")(folder, LoadOptions(dtype="float32"))
    return Engine(TaskModel("text-generation", adapter), EngineSpec())


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_model

    # Room for tools announced in the prompt: the tiny tokenizer writes their JSON in many tokens.
    return build_tiny_model("text-generation", tmp_path_factory.mktemp("long") / "tiny-llama", max_positions=2048)


@pytest.fixture(scope="module")
def engine(model: Path) -> Iterator[Engine]:
    running = load(model)
    yield running
    generation(running).engine.stop()  # type: ignore[union-attr]


def generation(engine: Engine) -> TextGenerationAdapter:
    assert isinstance(engine.generator, TextGenerationAdapter)
    return engine.generator


def token_ids(engine: Engine, text: str) -> list[int]:
    """`text`'s ids as the model reads a prompt (no special tokens added)."""
    tokenizer: Any = generation(engine).pipe.tokenizer
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def request(route: Route, body: Any) -> InvocationRequest:
    return InvocationRequest(body=json.dumps(body).encode(), route=route)


def call(engine: Engine, route: Route, body: Any) -> Any:
    return json.loads(asyncio.run(engine.invoke(request(route, body))).body)


def stream(engine: Engine, route: Route, body: Any) -> list[dict[str, Any]]:
    async def events() -> list[dict[str, Any]]:
        return [event async for event in await protocols.stream(engine, request(route, body))]

    return asyncio.run(events())


def stream_through_a_channel(engine: Engine, route: Route, body: Any) -> tuple[list[dict[str, Any]], int]:
    """The stream as a worker sends it: the events the generation thread writes to its channel itself, then those
    that come through the event loop; and how many the generation thread wrote."""
    async def events() -> tuple[list[dict[str, Any]], int]:
        receiver, sender = await threaded_pair()
        looped = [event async for event in await protocols.stream(engine, request(route, body), ChunkSink(sender, 7))]
        written = []
        with contextlib.suppress(TimeoutError):  # all of them came before the loop heard of the last event
            while True:
                header, chunk = await asyncio.wait_for(receiver.receive(), 0.5)
                assert header == {"op": "chunk", "id": 7}
                written.append(json.loads(chunk))
        sender.close()
        receiver.close()
        return written + looped, len(written)

    return asyncio.run(events())


def chat(engine: Engine, **fields: Any) -> Any:
    return call(engine, Route.CHAT, {"model": "tiny", "messages": MESSAGES, **fields})


def chat_chunks(engine: Engine, **fields: Any) -> list[dict[str, Any]]:
    return stream(engine, Route.CHAT, {"model": "tiny", "messages": MESSAGES, "stream": True, **fields})


def content_of(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]
                   if choice["index"] == index)


def generated(engine: Engine, inputs: str, **parameters: Any) -> Any:
    return call(engine, Route.GENERATE, {"inputs": inputs, "parameters": {"details": True, **parameters}})


def test_chat_answers_as_openai_with_the_template_rendered_prompt(engine: Engine) -> None:
    answer = chat(engine, max_tokens=8, **GREEDY)
    rendered = generation(engine).render_chat(MESSAGES)
    same = generated(engine, rendered, max_new_tokens=8)
    assert answer["id"].startswith("chatcmpl-") and answer["object"] == "chat.completion"
    assert answer["model"] == "tiny" and isinstance(answer["created"], int) and answer["system_fingerprint"]
    [choice] = answer["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"] == {"role": "assistant", "content": same["generated_text"]}
    assert choice["finish_reason"] == {"length": "length", "eos_token": "stop"}[same["details"]["finish_reason"]]
    prompt_tokens = len(token_ids(engine, rendered))
    completion_tokens = same["details"]["generated_tokens"]
    assert answer["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens}


def test_max_completion_tokens_bounds_the_answer(engine: Engine) -> None:
    assert chat(engine, max_completion_tokens=3, **GREEDY)["usage"]["completion_tokens"] == 3


def test_stop_strings_are_cut_from_openai_answers_and_kept_by_tgi(engine: Engine) -> None:
    rendered = generation(engine).render_chat(MESSAGES)
    text = generated(engine, rendered, max_new_tokens=16)["generated_text"]
    stop = next(text[at:at + 2] for at in range(3, len(text) - 1) if text[at:at + 2].isalpha())
    before = text[:text.find(stop)]
    answer = chat(engine, max_tokens=16, stop=stop, **GREEDY)
    assert answer["choices"][0]["message"]["content"] == before
    assert answer["choices"][0]["finish_reason"] == "stop"
    chunks = chat_chunks(engine, max_tokens=16, stop=[stop], **GREEDY)
    assert content_of(chunks) == before
    tgi = generated(engine, rendered, max_new_tokens=16, stop=[stop])
    assert tgi["details"]["finish_reason"] == "stop_sequence" and stop in tgi["generated_text"]


def test_chat_stream_adds_up_to_the_answer_then_gives_the_usage(engine: Engine) -> None:
    answer = chat(engine, max_tokens=10, **GREEDY)
    chunks = chat_chunks(engine, max_tokens=10, stream_options={"include_usage": True}, **GREEDY)
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(chunks) == answer["choices"][0]["message"]["content"]
    finish = [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"] if choice["finish_reason"]]
    assert finish == [answer["choices"][0]["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == answer["usage"]
    assert "usage" not in chat_chunks(engine, max_tokens=2, **GREEDY)[-1]


@pytest.mark.parametrize("route, fields", [
    (Route.CHAT, {"max_tokens": 12}),
    (Route.CHAT, {"max_tokens": 12, "logprobs": True, "top_logprobs": 2, "stream_options": {"include_usage": True}}),
    (Route.CHAT, {"max_tokens": 16, "stop": "STOP"}),  # the stop string found below
    (Route.COMPLETIONS, {"prompt": "The day", "max_tokens": 8, "echo": True}),
    (Route.COMPLETIONS, {"prompt": "The day", "max_tokens": 8, "logprobs": 1}),
], ids=["chat", "chat-logprobs-usage", "chat-stop", "completions-echo", "completions-logprobs"])
def test_a_lone_choices_chunks_made_by_the_generation_thread_are_the_event_loops(
        engine: Engine, route: Route, fields: dict[str, Any]) -> None:
    body = {"model": "tiny", "stream": True, **GREEDY, **fields}
    if route is Route.CHAT:
        body["messages"] = MESSAGES
    if body.get("stop") == "STOP":  # two letters the greedy answer has after its first few
        text = generated(engine, generation(engine).render_chat(MESSAGES), max_new_tokens=16)["generated_text"]
        body["stop"] = next(text[at:at + 2] for at in range(3, len(text) - 1) if text[at:at + 2].isalpha())
    looped = stream(engine, route, body)
    sent, written = stream_through_a_channel(engine, route, body)
    assert written >= 2  # the opening and the first tokens came from the generation thread
    assert [{**chunk, "id": "", "created": 0} for chunk in sent] == [{**chunk, "id": "", "created": 0}
                                                                    for chunk in looped]


def test_n_gives_independent_choices_reproducible_with_a_seed(engine: Engine) -> None:
    sampled = chat(engine, n=3, seed=5, max_tokens=6)
    again = chat(engine, n=3, seed=5, max_tokens=6)
    texts = [choice["message"]["content"] for choice in sampled["choices"]]
    assert [choice["index"] for choice in sampled["choices"]] == [0, 1, 2]
    assert texts == [choice["message"]["content"] for choice in again["choices"]]
    assert len(set(texts)) > 1
    assert sampled["usage"]["completion_tokens"] == 18  # the prompt counted once
    assert sampled["usage"]["prompt_tokens"] == chat(engine, max_tokens=1)["usage"]["prompt_tokens"]
    greedy = chat(engine, n=2, max_tokens=6, **GREEDY)
    assert greedy["choices"][0]["message"] == greedy["choices"][1]["message"]
    chunks = chat_chunks(engine, n=2, max_tokens=6, **GREEDY)
    assert content_of(chunks, 0) == content_of(chunks, 1) == greedy["choices"][0]["message"]["content"]
    assert sorted(choice["index"] for chunk in chunks for choice in chunk["choices"] if choice["finish_reason"]) \
        == [0, 1]


def test_logprobs_with_the_most_likely_alternatives(engine: Engine) -> None:
    answer = chat(engine, max_tokens=6, logprobs=True, top_logprobs=3, **GREEDY)
    choice = answer["choices"][0]
    entries = choice["logprobs"]["content"]
    assert len(entries) == answer["usage"]["completion_tokens"]
    assert "".join(entry["token"] for entry in entries) == choice["message"]["content"]
    for entry in entries:
        assert entry["bytes"] == list(entry["token"].encode())
        alternatives = [top["logprob"] for top in entry["top_logprobs"]]
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        assert entry["logprob"] == pytest.approx(alternatives[0], abs=1e-4)  # greedy: the most likely one
    assert all(entry["top_logprobs"] == [] for entry in chat(engine, max_tokens=2, logprobs=True)["choices"][0][
        "logprobs"]["content"])


@pytest.mark.parametrize("response_format", [
    {"type": "json_schema", "json_schema": {"name": "verdict", "schema": ANSWER_SCHEMA, "strict": True}},
    {"type": "json_object", "value": ANSWER_SCHEMA},  # huggingface_hub's rewrite of the above
    {"type": "json_object", "schema": ANSWER_SCHEMA},  # LangChain's ChatHuggingFace.with_structured_output
    {"type": "json", "value": ANSWER_SCHEMA},  # TGI's grammar
])
def test_json_schema_answers_validate(engine: Engine, response_format: dict[str, Any]) -> None:
    answer = chat(engine, max_tokens=40, response_format=response_format)
    jsonschema.validate(json.loads(answer["choices"][0]["message"]["content"]), ANSWER_SCHEMA)
    assert answer["choices"][0]["finish_reason"] == "stop"
    streamed = content_of(chat_chunks(engine, max_tokens=40, response_format=response_format))
    jsonschema.validate(json.loads(streamed), ANSWER_SCHEMA)


def assert_tool_call(message: dict[str, Any], names: set[str]) -> None:
    assert message["content"] is None
    [call_] = message["tool_calls"]
    assert call_["id"].startswith("call_") and call_["type"] == "function" and call_["function"]["name"] in names
    [tool] = [tool for tool in TOOLS if tool["function"]["name"] == call_["function"]["name"]]
    jsonschema.validate(json.loads(call_["function"]["arguments"]), tool["function"]["parameters"])


def test_tools_required_or_named_answer_with_a_tool_call(engine: Engine) -> None:
    required = chat(engine, max_tokens=60, tools=TOOLS, tool_choice="required")
    assert required["choices"][0]["finish_reason"] == "tool_calls"
    assert_tool_call(required["choices"][0]["message"], {"get_weather", "get_time"})
    named = chat(engine, max_tokens=60, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert_tool_call(named["choices"][0]["message"], {"get_time"})
    chunks = chat_chunks(engine, max_tokens=60, tools=TOOLS, tool_choice="required")
    [delta] = [choice["delta"] for chunk in chunks for choice in chunk["choices"] if "tool_calls" in choice["delta"]]
    assert delta["tool_calls"][0]["index"] == 0
    assert_tool_call({"content": None, "tool_calls": [{k: v for k, v in delta["tool_calls"][0].items()
                                                       if k != "index"}]}, {"get_weather", "get_time"})
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tools_auto_or_none_may_answer_in_words(engine: Engine) -> None:
    auto = chat(engine, max_tokens=60, tools=TOOLS)["choices"][0]
    if auto["finish_reason"] == "tool_calls":
        assert_tool_call(auto["message"], {"get_weather", "get_time"})
    else:
        assert isinstance(auto["message"]["content"], str) and "tool_calls" not in auto["message"]
    plain = chat(engine, max_tokens=5, tools=TOOLS, tool_choice="none", **GREEDY)
    assert plain["choices"][0]["message"] == chat(engine, max_tokens=5, **GREEDY)["choices"][0]["message"]


def test_a_conversation_with_tool_calls_and_results_is_answered(engine: Engine) -> None:
    function = {"name": "get_weather", "arguments": '{"unit": "celsius"}'}
    call_ = {"id": "call_1", "type": "function", "function": function}
    messages = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call_]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"},
                {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "tomorrow?"}]}]
    answer = call(engine, Route.CHAT, {"messages": messages, "max_tokens": 3, "tools": TOOLS, **GREEDY})
    assert answer["usage"]["prompt_tokens"] > chat(engine, max_tokens=1)["usage"]["prompt_tokens"]


def test_completions(engine: Engine) -> None:
    answer = call(engine, Route.COMPLETIONS, {"model": "tiny", "prompt": ["The day", "A cat"], "n": 2, **GREEDY})
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    texts = [choice["text"] for choice in answer["choices"]]
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2, 3]
    assert texts[0] == texts[1] == generated(engine, "The day", max_new_tokens=16)["generated_text"]
    assert texts[2] == texts[3] == generated(engine, "A cat", max_new_tokens=16)["generated_text"]
    prompt_tokens = len(token_ids(engine, "The day")) + len(token_ids(engine, "A cat"))
    assert answer["usage"]["prompt_tokens"] == prompt_tokens  # each prompt counted once
    assert answer["usage"]["completion_tokens"] <= 4 * 16  # OpenAI's default max_tokens
    echoed = call(engine, Route.COMPLETIONS, {"prompt": "The day", "echo": True, "max_tokens": 4, **GREEDY})
    assert echoed["choices"][0]["text"] == "The day" + generated(engine, "The day", max_new_tokens=4)["generated_text"]


def test_completions_logprobs_and_stream(engine: Engine) -> None:
    body = {"prompt": "The day", "max_tokens": 5, "logprobs": 2, **GREEDY}
    choice = call(engine, Route.COMPLETIONS, body)["choices"][0]
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"] and len(logprobs["token_logprobs"]) == 5
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])
    assert logprobs["text_offset"] == [sum(map(len, logprobs["tokens"][:i])) for i in range(5)]
    chunks = stream(engine, Route.COMPLETIONS, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert "".join(c["text"] for chunk in chunks for c in chunk["choices"]) == choice["text"]
    assert chunks[-1]["usage"]["completion_tokens"] == 5 and chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_concurrent_chat_streams_share_the_batch(engine: Engine) -> None:
    counters = generation(engine).engine.counters  # type: ignore[union-attr]
    steps = counters["steps"]

    async def together() -> list[list[dict[str, Any]]]:
        async def one(text: str) -> list[dict[str, Any]]:
            body = {"messages": [{"role": "user", "content": text}], "max_tokens": 12, "stream": True, **GREEDY,
                    "stream_options": {"include_usage": True}}
            return [chunk async for chunk in await protocols.stream(engine, request(Route.CHAT, body))]

        return await asyncio.gather(*(one(text) for text in ("Hello", "What now?", "Paris is", "Tell me")))

    answers = asyncio.run(together())
    tokens = sum(chunks[-1]["usage"]["completion_tokens"] for chunks in answers)
    assert tokens > 8
    assert generation(engine).engine.counters["steps"] - steps < tokens  # type: ignore[union-attr]


def test_tgi_generate_and_its_details(engine: Engine) -> None:
    plain = call(engine, Route.GENERATE, {"inputs": "The day", "parameters": {"max_new_tokens": 4}})
    assert set(plain) == {"generated_text"}  # TGI's /generate: no prompt, no details unless asked
    answer = generated(engine, "The day", max_new_tokens=4, top_n_tokens=2, seed=3, do_sample=True)
    details = answer["details"]
    assert details["generated_tokens"] == len(details["tokens"]) == len(details["top_tokens"]) == 4
    assert details["prefill"] == [] and details["seed"] == 3 and details["finish_reason"] == "length"
    assert "".join(token["text"] for token in details["tokens"]) == answer["generated_text"]
    assert all(set(token) == {"id", "text", "logprob", "special"} for top in details["top_tokens"] for token in top)
    full = call(engine, Route.GENERATE, {"inputs": "The day", "parameters": {"max_new_tokens": 4,
                                                                           "return_full_text": True}})
    assert full["generated_text"] == "The day" + plain["generated_text"]


def test_tgi_compat_root_answers_a_list_with_the_prompt(engine: Engine) -> None:
    text = call(engine, Route.GENERATE, {"inputs": "The day", "parameters": {"max_new_tokens": 4}})["generated_text"]
    assert call(engine, Route.ROOT, {"inputs": "The day", "parameters": {"max_new_tokens": 4}}) == \
        [{"generated_text": "The day" + text}]
    [detailed] = call(engine, Route.ROOT, {"inputs": "The day", "parameters": {"max_new_tokens": 4, "details": True}})
    assert detailed["generated_text"] == "The day" + text and detailed["details"]["generated_tokens"] == 4
    conversation = call(engine, Route.ROOT, {"inputs": MESSAGES, "parameters": {"max_new_tokens": 2}})
    assert conversation[0]["generated_text"][-1]["role"] == "assistant"  # the task's own answer, as before


@pytest.mark.parametrize("route", [Route.GENERATE_STREAM, Route.ROOT])
def test_tgi_stream_events(engine: Engine, route: Route) -> None:
    body = {"inputs": "The day", "parameters": {"max_new_tokens": 4, "top_n_tokens": 2}, "stream": True}
    events = stream(engine, route, body)
    assert [event["index"] for event in events] == [1, 2, 3, 4]
    assert all(len(event["top_tokens"]) == 2 and event["generated_text"] is None for event in events[:-1])
    text = call(engine, Route.GENERATE, {"inputs": "The day", "parameters": {"max_new_tokens": 4}})["generated_text"]
    assert events[-1]["generated_text"] == "".join(event["token"]["text"] for event in events) == text
    assert events[-1]["details"] == {"finish_reason": "length", "generated_tokens": 4, "seed": None,
                                     "input_length": len(token_ids(engine, "The day"))}


def test_tgi_tokenize_gives_offsets(engine: Engine) -> None:
    text = "Hello world, said Paris"
    tokens = call(engine, Route.TOKENIZE, {"inputs": text})
    assert [token["id"] for token in tokens] == token_ids(engine, text)
    assert all(token["text"] == text[token["start"]:token["stop"]] for token in tokens)
    assert "".join(token["text"] for token in tokens) == text
    with pytest.raises(BadRequest, match="less than 2047 tokens"):
        call(engine, Route.TOKENIZE, {"inputs": "word " * 5000})


def test_tgi_info(engine: Engine, model: Path) -> None:
    info = call(engine, Route.INFO, {})
    assert info["model_id"] == model.name and info["model_pipeline_tag"] == "text-generation"
    assert info["max_input_tokens"] == 2047 and info["max_total_tokens"] == 2048 and info["max_best_of"] == 1
    assert info["router"] == "hubserve" and info["max_concurrent_requests"] == 128


MESSAGE = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(("route", "body", "match"), [
    (Route.CHAT, {"messages": [MESSAGE], "frobnicate": 1}, "frobnicate"),
    (Route.CHAT, {"messages": [MESSAGE], "logit_bias": {"12": 3}}, "logit_bias"),
    (Route.CHAT, {"messages": [MESSAGE], "n": 0}, "`n`"),
    (Route.CHAT, {"messages": [MESSAGE], "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    (Route.CHAT, {"messages": [MESSAGE], "temperature": 2.5}, "temperature"),
    (Route.CHAT, {"messages": [MESSAGE], "temperature": "hot"}, "temperature"),
    (Route.CHAT, {"messages": [MESSAGE], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (Route.CHAT, {"messages": [MESSAGE], "max_tokens": 10_000}, "max_new_tokens"),
    (Route.CHAT, {"messages": [MESSAGE], "response_format": {"type": "xml"}}, "response_format"),
    (Route.CHAT, {"messages": [MESSAGE], "tools": TOOLS, "response_format": {"type": "json_object"}}, "together"),
    (Route.CHAT, {"messages": [MESSAGE], "tools": TOOLS, "tool_choice": {"function": {"name": "nope"}}},
     "tool_choice"),
    (Route.CHAT, {"messages": [MESSAGE], "tools": [{"type": "function"}]}, "tools\\[0\\]"),
    (Route.CHAT, {"messages": []}, "messages"),
    (Route.CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    (Route.CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "image_url"),
    (Route.CHAT, ["not", "an", "object"], "JSON object"),
    (Route.COMPLETIONS, {"prompt": "hi", "suffix": "there"}, "suffix"),
    (Route.COMPLETIONS, {"prompt": [[1, 2]]}, "prompt"),
    (Route.COMPLETIONS, {"prompt": "hi", "echo": True, "logprobs": 1}, "echo"),
    (Route.COMPLETIONS, {"prompt": "hi", "n": 1000}, "at most 128"),
    (Route.GENERATE, {"inputs": "hi", "parameters": {"bogus": 1}}, "bogus"),
    (Route.GENERATE, {"inputs": "hi", "parameters": {"watermark": True}}, "watermark"),
    (Route.GENERATE, {"inputs": "hi", "parameters": {"stop": list("abcde")}}, "stop"),
    (Route.GENERATE, {"inputs": ["hi", "there"]}, "inputs"),
    (Route.GENERATE_STREAM, {"inputs": "hi", "parameters": {"best_of": 2}}, "best_of"),
])
def test_bad_requests_are_refused_by_name(engine: Engine, route: Route, body: Any, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        if route == Route.GENERATE_STREAM:  # a stream is refused before its first event
            asyncio.run(protocols.stream(engine, request(route, body)))
        else:
            call(engine, route, body)


def test_streams_are_refused_before_they_start(engine: Engine) -> None:
    with pytest.raises(BadRequest, match="logit_bias"):
        asyncio.run(protocols.stream(engine, request(Route.CHAT, {"messages": [MESSAGE], "logit_bias": {"1": 1},
                                                                   "stream": True})))


def test_chat_needs_a_chat_template(model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(model, tmp_path / "no-template")
    (folder / "chat_template.jinja").unlink()
    templateless = load(folder)
    try:
        with pytest.raises(BadRequest, match="no chat template"):
            call(templateless, Route.CHAT, {"messages": [MESSAGE]})
        assert call(templateless, Route.COMPLETIONS, {"prompt": "hi", "max_tokens": 2})["choices"]
    finally:
        generation(templateless).engine.stop()  # type: ignore[union-attr]
