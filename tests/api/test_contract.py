"""The OpenAPI document states what the routes answer (tests/e2e/test_contract.py holds the server to it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hubserve.api.app import create_app
from hubserve.settings import ServerSettings


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home: Path = tmp_path_factory.mktemp("home")
    openapi: dict[str, Any] = create_app(ServerSettings(home=home, admin_token="t", zygote=False)).app.openapi()
    return openapi


def operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method.upper()} {path}", op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_no_route_claims_fastapis_422(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    # Only TGI and TEI answer a bad request with a 422 (and the endpoint URL, for a text generation model).
    claiming = {label for label, op in operations(document) if "422" in op["responses"]}
    assert claiming == {f"POST /endpoints/{{name}}{path}" for path in (
        "", "/v1", "/generate", "/generate_stream", "/tokenize", "/embed", "/similarity", "/rerank", "/predict")
    } | {"GET /endpoints/{name}/info"}


# SageMaker's control plane (JSON 1.1) at the server's root.
CONTROL_PLANE = "POST /"


def expected_error_bodies(label: str) -> set[str]:
    if label == CONTROL_PLANE:
        return {"ControlError"}
    if "invocations" in label:
        return {"SageMakerError", "SageMakerModelError"}
    return {"OpenAIError"} if "/v1/" in label and "/api/v1/" not in label else {"ErrorBody"}


def test_errors_are_json_in_each_front_doors_format(document: dict[str, Any]) -> None:
    for label, op in operations(document):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                media = "application/x-amz-json-1.1" if label == CONTROL_PLANE else "application/json"
                schema = response["content"][media]["schema"]
                schema = schema.get("title") or schema["$ref"].rsplit("/", 1)[1]
                assert schema in expected_error_bodies(label), (label, status)


def test_control_routes_need_the_token_and_invocations_may(document: dict[str, Any]) -> None:
    for label, op in operations(document):
        if "/api/v1/" in label:
            assert op["security"] == [{"bearer": []}] and {"401", "403"} <= set(op["responses"]), label
    # SageMaker's control plane takes the admin token too (or an admin AWS key).
    control = document["paths"]["/"]["post"]
    assert control["security"] == [{"bearer": []}] and {"401", "403"} <= set(control["responses"])
    for label, op in operations(document):
        if "/api/v1/" not in label and label not in ("GET /ping", "GET /v1/models", CONTROL_PLANE):
            assert op["security"] == [{}, {"bearer": []}] and {"401", "403"} <= set(op["responses"]), label


def test_invocations_take_and_answer_any_media_type(document: dict[str, Any]) -> None:
    invoke = document["paths"]["/endpoints/{name}"]["post"]
    assert {"application/json", "text/csv", "application/x-npy", "image/*", "audio/*"} <= set(
        invoke["requestBody"]["content"])
    assert {"application/json", "text/event-stream", "*/*"} <= set(invoke["responses"]["200"]["content"])
    sagemaker = document["paths"]["/endpoints/{name}/invocations"]["post"]
    assert "x-amzn-ErrorType" in sagemaker["responses"]["400"]["headers"]
    assert "404" not in sagemaker["responses"]  # SageMaker answers an unknown endpoint with a 400


def test_logs_are_text_and_their_tail_is_bounded(document: dict[str, Any]) -> None:
    logs = document["paths"]["/api/v1/endpoints/{name}/logs"]["get"]
    assert set(logs["responses"]["200"]["content"]) == {"text/plain"}
    tail = next(p for p in logs["parameters"] if p["name"] == "tail")["schema"]
    assert tail["minimum"] == 0 and tail["maximum"] > 0


def test_deletes_answer_204_without_a_body(document: dict[str, Any]) -> None:
    for path in ("/api/v1/endpoints/{name}", "/api/v1/tokens/{token_id}"):
        assert "content" not in document["paths"][path]["delete"]["responses"]["204"]
