"""Every task served end to end through the real server, with a tiny model, asserting output shapes: those of the
endpoint URL, as huggingface_hub's InferenceClient parses them (see tests/e2e/test_hub_client_tasks.py)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import Server


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def wav() -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.sin(np.linspace(0, 800, 16000)).astype(np.float32), 16000, format="WAV")
    return buffer.getvalue()


def labels_and_scores(result: Any) -> None:
    assert isinstance(result, list) and result
    assert all(isinstance(r["label"], str) and isinstance(r["score"], float) for r in result)


def nested_labels(result: Any) -> None:
    assert isinstance(result, list) and len(result) == 1  # one list of labels for the one text
    labels_and_scores(result[0])


def generated(key: str) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert isinstance(result, list) and isinstance(result[0][key], str)

    return check


def token_entities(result: Any) -> None:
    assert isinstance(result, list)
    assert all({"entity_group", "score", "word", "start", "end"} <= set(r) for r in result)


def answer(result: Any) -> None:
    context = "My name is Clara and I live in Berkeley."
    assert {"score", "start", "end", "answer"} <= set(result)
    assert result["answer"] == context[result["start"]:result["end"]]


def masks(result: Any) -> None:
    assert {"score", "token", "token_str", "sequence"} <= set(result[0])


def vectors(result: Any) -> None:
    assert len(result) == 1 and all(isinstance(value, float) for value in result[0])  # pooled, one per text


def zero_shot(result: Any) -> None:
    labels_and_scores(result)
    assert sorted(r["label"] for r in result) == ["politics", "sports"]


def transcript(result: Any) -> None:
    assert isinstance(result["text"], str)


def chat_reply(result: Any) -> None:
    messages = result[0]["generated_text"]
    assert messages[-1]["role"] == "assistant" and isinstance(messages[-1]["content"], str)


# task -> (request body, content type, check)
CASES: dict[str, tuple[Any, str, Callable[[Any], None]]] = {
    "text-classification": ({"inputs": "a good movie", "parameters": {"top_k": 2}}, "application/json",
                            nested_labels),
    "token-classification": ({"inputs": "my name is clara", "parameters": {"aggregation_strategy": "simple"}},
                             "application/json", token_entities),
    "question-answering": ({"inputs": {"question": "Where do I live?",
                                       "context": "My name is Clara and I live in Berkeley."}},
                           "application/json", answer),
    "fill-mask": ({"inputs": "the [MASK] is good"}, "application/json", masks),
    "summarization": ({"inputs": "the movie was good and the day was long",
                       "parameters": {"max_new_tokens": 5}}, "application/json", generated("summary_text")),
    "translation": ({"inputs": "the day is good", "parameters": {"max_new_tokens": 5}}, "application/json",
                    generated("translation_text")),
    "text2text-generation": ({"inputs": "the day is good", "parameters": {"max_new_tokens": 5}},
                             "application/json", generated("generated_text")),
    "text-generation": ({"inputs": "the day is", "parameters": {"max_new_tokens": 5}}, "application/json",
                        generated("generated_text")),
    "feature-extraction": ({"inputs": "a good day"}, "application/json", vectors),
    "zero-shot-classification": ({"inputs": "the game was won",
                                  "parameters": {"candidate_labels": ["sports", "politics"]}},
                                 "application/json", zero_shot),
    "image-classification": (png, "image/png", labels_and_scores),
    "automatic-speech-recognition": (wav, "audio/wav", transcript),
    "audio-classification": (wav, "audio/x-wav", labels_and_scores),
}


@pytest.fixture(scope="module")
def endpoints(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[dict[str, str]]:
    client = server.client()
    names = {task: f"task-{i}" for i, task in enumerate(CASES)}
    for task, name in names.items():
        client.create_endpoint({"name": name, "model": str(tiny_model(task)), "task": task})
    yield {task: f"{server.url}/endpoints/{name}" for task, name in names.items()}
    for name in names.values():
        client.delete_endpoint(name)


@pytest.mark.parametrize("task", list(CASES))
def test_task(task: str, endpoints: dict[str, str], server: Server) -> None:
    server.client().wait(endpoints[task].rsplit("/", 1)[1], timeout=600)
    body, content_type, check = CASES[task]
    if callable(body):
        response = httpx.post(endpoints[task], content=body(), headers={"content-type": content_type}, timeout=120)
    else:
        response = httpx.post(endpoints[task], json=body, timeout=120)
    assert response.status_code == 200, response.text
    check(response.json())


def test_chat_messages(endpoints: dict[str, str]) -> None:
    body = {"inputs": [{"role": "user", "content": "hello there"}], "parameters": {"max_new_tokens": 4}}
    response = httpx.post(endpoints["text-generation"], json=body, timeout=120)
    assert response.status_code == 200, response.text
    chat_reply(response.json())


def test_unknown_parameter_is_400_naming_it(endpoints: dict[str, str]) -> None:
    response = httpx.post(endpoints["text-classification"],
                          json={"inputs": "x", "parameters": {"top_k": 1, "bogus_knob": 3}})
    assert response.status_code == 400
    assert "bogus_knob" in response.json()["error"]


def test_bad_input_is_400(endpoints: dict[str, str]) -> None:
    response = httpx.post(endpoints["fill-mask"], json={"inputs": "no mask token here"})
    assert response.status_code == 400
    response = httpx.post(endpoints["zero-shot-classification"], json={"inputs": "x"})
    assert response.status_code == 400
    assert "candidate_labels" in response.json()["error"]


def test_csv_in_and_out(endpoints: dict[str, str]) -> None:
    response = httpx.post(endpoints["text-classification"], content=b"inputs\na good day\na bad day\n",
                          headers={"content-type": "text/csv", "accept": "application/json"})
    assert response.status_code == 200
    assert len(response.json()) == 2


def test_npy_accept(endpoints: dict[str, str]) -> None:
    response = httpx.post(endpoints["feature-extraction"], json={"inputs": "a good day"},
                          headers={"accept": "application/x-npy"})
    assert response.status_code == 200
    array = np.load(io.BytesIO(response.content))
    assert array.ndim == 2 and array.dtype.kind == "f"


def test_huggingface_hub_inference_client(endpoints: dict[str, str]) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=endpoints["fill-mask"])
    result = client.fill_mask("the [MASK] is good")
    assert result[0].token_str
    embeddings = InferenceClient(model=endpoints["feature-extraction"]).feature_extraction("a good day")
    assert embeddings.ndim >= 2
