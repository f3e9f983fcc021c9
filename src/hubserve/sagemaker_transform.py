"""SageMaker's CreateTransformJob request, how it and the SageMaker model it names become one `TransformJobSpec`, and
the request kept (in a table of the store's SQLite file) for DescribeTransformJob to answer back.

A job's Environment is sealed with the store's key, as a model's secrets are.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from hubserve.jobs.spec import DataProcessing, TransformJobSpec
from hubserve.sagemaker_records import ACCELERATED_FAMILIES, Model, Shape, endpoint_spec
from hubserve.spec import EndpointName, Env, Text
from hubserve.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS sagemaker_transform_jobs (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    sealed_env TEXT,
    created_at REAL NOT NULL
);
"""
# SageMaker's defaults where the request leaves a member out (botocore's service model documents them).
DEFAULT_SPLIT_TYPE = "None"
DEFAULT_ASSEMBLE_WITH = "None"
DEFAULT_INVOCATION_TIMEOUT_S = 600
# The instance types that the view of a job made through hubserve's own API names, as SageMaker's local mode does
# (a GPU one for a job asking for CUDA).
LOCAL_INSTANCE_TYPES = {True: "local_gpu", False: "local"}


class TransformS3Source(Shape):
    S3DataType: Literal["S3Prefix", "ManifestFile", "AugmentedManifestFile", "Converse"]
    S3Uri: Text = Field(min_length=1, max_length=1024)


class TransformDataSource(Shape):
    S3DataSource: TransformS3Source


class TransformInput(Shape):
    DataSource: TransformDataSource
    ContentType: Text | None = Field(default=None, max_length=256)
    CompressionType: Literal["None", "Gzip"] | None = None
    SplitType: Literal["None", "Line", "RecordIO", "TFRecord"] | None = None


class TransformOutput(Shape):
    S3OutputPath: Text = Field(min_length=1, max_length=1024)
    Accept: Text | None = Field(default=None, max_length=256)
    AssembleWith: Literal["None", "Line"] | None = None


class TransformResources(Shape):
    InstanceType: Text
    InstanceCount: int = Field(ge=1)

    @property
    def accelerated(self) -> bool:
        return self.InstanceType.startswith(ACCELERATED_FAMILIES) or self.InstanceType == LOCAL_INSTANCE_TYPES[True]


class Processing(Shape):
    InputFilter: Text | None = Field(default=None, max_length=63)
    OutputFilter: Text | None = Field(default=None, max_length=63)
    JoinSource: Literal["Input", "None"] | None = None


class ClientConfig(Shape):
    InvocationsTimeoutInSeconds: int | None = Field(default=None, ge=1, le=3600)
    InvocationsMaxRetries: int | None = Field(default=None, ge=0, le=3)


