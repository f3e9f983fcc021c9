"""The SageMaker runtime front door: InvokeEndpoint's path, headers and error shapes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from hubserve.api.common import accept_invocation, error_route
from hubserve.api.errors import retry_headers
from hubserve.errors import BadRequest, HubserveError, ModelError, NotFound

DEFAULT_VARIANT = "AllTraffic"
ACCOUNT = "local"
# SageMaker's error codes (x-amzn-ErrorType), which botocore turns into ClientError codes.
ERROR_CODES = {400: "ValidationError", 401: "MissingAuthenticationTokenException", 403: "AccessDeniedException",
               404: "ValidationError", 413: "ValidationError", 415: "ValidationError", 406: "ValidationError",
               429: "ThrottlingException", 503: "ServiceUnavailable", 504: "ModelError"}
# Request headers handed to the model's code (as the SageMaker containers see them).
ATTRIBUTE_HEADERS = (
    "X-Amzn-SageMaker-Custom-Attributes",
    "X-Amzn-SageMaker-Inference-Id",
    "X-Amzn-SageMaker-Target-Variant",
    "X-Amzn-SageMaker-Target-Model",
    "X-Amzn-SageMaker-Session-Id",
)


def render_sagemaker_error(request: Request, exc: HubserveError) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id, **retry_headers(exc)}
    if isinstance(exc, ModelError):
        name = request.path_params.get("name", "")
        message = (f'Received client error (400) from primary with message "{exc.message}". '
                   f"See the endpoint's log (hubserve logs {name}) for more information.")
        body = {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "Message": message, "message": message,
                "OriginalStatusCode": 400, "OriginalMessage": exc.message,
                "LogStreamArn": f"hubserve:logs:{name}"}
        return JSONResponse(body, status_code=424, headers={**headers, "x-amzn-ErrorType": "ModelError"})
    if isinstance(exc, NotFound):
        # SageMaker answers an unknown endpoint with a 400 ValidationError.
        name = request.path_params.get("name", "")
        exc = BadRequest(f"Endpoint {name} of account {ACCOUNT} not found.")
    code = ERROR_CODES.get(exc.status, "InternalFailure")
    return JSONResponse({"message": exc.message}, status_code=exc.status,
                        headers={**headers, "x-amzn-ErrorType": code})


router = APIRouter(route_class=error_route(render_sagemaker_error), tags=["sagemaker"])


@router.post("/endpoints/{name}/invocations")
async def invoke_endpoint(name: str, request: Request) -> Response:
    request.state.request_id = str(uuid.uuid4())
    attributes = {h: request.headers[h] for h in ATTRIBUTE_HEADERS if h in request.headers}
    runtime, invocation = await accept_invocation(request, name, attributes)
    result = await runtime.invoke(invocation)
    return Response(result.body, media_type=result.content_type, headers={
        "x-Amzn-Invoked-Production-Variant": attributes.get("X-Amzn-SageMaker-Target-Variant", DEFAULT_VARIANT),
        "x-amzn-RequestId": request.state.request_id,
    })


@router.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "Healthy"}
