"""The SageMaker runtime front door: InvokeEndpoint's and InvokeEndpointWithResponseStream's paths, headers and
error shapes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from hubserve.api import eventstream
from hubserve.api.common import accept_invocation, error_route, forwarded_header
from hubserve.api.contract import ANSWER_CONTENT, INVOCATION_BODY, OPTIONAL_TOKEN, errors
from hubserve.api.errors import printable, retry_headers
from hubserve.api.operations import SSE_HEADERS
from hubserve.errors import (
    AwsError,
    BadRequest,
    HubserveError,
    InvocationTimeout,
    ModelError,
    NotFound,
    model_error_body,
)
from hubserve.invocation import InvocationRequest, Route, StreamHead

DEFAULT_VARIANT = "AllTraffic"
ACCOUNT = "local"
# SageMaker's error codes (x-amzn-ErrorType), which botocore turns into ClientError codes.
ERROR_CODES = {400: "ValidationError", 401: "MissingAuthenticationTokenException", 403: "AccessDeniedException",
               404: "ValidationError", 413: "ValidationError", 415: "ValidationError", 406: "ValidationError",
               408: "ValidationError", 409: "ValidationError", 429: "ThrottlingException", 503: "ServiceUnavailable",
               504: "ModelError"}
# Request headers handed to the model's code (as the SageMaker containers see them).
ATTRIBUTE_HEADERS = (
    "X-Amzn-SageMaker-Custom-Attributes",
    "X-Amzn-SageMaker-Inference-Id",
    "X-Amzn-SageMaker-Target-Variant",
    "X-Amzn-SageMaker-Target-Model",
    "X-Amzn-SageMaker-Session-Id",
)


class SageMakerError(BaseModel):
    message: str


class SageMakerModelError(BaseModel):
    """What SageMaker answers when the model's code raised."""

    ErrorCode: str
    Message: str
    message: str
    OriginalStatusCode: int
    OriginalMessage: str
    LogStreamArn: str


class Ping(BaseModel):
    status: str


def render_sagemaker_error(request: Request, exc: HubserveError) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id, **retry_headers(exc)}
    original = printable(exc.message)
    if isinstance(exc, ModelError):
        fields = model_error_body(request.path_params.get("name", ""), original)
        body = SageMakerModelError.model_validate({**fields, "message": fields["Message"]})
        return JSONResponse(body.model_dump(), status_code=424, headers={**headers, "x-amzn-ErrorType": "ModelError"})
    if isinstance(exc, NotFound):
        # SageMaker answers an unknown endpoint with a 400 ValidationError.
        name = request.path_params.get("name", "")
        exc = BadRequest(f"Endpoint {name} of account {ACCOUNT} not found.")
        original = exc.message
    code = exc.code if isinstance(exc, AwsError) else ERROR_CODES.get(exc.status, "InternalFailure")
    return JSONResponse({"message": original}, status_code=exc.status,
                        headers={**headers, "x-amzn-ErrorType": code})


router = APIRouter(route_class=error_route(render_sagemaker_error), tags=["sagemaker"])

_ERROR_HEADERS: dict[str, Any] = {
    "x-amzn-ErrorType": {"schema": {"type": "string"}, "description": "SageMaker's error code, e.g. ValidationError"},
    "x-amzn-RequestId": {"schema": {"type": "string"}},
}


@router.post("/endpoints/{name}/invocations",
             openapi_extra={"requestBody": INVOCATION_BODY, "security": OPTIONAL_TOKEN}, response_class=Response,
             responses={
                 200: {"description": "The answer, encoded by Accept", "content": ANSWER_CONTENT, "headers": {
                     "x-Amzn-Invoked-Production-Variant": {"schema": {"type": "string"}},
                     "x-amzn-RequestId": {"schema": {"type": "string"}}}},
                 **errors(400, 401, 403, 406, 408, 413, 415, 429, 503, 504, model=SageMakerError,
                          headers=_ERROR_HEADERS),
                 **errors(424, model=SageMakerModelError, headers=_ERROR_HEADERS)})
async def invoke_endpoint(name: str, request: Request) -> Response:
    request.state.request_id = str(uuid.uuid4())
    runtime, invocation = await accept_invocation(request, name, attribute_headers=ATTRIBUTE_HEADERS)
    result = await runtime.invoke(invocation)
    return Response(result.body, media_type=result.content_type, headers=answer_headers(request, invocation))


def answer_headers(request: Request, invocation: InvocationRequest) -> dict[str, str]:
    return {"x-Amzn-Invoked-Production-Variant": invocation.attributes.get("X-Amzn-SageMaker-Target-Variant",
                                                                         DEFAULT_VARIANT),
            "x-amzn-RequestId": request.state.request_id}


async def payload_parts(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The replica's chunks, each in a `PayloadPart` as it comes; a failure after the first ends the stream with a
    ModelStreamError event."""
    try:
        async for chunk in chunks:
            if chunk:
                yield eventstream.payload_part(chunk)
    except HubserveError as exc:
        code = "ModelInvocationTimeExceeded" if isinstance(exc, InvocationTimeout) else "StreamBroken"
        yield eventstream.model_stream_error(printable(exc.message), code)


@router.post("/endpoints/{name}/invocations-response-stream",
             openapi_extra={"requestBody": INVOCATION_BODY, "security": OPTIONAL_TOKEN}, response_class=Response,
             responses={
                 200: {"description": "An event stream: a text-generation endpoint's tokens as TGI's server-sent "
                                      "events, one per `PayloadPart`; custom code's generator chunks, one per "
                                      "`PayloadPart`; any other endpoint's whole answer in one",
                       "content": {eventstream.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
                 **errors(400, 401, 403, 406, 408, 413, 415, 429, 503, 504, model=SageMakerError,
                          headers=_ERROR_HEADERS),
                 **errors(424, model=SageMakerModelError, headers=_ERROR_HEADERS)})
async def invoke_endpoint_with_response_stream(name: str, request: Request) -> Response:
    """InvokeEndpointWithResponseStream: the replica decides what streams and sends its StreamHead with the first
    chunk, so errors before the first part are the HTTP errors InvokeEndpoint gives."""
    request.state.request_id = str(uuid.uuid4())
    runtime, invocation = await accept_invocation(request, name, Route.RESPONSE_STREAM, ATTRIBUTE_HEADERS)
    invocation.accept = forwarded_header(request, "X-Amzn-SageMaker-Accept") or invocation.accept
    invocation.stream = True
    chunks = await runtime.stream(invocation)
    head = StreamHead.decode(await anext(chunks))
    return StreamingResponse(payload_parts(chunks), media_type=eventstream.MEDIA_TYPE,
                             headers={**SSE_HEADERS, **answer_headers(request, invocation),
                                      "X-Amzn-SageMaker-Content-Type": head.content_type})


@router.get("/ping")
async def ping() -> Ping:
    return Ping(status="Healthy")
