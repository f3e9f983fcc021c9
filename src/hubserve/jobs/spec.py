"""A batch transform job: what to run (`TransformJobSpec`) and where it stands (`TransformJob`).

The fields follow SageMaker's CreateTransformJob (`TransformInput`, `TransformOutput`, `DataProcessing`,
`BatchStrategy`, `MaxPayloadInMB`, `MaxConcurrentTransforms`) in hubserve's snake case, so that the SageMaker control
plane, the CLI and the SDK all describe one job the same way.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hubserve.spec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_BYTES,
    Device,
    Dtype,
    EndpointName,
    EndpointSpec,
    EngineSpec,
    Env,
    ResourcesSpec,
    Text,
    _whole_number,
)

# SageMaker's limit on MaxPayloadInMB.
MAX_PAYLOAD_MB = 100


class JobState(StrEnum):
    """The states as SageMaker names a transform job's."""

    in_progress = "InProgress"
    completed = "Completed"
    failed = "Failed"
    stopping = "Stopping"
    stopped = "Stopped"

    @property
    def ended(self) -> bool:
        return self in (JobState.completed, JobState.failed, JobState.stopped)


class DataProcessing(BaseModel):
    """SageMaker's DataProcessing: JSONPath filters on each record's input and answer, and joining the input to its
    answer. `$` keeps all of it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input_filter: Text = "$"
    output_filter: Text = "$"
    join_source: Literal["None", "Input"] = "None"


class TransformJobSpec(BaseModel):
    """Everything that defines a job. Its model is either a source, as an endpoint's (`model` and the fields after
    it), run on the job's own transient replicas, or the name of a running `endpoint`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True, allow_inf_nan=False)

    name: EndpointName
    # The model: a source like an endpoint's ...
    model: Text | None = Field(default=None, description="Hub id, local folder, archive path or URL")
    revision: Text | None = None
    task: Text | None = None
    env: Env = Field(default_factory=dict)
    device: Device = "auto"
    dtype: Dtype = "auto"
    trust_remote_code: bool = False
    engine: EngineSpec = Field(default_factory=EngineSpec)
    # ... on this many transient replicas (SageMaker's InstanceCount), each asking a Ray cluster for `resources`
    # (`hubserve serve --ray`; unset: one CPU) ...
    instance_count: int = Field(default=1, ge=1, le=64)
    resources: ResourcesSpec | None = None
    # ... or a running endpoint, by name.
    endpoint: EndpointName | None = None

    # Input: a file, a folder or a prefix; a local path, file://, s3://, http(s):// or any fsspec URL.
    input: Text = Field(min_length=1)
    content_type: Text = "application/json"
    # `Line`: each line is a record; `None`: each file is one record.
    split_type: Literal["Line", "None"] = "Line"
    # `SingleRecord`: one record per request to the model; `MultiRecord`: as many as fit in max_payload_mb.
    batch_strategy: Literal["SingleRecord", "MultiRecord"] = "MultiRecord"
    max_payload_mb: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES // (1024 * 1024), ge=0, le=MAX_PAYLOAD_MB)
    # Requests in flight at once per replica; 0: as many as keep the model's batches full.
    max_concurrent_transforms: int = Field(default=0, ge=0, le=1000)

    # Output: a folder (same kinds of URL as the input); each input file's answers go to `{output}/{file}.out`.
    output: Text = Field(min_length=1)
    accept: Text = "application/json"
    # `Line`: answers one per line; `None`: answers concatenated.
    assemble_with: Literal["Line", "None"] = "Line"
    data_processing: DataProcessing = Field(default_factory=DataProcessing)
    # `fail`: a bad record fails the job, naming its file and line; `skip`: it goes to `{output}/{file}.errors`.
    on_error: Literal["fail", "skip"] = "fail"
    # Seconds one request to the model may take.
    timeout_s: float = Field(default=300.0, gt=0)

    _whole_numbers = field_validator("instance_count", "max_payload_mb", "max_concurrent_transforms",
                                     mode="before")(_whole_number)

    @model_validator(mode="after")
    def _one_model(self) -> TransformJobSpec:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give either model (run on the job's own replicas) or endpoint (a running endpoint)")
        return self

    @property
    def max_payload_bytes(self) -> int:
        """0 MB means no limit, as in SageMaker (for streaming a whole file as one record); a request to a replica
        still fits one channel frame."""
        return self.max_payload_mb * 1024 * 1024 if self.max_payload_mb else MAX_PAYLOAD_BYTES

    def engine_spec(self) -> EngineSpec:
        """The job's engine: aimed at throughput unless the job says otherwise (a job wants the most answers per
        second, not the fastest single one)."""
        return self.engine if "goal" in self.engine.model_fields_set else self.engine.model_copy(
            update={"goal": "throughput"})

    def endpoint_spec(self) -> EndpointSpec:
        """The spec of the job's transient replicas (only for a job with its own `model`)."""
        assert self.model is not None
        return EndpointSpec(name=f"job-{self.name}"[:63].rstrip("-"), model=self.model, revision=self.revision,
                            task=self.task, env=self.env, device=self.device, dtype=self.dtype,
                            trust_remote_code=self.trust_remote_code, engine=self.engine_spec(),
                            replicas=self.instance_count, resources=self.resources,
                            max_payload_bytes=self.max_payload_bytes, timeout_s=self.timeout_s)


class JobProgress(BaseModel):
    records_done: int = 0
    # Unknown until every input file has been counted (counted as the job reads, for a stream of unknown length).
    records_total: int | None = None
    records_failed: int = 0
    files_done: int = 0
    files_total: int = 0
    records_per_s: float | None = None
    eta_s: float | None = None


class TransformJob(BaseModel):
    """A job as the API shows it."""

    spec: TransformJobSpec
    state: JobState = JobState.in_progress
    # Why it failed, naming the file and line where one record is to blame.
    failure_reason: str | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
