"""What every front door shares: bodies read within a size and a time limit, and errors in the door's format."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.types import Message

from hubserve.api.common import guarded, read_body
from hubserve.errors import HubserveError, PayloadTooLarge, RequestTimeout
from hubserve.settings import ServerSettings


def request_receiving(*messages: Message, body_timeout_s: float = 0.05) -> Request:
    """A request whose client sends `messages`, then nothing more."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # a client that stalls
        raise AssertionError("unreachable")

    app = SimpleNamespace(state=SimpleNamespace(settings=ServerSettings(body_timeout_s=body_timeout_s)))
    scope = {"type": "http", "method": "POST", "path": "/endpoints/e", "headers": [], "app": app}
    return Request(scope, receive)


def chunk(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def render(_request: Request, exc: HubserveError) -> Response:
    return JSONResponse({"kind": exc.kind}, status_code=exc.status)


def test_the_body_is_read_whole() -> None:
    request = request_receiving(chunk(b"ab"), chunk(b"cd", more=False))
    assert asyncio.run(read_body(request, 4)) == b"abcd"


def test_a_body_past_the_limit_stops_being_read() -> None:
    request = request_receiving(chunk(b"ab"), chunk(b"cde"))
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(request, 4))


def test_a_stalled_body_is_a_request_timeout_that_closes_the_connection() -> None:
    request = request_receiving(chunk(b"ab"))
    with pytest.raises(RequestTimeout, match="0.05 s"):
        asyncio.run(read_body(request, 100))
    response = asyncio.run(guarded(render, lambda r: read_body(r, 100), request_receiving(chunk(b"ab"))))
    assert response.status_code == 408
    assert response.headers["connection"] == "close"


def test_a_client_gone_mid_body_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    request = request_receiving(chunk(b"ab"), {"type": "http.disconnect"})
    with caplog.at_level(logging.INFO, logger="hubserve"):
        response = asyncio.run(guarded(render, lambda r: read_body(r, 100), request))
    assert response.status_code == 499
    assert [r.getMessage() for r in caplog.records] == [
        "POST /endpoints/e: the client disconnected before sending its whole body"]
