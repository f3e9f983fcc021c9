"""LangChain against hubserve: langchain-huggingface and langchain-openai, the real libraries in a venv of their
own (tests/clients), calling real SmolLM2 and MiniLM behind protected endpoints, with the recipes the README gives
(tokens, HF_HUB_OFFLINE; the latter also on hubserve's own huggingface_hub 2.x)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_real_models import MINILM, SMOLLM

from clients.client_venv import client_python
from conftest import Server, nearly_equal

CLIENTS = Path(__file__).parents[1] / "clients"
CHAT, EMBED = "lc-smollm", "lc-minilm"
TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def setup(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both protected endpoints, a token scoped to them, and the client venv (built while the models load)."""
    client = server.client()
    # A long timeout: SmolLM2 answers in seconds, but a busy CI machine must not turn that into a 504.
    protected = {"security": "protected", "timeout_s": 600.0}
    client.create_endpoint({"name": CHAT, "model": str(SMOLLM), "task": "text-generation", **protected})
    client.create_endpoint({"name": EMBED, "model": str(MINILM), "task": "sentence-embeddings", **protected})
    token = client.create_token("langchain-tests", endpoints=[CHAT, EMBED])
    try:
        python = client_python()
        for name in (CHAT, EMBED):
            client.wait(name, timeout=900)
        config = {"server": server.url, "endpoint": f"{server.url}/endpoints/{CHAT}", "chat_name": CHAT,
                  "embed_endpoint": f"{server.url}/endpoints/{EMBED}", "embed_name": EMBED, "token": token["token"],
                  "texts": TEXTS}
        yield {"python": python, "config": config, "home": tmp_path_factory.mktemp("client-home")}
    finally:
        client.revoke_token(token["id"])
        for name in (CHAT, EMBED):
            client.delete_endpoint(name)


