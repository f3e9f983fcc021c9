"""The one description of an endpoint (`EndpointSpec`) and its observable state (`EndpointStatus`).

SageMaker-style env (`HF_MODEL_ID`, `HF_TASK`, ...) is translated into the spec's fields here, once.
"""

from __future__ import annotations

import re
import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from hubserve.env_secrets import masked, unmasked

NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# A body travels to a replica in one channel frame, which holds at most 1 GiB.
MAX_PAYLOAD_BYTES = 1 << 30
# The shortest invocation timeout: a millisecond (a 5e-324 s timeout would fail every call).
MIN_TIMEOUT_S = 0.001
DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TRUE_WORDS = {"1", "true", "t", "yes", "y", "on"}
FALSE_WORDS = {"0", "false", "f", "no", "n", "off", ""}


def _check_text(value: str) -> str:
    # JSON escapes can carry lone surrogates ("\\ud800") and NULs, which no file name, database row or process
    # environment takes: refused here, they never get as far as half-creating something.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"must be valid Unicode text: {exc.reason} at position {exc.start}") from None
    if "\0" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError("name must match ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$ (letters, digits and hyphens)")
    return value


def _check_env_name(value: str) -> str:
    if not value or "=" in value:
        raise ValueError("an env variable name must be non-empty and without '='")
    return value


Text = Annotated[str, AfterValidator(_check_text)]
# The schemas state the rules too, so that the OpenAPI document tells clients what is accepted.
EndpointName = Annotated[str, Field(max_length=63), AfterValidator(_check_name),
                         WithJsonSchema({"type": "string", "maxLength": 63, "pattern": f"^{NAME_PATTERN.pattern}$"})]
EnvName = Annotated[Text, AfterValidator(_check_env_name)]
Env = Annotated[dict[EnvName, Text], WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"},
                                                     "propertyNames": {"minLength": 1, "pattern": "^[^=]+$"}})]


def _whole_number(value: Any) -> Any:
    # JSON Schema counts 2.0 as an integer, and so do clients that write every number as a float; strict
    # validation still refuses 2.5, true and "2".
    return int(value) if isinstance(value, float) and value.is_integer() else value

Device = Annotated[str, WithJsonSchema({"type": "string", "pattern": f"^({DEVICE_PATTERN.pattern})$"})]
Dtype = Annotated[str, WithJsonSchema({"type": "string", "enum": list(DTYPES)})]


