"""The SageMaker control plane: `POST /` with `X-Amz-Target: SageMaker.<Action>` (JSON 1.1), for models, endpoint
configs, endpoints and transform jobs. A SageMaker endpoint is a hubserve endpoint and a transform job a hubserve job:
the two APIs see one set. CloudWatch Logs' reads (`Logs_20140328.<Action>`) come to the same path and go on to
`cloudwatch_logs`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hubserve.api import cloudwatch_logs
from hubserve.api.aws_auth import require_control_access
from hubserve.api.aws_paging import page_start, page_token
from hubserve.api.common import CONTROL_BODY_LIMIT, error_route, json_object, manager_of, owner_only, read_body
from hubserve.api.errors import printable, retry_headers
from hubserve.env_secrets import masked
from hubserve.errors import AwsError, Conflict, HubserveError, NotFound, ReplicaLimitReached
from hubserve.jobs.service import JobService
from hubserve.jobs.spec import TransformJob
from hubserve.sagemaker_records import (
    ConfigRecord,
    EndpointConfig,
    EndpointRecord,
    Model,
    ModelRecord,
    SageMakerRecords,
    endpoint_spec,
)
from hubserve.sagemaker_transform import TransformJobRecord, TransformJobRecords, TransformJobRequest, request_of
from hubserve.serving.manager import EndpointManager
from hubserve.spec import Endpoint, EndpointName, EndpointSpec, EndpointState, EndpointStatus
from hubserve.store import Store

log = logging.getLogger("hubserve")
InputT = TypeVar("InputT", bound=BaseModel)
RecordsT = TypeVar("RecordsT")

MEDIA_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."
# ARNs need a 12-digit account; hubserve has none.
ACCOUNT_ID = "000000000000"
DEFAULT_REGION = "us-east-1"
DEFAULT_VARIANT = "AllTraffic"
# How the ARN kinds read in SageMaker's "Could not find ..." messages.
KIND_WORDS = {"model": "model", "endpoint-config": "endpoint configuration", "endpoint": "endpoint"}
# The region of a SigV4 credential scope: <key>/<date>/<region>/<service>/aws4_request.
SIGNED_REGION = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/")
FAILURE_REASON_LIMIT = 1024
# Where the NVIDIA driver lists the machine's GPUs: seen without importing torch in the API process.
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
# Codes of errors that AWS models with a `Message` member (the others have `message`).
MODELLED_CODES = {"ResourceNotFound", "ResourceInUse", "ResourceLimitExceeded"}
# The codes of our errors whose status AWS keeps; any other 4xx is a ValidationException (400).
STATUS_CODES = {401: "MissingAuthenticationTokenException", 403: "AccessDeniedException",
                408: "RequestTimeoutException", 413: "ValidationException", 421: "MisdirectedRequestException",
                429: "ThrottlingException", 503: "ServiceUnavailable"}

# Deleted endpoints whose replicas still drain: held so that the tasks live until they end.
_draining: set[asyncio.Task[None]] = set()


class ControlError(BaseModel):
    """SageMaker's JSON 1.1 error body; botocore reads the code from `__type`."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(alias="__type")
    message: str
    Message: str | None = None


def error_code(exc: HubserveError) -> tuple[str, int]:
    """The AWS code and HTTP status of `exc`."""
    if isinstance(exc, AwsError):
        return exc.code, exc.status
    if isinstance(exc, ReplicaLimitReached):
        return "ResourceLimitExceeded", 400
    if exc.status in STATUS_CODES:
        return STATUS_CODES[exc.status], exc.status
    if exc.status < 500:
        return "ValidationException", 400
    return "InternalFailure", exc.status


def render_control_error(request: Request, exc: HubserveError) -> JSONResponse:
    code, status = error_code(exc)
    message = printable(exc.message)
    body = {"__type": code, "message": message, **({"Message": message} if code in MODELLED_CODES else {})}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE,
                        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": request_id(request),
                                 **retry_headers(exc)})


def request_id(request: Request) -> str:
    if getattr(request.state, "request_id", None) is None:
        request.state.request_id = str(uuid.uuid4())
    return str(request.state.request_id)


def invalid(message: str) -> AwsError:
    return AwsError("ValidationException", message)


def validation_failure(exc: ValidationError, what: str = "") -> AwsError:
    """AWS's wording of a request that breaks the model's constraints, each naming its member."""
    details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
    count = len(exc.errors())
    return invalid(f"{what}{count} validation error{'s' if count > 1 else ''} detected: {details}")


