"""InvokeEndpointAsync (`POST /endpoints/{name}/async-invocations`): queues a request whose input is an object (or
the body), and answers 202 with where its answer, or its failure, will be written (serving/async_runner.py)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hubserve.api.common import (
    accept_invocation,
    error_route,
    forwarded_header,
    manager_of,
    owner_only,
    settings_of,
)
from hubserve.api.contract import INVOCATION_BODY, OPTIONAL_TOKEN, errors
from hubserve.api.sagemaker import ACCOUNT, ATTRIBUTE_HEADERS, SageMakerError, render_sagemaker_error
from hubserve.errors import BadRequest
from hubserve.invocation import InvocationRequest
from hubserve.serving.async_queue import AsyncRequest, failure_location, output_location
from hubserve.spec import AsyncInferenceSpec

router = APIRouter(route_class=error_route(render_sagemaker_error), tags=["sagemaker"])

INPUT_LOCATION = "X-Amzn-SageMaker-InputLocation"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
# botocore's model of each header (sagemaker-runtime InvokeEndpointAsync), which AWS enforces. An id and a file
# name end up in an object's name: no "/" in them, nor ".." in the extension, lest they reach outside the path.
# The id: printable ASCII, the first not a space (AWS), and neither "/" nor "\\".
ID_PATTERN = re.compile(r"[!-.0-\[\]-~][ -.0-\[\]-~]{0,63}")
FILENAME_PATTERN = re.compile(r"(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}")
EXTENSION_PATTERN = re.compile(r"(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]{1,512}")
LOCATION_PATTERN = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://.+")
MAX_HEADER = 1024
# name: (least, most, default) seconds
DURATIONS = {"X-Amzn-SageMaker-RequestTTLSeconds": (60, 21600, 21600),
             "X-Amzn-SageMaker-InvocationTimeoutSeconds": (1, 3600, 900)}


_TEXT = {"type": "string", "maxLength": MAX_HEADER}


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


HEADER_DOCS = [
    _header(INPUT_LOCATION, "The input's URL (s3://, file://, or another fsspec URL); unless the input is the body",
            {"type": "string", "maxLength": MAX_HEADER, "pattern": f"^{LOCATION_PATTERN.pattern}$"}),
    _header("X-Amzn-SageMaker-Content-Type", "The input's media type; unset: the input object's own, else JSON",
            _TEXT),
    _header("X-Amzn-SageMaker-Accept", "The answer's media type", _TEXT),
    _header("X-Amzn-SageMaker-Custom-Attributes", "Handed to the model's code", _TEXT),
    _header(INFERENCE_ID, "The request's id (unset: a new UUID); sent again, the same answer, run once",
            {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}),
    _header("X-Amzn-SageMaker-S3OutputPathExtension", "A folder under the endpoint's output path for the answer",
            {"type": "string", "pattern": f"^{EXTENSION_PATTERN.pattern}$"}),
    _header("X-Amzn-SageMaker-Filename", "The answer's object name (unset: `<InferenceId>.out`)",
            {"type": "string", "pattern": f"^{FILENAME_PATTERN.pattern}$"}),
    *(_header(name, f"Default {default}", {"type": "integer", "minimum": least, "maximum": most})
      for name, (least, most, default) in DURATIONS.items()),
]
_ANSWER_HEADERS: dict[str, Any] = {
    "X-Amzn-SageMaker-OutputLocation": {"schema": {"type": "string"}, "description": "Where the answer will be"},
    "X-Amzn-SageMaker-FailureLocation": {"schema": {"type": "string"}, "description": "Where a failure will be"},
    "x-amzn-RequestId": {"schema": {"type": "string"}},
}
_ERROR_HEADERS: dict[str, Any] = {
    "x-amzn-ErrorType": {"schema": {"type": "string"}, "description": "SageMaker's error code, e.g. ValidationError"},
    "x-amzn-RequestId": {"schema": {"type": "string"}},
}


class AsyncInvocation(BaseModel):
    """botocore reads InferenceId from the body and the locations from the headers; the body has them too."""

    InferenceId: str
    OutputLocation: str
    FailureLocation: str


@router.post("/endpoints/{name}/async-invocations", status_code=202, response_class=Response,
             openapi_extra={"requestBody": {**INVOCATION_BODY, "required": False}, "parameters": HEADER_DOCS,
                            "security": OPTIONAL_TOKEN},
             responses={202: {"model": AsyncInvocation, "headers": _ANSWER_HEADERS,
                              "description": "Queued: the answer will be written to OutputLocation, or a failure "
                                             "to FailureLocation"},
                        **errors(400, 401, 403, 408, 413, model=SageMakerError, headers=_ERROR_HEADERS)})
async def invoke_endpoint_async(name: str, request: Request) -> Response:
    request.state.request_id = str(uuid.uuid4())
    owner_only(request)  # the queue of asynchronous requests is in the owner's store
    runtime, invocation = await accept_invocation(request, name, attribute_headers=ATTRIBUTE_HEADERS)
    settings = runtime.spec.async_inference
    if settings is None:
        raise BadRequest(f"Endpoint {name} of account {ACCOUNT} is not an async endpoint: it has no async_inference "
                         "settings (use InvokeEndpoint, or update the endpoint with async_inference)")
    queued = manager_of(request).async_runners.submit(async_request(request, name, settings, invocation))
    answer = AsyncInvocation(InferenceId=queued.id, OutputLocation=queued.output_location,
                             FailureLocation=queued.failure_location)
    return JSONResponse(answer.model_dump(), status_code=202,
                        headers={"X-Amzn-SageMaker-OutputLocation": queued.output_location,
                                 "X-Amzn-SageMaker-FailureLocation": queued.failure_location,
                                 "x-amzn-RequestId": request.state.request_id})


def async_request(request: Request, name: str, settings: AsyncInferenceSpec,
                  invocation: InvocationRequest) -> AsyncRequest:
    """The queued request the headers describe (each checked as AWS does); the input is the body or the object at
    InputLocation, one or the other."""
    location = _matching(request, INPUT_LOCATION, LOCATION_PATTERN, "a URL such as s3://bucket/key or file:///path")
    if location is not None and invocation.body:
        raise BadRequest(f"send the input either in the body or at {INPUT_LOCATION}, not both")
    if location is None and not invocation.body:
        raise BadRequest(f"{INPUT_LOCATION} is required: the URL of the input (s3://, file://, ...), unless the "
                         "input is the body")
    if location is not None:
        _check_location(location, settings_of(request).home)
    inference_id = _matching(request, INFERENCE_ID, ID_PATTERN, "1 to 64 printable ASCII characters, the first not "
                             "a space, without '/' or '\\' (it names the answer's object)") or str(uuid.uuid4())
    extension = _matching(request, "X-Amzn-SageMaker-S3OutputPathExtension", EXTENSION_PATTERN,
                          "letters, digits and !_.*'()/- (up to 512)")
    if extension is not None and any(part in (".", "..") for part in extension.split("/")):
        raise BadRequest("X-Amzn-SageMaker-S3OutputPathExtension must not have '.' or '..' parts")
    filename = _matching(request, "X-Amzn-SageMaker-Filename", FILENAME_PATTERN,
                         "up to 32 letters, digits and _.- with at most one '.', starting with a letter or digit")
    ttl_s, timeout_s = (_seconds(request, header) for header in DURATIONS)
    stated_type = _text(request, "X-Amzn-SageMaker-Content-Type")
    _text(request, "X-Amzn-SageMaker-Custom-Attributes")  # handed on with the other attributes, if not too long
    return AsyncRequest(
        endpoint=name, id=inference_id, input_location=location, body=None if location else invocation.body,
        # An object's own type is read with it; a body's is the request's.
        content_type=stated_type or (None if location else invocation.content_type),
        accept=_text(request, "X-Amzn-SageMaker-Accept") or "application/json",
        attributes={**invocation.attributes, INFERENCE_ID: inference_id},
        output_location=output_location(settings, inference_id, extension, filename),
        failure_location=failure_location(settings, inference_id), ttl_s=ttl_s, timeout_s=timeout_s)


def _text(request: Request, header: str) -> str | None:
    value = forwarded_header(request, header)
    if value is not None and len(value) > MAX_HEADER:
        raise BadRequest(f"{header} must be at most {MAX_HEADER} characters")
    return value


def _matching(request: Request, header: str, pattern: re.Pattern[str], rule: str) -> str | None:
    value = _text(request, header)
    if value is not None and not pattern.fullmatch(value):
        raise BadRequest(f"{header} must be {rule}")
    return value


def _check_location(location: str, home: Path) -> None:
    """A URL of a storage fsspec knows; not a file of the server's own home (its database, keys and tokens), which
    the model would read and might write back out."""
    from fsspec.registry import known_implementations, registry

    scheme = location.split("://", 1)[0].lower()
    if scheme not in known_implementations and scheme not in registry:
        raise BadRequest(f"{INPUT_LOCATION}: no storage is known for '{scheme}://' URLs (s3://, file://, gs://, "
                         "https://, hf://, ...)")
    if scheme in ("file", "local"):
        from fsspec.core import url_to_fs

        if Path(url_to_fs(location)[1]).resolve().is_relative_to(home.resolve()):
            raise BadRequest(f"{INPUT_LOCATION} must not be a file of the server's home folder")


def _seconds(request: Request, header: str) -> int:
    least, most, default = DURATIONS[header]
    value = request.headers.get(header)
    if value is None:
        return default
    if not (re.fullmatch(r"\d{1,6}", value.strip(), re.ASCII) and least <= int(value) <= most):
        raise BadRequest(f"{header} must be a whole number of seconds from {least} to {most}")
    return int(value)
