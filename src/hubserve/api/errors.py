"""Our own JSON error body (`{"error", "error_type"}`, as TGI and the HF toolkits answer)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from hubserve.errors import HubserveError


def retry_headers(exc: HubserveError) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}


def render_error(_request: Request, exc: HubserveError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "error_type": exc.kind}, status_code=exc.status,
                        headers=retry_headers(exc))
