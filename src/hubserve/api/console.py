"""The web console at /ui: its static files (src/hubserve/console), which talk only to the public APIs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from hubserve.api.common import error_route
from hubserve.api.errors import render_error
from hubserve.errors import NotFound

CONSOLE = Path(__file__).resolve().parent.parent / "console"
# Always checked again: a console updated with the server must not run from a stale browser cache.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(route_class=error_route(render_error), include_in_schema=False)


@router.get("/ui")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/{path:path}")
async def console_file(path: str) -> FileResponse:
    """A file of the console; the empty path is its page."""
    file = (CONSOLE / (path or "index.html")).resolve()
    if not file.is_relative_to(CONSOLE) or not file.is_file():
        raise NotFound(f"the console has no file '{path}'")
    return FileResponse(file, headers=NO_CACHE)
