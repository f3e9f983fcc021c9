"""The invocation fast lane: its paths reach the protocol handlers directly, with their error formats; every other
request still reaches the FastAPI app."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from hubserve.api.fast_lane import FastLane, Lane
from hubserve.errors import HubserveError, NotFound


async def answer(name: str, request: Request) -> Response:
    if name == "missing":
        raise NotFound("no such endpoint")
    return JSONResponse({"lane": name, "body": (await request.body()).decode(), "app": request.app.title})


def render(_request: Request, exc: HubserveError) -> JSONResponse:
    return JSONResponse({"rendered": exc.message}, status_code=exc.status)


def lane_app() -> FastLane:
    app = FastAPI(title="behind the lane")

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def fallback(path: str) -> dict[str, str]:
        return {"app": path}

    return FastLane(app, [Lane(re.compile(r"/endpoints/(?P<name>[^/]+)"), answer, render)])


def call(method: str, path: str, body: bytes = b"") -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=lane_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://lane") as client:
            return await client.request(method, path, content=body)

    return asyncio.run(main())


def test_lane_paths_reach_the_handler_with_the_app_in_scope() -> None:
    response = call("POST", "/endpoints/minilm", b'{"inputs": "x"}')
    assert response.json() == {"lane": "minilm", "body": '{"inputs": "x"}', "app": "behind the lane"}


def test_lane_errors_use_the_lane_format() -> None:
    response = call("POST", "/endpoints/missing")
    assert response.status_code == 404
    assert response.json() == {"rendered": "no such endpoint"}


def test_other_methods_and_paths_reach_the_app() -> None:
    assert call("GET", "/endpoints/minilm").json() == {"app": "endpoints/minilm"}
    assert call("POST", "/endpoints/minilm/logs").json() == {"app": "endpoints/minilm/logs"}
    assert call("POST", "/api/v1/endpoints").json() == {"app": "api/v1/endpoints"}
