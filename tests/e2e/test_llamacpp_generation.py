"""A GGUF endpoint served by llama.cpp on a real server (the real SmolLM2 Q4_1 file, engine.backend auto on the
CPU): a lone request's greedy answer equals llama.cpp's own generation (with flash attention, as llama-server runs)
token for token, streamed through TGI's route and OpenAI's, and concurrent requests end as asked; batch-invariant,
concurrent requests of different lengths answer as llama.cpp alone does, token for token; seeds, stop strings, JSON
schemas; a client that goes away frees its sequence; batch invariance asked of torch fails the endpoint; the weights
land on huge pages, or stay mapped from the file where the endpoint turns them off."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jinja2
import jsonschema
import openai
import pytest

from conftest import Server
from hubserve.worker.huge_pages import unavailable as huge_pages_unavailable
from llama_reference import SMOLLM_GGUF, llama_greedy, llama_tokens, reference_llama

NAME = "llama-smollm"
INVARIANT = "llama-smollm-invariant"
QUESTIONS = ["What is the capital of France?", "Why is the sky blue?", "Name three rivers in Africa.",
             "Write a haiku about the sea.", "Hi"]


@pytest.fixture(scope="module")
def endpoint(server: Server) -> Iterator[str]:
    client = server.client()
    client.create_endpoint({"name": NAME, "model": str(SMOLLM_GGUF)})
    client.wait(NAME, timeout=900)
    yield f"{server.url}/endpoints/{NAME}"
    client.delete_endpoint(NAME)


@pytest.fixture(scope="module")
def invariant_endpoint(server: Server) -> Iterator[str]:
    client = server.client()
    # Its weights mapped from the file: the path an endpoint takes with huge pages off (or none on the machine).
    client.create_endpoint({"name": INVARIANT, "model": str(SMOLLM_GGUF),
                            "engine": {"batch_invariant": True, "huge_pages": False}})
    client.wait(INVARIANT, timeout=900)
    yield f"{server.url}/endpoints/{INVARIANT}"
    client.delete_endpoint(INVARIANT)


def rendered(question: str) -> str:
    """The question as the GGUF's own chat template renders it, the assistant's turn opened."""
    template = jinja2.Environment().from_string(reference_llama().metadata["tokenizer.chat_template"])
    return template.render(messages=[{"role": "user", "content": question}], add_generation_prompt=True)


def reference_text(tokens: list[int]) -> str:
    return str(reference_llama().detokenize(tokens).decode())


def stream(endpoint: str, inputs: str, **parameters: Any) -> list[dict[str, Any]]:
    """TGI's /generate_stream events."""
    body = {"inputs": inputs, "parameters": parameters}
    with httpx.stream("POST", f"{endpoint}/generate_stream", json=body, timeout=300) as response:
        assert response.status_code == 200
        return [json.loads(line.removeprefix("data:")) for line in response.iter_lines() if line.startswith("data:")]


def stats(server: Server) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {server.token}"}
    replicas = httpx.get(f"{server.url}/api/v1/endpoints/{NAME}/stats", headers=headers).json()["replicas"]
    return dict(replicas[0])


def test_the_gguf_runs_on_llama_cpp(server: Server, endpoint: str) -> None:
    described = server.client().get_endpoint(NAME)
    assert described["status"]["backend"] == "llamacpp"
    assert stats(server)["backend"] == "llamacpp"


def test_the_weights_are_on_huge_pages_unless_the_endpoint_turns_them_off(server: Server, endpoint: str,
                                                                          invariant_endpoint: str) -> None:
    client = server.client()
    assert client.get_endpoint(INVARIANT)["spec"]["engine"]["huge_pages"] is False
    assert "mapped SmolLM2-135M-Instruct.Q4_1.gguf from the file: engine.huge_pages is off" in client.logs(INVARIANT)
    reason = huge_pages_unavailable()
    if reason is not None:
        assert f"from the file: {reason}" in client.logs(NAME)
        return
    deadline = time.monotonic() + 60
    while (found := re.search(r"weights of \S+: (\d+) of (\d+) MiB on huge pages", client.logs(NAME))) is None:
        assert time.monotonic() < deadline, client.logs(NAME)
        time.sleep(0.5)
    huge, size = int(found[1]), int(found[2])
    assert size >= 0.9 * (SMOLLM_GGUF.stat().st_size >> 20) and huge >= 0.95 * size


def streams_together(endpoint: str, prompts: list[str], lengths: list[int]) -> list[list[dict[str, Any]]]:
    """Greedy TGI streams of every prompt at once (continuous batching: the rows join and leave one batch)."""
    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(lambda args: stream(endpoint, args[0], max_new_tokens=args[1], do_sample=False),
                             zip(prompts, lengths, strict=True)))