def run(setup: dict[str, Any], command: list[str], **env: str) -> dict[str, Any]:
    """A client script given the endpoints' config, in a clean environment: no proxy, no saved Hub login, no
    HF_TOKEN unless `env` gives one; what it printed."""
    home = setup["home"]
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HF_HOME": str(home / "hf"), "LANG": "C.UTF-8", **env}
    completed = subprocess.run([*command, json.dumps(setup["config"])], env=clean, capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return dict(json.loads(completed.stdout.splitlines()[-1]))


def langchain(setup: dict[str, Any], scenario: str, **env: str) -> dict[str, Any]:
    """One scenario of langchain_calls.py, in the LangChain venv."""
    return run(setup, [str(setup["python"]), str(CLIENTS / "langchain_calls.py"), scenario], **env)


def succeeded(value: Any) -> Any:
    """`value`, after failing the test with what the client raised if it raised."""
    if isinstance(value, dict) and "raised" in value:
        pytest.fail(f"the client raised {value['raised']} (HTTP {value['status']}): {value['message']}")
    return value


def refused(value: Any, status: int | None, raised: str | None = None) -> None:
    """The call raised, with that HTTP status (None: nothing was sent) and, when given, that exception class."""
    assert isinstance(value, dict) and "raised" in value, value
    assert value["status"] == status and (raised is None or raised in value["classes"]), value


def streamed(chunks: Any) -> str:
    """The text of a stream, which must have come in several pieces."""
    pieces = [piece for piece in succeeded(chunks) if piece]
    assert len(pieces) > 1, chunks
    return "".join(pieces)


def assert_is_paris(city: Any, method: str) -> None:
    """A structured answer parsed into the scripts' City (name, country), naming Paris."""
    assert isinstance(city, dict) and set(city) == {"name", "country"}, (method, city)
    assert all(isinstance(value, str) for value in city.values()) and "paris" in city["name"].lower(), (method, city)


@pytest.fixture(scope="module")
def minilm_vectors(setup: dict[str, Any]) -> list[list[float]]:
    """MiniLM's vectors of TEXTS from TEI's `/embed` route, to compare the clients' answers with."""
    config = setup["config"]
    response = httpx.post(f"{config['embed_endpoint']}/embed", json={"inputs": config["texts"]},
                          headers={"authorization": f"Bearer {config['token']}"}, timeout=120)
    assert response.status_code == 200, response.text
    vectors = response.json()
    paraphrase, unrelated = np.dot(vectors[0], vectors[1]), np.dot(vectors[0], vectors[2])
    assert np.array(vectors).shape == (3, 384) and paraphrase > unrelated + 0.3
    return list(vectors)


def test_seed_chain_invokes_streams_and_batches(setup: dict[str, Any]) -> None:
    # The seed code unchanged: the token reaches hubserve through HF_TOKEN, huggingface_hub's own fallback.
    result = langchain(setup, "seed-chain", HF_TOKEN=setup["config"]["token"])
    answer = succeeded(result["invoke"])
    assert isinstance(answer, str) and answer.strip()
    assert streamed(result["stream"]) == answer  # greedy (do_sample false): the same text, piece by piece
    batch = succeeded(result["batch"])
    assert len(batch) == 2 and all(isinstance(text, str) and text.strip() for text in batch)


def test_chat_huggingface_answers_streams_and_structures(setup: dict[str, Any]) -> None:
    result = langchain(setup, "chat-huggingface", HF_TOKEN=setup["config"]["token"])
    assert "paris" in succeeded(result["invoke"]).lower()
    assert "paris" in streamed(result["stream"]).lower()
    for method in ("structured_function_calling", "structured_json_schema"):
        assert_is_paris(succeeded(result[method]), method)


def test_endpoint_embeddings_recipe_gives_minilm_vectors(setup: dict[str, Any],
                                                         minilm_vectors: list[list[float]]) -> None:
    result = langchain(setup, "huggingface-embeddings")
    assert nearly_equal(succeeded(result["documents"]), minilm_vectors)
    assert nearly_equal(succeeded(result["async_documents"]), minilm_vectors)
    assert nearly_equal(succeeded(result["query"]), minilm_vectors[0])


def test_chat_openai_answers_streams_and_structures(setup: dict[str, Any]) -> None:
    result = langchain(setup, "chat-openai")
    answer = succeeded(result["invoke"])
    assert "paris" in answer.lower()
    assert streamed(result["stream"]) == answer  # temperature 0: the same text, piece by piece
    assert "paris" in succeeded(result["endpoint_invoke"]).lower()
    for method in ("structured_json_schema", "structured_function_calling"):
        assert_is_paris(succeeded(result[method]), method)


def test_openai_embeddings_are_minilm_vectors(setup: dict[str, Any], minilm_vectors: list[list[float]]) -> None:
    result = langchain(setup, "openai-embeddings")
    assert nearly_equal(succeeded(result["documents"]), minilm_vectors)
    assert nearly_equal(succeeded(result["query"]), minilm_vectors[0])
    assert nearly_equal(succeeded(result["endpoint_query"]), minilm_vectors[0])


def test_langchain_token_recipes_open_protected_endpoints(setup: dict[str, Any]) -> None:
    result = langchain(setup, "token-recipes")
    assert result["hf_token_in_env"] is False
    refused(result["no_token"], 401)
    # 1.2.3 sends huggingfacehub_api_token only to Hub hosts, so it alone is no login to hubserve.
    refused(result["api_token_argument"], 401)
    for recipe in ("server_kwargs_token", "server_kwargs_header", "chat_server_kwargs_token"):
        assert isinstance(succeeded(result[recipe]), str), recipe
    refused(result["openai_wrong_key"], 403, "PermissionDeniedError")


def test_offline_recipe_lets_hugging_face_clients_reach_hubserve(setup: dict[str, Any]) -> None:
    result = langchain(setup, "offline-recipe", HF_HUB_OFFLINE="1", HF_TOKEN=setup["config"]["token"])
    for call in ("endpoint", "chat"):
        refused(result["blocked"][call], None, "OfflineModeIsEnabled")
    assert streamed(result["endpoint_stream"]) == succeeded(result["endpoint_invoke"])
    for call in ("chat_invoke", "chat_ainvoke"):
        assert succeeded(result[call]).strip(), call
    assert streamed(result["chat_stream"])
    assert len(succeeded(result["embed_query"])) == 384


def test_offline_recipe_on_huggingface_hub_2(setup: dict[str, Any]) -> None:
    # The same recipe with httpx2, on hubserve's own huggingface_hub 2.x (no LangChain there).
    result = run(setup, [sys.executable, str(CLIENTS / "hub_offline.py")], HF_HUB_OFFLINE="1")
    refused(result["blocked"], None, "OfflineModeIsEnabled")
    for call in ("text_generation", "chat_completion", "async_text_generation"):
        assert isinstance(succeeded(result[call]), str), call