class TransformJobRequest(Shape):
    """CreateTransformJob's request."""

    TransformJobName: EndpointName
    ModelName: EndpointName
    TransformInput: TransformInput
    TransformOutput: TransformOutput
    TransformResources: TransformResources
    BatchStrategy: Literal["MultiRecord", "SingleRecord"] | None = None
    MaxPayloadInMB: int | None = Field(default=None, ge=0)
    MaxConcurrentTransforms: int | None = Field(default=None, ge=0)
    ModelClientConfig: ClientConfig | None = None
    Environment: Env | None = Field(default=None, max_length=16)
    DataProcessing: Processing | None = None
    Tags: list[Any] = Field(default_factory=list, exclude=True)

    def unsupported(self) -> str | None:
        """Why hubserve cannot run this job as asked, if so: what it reads is a file or a prefix, split by line or
        not at all, uncompressed."""
        given = self.TransformInput
        if given.DataSource.S3DataSource.S3DataType != "S3Prefix":
            return (f"S3DataType {given.DataSource.S3DataSource.S3DataType} is not supported: hubserve reads "
                    "S3Prefix data sources (a file, or every file under a prefix)")
        if given.SplitType not in (None, "None", "Line"):
            return f"SplitType {given.SplitType} is not supported: hubserve splits records by Line, or None"
        if given.CompressionType == "Gzip":
            return "CompressionType Gzip is not supported: give uncompressed input"
        return None

    def job_spec(self, model: Model) -> TransformJobSpec:
        """The hubserve job running `model` on the job's own replicas, as this request says. The model becomes a
        source as CreateEndpoint makes it one (its container's env, HF_MODEL_ID or its model data), with the job's
        Environment over it and the variables SageMaker sets in a batch container.

        Raises pydantic's ValidationError, in the spec's own terms, when they make no valid job."""
        given, output, resources = self.TransformInput, self.TransformOutput, self.TransformResources
        processing = self.DataProcessing or Processing()
        container = model.container.model_copy(update={"Environment": {
            **model.container.Environment, **(self.Environment or {}), **self.batch_env()}})
        source = endpoint_spec(self.TransformJobName, model.model_copy(update={
            "PrimaryContainer": container, "Containers": None}))
        client = self.ModelClientConfig or ClientConfig()
        data: dict[str, Any] = {
            "name": self.TransformJobName, "model": source.model, "revision": source.revision, "task": source.task,
            "env": source.env, "device": "auto" if resources.accelerated else "cpu", "dtype": source.dtype,
            "trust_remote_code": source.trust_remote_code, "engine": source.engine,
            "instance_count": resources.InstanceCount, "input": given.DataSource.S3DataSource.S3Uri,
            "split_type": given.SplitType or DEFAULT_SPLIT_TYPE, "output": output.S3OutputPath,
            "assemble_with": output.AssembleWith or DEFAULT_ASSEMBLE_WITH,
            "data_processing": DataProcessing(input_filter=processing.InputFilter or "$",
                                              output_filter=processing.OutputFilter or "$",
                                              join_source=processing.JoinSource or "None"),
            "timeout_s": float(client.InvocationsTimeoutInSeconds or DEFAULT_INVOCATION_TIMEOUT_S),
        }
        optional = {"content_type": given.ContentType, "accept": output.Accept, "batch_strategy": self.BatchStrategy,
                    "max_payload_mb": self.MaxPayloadInMB, "max_concurrent_transforms": self.MaxConcurrentTransforms}
        data.update({key: value for key, value in optional.items() if value is not None})
        return TransformJobSpec.model_validate(data)

    def batch_env(self) -> dict[str, str]:
        """What SageMaker tells a batch container of its job (custom inference code may read it)."""
        settings = {"SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": self.BatchStrategy,
                    "SAGEMAKER_MAX_PAYLOAD_IN_MB": self.MaxPayloadInMB,
                    "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": self.MaxConcurrentTransforms}
        return {name: str(value) for name, value in settings.items() if value is not None}


def request_of(spec: TransformJobSpec) -> dict[str, Any]:
    """How SageMaker shows a job made through hubserve's own API: its model is the endpoint it runs on, or the job
    itself (as an endpoint made there implies a model of its name)."""
    return {
        "TransformJobName": spec.name, "ModelName": spec.endpoint or spec.name,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input}},
                           "ContentType": spec.content_type, "SplitType": spec.split_type},
        "TransformOutput": {"S3OutputPath": spec.output, "Accept": spec.accept, "AssembleWith": spec.assemble_with},
        "TransformResources": {"InstanceType": LOCAL_INSTANCE_TYPES[spec.device.startswith("cuda")],
                               "InstanceCount": spec.instance_count},
        "BatchStrategy": spec.batch_strategy, "MaxPayloadInMB": spec.max_payload_mb,
        "MaxConcurrentTransforms": spec.max_concurrent_transforms,
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": max(1, round(spec.timeout_s))},
        "DataProcessing": {"InputFilter": spec.data_processing.input_filter,
                           "OutputFilter": spec.data_processing.output_filter,
                           "JoinSource": spec.data_processing.join_source},
    }


class TransformJobRecord(BaseModel):
    request: TransformJobRequest
    created_at: float = Field(default_factory=time.time)


class TransformJobRecords:
    """The CreateTransformJob requests of the jobs SageMaker's API made (a job made by hubserve's API has none)."""

    def __init__(self, store: Store) -> None:
        store.ensure_schema(SCHEMA)
        self._store = store

    def add(self, record: TransformJobRecord) -> None:
        request = record.request
        sealed = self._store.seal(json.dumps(request.Environment)) if request.Environment else None
        self._store.query(
            "INSERT INTO sagemaker_transform_jobs(name, definition, sealed_env, created_at) VALUES (?, ?, ?, ?)",
            (request.TransformJobName, request.model_copy(update={"Environment": None}).model_dump_json(), sealed,
             record.created_at))

    def get(self, name: str) -> TransformJobRecord | None:
        rows = self._store.query(
            "SELECT definition, sealed_env, created_at FROM sagemaker_transform_jobs WHERE name = ?", (name,))
        if not rows:
            return None
        definition, sealed, created_at = rows[0]
        request = TransformJobRequest.model_validate_json(definition)
        if sealed is not None:
            request.Environment = json.loads(self._store.unseal(sealed))
        return TransformJobRecord(request=request, created_at=created_at)