def test_tgi_streams_equal_llama_cpp_alone_and_end_as_asked_together(endpoint: str) -> None:
    lengths = [48, 17, 33, 64, 9]
    prompts = [rendered(question) for question in QUESTIONS]
    expected = llama_greedy(llama_tokens(prompts[0]), lengths[0], flash_attn=True)
    alone = stream(endpoint, prompts[0], max_new_tokens=lengths[0], do_sample=False)
    assert [event["token"]["id"] for event in alone] == expected
    assert alone[-1]["generated_text"] == reference_text(expected)
    for events, length in zip(streams_together(endpoint, prompts, lengths), lengths, strict=True):
        tokens = [event["token"]["id"] for event in events]
        assert events[-1]["details"]["finish_reason"] in ("length", "eos_token") and 0 < len(tokens) <= length
        assert events[-1]["generated_text"] == reference_text(tokens)


def test_batch_invariant_streams_equal_llama_cpp_alone_and_together(server: Server, invariant_endpoint: str) -> None:
    assert server.client().get_endpoint(INVARIANT)["status"]["backend"] == "llamacpp"
    lengths = [48, 17, 33, 64, 9]
    prompts = [rendered(question) for question in QUESTIONS]
    expected = [llama_greedy(llama_tokens(prompt), length) for prompt, length in zip(prompts, lengths, strict=True)]
    alone = stream(invariant_endpoint, prompts[0], max_new_tokens=lengths[0], do_sample=False)
    assert [event["token"]["id"] for event in alone] == expected[0]
    for events, tokens in zip(streams_together(invariant_endpoint, prompts, lengths), expected, strict=True):
        assert [event["token"]["id"] for event in events] == tokens


def test_batch_invariance_asked_of_torch_fails_the_endpoint(tiny_model: Callable[[str], Path],
                                                             deploy_fails: Callable[..., str]) -> None:
    message = deploy_fails("llama-invariant-torch", str(tiny_model("text-generation")), task="text-generation",
                           engine={"batch_invariant": True})
    assert "engine.batch_invariant applies to text generation on llama.cpp (a GGUF file on the CPU); this " \
        "endpoint's task (text-generation) runs on torch" in message


def test_openai_chat_streams_llama_cpps_answer(endpoint: str) -> None:
    client = openai.OpenAI(base_url=f"{endpoint}/v1", api_key="unused", max_retries=0)
    question = QUESTIONS[1]
    chunks = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": question}],
                                            max_tokens=40, temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == reference_text(llama_greedy(llama_tokens(rendered(question)), 40, flash_attn=True))


def test_seeds_stop_strings_and_json_schemas(endpoint: str) -> None:
    prompt = rendered("Tell me a story about a dragon.")
    sampled = {"max_new_tokens": 20, "do_sample": True, "temperature": 1.2, "top_p": 0.9}
    first, again, other = (stream(endpoint, prompt, seed=seed, **sampled)[-1] for seed in (11, 11, 12))
    assert first["generated_text"] == again["generated_text"] != other["generated_text"]
    assert first["details"]["seed"] == 11
    stopped = stream(endpoint, "The capital of France is", max_new_tokens=40, do_sample=False, stop=["."])[-1]
    assert stopped["details"]["finish_reason"] == "stop_sequence" and stopped["generated_text"].endswith(".")
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
              "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string",
                                                                                     "maxLength": 30}}}
    client = openai.OpenAI(base_url=f"{endpoint}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "What is the capital of Japan? Answer in JSON."}],
        max_tokens=60, response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), schema)


def test_a_client_that_goes_away_frees_its_sequence(server: Server, endpoint: str) -> None:
    before = stats(server)["generation"].get("cancelled", 0)
    body = {"inputs": rendered(QUESTIONS[3]), "stream": True,
            "parameters": {"max_new_tokens": 1000, "min_new_tokens": 1000, "do_sample": False}}
    with httpx.stream("POST", endpoint, json=body, timeout=120) as response:
        next(line for line in response.iter_lines() if line.startswith("data:"))
    deadline = time.monotonic() + 30
    replica = stats(server)
    while time.monotonic() < deadline and (replica["in_flight"] or replica["generation"].get("running", 0)):
        time.sleep(0.2)
        replica = stats(server)
    assert replica["in_flight"] == 0 and replica["generation"].get("running", 0) == 0
    assert replica["generation"]["cancelled"] == before + 1
    # The sequence it held serves the next request.
    tokens = llama_greedy(llama_tokens(rendered(QUESTIONS[4])), 12, flash_attn=True)
    assert [event["token"]["id"] for event in stream(endpoint, rendered(QUESTIONS[4]), max_new_tokens=12,
                                                      do_sample=False)] == tokens