@dataclass(frozen=True)
class Call:
    """One control-plane call: where the endpoints and records are, and the region ARNs name."""

    manager: EndpointManager
    records: SageMakerRecords
    jobs: JobService
    transform_records: TransformJobRecords
    region: str

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT_ID}:{kind}/{name}"

    def not_found(self, kind: str, name: str) -> AwsError:
        """What SageMaker answers for a name it does not know (boto3's endpoint_deleted waiter waits for it)."""
        return invalid(f'Could not find {KIND_WORDS[kind]} "{self.arn(kind, name)}".')

    def find_endpoint(self, name: str) -> Endpoint | None:
        try:
            return self.manager.get(name).describe()
        except NotFound:
            return None

    def endpoint(self, name: str) -> Endpoint:
        endpoint = self.find_endpoint(name)
        if endpoint is None:
            raise self.not_found("endpoint", name)
        return endpoint

    def endpoint_record(self, endpoint: Endpoint) -> EndpointRecord | None:
        return self.records.endpoint(endpoint.spec.name, endpoint.status.created_at)

    def implied(self, name: str) -> Endpoint | None:
        """The endpoint `name` when hubserve's API made it: its implied config and model bear its name."""
        endpoint = self.find_endpoint(name)
        return endpoint if endpoint is not None and self.endpoint_record(endpoint) is None else None


def records_of(request: Request, kind: Callable[[Store], RecordsT]) -> RecordsT:
    """The app's one `kind` of SageMaker records, its tables made at the first call that needs them."""
    state = request.app.state
    key = f"sagemaker_{getattr(kind, '__name__', 'records')}"
    if getattr(state, key, None) is None:
        setattr(state, key, kind(manager_of(request).store))
    records: RecordsT = getattr(state, key)
    return records


