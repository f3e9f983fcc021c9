"""The protocol front doors: each words our errors in its own shape, frames its streams as its clients read them, and
each invocation route is reached through the fast lane with its own error format."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse

from hubserve.api.app import create_app
from hubserve.api.errors import render_error
from hubserve.api.event_relay import frames
from hubserve.api.fast_lane import FastLane
from hubserve.api.openai import OPENAI_EVENTS, ModelNotFound, render_openai_error
from hubserve.api.operations import wants_stream
from hubserve.api.sagemaker import render_sagemaker_error
from hubserve.api.sagemaker_control import render_control_error
from hubserve.api.tei import render_tei_error
from hubserve.api.tgi import TGI_EVENTS, render_tgi_error
from hubserve.errors import (
    BadRequest,
    Forbidden,
    HubserveError,
    ModelError,
    NoReadyReplica,
    NotFound,
    Overloaded,
    Unauthorized,
)
from hubserve.security import TokenRegistry
from hubserve.settings import ServerSettings
from hubserve.store import Store

REQUEST = Request({"type": "http", "method": "POST", "path": "/", "headers": [], "path_params": {}})


def rendered(render: Any, exc: HubserveError) -> tuple[int, Any]:
    response: JSONResponse = render(REQUEST, exc)
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize(("exc", "status", "tgi_type", "tei_type"), [
    (BadRequest("max_new_tokens must be positive"), 422, "validation", "Validation"),
    (ModelError("the model raised"), 424, "generation", "Backend"),
    (Overloaded("full"), 429, "overloaded", "Overloaded"),
])
def test_tgi_and_tei_word_our_errors_as_their_servers(exc: HubserveError, status: int, tgi_type: str,
                                                      tei_type: str) -> None:
    assert rendered(render_tgi_error, exc) == (status, {"error": exc.message, "error_type": tgi_type})
    assert rendered(render_tei_error, exc) == (status, {"error": exc.message, "error_type": tei_type})


def test_auth_errors_keep_their_status_in_every_shape() -> None:
    for exc in (Unauthorized("send a token"), Forbidden("not this token"), NotFound("endpoint x not found")):
        assert rendered(render_tgi_error, exc)[0] == exc.status
        assert rendered(render_tei_error, exc)[0] == exc.status
        assert rendered(render_openai_error, exc)[0] == exc.status
        assert rendered(render_tgi_error, exc)[1] == {"error": exc.message}  # TGI has no type for these
    assert rendered(render_tgi_error, NoReadyReplica("starting")) == (503, {"error": "starting"})
    assert rendered(render_tei_error, NotFound("x"))[1]["error_type"] == "NotFound"
    assert rendered(render_tei_error, NoReadyReplica("starting"))[1]["error_type"] == "Unhealthy"


def test_openai_errors_are_nested_with_type_param_and_code() -> None:
    assert rendered(render_openai_error, ModelNotFound("x")) == (404, {"error": {
        "message": "The model `x` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
    assert rendered(render_openai_error, Unauthorized("send a token"))[1]["error"]["type"] == "authentication_error"
    assert rendered(render_openai_error, Overloaded("full"))[1]["error"]["code"] == "rate_limit_exceeded"
    status, body = rendered(render_openai_error, BadRequest("bad"))
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_retry_after_stays_short_enough_for_the_openai_sdk_to_retry() -> None:
    for render in (render_openai_error, render_tgi_error, render_tei_error, render_error):
        assert render(REQUEST, NoReadyReplica("starting", retry_after=5)).headers["retry-after"] == "5"
        assert render(REQUEST, NoReadyReplica("starting", retry_after=3600)).headers["retry-after"] == "120"


async def replica_events(*events: dict[str, Any], error: HubserveError | None = None) -> AsyncIterator[bytes]:
    for event in events:
        yield json.dumps(event).encode()
    if error is not None:
        raise error


def framed(stream: AsyncIterator[bytes]) -> bytes:
    async def read() -> bytes:
        return b"".join([frame async for frame in stream])

    return asyncio.run(read())


def test_tgi_streams_end_with_their_last_event_and_no_done() -> None:
    body = framed(frames(TGI_EVENTS, replica_events({"index": 1}, {"index": 2})))
    assert body == b'data: {"index": 1}\n\ndata: {"index": 2}\n\n'


def test_openai_streams_end_with_done() -> None:
    body = framed(frames(OPENAI_EVENTS, replica_events({"id": "c"})))
    assert body == b'data: {"id": "c"}\n\ndata: [DONE]\n\n'
    assert b"data:[DONE]" not in body


def test_an_error_after_the_first_event_is_an_event_in_the_protocols_shape() -> None:
    tgi = framed(frames(TGI_EVENTS, replica_events({"index": 1}, error=Overloaded("full"))))
    assert tgi.split(b"\n\n")[1] == b'data: {"error":"full","error_type":"overloaded"}'
    openai = framed(frames(OPENAI_EVENTS, replica_events({"id": "c"}, error=ModelError("boom"))))
    events = openai.split(b"\n\n")
    assert json.loads(events[1].removeprefix(b"data: "))["error"]["message"] == "boom"
    assert events[2:] == [b"data: [DONE]", b""]


def test_streams_are_not_buffered_by_proxies() -> None:
    response = TGI_EVENTS.response(replica_events())
    assert response.media_type == "text/event-stream"
    assert response.headers["x-accel-buffering"] == "no" and response.headers["cache-control"] == "no-cache"


def test_only_a_json_object_with_stream_true_asks_for_a_stream() -> None:
    assert wants_stream(b'{"inputs": "x", "stream": true}', "application/json")
    assert not wants_stream(b'{"inputs": "x", "stream": "yes"}', "application/json")
    assert not wants_stream(b'[{"stream": true}]', "application/json")
    assert not wants_stream(b'{"stream": true}', "text/plain")
    assert not wants_stream(b'{"stream": tru', "application/json")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastLane:
    return create_app(ServerSettings(home=tmp_path_factory.mktemp("home"), admin_token="t", zygote=False))


def lane_for(app: FastLane, path: str) -> Any:
    matching = [lane for lane in app.lanes if lane.pattern.fullmatch(path)]
    assert len(matching) <= 1, path
    return matching[0] if matching else None


def test_every_invocation_route_takes_the_lane_with_its_error_format(app: FastLane) -> None:
    posts = [path for path, ops in app.app.openapi()["paths"].items() if "post" in ops]
    invocations = [path for path in posts if not path.startswith("/api/")]
    # Among them SageMaker's response stream, async invocations and control plane (POST /).
    assert len(invocations) == 19
    for path in invocations:
        assert lane_for(app, path.replace("{name}", "my-model")) is not None, path
    assert lane_for(app, "/endpoints/m/generate").render is render_tgi_error
    assert lane_for(app, "/endpoints/m/embed").render is render_tei_error
    assert lane_for(app, "/endpoints/m/v1/embeddings").render is render_openai_error
    assert lane_for(app, "/v1/chat/completions").render is render_openai_error
    for sagemaker_path in ("/endpoints/m/invocations-response-stream", "/endpoints/m/async-invocations"):
        assert lane_for(app, sagemaker_path).render is render_sagemaker_error
    assert lane_for(app, "/").render is render_control_error
    for other in ("/endpoints/m/logs", "/endpoints/m/v1/models", "/v1/models", "/api/v1/endpoints", "/v1"):
        assert lane_for(app, other) is None, other


def call(app: FastLane, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hubserve") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(main())


def test_server_wide_routes_find_the_endpoint_by_the_bodys_model(app: FastLane) -> None:
    unknown = call(app, "POST", "/v1/embeddings", json={"model": "nope", "input": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    missing = call(app, "POST", "/v1/chat/completions", json={"messages": []})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    assert call(app, "POST", "/v1/completions", content=b"{").json()["error"]["type"] == "invalid_request_error"
    assert call(app, "GET", "/v1/models").json() == {"object": "list", "data": []}


def test_the_endpoints_a_token_may_call(tmp_path: Path) -> None:
    registry = TokenRegistry(Store(tmp_path / "db.sqlite"))
    registry.ensure_admin_token("admin", tmp_path / "admin")
    _, scoped = registry.create("ci", ["a"])
    assert registry.endpoint_access("Bearer admin")("b")
    assert registry.endpoint_access(f"Bearer {scoped}")("a")
    assert not registry.endpoint_access(f"Bearer {scoped}")("b")
    assert not registry.endpoint_access("Bearer hf_someone_elses")("a")  # HF clients send their Hub token anywhere
    assert not registry.endpoint_access(None)("a")
