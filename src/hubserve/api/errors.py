"""Our own JSON error body (`{"error", "error_type"}`, as TGI and the HF toolkits answer)."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from hubserve.errors import HubserveError


class ErrorBody(BaseModel):
    """What every route but SageMaker's answers an error with."""

    error: str
    error_type: str


def retry_headers(exc: HubserveError) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}


def printable(text: str) -> str:
    """`text` with lone surrogates written as escapes: messages quote what clients sent, and no encoder takes them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def render_error(_request: Request, exc: HubserveError) -> JSONResponse:
    return JSONResponse({"error": printable(exc.message), "error_type": exc.kind}, status_code=exc.status,
                        headers=retry_headers(exc))


def from_http_exception(exc: HTTPException) -> HubserveError:
    """Starlette's own errors (no such route, method not allowed, an unreadable body) as ours."""
    # FastAPI answers any body its JSON parser chokes on (nesting too deep, an integer too long) with a 400
    # that hides why; the cause says it.
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    error = HubserveError(f"{exc.detail}{cause}")
    error.status = exc.status_code
    error.kind = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return error
