"""What the OpenAPI document says the routes answer, beyond what FastAPI sees in their signatures.

FastAPI documents a route's success and its pydantic bodies; the front doors add from here the errors they raise
(in their own wire format), the invocations' bodies of any media type, and the bearer token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from hubserve.api.errors import ErrorBody

Responses = dict[int | str, dict[str, Any]]

# The control API's dependency on it puts the scheme into the document; checking the token is security.py's.
BEARER = HTTPBearer(scheme_name="bearer", auto_error=False,
                    description="The admin token, or for a protected endpoint a token that `hubserve token create` "
                                "made for it")
# Public endpoints take calls without a token, protected ones need one.
OPTIONAL_TOKEN: list[dict[str, list[str]]] = [{}, {"bearer": []}]

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_TEXT = {"schema": {"type": "string"}}

# Any JSON value: an object's "parameters" go to the task (the rest, or its "inputs", are the inputs); any other
# value is the inputs.
_JSON_PAYLOAD = {"anyOf": [
    {"type": "object", "properties": {"inputs": {}, "parameters": {"type": ["object", "null"]}}},
    {"not": {"type": "object"}},
]}

INVOCATION_BODY: dict[str, Any] = {
    "required": True,
    "description": "Decoded by Content-Type. JSON is `{\"inputs\": ..., \"parameters\": {...}}`, or any other JSON "
                   "value, which is then the inputs.",
    "content": {
        "application/json": {"schema": _JSON_PAYLOAD, "example": {"inputs": "I love this!"}},
        "text/csv": _TEXT,
        "text/plain": _TEXT,
        "application/x-npy": _BINARY,
        "image/*": _BINARY,
        "audio/*": _BINARY,
    },
}

# What an answer can be: encoded by the Accept header, or whatever the model's own code (output_fn,
# EndpointHandler) chose to answer.
ANSWER_CONTENT: dict[str, Any] = {
    "application/json": {"schema": {}},
    "text/csv": _TEXT,
    "application/x-npy": _BINARY,
    "image/png": _BINARY,
    "image/jpeg": _BINARY,
    "*/*": {"schema": {}},
}


JSON_ANSWER: dict[str, Any] = {"description": "The answer", "content": {"application/json": {"schema": {}}}}
SSE_ANSWER: dict[str, Any] = {"description": "Server-sent events, `data: <json>` each",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}}
JSON_OR_SSE_ANSWER: dict[str, Any] = {"description": "The answer; server-sent events for `\"stream\": true`",
                                      "content": {**JSON_ANSWER["content"], **SSE_ANSWER["content"]}}


def json_body(properties: dict[str, Any], required: tuple[str, ...] = (),
              example: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request body of one JSON object; other members are allowed (each protocol has many optional ones)."""
    media: dict[str, Any] = {"schema": {"type": "object", "properties": properties, "required": list(required)}}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


def invocation_docs(body: dict[str, Any] | None, answer: dict[str, Any], statuses: tuple[int, ...],
                    model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    """`add_api_route`'s arguments that document an invocation route: its body, answer, errors and token."""
    extra: dict[str, Any] = {"security": OPTIONAL_TOKEN, **({"requestBody": body} if body is not None else {})}
    return {"openapi_extra": extra, "response_class": Response,
            "responses": {200: answer, **errors(*statuses, model=model)}}


def errors(*statuses: int, model: type[BaseModel] = ErrorBody, headers: dict[str, Any] | None = None) -> Responses:
    """The `responses` entries for errors a route answers with `model`'s body."""
    return {status: {"model": model, **({"headers": headers} if headers else {})} for status in statuses}


def without_unprocessable(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi` without FastAPI's 422 entries: our routes answer validation failures with 400 (app.py); only
    the TGI and TEI routes answer 422, in their own body."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for path in schema["paths"].values():
            for operation in path.values():
                if "HTTPValidationError" in str(operation["responses"].get("422")):
                    del operation["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    return openapi
