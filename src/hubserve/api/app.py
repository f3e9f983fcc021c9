"""The server: one FastAPI app with the control API and every front door, and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from hubserve import __version__
from hubserve.api import (
    analytics,
    console,
    control,
    inference_endpoints,
    jobs,
    metrics,
    models,
    openai,
    sagemaker,
    sagemaker_async,
    sagemaker_control,
    tei,
    tgi,
)
from hubserve.api.common import validation_message
from hubserve.api.contract import without_unprocessable
from hubserve.api.errors import from_http_exception, render_error
from hubserve.api.fast_lane import FastLane, lanes_of
from hubserve.errors import BadRequest
from hubserve.jobs.service import JobService
from hubserve.security import TokenRegistry
from hubserve.serving.manager import EndpointManager
from hubserve.serving.telemetry import Telemetry
from hubserve.settings import ServerSettings
from hubserve.store import Store

if TYPE_CHECKING:
    from hubserve.serving.ray_registry import Publisher

log = logging.getLogger("hubserve")
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at the request's path."""
    return [method for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in app.router.routes)]


def owner(settings: ServerSettings, store: Store, tokens: TokenRegistry) -> EndpointManager:
    """The endpoints of the server that owns them (all but data-plane servers), and its admin token."""
    created = tokens.ensure_admin_token(settings.admin_token, settings.admin_token_file)
    if created is not None:
        print(f"hubserve: created the admin token (shown once, also in {settings.admin_token_file}):\n"
              f"  {created}", flush=True)
    return EndpointManager(settings, store)


def data_plane(settings: ServerSettings, store: Store, tokens: TokenRegistry) -> EndpointManager:
    """The endpoints a data-plane server serves, and their tokens: its owner's, from the cluster's registry."""
    from hubserve.serving.data_plane import DataPlaneManager  # ray is imported only by servers that use it

    return DataPlaneManager(settings, store, tokens)


def publish(manager: EndpointManager, tokens: TokenRegistry, settings: ServerSettings) -> Publisher:
    """On Ray: publish the endpoints and the tokens' digests for data-plane servers, now and after each change, and
    count the data-plane servers' load in the endpoints' autoscaling."""
    from hubserve.serving.ray_registry import Publisher, owner_url, snapshot_of

    url = owner_url(settings.host, settings.port)
    publisher = Publisher(lambda: snapshot_of(url, tokens.admin_digest, tokens.list(), manager.list()))
    manager.on_change = tokens.on_change = publisher.changed
    manager.context.remote_load = publisher.remote_load
    publisher.start()
    return publisher


def create_app(settings: ServerSettings) -> FastLane:
    """The ASGI app: FastAPI, behind the fast lane for invocations."""
    settings.prepare()
    store = Store(settings.db_path)
    tokens = TokenRegistry(store)
    manager = data_plane(settings, store, tokens) if settings.data_plane else owner(settings, store, tokens)
    transform_jobs = JobService(settings, store, manager)
    telemetry = Telemetry(manager, transform_jobs.list)
    publishing = settings.ray_address is not None and not settings.data_plane

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await manager.start()
        publisher = publish(manager, tokens, settings) if publishing else None
        if not settings.data_plane:
            await transform_jobs.start()
        telemetry.start()
        try:
            yield
        finally:
            await telemetry.stop()
            await transform_jobs.shutdown()
            if publisher is not None:
                await publisher.close()
            await manager.shutdown()
            store.close()

    # FastAPI's OpenTelemetry hooks cost about a tenth of a request's time here; hubserve counts its own.
    app = FastAPI(title="hubserve", version=__version__, lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  description="Serve Hugging Face models with the SageMaker, Inference Endpoints, TGI, TEI and OpenAI "
                              "protocols.")
    app.state.settings = settings
    app.state.manager = manager
    app.state.jobs = transform_jobs
    app.state.tokens = tokens
    app.state.telemetry = telemetry
    invocations = (sagemaker.router, sagemaker_async.router, sagemaker_control.router,
                   inference_endpoints.router, inference_endpoints.shared, tgi.router, tei.router,
                   openai.router)
    app.include_router(control.router)
    app.include_router(jobs.router)
    app.include_router(analytics.router)
    app.include_router(metrics.router)
    app.include_router(models.router)
    app.include_router(console.router)
    for router in invocations:
        app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        return render_error(request, BadRequest(validation_message(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        # Starlette's and FastAPI's own errors (no such route, a body FastAPI cannot parse) in our error body too.
        response = render_error(request, from_http_exception(exc))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of one route; the path may have several
            response.headers["Allow"] = ", ".join(allowed_methods(app, request))
        return response

    app.openapi = without_unprocessable(app)  # type: ignore[method-assign]

    return FastLane(app, lanes_of(invocations), telemetry)
