"""Generation through the real clients against a real server: the openai SDK (sync and async) on an endpoint's
`/v1` and on the server-wide `/v1`, huggingface_hub's InferenceClient and AsyncInferenceClient on the endpoint URL
(TGI's compat route and /v1/chat/completions); the tiny Llama for the shapes, real SmolLM2 for the answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import ValidationError
from huggingface_hub.inference._generated.types import (
    ChatCompletionOutput,
    ChatCompletionStreamOutput,
    TextGenerationOutput,
    TextGenerationStreamOutput,
)
from pydantic import BaseModel
from test_real_models import SMOLLM

from conftest import Server

NAME = "gen-clients"
MESSAGES: list[Any] = [{"role": "user", "content": "Say something about the sea."}]
VERDICT: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["answer", "sure"],
           "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}}}
WEATHER: dict[str, Any] = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "additionalProperties": False, "required": ["unit"],
    "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}}}}}


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    sure: bool


@pytest.fixture(scope="module")
def endpoint(server: Server, tiny_model: Any) -> Iterator[str]:
    client = server.client()
    client.create_endpoint({"name": NAME, "model": str(tiny_model("text-generation")), "task": "text-generation",
                            "dtype": "float32"})
    client.wait(NAME, timeout=600)
    yield f"{server.url}/endpoints/{NAME}"
    client.delete_endpoint(NAME)


@pytest.fixture(scope="module")
def smollm(server: Server) -> Iterator[str]:
    client = server.client()
    client.create_endpoint({"name": "gen-smollm", "model": str(SMOLLM)})
    client.wait("gen-smollm", timeout=900)
    yield f"{server.url}/endpoints/gen-smollm"
    client.delete_endpoint("gen-smollm")


def sdk(endpoint: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{endpoint}/v1", api_key="unused", max_retries=0)


def generated(endpoint: str, inputs: str, **parameters: Any) -> str:
    """TGI's /generate: the reference the other protocols' greedy answers equal."""
    body = {"inputs": inputs, "parameters": parameters}
    return str(httpx.post(f"{endpoint}/generate", json=body, timeout=120).json()["generated_text"])


def test_openai_chat_plain_and_streamed(endpoint: str) -> None:
    client = sdk(endpoint)
    answer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == "tiny" and choice.finish_reason in ("stop", "length")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert answer.usage is not None and answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == choice.message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage


def test_openai_server_wide_names_the_endpoint_as_the_model(server: Server, endpoint: str) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert NAME in {model.id for model in client.models.list()}
    answer = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=6, temperature=0)
    same = sdk(endpoint).chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=6, temperature=0)
    assert answer.model == NAME and answer.choices[0].message.content == same.choices[0].message.content
    assert [model.id for model in sdk(endpoint).models.list()] == [NAME]
    # On the endpoint's own URL `model` may be left out: the answer names the endpoint, as /v1/models lists it.
    unnamed = httpx.post(f"{endpoint}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2}, timeout=60)
    assert unnamed.status_code == 200 and unnamed.json()["model"] == NAME


def test_openai_completions(endpoint: str) -> None:
    answer = sdk(endpoint).completions.create(model="tiny", prompt="The day", max_tokens=5, temperature=0, n=2)
    assert answer.object == "text_completion" and [choice.index for choice in answer.choices] == [0, 1]
    assert answer.choices[0].text == answer.choices[1].text == generated(endpoint, "The day", max_new_tokens=5)
    streamed = sdk(endpoint).completions.create(model="tiny", prompt="The day", max_tokens=5, temperature=0,
                                                stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == answer.choices[0].text


def test_openai_structured_output_validates(endpoint: str) -> None:
    client = sdk(endpoint)
    schema_format: Any = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
    answer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=40,
                                            response_format=schema_format)
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), VERDICT)
    parsed = client.chat.completions.parse(model="tiny", messages=MESSAGES, max_tokens=40, response_format=Verdict)
    assert isinstance(parsed.choices[0].message.parsed, Verdict)


def test_openai_tools_with_tool_choice_required(endpoint: str) -> None:
    tools: Any = [WEATHER]
    answer = sdk(endpoint).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=60, tools=tools,
                                                   tool_choice="required")
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_async_openai_chat(endpoint: str) -> None:
    async def both() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=f"{endpoint}/v1", api_key="unused", max_retries=0) as client:
            answer = await client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6,
                                                          temperature=0)
            stream = await client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6,
                                                          temperature=0, stream=True)
            streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
            return answer.choices[0].message.content or "", streamed

    answer, streamed = asyncio.run(both())
    assert answer == streamed and answer == sdk(endpoint).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=6, temperature=0).choices[0].message.content


def test_huggingface_hub_text_generation(endpoint: str) -> None:
    client = InferenceClient(base_url=endpoint)
    text = generated(endpoint, "The day", max_new_tokens=5)
    # TGI's compat route puts the prompt first for a text-generation model, unless told otherwise.
    assert client.text_generation("The day", max_new_tokens=5) == "The day" + text
    assert client.text_generation("The day", max_new_tokens=5, return_full_text=False) == text
    detailed = client.text_generation("The day", max_new_tokens=5, details=True, return_full_text=False,
                                      top_n_tokens=2, decoder_input_details=False)
    assert isinstance(detailed, TextGenerationOutput) and detailed.generated_text == text
    assert detailed.details is not None and detailed.details.finish_reason == "length"
    assert detailed.details.generated_tokens == len(detailed.details.tokens) == 5
    assert detailed.details.top_tokens is not None and len(detailed.details.top_tokens[0]) == 2
    assert "".join(client.text_generation("The day", max_new_tokens=5, stream=True)) == text
    events = list(client.text_generation("The day", max_new_tokens=5, stream=True, details=True))
    assert all(isinstance(event, TextGenerationStreamOutput) for event in events)
    assert events[-1].generated_text == text and events[-1].details is not None
    assert events[-1].details.generated_tokens == 5


def test_huggingface_hub_refuses_what_hubserve_cannot_honour(endpoint: str) -> None:
    with pytest.raises(ValidationError, match="watermark"):
        InferenceClient(base_url=endpoint).text_generation("The day", max_new_tokens=2, watermark=True)


def test_huggingface_hub_chat_completion(endpoint: str) -> None:
    client = InferenceClient(base_url=endpoint)
    answer = client.chat_completion(MESSAGES, max_tokens=8, temperature=0)
    assert isinstance(answer, ChatCompletionOutput)
    reference = sdk(endpoint).chat.completions.create(model="x", messages=MESSAGES, max_tokens=8, temperature=0)
    assert answer.choices[0].message.content == reference.choices[0].message.content
    chunks = list(client.chat_completion(MESSAGES, max_tokens=8, temperature=0, stream=True))
    assert all(isinstance(chunk, ChatCompletionStreamOutput) for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == answer.choices[0].message.content
    schema_format: Any = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
    structured = client.chat_completion(MESSAGES, max_tokens=40, response_format=schema_format)  # sent as json_object
    jsonschema.validate(json.loads(structured.choices[0].message.content or ""), VERDICT)


def test_huggingface_hub_endpoint_info(endpoint: str) -> None:
    info = InferenceClient(model=endpoint, provider="hf-inference").get_endpoint_info()
    assert info["model_pipeline_tag"] == "text-generation" and info["max_total_tokens"] == 512
    assert info["router"] == "hubserve" and info["model_id"].endswith("text-generation")  # the endpoint's model


def test_async_huggingface_hub(endpoint: str) -> None:
    async def calls() -> tuple[str, str, str]:
        async with AsyncInferenceClient(base_url=endpoint) as client:
            text = await client.text_generation("The day", max_new_tokens=5, return_full_text=False)
            tokens = "".join([token async for token in await client.text_generation("The day", max_new_tokens=5,
                                                                                    stream=True)])
            chunks = await client.chat_completion(MESSAGES, max_tokens=6, temperature=0, stream=True)
            chat = "".join([chunk.choices[0].delta.content or "" async for chunk in chunks])
            return text, tokens, chat

    text, tokens, chat = asyncio.run(calls())
    assert text == tokens == generated(endpoint, "The day", max_new_tokens=5)
    assert chat == sdk(endpoint).chat.completions.create(model="x", messages=MESSAGES, max_tokens=6,
                                                         temperature=0).choices[0].message.content


def test_smollm_answers_paris_through_the_openai_sdk(smollm: str) -> None:
    question: Any = [{"role": "user", "content": "Tell me the capital of France."}]
    answer = sdk(smollm).chat.completions.create(model="smollm", messages=question, temperature=0, max_tokens=40)
    assert "Paris" in (answer.choices[0].message.content or "")


def test_smollm_json_schema_answer_validates(smollm: str) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
              "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string",
                                                                                      "maxLength": 40}}}
    question: Any = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    answer = sdk(smollm).chat.completions.create(
        model="smollm", messages=question, temperature=0, max_tokens=80,
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}})
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), schema)

