"""Error bodies: ours (`{"error", "error_type"}`, as TGI and the HF toolkits answer), and the tools each front door
uses to word our errors in its own protocol's shape."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from hubserve.api.common import ErrorRenderer
from hubserve.errors import HubserveError

# A protocol's wording of an error: its status and JSON body (also sent as the event of a stream that failed).
ErrorShape = Callable[[HubserveError], tuple[int, dict[str, Any]]]
# The openai SDK does not retry at all when told to wait longer than this.
MAX_RETRY_AFTER_S = 120


class ErrorBody(BaseModel):
    """What every route but SageMaker's and OpenAI's answers an error with (TGI and TEI use it too). TGI's routes
    leave `error_type` out where TGI has no type of its own (401, 403, 404, 503, ...)."""

    error: str
    error_type: str | None = None


def retry_headers(exc: HubserveError) -> dict[str, str]:
    if exc.retry_after is None:
        return {}
    return {"Retry-After": str(min(exc.retry_after, MAX_RETRY_AFTER_S))}


def printable(text: str) -> str:
    """`text` with lone surrogates written as escapes: messages quote what clients sent, and no encoder takes them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def flat_error(exc: HubserveError, error_type: str | None = None) -> dict[str, Any]:
    """The `{"error", "error_type"}` body, with our kind unless the protocol names the type."""
    return {"error": printable(exc.message), "error_type": error_type or exc.kind}


def our_error(exc: HubserveError) -> tuple[int, dict[str, Any]]:
    return exc.status, flat_error(exc)


def renderer(shape: ErrorShape) -> ErrorRenderer:
    """The error renderer of a protocol whose errors `shape` words (Retry-After kept)."""

    def render(_request: Request, exc: HubserveError) -> JSONResponse:
        status, body = shape(exc)
        return JSONResponse(body, status_code=status, headers=retry_headers(exc))

    return render


render_error = renderer(our_error)


def from_http_exception(exc: HTTPException) -> HubserveError:
    """Starlette's own errors (no such route, method not allowed, an unreadable body) as ours."""
    # FastAPI answers any body its JSON parser chokes on (nesting too deep, an integer too long) with a 400
    # that hides why; the cause says it.
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    error = HubserveError(f"{exc.detail}{cause}")
    error.status = exc.status_code
    error.kind = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return error
