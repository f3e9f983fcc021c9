"""Our error body: what clients sent may be quoted in it, and Starlette's own errors take its shape too."""

from __future__ import annotations

import json

from fastapi import Request
from starlette.exceptions import HTTPException

from hubserve.api.errors import from_http_exception, render_error
from hubserve.errors import BadRequest

REQUEST = Request({"type": "http", "method": "GET", "path": "/", "headers": []})


def test_a_message_quoting_a_lone_surrogate_still_renders() -> None:
    response = render_error(REQUEST, BadRequest("no such key: \ud800"))
    assert json.loads(response.body) == {"error": "no such key: \\ud800", "error_type": "bad_request"}


def test_starlette_errors_become_ours_with_their_cause() -> None:
    try:
        try:
            raise RecursionError("maximum recursion depth exceeded")
        except RecursionError as cause:
            raise HTTPException(400, "There was an error parsing the body") from cause
    except HTTPException as exc:
        error = from_http_exception(exc)
    assert (error.status, error.kind) == (400, "bad_request")
    assert error.message == "There was an error parsing the body: maximum recursion depth exceeded"
    assert from_http_exception(HTTPException(405)).kind == "method_not_allowed"
