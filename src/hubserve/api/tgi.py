"""The TGI front door on an endpoint URL: `/generate` and `/generate_stream`, with TGI's error statuses and types
(a bad request is a 422 `validation`, which huggingface_hub turns into its ValidationError)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hubserve.api.common import error_route
from hubserve.api.contract import JSON_ANSWER, SSE_ANSWER, invocation_docs, json_body
from hubserve.api.errors import flat_error, printable, renderer
from hubserve.api.operations import EventStream, Operation, always
from hubserve.errors import HubserveError
from hubserve.invocation import Route

# TGI's status and error type for ours (router/src/server.rs); the others keep their status and our kind.
TGI_ERRORS = {400: (422, "validation"), 424: (424, "generation"), 429: (429, "overloaded")}
ERROR_STATUSES = (401, 403, 404, 408, 413, 415, 422, 424, 429, 503, 504)
GENERATE_BODY = json_body({"inputs": {"type": "string"}, "parameters": {"type": "object"}}, required=("inputs",),
                          example={"inputs": "The sky is", "parameters": {"max_new_tokens": 20}})


def tgi_error(exc: HubserveError) -> tuple[int, dict[str, Any]]:
    """TGI's status and type for the errors TGI has; the others (a missing token, no ready replica) keep their
    status with no `error_type`: huggingface_hub picks its exception by the type, and for one it does not know
    raises an UnknownError that hides the status, where a bare body gets its HTTP error naming it (401, 503)."""
    if exc.status not in TGI_ERRORS:
        return exc.status, {"error": printable(exc.message)}
    status, error_type = TGI_ERRORS[exc.status]
    return status, flat_error(exc, error_type)


render_tgi_error = renderer(tgi_error)
TGI_EVENTS = EventStream(tgi_error)  # no [DONE]: the last event carries the generated text

router = APIRouter(route_class=error_route(render_tgi_error), tags=["tgi"])
router.add_api_route("/endpoints/{name}/generate", Operation(Route.GENERATE, TGI_EVENTS).on_endpoint(),
                     methods=["POST"], summary="Generate text (TGI)",
                     **invocation_docs(GENERATE_BODY, JSON_ANSWER, ERROR_STATUSES))
router.add_api_route("/endpoints/{name}/generate_stream",
                     Operation(Route.GENERATE_STREAM, TGI_EVENTS, always).on_endpoint(), methods=["POST"],
                     summary="Generate text as server-sent events, one per token (TGI)",
                     **invocation_docs(GENERATE_BODY, SSE_ANSWER, ERROR_STATUSES))
