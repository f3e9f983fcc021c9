"""Token streaming end to end: server-sent events from the engine to the client, the first token before
the end, cancellation when the client goes away, and real clients (huggingface_hub) reading the stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, running_endpoints


@pytest.fixture(scope="module")
def generator(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[str]:
    with running_endpoints(server, [{"name": "streamer", "model": str(tiny_model("text-generation")),
                                      "task": "text-generation", "dtype": "float32"}]):
        yield f"{server.url}/endpoints/streamer"


def events(response: httpx.Response) -> Iterator[tuple[float, dict[str, Any]]]:
    for line in response.iter_lines():
        if line:
            assert line.startswith("data: {")  # TGI's framing: a space after the colon, no [DONE]
            yield time.monotonic(), json.loads(line.removeprefix("data: "))


def test_stream_sends_one_event_per_token_then_the_text(generator: str) -> None:
    body = {"inputs": "the day is", "parameters": {"max_new_tokens": 12, "do_sample": False}, "stream": True}
    with httpx.stream("POST", generator, json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))
    tokens = [event for _, event in received]
    assert [e["index"] for e in tokens] == list(range(1, len(tokens) + 1))
    assert all(e["generated_text"] is None and e["details"] is None for e in tokens[:-1])
    final = tokens[-1]
    assert final["generated_text"] == "".join(e["token"]["text"] for e in tokens)
    assert final["details"]["finish_reason"] in ("length", "eos_token", "stop_sequence")
    assert final["details"]["generated_tokens"] == len(tokens)
    # the first token left well before the last one
    assert received[0][0] < received[-1][0]


def test_stream_equals_the_non_streamed_answer(generator: str) -> None:
    parameters = {"max_new_tokens": 8, "do_sample": False, "return_full_text": False}
    plain = httpx.post(generator, json={"inputs": "a good", "parameters": parameters}, timeout=120).json()
    with httpx.stream("POST", generator, json={"inputs": "a good", "parameters": parameters, "stream": True},
                      timeout=120) as response:
        final = list(events(response))[-1][1]
    assert final["generated_text"] == plain[0]["generated_text"]


def test_stream_errors_before_the_first_token_are_http_errors(generator: str) -> None:
    # in TGI's words: a bad request to a text generation endpoint is a 422 "validation"
    response = httpx.post(generator, json={"inputs": "x", "parameters": {"bogus": 1}, "stream": True})
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation"
    assert "bogus" in response.json()["error"]


def test_non_generation_tasks_refuse_to_stream(server: Server, deploy: Callable[..., str],
                                               tiny_model: Callable[[str], Path]) -> None:
    url = deploy("no-stream", str(tiny_model("text-classification")))
    response = httpx.post(url, json={"inputs": "x", "stream": True})
    assert response.status_code == 400
    assert "does not stream" in response.json()["error"]


def test_a_client_that_goes_away_frees_its_slot(server: Server, generator: str) -> None:
    # As many tokens as the model's context leaves: far more than the client waits for.
    parameters = {"max_new_tokens": 500, "min_new_tokens": 500, "do_sample": False}
    body = {"inputs": "the day is", "parameters": parameters, "stream": True}
    with httpx.stream("POST", generator, json=body, timeout=120) as response:
        next(events(response))
    stats_url = f"{server.url}/api/v1/endpoints/streamer/stats"
    headers = {"authorization": f"Bearer {server.token}"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replica = httpx.get(stats_url, headers=headers).json()["replicas"][0]
        if replica["in_flight"] == 0 and replica["generation"].get("running", 0) == 0:
            break
        time.sleep(0.2)
    assert replica["in_flight"] == 0
    assert replica["generation"].get("running", 0) == 0
    assert replica["generation"].get("cancelled", 0) >= 1


def test_huggingface_hub_streams(generator: str) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=generator)
    tokens = list(client.text_generation("the day is", max_new_tokens=6, stream=True))
    assert tokens and all(isinstance(token, str) for token in tokens)
    text = client.text_generation("the day is", max_new_tokens=6)
    assert isinstance(text, str)