def jobs_of(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


def signed_region(request: Request) -> str:
    match = SIGNED_REGION.search(request.headers.get("authorization", ""))
    return match.group(1) if match else DEFAULT_REGION


def parse(shape: type[InputT], body: dict[str, Any]) -> InputT:
    try:
        return shape.model_validate(body)
    except ValidationError as exc:
        raise validation_failure(exc) from None


def spec_for(name: str, model: Model, config: EndpointConfig | None = None) -> EndpointSpec:
    try:
        return endpoint_spec(name, model, config)
    except ValidationError as exc:
        raise validation_failure(exc, "the model and config make no valid hubserve endpoint: ") from None


# inputs
class Input(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class ModelNameInput(Input):
    ModelName: EndpointName


class ConfigNameInput(Input):
    EndpointConfigName: EndpointName


class EndpointNameInput(Input):
    EndpointName: EndpointName


class EndpointInput(EndpointNameInput):
    EndpointConfigName: EndpointName


class ListInput(Input):
    NameContains: str | None = None
    SortOrder: Literal["Ascending", "Descending"] = "Descending"
    MaxResults: int = Field(default=10, ge=1, le=100)
    NextToken: str | None = None
    CreationTimeBefore: float | None = None
    CreationTimeAfter: float | None = None


class ListModelsInput(ListInput):
    SortBy: Literal["Name", "CreationTime"] = "CreationTime"


class ListByStatusInput(ListInput):
    """The List* actions of resources that have a status and a last-modified time."""

    SortBy: Literal["Name", "CreationTime", "Status"] = "CreationTime"
    StatusEquals: str | None = None
    LastModifiedTimeBefore: float | None = None
    LastModifiedTimeAfter: float | None = None


class ListEndpointsInput(ListByStatusInput):
    StatusEquals: Literal["OutOfService", "Creating", "Updating", "SystemUpdating", "RollingBack", "InService",
                          "Deleting", "Failed", "UpdateRollbackFailed"] | None = None


class ListTransformJobsInput(ListByStatusInput):
    StatusEquals: Literal["InProgress", "Completed", "Failed", "Stopping", "Stopped"] | None = None


class TransformJobNameInput(Input):
    TransformJobName: EndpointName


def listed(items: list[dict[str, Any]], body: ListInput, name_key: str, sort_key: str,
           extra: Callable[[dict[str, Any]], bool] = lambda _item: True) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One page of `items` as the List* actions filter, sort and cut them, and the NextToken where the next starts
    (none after the last)."""
    name_part = (body.NameContains or "").lower()
    kept = [item for item in items if name_part in item[name_key].lower() and extra(item)
            and (body.CreationTimeBefore is None or item["CreationTime"] < body.CreationTimeBefore)
            and (body.CreationTimeAfter is None or item["CreationTime"] > body.CreationTimeAfter)]
    kept.sort(key=lambda item: (item[sort_key], item[name_key]), reverse=body.SortOrder == "Descending")
    start = page_start(body.NextToken)
    if start is None:
        raise invalid("NextToken is not one this server gave")
    end = start + body.MaxResults
    return kept[start:end], {"NextToken": page_token(end)} if end < len(kept) else {}


def listed_by_status(summaries: list[dict[str, Any]], query: ListByStatusInput,
                     kind: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A page of the summaries of `kind` (their `{kind}Name` and `{kind}Status`) as ListEndpoints and
    ListTransformJobs filter, sort and cut them."""
    name_key, status_key = f"{kind}Name", f"{kind}Status"

    def wanted(item: dict[str, Any]) -> bool:
        modified = item["LastModifiedTime"]
        return ((query.StatusEquals is None or item[status_key] == query.StatusEquals)
                and (query.LastModifiedTimeBefore is None or modified < query.LastModifiedTimeBefore)
                and (query.LastModifiedTimeAfter is None or modified > query.LastModifiedTimeAfter))

    sort_key = {"Name": name_key, "Status": status_key}.get(query.SortBy, query.SortBy)
    return listed(summaries, query, name_key, sort_key, wanted)


# the actions
async def create_model(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    model = parse(Model, body)
    if call.records.model(model.ModelName) is not None:
        raise invalid(f'Cannot create already existing model "{call.arn("model", model.ModelName)}".')
    spec_for(model.ModelName, model)
    call.records.add_model(ModelRecord(model=model))
    return {"ModelArn": call.arn("model", model.ModelName)}


async def describe_model(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    name = parse(ModelNameInput, body).ModelName
    record = call.records.model(name)
    if record is not None:
        shown = record.model.model_dump(exclude_none=True)
        for container in (shown.get("PrimaryContainer"), *shown.get("Containers", ())):
            if container is not None:
                container["Environment"] = masked(container["Environment"])
        return {**shown, "ModelArn": call.arn("model", name), "CreationTime": record.created_at}
    endpoint = call.implied(name)
    if endpoint is None:
        raise call.not_found("model", name)
    spec = endpoint.spec
    env = {"HF_MODEL_ID": spec.model, **({"HF_TASK": spec.task} if spec.task else {}), **masked(spec.env)}
    return {"ModelName": name, "ModelArn": call.arn("model", name), "CreationTime": endpoint.status.created_at,
            "PrimaryContainer": {"Environment": env}}


async def delete_model(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """Endpoints serving the model keep serving it, as on SageMaker (the SDK deletes it before the endpoint)."""
    name = parse(ModelNameInput, body).ModelName
    return forget(call, "model", name, call.records.model(name), call.records.delete_model)


async def list_models(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    query = parse(ListModelsInput, body)
    models = [{"ModelName": r.model.ModelName, "ModelArn": call.arn("model", r.model.ModelName),
               "CreationTime": r.created_at} for r in call.records.models()]
    page, more = listed(models, query, "ModelName", {"Name": "ModelName"}.get(query.SortBy, query.SortBy))
    return {"Models": page, **more}


def config_model(call: Call, config: EndpointConfig) -> Model:
    name = config.variant.ModelName
    record = call.records.model(name)
    if record is None:
        raise call.not_found("model", name)
    return record.model


async def create_endpoint_config(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    config = parse(EndpointConfig, body)
    arn = call.arn("endpoint-config", config.EndpointConfigName)
    if call.records.config(config.EndpointConfigName) is not None:
        raise invalid(f'Cannot create already existing endpoint configuration "{arn}".')
    spec_for(config.EndpointConfigName, config_model(call, config), config)
    call.records.add_config(ConfigRecord(config=config))
    return {"EndpointConfigArn": arn}


async def describe_endpoint_config(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    name = parse(ConfigNameInput, body).EndpointConfigName
    arn = call.arn("endpoint-config", name)
    record = call.records.config(name)
    if record is not None:
        return {**record.config.model_dump(exclude_none=True), "EndpointConfigArn": arn,
                "CreationTime": record.created_at}
    endpoint = call.implied(name)
    if endpoint is None:
        raise call.not_found("endpoint-config", name)
    variant = {"VariantName": DEFAULT_VARIANT, "ModelName": name, "InitialInstanceCount": endpoint.spec.replicas,
               "InitialVariantWeight": 1.0}
    return {"EndpointConfigName": name, "EndpointConfigArn": arn, "ProductionVariants": [variant],
            "CreationTime": endpoint.status.created_at}


async def delete_endpoint_config(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """Endpoints deployed from the config keep running (the SDK deletes the config before the endpoint)."""
    name = parse(ConfigNameInput, body).EndpointConfigName
    return forget(call, "endpoint-config", name, call.records.config(name), call.records.delete_config)


def forget(call: Call, kind: str, name: str, record: object, delete: Callable[[str], None]) -> dict[str, Any]:
    """Delete a model's or config's record; one that an endpoint made through hubserve's API implies has none,
    and deleting it is a no-op, as deleting a record its endpoint still uses is."""
    if record is None and call.implied(name) is None:
        raise call.not_found(kind, name)
    delete(name)
    return {}


def deployable(call: Call, endpoint_name: str, config_name: str) -> tuple[EndpointConfig, EndpointSpec]:
    """The config named and the spec it makes for the endpoint."""
    record = call.records.config(config_name)
    if record is None:
        raise call.not_found("endpoint-config", config_name)
    model_name = record.config.variant.ModelName
    model = call.records.model(model_name)
    if model is None:
        raise AwsError("ResourceNotFound", f'The model "{call.arn("model", model_name)}" of endpoint configuration '
                                           f'"{config_name}" was deleted: create it again, or use another config.')
    return record.config, spec_for(endpoint_name, model.model, record.config)


def note_device(call: Call, spec: EndpointSpec, config: EndpointConfig) -> None:
    """Say it where an accelerated instance type meets a machine without a GPU: the endpoint runs on the CPU."""
    if not config.variant.accelerated or any(NVIDIA_GPUS.glob("*")):
        return
    message = (f"instance type {config.variant.InstanceType} asks for a GPU, and this machine has none: endpoint "
               f"{spec.name} runs on the CPU")
    log.warning(message)
    runtime = call.manager.get(spec.name)
    runtime.notice = message
    with open(runtime.log_path, "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [sagemaker] {message}\n")


async def create_endpoint(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    request = parse(EndpointInput, body)
    name = request.EndpointName
    arn = call.arn("endpoint", name)
    already = invalid(f'Cannot create already existing endpoint "{arn}".')
    if call.find_endpoint(name) is not None:
        raise already
    config, spec = deployable(call, name, request.EndpointConfigName)
    try:
        endpoint = call.manager.create(spec)
    except Conflict:
        raise already from None
    call.records.save_endpoint(EndpointRecord(name=name, config=config, created_at=endpoint.status.created_at))
    note_device(call, spec, config)
    return {"EndpointArn": arn}


def endpoint_status(status: EndpointStatus) -> str:
    """SageMaker's EndpointStatus. A running endpoint still starting replicas it was scaled to is Updating; one
    scaled to zero is InService (a serverless endpoint at zero is), a paused one OutOfService."""
    if status.state == EndpointState.paused:
        return "OutOfService"
    if status.state in (EndpointState.pending, EndpointState.initializing):
        return "Creating"
    if status.state == EndpointState.updating:
        return "Updating"
    if status.state == EndpointState.failed:
        return "Failed"
    scaling = status.ready_replicas < status.target_replicas and all(r.state != "failed" for r in status.replicas)
    return "Updating" if scaling else "InService"


def endpoint_summary(call: Call, endpoint: Endpoint) -> dict[str, Any]:
    name = endpoint.spec.name
    return {"EndpointName": name, "EndpointArn": call.arn("endpoint", name),
            "CreationTime": endpoint.status.created_at, "LastModifiedTime": endpoint.status.updated_at,
            "EndpointStatus": endpoint_status(endpoint.status)}


async def describe_endpoint(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    endpoint = call.endpoint(parse(EndpointNameInput, body).EndpointName)
    status = endpoint.status
    record = call.endpoint_record(endpoint)
    described = endpoint_summary(call, endpoint)
    variant: dict[str, Any] = {"VariantName": DEFAULT_VARIANT, "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                               "CurrentInstanceCount": status.ready_replicas,
                               "DesiredInstanceCount": status.target_replicas}
    described["EndpointConfigName"] = endpoint.spec.name
    if record is not None:
        config = record.config
        described["EndpointConfigName"] = config.EndpointConfigName
        variant["VariantName"] = config.variant.VariantName
        if config.variant.ServerlessConfig is not None:
            serverless = config.variant.ServerlessConfig.model_dump(exclude_none=True)
            variant.update(CurrentServerlessConfig=serverless, DesiredServerlessConfig=serverless)
        if config.AsyncInferenceConfig is not None:
            described["AsyncInferenceConfig"] = config.AsyncInferenceConfig.model_dump(exclude_none=True)
    described["ProductionVariants"] = [variant]
    if described["EndpointStatus"] == "Failed":
        described["FailureReason"] = (status.message or "the endpoint failed")[:FAILURE_REASON_LIMIT]
    return described


async def update_endpoint(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """A rolling update: the endpoint serves the old config until replicas of the new one are ready."""
    request = parse(EndpointInput, body)
    name = request.EndpointName
    endpoint = call.endpoint(name)
    state = endpoint_status(endpoint.status)
    if state in ("Creating", "Updating"):
        raise AwsError("ResourceInUse", f'Endpoint "{call.arn("endpoint", name)}" is {state}: update it once it '
                                        "is InService (or Failed).")
    config, spec = deployable(call, name, request.EndpointConfigName)
    call.manager.update(name, spec)
    call.records.save_endpoint(EndpointRecord(name=name, config=config, created_at=endpoint.status.created_at))
    note_device(call, spec, config)
    return {"EndpointArn": call.arn("endpoint", name)}


async def delete_endpoint(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """The endpoint is gone at once; its replicas finish their requests in the background."""
    name = call.endpoint(parse(EndpointNameInput, body).EndpointName).spec.name
    call.records.delete_endpoint(name)
    task = asyncio.ensure_future(call.manager.delete(name))
    _draining.add(task)
    task.add_done_callback(_drained)
    return {}


def _drained(task: asyncio.Task[None]) -> None:
    _draining.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("deleting an endpoint failed", exc_info=task.exception())


async def list_endpoints(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    summaries = [endpoint_summary(call, endpoint) for endpoint in call.manager.list()]
    page, more = listed_by_status(summaries, parse(ListEndpointsInput, body), "Endpoint")
    return {"Endpoints": page, **more}


# transform jobs
def on_job(call: Call, name: str, act: Callable[[str], TransformJob]) -> TransformJob:
    """`act` on the job `name`, with SageMaker's error for a name it does not know."""
    try:
        return act(name)
    except NotFound:
        raise AwsError("ResourceNotFound", f"Could not find requested job with name {name}") from None


async def create_transform_job(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """The job runs the SageMaker model on transient replicas of its own; its input is listed (and found to hold
    files) before the answer."""
    request = parse(TransformJobRequest, body)
    arn = call.arn("transform-job", request.TransformJobName)
    unsupported = request.unsupported()
    if unsupported is not None:
        raise invalid(unsupported)
    model = call.records.model(request.ModelName)
    if model is None:
        raise call.not_found("model", request.ModelName)
    try:
        spec = request.job_spec(model.model)
    except ValidationError as exc:
        raise validation_failure(exc, "the model and transform job make no valid hubserve job: ") from None
    try:
        job = await asyncio.to_thread(call.jobs.create, spec)
    except Conflict:
        raise AwsError("ResourceInUse", "Job name must be unique within an AWS account and region, and a job with "
                                        f"this name already exists ({arn})") from None
    call.transform_records.add(TransformJobRecord(request=request, created_at=job.created_at))
    return {"TransformJobArn": arn}


def transform_job_summary(call: Call, job: TransformJob) -> dict[str, Any]:
    name = job.spec.name
    summary: dict[str, Any] = {
        "TransformJobName": name, "TransformJobArn": call.arn("transform-job", name),
        "TransformJobStatus": job.state.value, "CreationTime": job.created_at,
        "LastModifiedTime": job.ended_at or job.started_at or job.created_at}
    times = {"TransformStartTime": job.started_at, "TransformEndTime": job.ended_at,
             "FailureReason": job.failure_reason and job.failure_reason[:FAILURE_REASON_LIMIT]}
    return {**summary, **{key: value for key, value in times.items() if value is not None}}


async def describe_transform_job(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """The job as CreateTransformJob asked for it (as SageMaker would have, for a job made by hubserve's API), and
    where it stands."""
    job = on_job(call, parse(TransformJobNameInput, body).TransformJobName, call.jobs.get)
    record = call.transform_records.get(job.spec.name)
    shown = record.request.model_dump(exclude_none=True) if record is not None else request_of(job.spec)
    if "Environment" in shown:
        shown["Environment"] = masked(shown["Environment"])
    described = transform_job_summary(call, job)
    del described["LastModifiedTime"]
    return {**shown, **described}


async def stop_transform_job(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """The job is Stopping until its replicas have let go, then Stopped; stopping one that has ended is a
    ValidationException."""
    on_job(call, parse(TransformJobNameInput, body).TransformJobName, call.jobs.stop)
    return {}


async def list_transform_jobs(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    summaries = [transform_job_summary(call, job) for job in call.jobs.list()]
    for summary in summaries:
        summary.pop("TransformStartTime", None)
    page, more = listed_by_status(summaries, parse(ListTransformJobsInput, body), "TransformJob")
    return {"TransformJobSummaries": page, **more}


Action = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]
ACTIONS: dict[str, Action] = {
    "CreateModel": create_model, "DescribeModel": describe_model, "DeleteModel": delete_model,
    "ListModels": list_models, "CreateEndpointConfig": create_endpoint_config,
    "DescribeEndpointConfig": describe_endpoint_config, "DeleteEndpointConfig": delete_endpoint_config,
    "CreateEndpoint": create_endpoint, "DescribeEndpoint": describe_endpoint, "UpdateEndpoint": update_endpoint,
    "DeleteEndpoint": delete_endpoint, "ListEndpoints": list_endpoints,
    "CreateTransformJob": create_transform_job, "DescribeTransformJob": describe_transform_job,
    "StopTransformJob": stop_transform_job, "ListTransformJobs": list_transform_jobs,
}


# What the path serves: SageMaker's actions, then CloudWatch Logs'.
TARGETS = [TARGET_PREFIX + name for name in ACTIONS] + cloudwatch_logs.TARGETS


def action_of(request: Request) -> Action:
    target = request.headers.get("x-amz-target", "")
    action = ACTIONS.get(target.removeprefix(TARGET_PREFIX)) if target.startswith(TARGET_PREFIX) else None
    if action is None:
        raise AwsError("UnknownOperationException",
                       f"hubserve does not serve the operation {target or '(no X-Amz-Target header)'}; it serves "
                       f"{', '.join(TARGETS)}")
    return action


router = APIRouter(route_class=error_route(render_control_error), tags=["sagemaker"])
_ERROR = {"content": {MEDIA_TYPE: {"schema": ControlError.model_json_schema(by_alias=True)}}}


@router.post("/", response_class=Response, openapi_extra={
    "security": [{"bearer": []}],
    "parameters": [{"name": "X-Amz-Target", "in": "header", "required": True,
                    "schema": {"type": "string", "enum": TARGETS}}],
    "requestBody": {"required": True, "content": {media: {"schema": {"type": "object"}}
                                                  for media in (MEDIA_TYPE, "application/json")}}},
    responses={200: {"description": "The action's output", "content": {MEDIA_TYPE: {"schema": {"type": "object"}}}},
               **{status: {"description": "The AWS error code in `__type` and `x-amzn-ErrorType`", **_ERROR}
                  for status in (400, 401, 403, 408, 413)}})
async def control_plane(request: Request) -> Response:
    """SageMaker's control-plane actions on models, endpoint configs, endpoints and transform jobs, and CloudWatch
    Logs' reads of the jobs' and endpoints' logs (admin token or admin AWS key)."""
    owner_only(request)
    body = await read_body(request, CONTROL_BODY_LIMIT)
    target = request.headers.get("x-amz-target", "")
    if target.startswith(cloudwatch_logs.TARGET_PREFIX):
        require_control_access(request, body, cloudwatch_logs.SIGNING_SERVICE)
        logs = cloudwatch_logs.LogGroups(manager_of(request), jobs_of(request))
        answer = await asyncio.to_thread(logs.answer, target, json_object(body))
    else:
        require_control_access(request, body)
        action = action_of(request)
        call = Call(manager=manager_of(request), records=records_of(request, SageMakerRecords),
                    jobs=jobs_of(request), transform_records=records_of(request, TransformJobRecords),
                    region=signed_region(request))
        answer = await action(call, json_object(body))
    return Response(orjson.dumps(answer), media_type=MEDIA_TYPE, headers={"x-amzn-RequestId": request_id(request)})
