"""The TEI front door on an endpoint URL: `/embed`, `/similarity`, `/rerank` and `/predict`, with TEI's error
statuses and Capitalized error types."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hubserve.api.common import error_route
from hubserve.api.contract import JSON_ANSWER, invocation_docs, json_body
from hubserve.api.errors import flat_error, renderer
from hubserve.api.operations import EventStream, Operation
from hubserve.errors import HubserveError
from hubserve.invocation import Route

# TEI's status and error type for ours (router/src/lib.rs); the others keep their status, their kind Capitalized.
TEI_ERRORS = {400: (422, "Validation"), 424: (424, "Backend"), 429: (429, "Overloaded"), 503: (503, "Unhealthy")}
ERROR_STATUSES = (401, 403, 404, 408, 413, 415, 422, 424, 429, 503, 504)
_TEXTS: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "array"}]}
ROUTES = (
    ("embed", Route.EMBED, "Embed texts (TEI)",
     json_body({"inputs": _TEXTS, "normalize": {"type": "boolean"}, "truncate": {"type": "boolean"}},
               required=("inputs",), example={"inputs": "Today is a nice day"})),
    ("similarity", Route.SIMILARITY, "How similar sentences are to a source sentence (TEI)",
     json_body({"inputs": {"type": "object", "properties": {
         "source_sentence": {"type": "string"}, "sentences": {"type": "array", "items": {"type": "string"}}},
         "required": ["source_sentence", "sentences"]}}, required=("inputs",))),
    ("rerank", Route.RERANK, "Rank texts by relevance to a query (TEI)",
     json_body({"query": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}}},
               required=("query", "texts"))),
    ("predict", Route.PREDICT, "Classify texts (TEI)", json_body({"inputs": _TEXTS}, required=("inputs",))),
)


def tei_error(exc: HubserveError) -> tuple[int, dict[str, Any]]:
    status, error_type = TEI_ERRORS.get(exc.status) or (exc.status, exc.kind.title().replace("_", ""))
    return status, flat_error(exc, error_type)


render_tei_error = renderer(tei_error)
TEI_EVENTS = EventStream(tei_error)  # TEI's routes do not stream

router = APIRouter(route_class=error_route(render_tei_error), tags=["tei"])
for path, route, summary, body in ROUTES:
    router.add_api_route(f"/endpoints/{{name}}/{path}", Operation(route, TEI_EVENTS).on_endpoint(),
                         methods=["POST"], summary=summary, **invocation_docs(body, JSON_ANSWER, ERROR_STATUSES))