def parse_bool(value: str) -> bool:
    """`strtobool` as the SageMaker toolkit applies it to `HF_TRUST_REMOTE_CODE`."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"invalid truth value {value!r}")


# env variable -> spec field, as the SageMaker and Inference Endpoints containers read them.
ENV_FIELDS = {
    "HF_MODEL_ID": "model",
    "HF_TASK": "task",
    "HF_MODEL_REVISION": "revision",
    "HF_REVISION": "revision",
    "HF_TRUST_REMOTE_CODE": "trust_remote_code",
}


def apply_env(data: dict[str, Any]) -> dict[str, Any]:
    """Fill fields the caller left out from the SageMaker-style env that came with them."""
    env = data.get("env") or {}
    if not isinstance(env, dict):
        return data
    filled = dict(data)
    for variable, field in ENV_FIELDS.items():
        # A value of the wrong type is left for the env field's own validation to name.
        if isinstance(env.get(variable), str) and filled.get(field) is None:
            filled[field] = parse_bool(env[variable]) if field == "trust_remote_code" else env[variable]
    return filled


class EndpointState(StrEnum):
    """The states as Inference Endpoints names them."""

    pending = "pending"
    initializing = "initializing"
    running = "running"
    updating = "updating"
    failed = "failed"
    # Autoscaled to no replica after idling (min_replicas 0): the next request starts one and is held meanwhile.
    scaled_to_zero = "scaledToZero"
    # Paused by its owner: no replica, the spec kept, requests answered 503 until it is resumed.
    paused = "paused"


class EngineSpec(BaseModel):
    """How a replica schedules work: batching limits for the engine inside it."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    max_batch_size: int | None = Field(default=None, ge=1, le=1024)
    # Under load, the longest a batch waits to fill (callers answered by the last batch come back over ~15 ms of a
    # busy 2-core machine); an idle replica never waits.
    max_batch_delay_ms: float = Field(default=30.0, ge=0, le=10_000)
    # Text generation, as TGI's limits: over max_concurrent_requests a request gets a 429.
    max_concurrent_requests: int = Field(default=128, ge=1)
    max_input_tokens: int | None = Field(default=None, ge=1)
    max_total_tokens: int | None = Field(default=None, ge=1)
    # What runs the model: `auto` picks ONNX Runtime for encoder tasks on the CPU and llama.cpp for a GGUF text
    # generation model, torch elsewhere (and wherever the chosen one cannot load, with the reason in the state).
    backend: Literal["auto", "torch", "onnx", "openvino", "llamacpp"] = "auto"
    # `auto`: the model's own precision (fp32 encoders); `int8` (ONNX Runtime dynamic quantisation) and `bf16`
    # (OpenVINO) are opt-in, each checked against the fp32 model at load.
    precision: Literal["auto", "int8", "bf16"] = "auto"
    # What `auto` picks a GGUF text generation model's backend for: `latency` (an endpoint's default) runs llama.cpp,
    # the fastest single stream; `throughput` (a batch transform job's own replicas) runs torch's continuous
    # batching, which made 2.8x llama.cpp's tokens/s over 128 rows of SmolLM2 Q4_1 on 2 cores.
    goal: Literal["latency", "throughput"] = "latency"
    # Text generation on llama.cpp: every request's logits bit for bit those of llama.cpp running it alone, whatever
    # else is in the batch (flash attention off, each prompt prefilled on its own). The default runs as llama-server
    # does (flash attention on, prompts prefilled together): a step in 0.73-0.92x the time, measured on SmolLM2, but
    # a request's greedy tokens may change with the requests beside it.
    batch_invariant: bool = False
    # Text generation on llama.cpp: the GGUF's weights are read into the replica's own memory and moved onto 2 MiB
    # pages (Linux transparent huge pages): a forward reads every weight, and fewer, larger pages gave one SmolLM2
    # stream 3-5% more tokens/s than the file mapped on 4 KiB pages. `false` maps the file instead, which replicas
    # of the same file on one machine share through the page cache (each holds a copy of its own otherwise).
    huge_pages: bool = True

    _whole_numbers = field_validator("max_batch_size", "max_concurrent_requests", "max_input_tokens",
                                     "max_total_tokens", mode="before")(_whole_number)

    def generation_limits(self) -> dict[str, int | float | None]:
        return {"max_batch_size": self.max_batch_size, "max_batch_delay_ms": self.max_batch_delay_ms,
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_input_tokens": self.max_input_tokens, "max_total_tokens": self.max_total_tokens}


class AsyncInferenceSpec(BaseModel):
    """Asynchronous inference (SageMaker's AsyncInferenceConfig): requests queue durably, read their input from
    a URL and write their answer to `{output_path}/{id}.out`, or their failure to `{failure_path}/{id}-error.out`."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # s3://, file:// or any fsspec URL, or a local folder.
    output_path: Text = Field(min_length=1)
    # Where failures go; unset: the output path.
    failure_path: Text | None = Field(default=None, min_length=1)
    # Requests one replica runs at once (SageMaker's MaxConcurrentInvocationsPerInstance).
    max_concurrency: int = Field(default=4, ge=1, le=1000)
    # POSTed a JSON notice when a request succeeds / fails (SageMaker's SNS topics).
    success_webhook: Text | None = None
    error_webhook: Text | None = None

    _whole_numbers = field_validator("max_concurrency", mode="before")(_whole_number)

    @property
    def failures(self) -> str:
        return self.failure_path or self.output_path


class AutoscalingSpec(BaseModel):
    """Replicas sized to the traffic, as Inference Endpoints' min and max replicas: added while the requests in
    flight per replica stay above `target`, removed once idle; with `min_replicas` 0 the endpoint scales to zero
    after `scale_to_zero_after_s` without a request, and the next request waits (up to `scale_up_hold_s`) for the
    replica it starts."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    min_replicas: int = Field(default=1, ge=0, le=64)
    max_replicas: int = Field(default=1, ge=1, le=64)
    # Requests in flight per ready replica (held requests count too) above which the endpoint scales up.
    target: float = Field(default=4.0, gt=0)
    scale_up_after_s: float = Field(default=10.0, ge=0)
    scale_down_after_s: float = Field(default=300.0, ge=0)
    scale_to_zero_after_s: float = Field(default=900.0, ge=0)
    # How long a request at zero replicas waits for one to be ready; `X-Scale-Up-Timeout` sets it per request.
    scale_up_hold_s: float = Field(default=120.0, ge=0)

    _whole_numbers = field_validator("min_replicas", "max_replicas", mode="before")(_whole_number)

    @model_validator(mode="after")
    def _check_bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is over max_replicas ({self.max_replicas})")
        return self


class ResourcesSpec(BaseModel):
    """What one replica asks a Ray cluster for (`hubserve serve --ray`); local replicas ignore it. Ray places the
    replica on a node that has it free, and holds it for the replica's life."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    cpus: float = Field(default=1.0, ge=0)
    gpus: float = Field(default=0.0, ge=0)
    # Bytes; unset: no memory is reserved for it.
    memory: int | None = Field(default=None, ge=1)
    # A node's accelerator, as Ray names them ("A100", "H100", "L4", ...).
    accelerator_type: Text | None = Field(default=None, min_length=1)

    _whole_numbers = field_validator("memory", mode="before")(_whole_number)


class SpecFields(BaseModel):
    """Fields shared by a full spec and an update; None in an update means unchanged."""

    # Strict: a value is what the schema says, not something pydantic can coerce (false is no delay, "2" no count).
    # Infinity would pass `gt=0` and then break every JSON answer and the saved spec (stored as null).
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True, allow_inf_nan=False)

    model: Text | None = Field(default=None, description="Hub id, local folder, archive path or URL")
    revision: Text | None = None
    task: Text | None = None
    env: Env | None = None
    device: Device | None = None
    dtype: Dtype | None = None
    replicas: int | None = Field(default=None, ge=1, le=64)
    max_payload_bytes: int | None = Field(default=None, ge=1, le=MAX_PAYLOAD_BYTES)
    timeout_s: float | None = Field(default=None, ge=MIN_TIMEOUT_S)
    security: Literal["public", "protected"] | None = None
    trust_remote_code: bool | None = None
    engine: EngineSpec | None = None
    async_inference: AsyncInferenceSpec | None = None
    # Unset: a fixed `replicas` count.
    autoscaling: AutoscalingSpec | None = None
    # Requests the endpoint takes at once, all replicas and held requests together (SageMaker Serverless'
    # MaxConcurrency): one more is refused with a 429. Unset: no bound but the replicas' own.
    max_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    # Unset: one CPU per replica.
    resources: ResourcesSpec | None = None

    _whole_numbers = field_validator("replicas", "max_payload_bytes", "max_concurrency", mode="before")(_whole_number)

    @model_validator(mode="before")
    @classmethod
    def _translate_env(cls, data: Any) -> Any:
        if isinstance(data, dict):
            try:
                return apply_env(data)
            except ValueError as exc:
                raise ValueError(f"env: {exc}") from exc
        return data

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str | None) -> str | None:
        if value is not None and not DEVICE_PATTERN.fullmatch(value):
            raise ValueError("device must be cpu, cuda, cuda:N or auto")
        return value

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        return value


class EndpointUpdate(SpecFields):
    """A change to an endpoint: only the fields that are set change."""


class EndpointSpec(SpecFields):
    """Everything that defines an endpoint; the CLI, SDK, API, store and runtime all pass this."""

    name: EndpointName
    model: Text
    env: Env = Field(default_factory=dict)
    device: Device = "auto"
    dtype: Dtype = "auto"
    replicas: int = Field(default=1, ge=1, le=64)
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1, le=MAX_PAYLOAD_BYTES)
    timeout_s: float = Field(default=60.0, ge=MIN_TIMEOUT_S)
    security: Literal["public", "protected"] = "public"
    trust_remote_code: bool = False
    engine: EngineSpec = Field(default_factory=EngineSpec)

    def updated(self, change: EndpointUpdate) -> EndpointSpec:
        """This spec with `change` applied (validated again as a whole). A change that sets `replicas` without
        `autoscaling` asks for that fixed count: it ends the autoscaling."""
        data = self.model_dump()
        data.update(change.model_dump(exclude_unset=True, exclude_none=True))
        if change.replicas is not None and change.autoscaling is None:
            data["autoscaling"] = None
        if change.env is not None:
            data["env"] = unmasked(change.env, self.env)
        return EndpointSpec.model_validate(data)

    @property
    def initial_replicas(self) -> int:
        """The replicas a deploy starts: `replicas`, kept within the autoscaling bounds (at least one)."""
        scaling = self.autoscaling
        if scaling is None:
            return self.replicas
        return min(max(self.replicas, scaling.min_replicas, 1), scaling.max_replicas)

    def needs_new_replicas(self, other: EndpointSpec) -> bool:
        """Whether going from `other` to this spec means loading the model again."""
        reload_fields = ("model", "revision", "task", "env", "device", "dtype", "trust_remote_code", "engine",
                         "resources")
        return any(getattr(self, f) != getattr(other, f) for f in reload_fields)


class ReplicaInfo(BaseModel):
    id: str
    state: str
    pid: int | None = None
    # The Ray node it runs on (`hubserve serve --ray`); None for a process on the server's machine.
    node: str | None = None
    # What runs its model once it is ready ("torch", "onnx", ...), and why not the backend meant for it, if so.
    backend: str | None = None
    backend_note: str | None = None
    # What a runtime computes the model in ("float32", "int8", "bfloat16"); None on torch (the model's own dtype).
    dtype: str | None = None


class EndpointStatus(BaseModel):
    state: EndpointState = EndpointState.pending
    message: str | None = None
    ready_replicas: int = 0
    target_replicas: int = 1
    restarts: int = 0
    task: str | None = None
    # What runs the model (its ready replicas' backend); a fallback's reason is in `message` while running.
    backend: str | None = None
    # Why the last scale-up was refused (the server's capacity), until one goes through or the load passes:
    # data-plane servers answer the requests they hold for a wake with it, as the owner does.
    scale_up_refused: str | None = None
    replicas: list[ReplicaInfo] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class Endpoint(BaseModel):
    """What the control API returns: the spec, its status, and where to call it."""

    spec: EndpointSpec
    status: EndpointStatus
    url: str | None = None

    @field_serializer("spec")
    def _mask_secrets(self, spec: EndpointSpec) -> EndpointSpec:
        # Whatever shows an endpoint shows its secrets masked; the store and the workers keep the real ones.
        return spec.model_copy(update={"env": masked(spec.env)})
