"""The OpenAI front door: chat, completions, embeddings and models, both on each endpoint URL
(`/endpoints/{name}/v1/...`, where the body's `model` is ignored, as TGI does) and server-wide (`/v1/...`, where
`model` names the endpoint); errors in OpenAI's `{"error": {...}}`, streams closed by `data: [DONE]`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from hubserve.api.common import (
    CONTROL_BODY_LIMIT,
    check_access,
    error_route,
    json_object,
    manager_of,
    new_invocation,
    read_body,
    tokens_of,
)
from hubserve.api.contract import JSON_ANSWER, JSON_OR_SSE_ANSWER, OPTIONAL_TOKEN, errors, invocation_docs, json_body
from hubserve.api.errors import printable, renderer
from hubserve.api.operations import OPENAI_DONE, EventStream, Operation, asked
from hubserve.errors import BadRequest, HubserveError, NotFound, PayloadTooLarge
from hubserve.invocation import Route
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.spec import EndpointSpec, EndpointStatus

# OpenAI's error type and code where it has its own; otherwise the type follows the status and the code is our kind.
TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
CODES = {401: "invalid_api_key", 403: "permission_denied", 429: "rate_limit_exceeded"}
ERROR_STATUSES = (400, 401, 403, 404, 408, 413, 415, 424, 429, 503, 504)


class ModelNotFound(NotFound):
    kind = "model_not_found"
    param = "model"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.")


class MissingModel(BadRequest):
    param = "model"


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


class ModelCard(BaseModel):
    """An endpoint as OpenAI's model object, with its task."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "hubserve"
    task: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def openai_error(exc: HubserveError) -> tuple[int, dict[str, Any]]:
    default_type = "invalid_request_error" if exc.status < 500 else "server_error"
    return exc.status, {"error": {
        "message": printable(exc.message), "type": TYPES.get(exc.status, default_type),
        "param": getattr(exc, "param", None), "code": CODES.get(exc.status, exc.kind)}}


render_openai_error = renderer(openai_error)
OPENAI_EVENTS = EventStream(openai_error, OPENAI_DONE)


def model_card(spec: EndpointSpec, status: EndpointStatus) -> ModelCard:
    return ModelCard(id=spec.name, created=int(status.created_at), task=status.task or spec.task)


def model_named(body: bytes) -> str:
    """The endpoint a server-wide call names in its body's `model`."""
    model = json_object(body).get("model")
    if not isinstance(model, str) or not model:
        raise MissingModel("you must provide a model parameter: the name of the endpoint to call")
    return model


def model_endpoint(request: Request, model: str) -> EndpointRuntime:
    try:
        return check_access(request, model)
    except NotFound:
        raise ModelNotFound(model) from None


def on_server(operation: Operation) -> Callable[[Request], Awaitable[Response]]:
    """The server-wide handler of `operation`: the endpoint is the body's `model`, so the body is read first,
    within the largest limit of any endpoint, then held to that endpoint's own."""

    async def invoke(request: Request) -> Response:
        invocation = new_invocation(request, operation.route)
        limit = max((e.spec.max_payload_bytes for e in manager_of(request).list()), default=CONTROL_BODY_LIMIT)
        invocation.body = await read_body(request, limit)
        runtime = model_endpoint(request, model_named(invocation.body))
        if len(invocation.body) > runtime.spec.max_payload_bytes:
            raise PayloadTooLarge(f"the request body is over this endpoint's limit of "
                                  f"{runtime.spec.max_payload_bytes} bytes")
        return await operation.answer(runtime, invocation)

    return invoke


_MESSAGES = {"type": "array", "items": {"type": "object"}}
_TEXTS: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "array"}]}
ROUTES = (
    ("chat/completions", Operation(Route.CHAT, OPENAI_EVENTS, asked), "Chat completions (OpenAI)",
     {"messages": _MESSAGES, "stream": {"type": "boolean"}, "max_tokens": {"type": "integer"}}, "messages",
     {"messages": [{"role": "user", "content": "Hello!"}]}, JSON_OR_SSE_ANSWER),
    ("completions", Operation(Route.COMPLETIONS, OPENAI_EVENTS, asked), "Completions (OpenAI)",
     {"prompt": _TEXTS, "stream": {"type": "boolean"}, "max_tokens": {"type": "integer"}}, "prompt",
     {"prompt": "The sky is"}, JSON_OR_SSE_ANSWER),
    ("embeddings", Operation(Route.EMBEDDINGS, OPENAI_EVENTS), "Embeddings (OpenAI)",
     {"input": _TEXTS, "encoding_format": {"enum": ["float", "base64"]}}, "input", {"input": "Hello!"},
     JSON_ANSWER),
)
_MODEL = {"model": {"type": "string", "description": "The endpoint's name"}}

router = APIRouter(route_class=error_route(render_openai_error), tags=["openai"])
for path, operation, summary, properties, required, example, answer in ROUTES:
    router.add_api_route(f"/endpoints/{{name}}/v1/{path}", operation.on_endpoint(), methods=["POST"],
                         summary=f"{summary}; `model` is ignored",
                         **invocation_docs(json_body({**_MODEL, **properties}, (required,), example), answer,
                                           ERROR_STATUSES, OpenAIError))
    router.add_api_route(f"/v1/{path}", on_server(operation), methods=["POST"],
                         summary=f"{summary}; `model` names the endpoint",
                         **invocation_docs(json_body({**_MODEL, **properties}, ("model", required),
                                                     {"model": "my-endpoint", **example}),
                                           answer, ERROR_STATUSES, OpenAIError))

_MODEL_ERRORS = errors(401, 403, 404, model=OpenAIError)


@router.get("/endpoints/{name}/v1/models", openapi_extra={"security": OPTIONAL_TOKEN}, responses=_MODEL_ERRORS)
async def endpoint_models(name: str, request: Request) -> ModelList:
    runtime = check_access(request, name)
    return ModelList(data=[model_card(runtime.spec, runtime.status)])


@router.get("/endpoints/{name}/v1/models/{model}", openapi_extra={"security": OPTIONAL_TOKEN},
            responses=_MODEL_ERRORS)
async def endpoint_model(name: str, model: str, request: Request) -> ModelCard:
    runtime = check_access(request, name)
    if model != name:
        raise ModelNotFound(model)
    return model_card(runtime.spec, runtime.status)


@router.get("/v1/models", openapi_extra={"security": OPTIONAL_TOKEN})
async def models(request: Request) -> ModelList:
    """The endpoints the caller may call: public ones, and the protected ones its token opens."""
    may_call = tokens_of(request).endpoint_access(request.headers.get("authorization"))
    return ModelList(data=[model_card(e.spec, e.status) for e in manager_of(request).list()
                           if e.spec.security == "public" or may_call(e.spec.name)])


@router.get("/v1/models/{model}", openapi_extra={"security": OPTIONAL_TOKEN}, responses=_MODEL_ERRORS)
async def retrieve_model(model: str, request: Request) -> ModelCard:
    runtime = model_endpoint(request, model)
    return model_card(runtime.spec, runtime.status)
