"""The OpenAI, TGI and TEI front doors over real HTTP, through the clients users run (openai, huggingface_hub):
routes per endpoint and server-wide, tokens, /v1/models per caller, each protocol's error classes, and the
framing of its streams."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from conftest import Server

GEN = "oa-gen"  # protected text generation, one request at a time
EMBED = "oa-embed"  # public sentence embeddings
BROKEN = "oa-broken"  # never gets a ready replica
MESSAGES = [{"role": "user", "content": "Hello"}]
Sdk = Callable[..., openai.OpenAI]


@pytest.fixture(scope="module")
def endpoints(server: Server, tiny_model: Callable[[str], Path],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    client = server.client()
    broken = tmp_path_factory.mktemp("broken")
    (broken / "weights.bin").write_bytes(b"0")  # no config: the replica cannot load it
    specs = [
        {"name": GEN, "model": str(tiny_model("text-generation")), "task": "text-generation", "dtype": "float32",
         "security": "protected", "engine": {"max_concurrent_requests": 1}},
        {"name": EMBED, "model": str(tiny_model("sentence-embeddings")), "task": "sentence-embeddings"},
        {"name": BROKEN, "model": str(broken), "task": "text-generation"},
    ]
    for spec in specs:
        client.create_endpoint(spec)
    client.wait(GEN, timeout=600)
    client.wait(EMBED, timeout=600)
    yield {spec["name"]: f"{server.url}/endpoints/{spec['name']}" for spec in specs}
    for spec in specs:
        client.delete_endpoint(spec["name"])


@pytest.fixture(scope="module")
def tokens(server: Server, endpoints: dict[str, str]) -> dict[str, str]:
    client = server.client()
    return {"gen": client.create_token("oa-gen-only", [GEN])["token"],
            "other": client.create_token("oa-other", ["somewhere-else"])["token"]}


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    """`sdk(base_url, api_key)`: an openai client that does not retry (closed after the test)."""
    clients: list[openai.OpenAI] = []

    def make(base_url: str, api_key: str = "unused") -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def model_ids(sdk: Sdk, server: Server, api_key: str) -> set[str]:
    return {model.id for model in sdk(f"{server.url}/v1", api_key).models.list()}


def sse_lines(response: httpx.Response) -> list[str]:
    return [line for line in response.iter_lines() if line]


# errors, in the openai SDK's classes


def test_an_unknown_model_is_openais_model_not_found(sdk: Sdk, server: Server, endpoints: dict[str, str]) -> None:
    client = sdk(f"{server.url}/v1")
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-endpoint", messages=MESSAGES)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "The model `no-such-endpoint` does not exist" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-endpoint")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-endpoint", input="x")


def test_a_request_without_a_model_is_a_bad_request_naming_it(server: Server, endpoints: dict[str, str]) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": MESSAGES})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_a_protected_endpoint_takes_its_token_as_the_api_key(sdk: Sdk, server: Server, endpoints: dict[str, str],
                                                             tokens: dict[str, str]) -> None:
    no_token = httpx.post(f"{server.url}/v1/chat/completions", json={"model": GEN, "messages": MESSAGES})
    assert no_token.status_code == 401
    assert no_token.json()["error"]["type"] == "authentication_error"
    for base_url in (f"{server.url}/v1", f"{endpoints[GEN]}/v1"):
        with pytest.raises(openai.PermissionDeniedError):
            sdk(base_url, "wrong").chat.completions.create(model=GEN, messages=MESSAGES)
        with pytest.raises(openai.PermissionDeniedError, match="not valid for endpoint"):
            sdk(base_url, tokens["other"]).chat.completions.create(model=GEN, messages=MESSAGES)


def test_no_ready_replica_is_a_503_the_openai_sdk_retries(sdk: Sdk, server: Server, endpoints: dict[str, str]) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"model": BROKEN, "messages": MESSAGES})
    assert response.status_code == 503
    assert 0 < int(response.headers["retry-after"]) <= 120
    assert response.json()["error"]["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):
        sdk(f"{server.url}/v1").chat.completions.create(model=BROKEN, messages=MESSAGES)


def test_tgi_and_tei_routes_answer_errors_in_their_shapes(endpoints: dict[str, str]) -> None:
    unknown = httpx.post(endpoints[EMBED].replace(EMBED, "no-such-endpoint") + "/embed", json={"inputs": "x"})
    assert unknown.status_code == 404 and unknown.json()["error_type"] == "NotFound"
    not_served = httpx.post(f"{endpoints[EMBED]}/generate", json={"inputs": "x"})
    assert not_served.status_code == 404 and set(not_served.json()) == {"error"}  # TGI has no type for a 404
    bad = httpx.post(f"{endpoints[EMBED]}/embed", json={"inputs": {"not": "text"}})
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation"


# /v1/models per caller


def test_models_lists_what_each_token_may_call(sdk: Sdk, server: Server, endpoints: dict[str, str],
                                               tokens: dict[str, str]) -> None:
    anyone = model_ids(sdk, server, "hf_a-hub-token-sent-anywhere")
    assert EMBED in anyone and GEN not in anyone
    assert {EMBED, GEN} <= model_ids(sdk, server, tokens["gen"])
    assert {EMBED, GEN, BROKEN} <= model_ids(sdk, server, server.token)
    card = sdk(f"{server.url}/v1", tokens["gen"]).models.retrieve(GEN)
    assert (card.id, card.owned_by, card.model_extra) == (GEN, "hubserve", {"task": "text-generation"})
    per_endpoint = sdk(f"{endpoints[GEN]}/v1", tokens["gen"]).models.list()
    assert [model.id for model in per_endpoint] == [GEN]


def test_tokens_never_reach_the_log(sdk: Sdk, server: Server, endpoints: dict[str, str],
                                    tokens: dict[str, str]) -> None:
    model_ids(sdk, server, tokens["gen"])
    log = server.log.read_text(errors="replace")
    assert tokens["gen"] not in log and tokens["other"] not in log and server.token not in log


# answers (the replicas' side of each protocol)


def test_openai_embeddings_per_endpoint_and_server_wide(sdk: Sdk, server: Server, endpoints: dict[str, str]) -> None:
    for base_url in (f"{server.url}/v1", f"{endpoints[EMBED]}/v1"):
        result = sdk(base_url).embeddings.create(model=EMBED, input=["first", "second one"])
        assert [item.index for item in result.data] == [0, 1]
        assert all(len(item.embedding) > 1 for item in result.data)


def test_openai_chat_streams_end_with_done(sdk: Sdk, server: Server, endpoints: dict[str, str],
                                           tokens: dict[str, str]) -> None:
    client = sdk(f"{server.url}/v1", tokens["gen"])
    answer = client.chat.completions.create(model=GEN, messages=MESSAGES, max_tokens=5)
    assert isinstance(answer.choices[0].message.content, str)
    chunks = list(client.chat.completions.create(model=GEN, messages=MESSAGES, max_tokens=5, stream=True))
    assert chunks and all(chunk.model_dump()["choices"] is not None for chunk in chunks)
    body = {"model": GEN, "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120,
                      headers={"authorization": f"Bearer {tokens['gen']}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        lines = sse_lines(response)
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_tgi_streams_have_no_done(endpoints: dict[str, str], tokens: dict[str, str]) -> None:
    body = {"inputs": "the day is", "parameters": {"max_new_tokens": 3}}
    with httpx.stream("POST", f"{endpoints[GEN]}/generate_stream", json=body, timeout=120,
                      headers={"authorization": f"Bearer {tokens['gen']}"}) as response:
        assert response.status_code == 200
        lines = sse_lines(response)
    assert lines and all(line.startswith("data: {") for line in lines)
    assert json.loads(lines[-1].removeprefix("data: "))["generated_text"] is not None


def test_a_bad_generation_parameter_is_huggingface_hubs_validation_error(endpoints: dict[str, str],
                                                                         tokens: dict[str, str]) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import ValidationError

    client = InferenceClient(model=endpoints[GEN], token=tokens["gen"])
    with pytest.raises(ValidationError):
        client.text_generation("the day is", max_new_tokens=3, watermark=True)
    stream = httpx.post(f"{endpoints[GEN]}/generate_stream", json={"inputs": "x", "parameters": {"watermark": True}},
                        headers={"authorization": f"Bearer {tokens['gen']}"})
    assert stream.status_code == 422 and stream.json()["error_type"] == "validation"


def test_a_missing_token_is_huggingface_hubs_http_error_naming_the_401(endpoints: dict[str, str]) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError, TextGenerationError

    with InferenceClient(model=endpoints[GEN]) as client, pytest.raises(HfHubHTTPError) as raised:
        client.text_generation("the day is", max_new_tokens=3)  # not TGI's UnknownError, which hides the status
    assert not isinstance(raised.value, TextGenerationError) and raised.value.response.status_code == 401


def test_a_full_replica_is_a_429_in_each_protocol(sdk: Sdk, server: Server, endpoints: dict[str, str],
                                                  tokens: dict[str, str]) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import OverloadedError

    headers = {"authorization": f"Bearer {tokens['gen']}"}
    # As many tokens as the model's context leaves: the one slot stays taken while the others are tried.
    long = {"inputs": "the day is", "parameters": {"max_new_tokens": 500, "min_new_tokens": 500}}
    with httpx.stream("POST", f"{endpoints[GEN]}/generate_stream", json=long, headers=headers,
                      timeout=120) as held:
        lines = held.iter_lines()  # kept: a dropped iterator closes the stream, and its slot frees
        next(lines)
        with pytest.raises(openai.RateLimitError):
            sdk(f"{server.url}/v1", tokens["gen"]).chat.completions.create(model=GEN, messages=MESSAGES)
        with pytest.raises(OverloadedError):
            InferenceClient(model=endpoints[GEN], token=tokens["gen"]).text_generation("x", max_new_tokens=2)
        tgi = httpx.post(f"{endpoints[GEN]}/generate", json={"inputs": "x"}, headers=headers)
        assert tgi.status_code == 429 and tgi.json()["error_type"] == "overloaded"
