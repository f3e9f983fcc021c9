"""The Inference Endpoints front door: `POST /endpoints/{name}` (and its `/v1` alias), the routes TGI and TEI
share (`/tokenize`, `/info`), which answer as the model's task decides, and the health route."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from hubserve.api.common import ErrorRenderer, check_access, endpoint_task, error_route
from hubserve.api.contract import (
    ANSWER_CONTENT,
    INVOCATION_BODY,
    JSON_ANSWER,
    OPTIONAL_TOKEN,
    SSE_ANSWER,
    errors,
    invocation_docs,
)
from hubserve.api.errors import render_error
from hubserve.api.operations import Operation, asked
from hubserve.api.tei import render_tei_error
from hubserve.api.tgi import GENERATE_BODY, TGI_EVENTS, render_tgi_error
from hubserve.errors import HubserveError, NoReadyReplica
from hubserve.invocation import Route

# The task whose endpoints speak TGI; TEI's routes answer for every other task.
GENERATION_TASK = "text-generation"
ROOT = Operation(Route.ROOT, TGI_EVENTS, asked)
ROOT_ANSWER = {"description": "The answer, encoded by Accept; server-sent events for `\"stream\": true`",
               "content": {**ANSWER_CONTENT, **SSE_ANSWER["content"]}}
ROOT_ERRORS = (400, 401, 403, 404, 406, 408, 413, 415, 422, 424, 429, 503, 504)
SHARED_ERRORS = (401, 403, 404, 408, 413, 415, 422, 424, 429, 503, 504)


class Health(BaseModel):
    status: str
    ready_replicas: int


def by_task(generation: ErrorRenderer, other: ErrorRenderer) -> ErrorRenderer:
    """A renderer for a route whose protocol is the endpoint's task's: TGI's for text generation."""

    def render(request: Request, exc: HubserveError) -> Response:
        return (generation if endpoint_task(request) == GENERATION_TASK else other)(request, exc)

    return render


router = APIRouter(route_class=error_route(by_task(render_tgi_error, render_error)), tags=["inference-endpoints"])
for path in ("/endpoints/{name}", "/endpoints/{name}/v1"):
    router.add_api_route(
        path, ROOT.on_endpoint(), methods=["POST"],
        summary="Invoke the endpoint" if path == "/endpoints/{name}" else "Invoke the endpoint (alias of its URL)",
        description="Answered as the model's task decides (text generation: TGI's `POST /`, a list; "
                    "`\"stream\": true` streams its tokens as server-sent events).",
        **invocation_docs(INVOCATION_BODY, ROOT_ANSWER, ROOT_ERRORS))

shared = APIRouter(route_class=error_route(by_task(render_tgi_error, render_tei_error)), tags=["tgi", "tei"])
shared.add_api_route("/endpoints/{name}/tokenize", Operation(Route.TOKENIZE, TGI_EVENTS).on_endpoint(),
                     methods=["POST"], summary="Tokenize (TGI or TEI, by the model's task)",
                     **invocation_docs(GENERATE_BODY, JSON_ANSWER, SHARED_ERRORS))
shared.add_api_route("/endpoints/{name}/info", Operation(Route.INFO, TGI_EVENTS).on_endpoint(), methods=["GET"],
                     summary="The model's info (TGI or TEI, by the model's task)",
                     **invocation_docs(None, JSON_ANSWER, SHARED_ERRORS))


@router.get("/endpoints/{name}/health", openapi_extra={"security": OPTIONAL_TOKEN},
            responses=errors(401, 403, 404, 503))
async def health(name: str, request: Request) -> Health:
    runtime = check_access(request, name)
    if runtime.status.ready_replicas == 0:
        raise NoReadyReplica(f"endpoint {name} has no ready replica (state: {runtime.status.state})",
                             retry_after=5)
    return Health(status="ok", ready_replicas=runtime.status.ready_replicas)
