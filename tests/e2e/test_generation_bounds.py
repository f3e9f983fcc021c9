"""Bounded work per request through the real server: a generation endpoint holds requests to its model's context
(TGI's 422 validation errors naming the limit; its `truncate` keeps a long prompt's end), refuses wrongly typed
parameters (422s too), and cancels a request past the endpoint's timeout inside the replica, which is then free
for the next caller."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

from conftest import Server

CONTEXT = 8192  # the causal LM's positions: few enough to go over, enough for a request to outlast the timeout
TIMEOUT_S = 1.0
LONG_PROMPT = "My name is Sarah and I live in London. " * 1000


@pytest.fixture(scope="module")
def bounded(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from tiny_models import build_tiny_model

    folder = build_tiny_model("text-generation", tmp_path_factory.mktemp("context") / "lm", max_positions=CONTEXT)
    client = server.client()
    client.create_endpoint({"name": "bounded", "model": str(folder), "task": "text-generation", "dtype": "float32",
                            "timeout_s": TIMEOUT_S})
    client.wait("bounded", timeout=600)
    yield f"{server.url}/endpoints/bounded", folder
    client.delete_endpoint("bounded")


def generate(url: str, inputs: str, **parameters: Any) -> httpx.Response:
    return httpx.post(url, json={"inputs": inputs, "parameters": parameters}, timeout=30)


def test_requests_are_held_to_the_model_context(bounded: tuple[str, Path]) -> None:
    url, folder = bounded
    assert len(AutoTokenizer.from_pretrained(folder)(LONG_PROMPT, add_special_tokens=False)["input_ids"]) > CONTEXT
    over = generate(url, LONG_PROMPT, max_new_tokens=2)
    assert over.status_code == 422 and over.json()["error_type"] == "validation"
    # The replica stops tokenizing once the prompt is known to be over the limit.
    assert over.json()["error"] == f"`inputs` must have less than {CONTEXT - 1} tokens. Given: more than {CONTEXT}"
    truncated = generate(url, LONG_PROMPT, truncate=100, max_new_tokens=2)
    assert truncated.status_code == 200 and truncated.json()[0]["generated_text"].startswith(LONG_PROMPT)
    too_many = generate(url, "Hello", max_new_tokens=CONTEXT)
    assert too_many.status_code == 422 and f"`max_new_tokens` must be <= {CONTEXT}" in too_many.json()["error"]


@pytest.mark.parametrize("value", [1.5, True, "ten"])
def test_a_wrongly_typed_parameter_is_a_validation_error(bounded: tuple[str, Path], value: object) -> None:
    response = generate(bounded[0], "Hello", max_new_tokens=value)
    assert response.status_code == 422 and "`max_new_tokens` must be an integer" in response.json()["error"]


def test_a_request_past_the_timeout_is_cancelled_in_the_replica(server: Server, bounded: tuple[str, Path]) -> None:
    url = bounded[0]
    started = time.monotonic()
    slow = generate(url, "Hello", max_new_tokens=CONTEXT - 8, min_new_tokens=CONTEXT - 8)  # several seconds' work
    assert slow.status_code == 504 and time.monotonic() - started < TIMEOUT_S + 3
    started = time.monotonic()
    after = generate(url, "Hello", max_new_tokens=2)
    assert after.status_code == 200 and time.monotonic() - started < TIMEOUT_S
    counters = generation_counters(server, lambda counters: counters["cancelled"] == 1)
    assert counters["running"] == counters["active"] == 0  # the replica holds nothing of the cancelled request
    assert counters["tokens_generated"] < CONTEXT - 8


def generation_counters(server: Server, ready: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """The endpoint's generation counters (its stats route) once `ready` says so, or after a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        stats = httpx.get(f"{server.url}/api/v1/endpoints/bounded/stats",
                          headers={"authorization": f"Bearer {server.token}"}).json()
        counters: dict[str, int] = stats["replicas"][0]["generation"]
        if ready(counters) or time.monotonic() > deadline:
            return counters
        time.sleep(0.05)
