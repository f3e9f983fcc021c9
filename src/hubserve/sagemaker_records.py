"""SageMaker's own resources -- models, endpoint configs, and the config each endpoint was deployed from -- and how a
model and a config become one hubserve `EndpointSpec`. Kept in the store's SQLite file, in tables of their own.

A model's env secrets (HF_TOKEN, ...) are sealed with the store's key, as an endpoint's are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hubserve.env_secrets import is_secret
from hubserve.spec import ENV_FIELDS, AsyncInferenceSpec, AutoscalingSpec, EndpointName, EndpointSpec, Env, Text
from hubserve.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS sagemaker_models (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    sealed_env TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sagemaker_endpoint_configs (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sagemaker_endpoints (
    name TEXT PRIMARY KEY,
    config_name TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
# Instance families with accelerators: they ask for device "auto" (CUDA where present), the others for the CPU.
ACCELERATED_FAMILIES = ("ml.g", "ml.p", "ml.inf", "ml.trn")
WEBHOOK_SCHEMES = ("http://", "https://")


class Shape(BaseModel):
    """A SageMaker structure, as strict as botocore's model. Members hubserve does not use are kept as given:
    Describe* answers them back."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


# models
class S3Source(Shape):
    S3Uri: Text = Field(min_length=1)


class DataSource(Shape):
    S3DataSource: S3Source


class Container(Shape):
    Image: Text | None = None
    ModelDataUrl: Text | None = None
    ModelDataSource: DataSource | None = None
    Environment: Env = Field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment, less the empty values of the variables hubserve reads as spec fields: the SDK sends
        some empty, and the SageMaker toolkit takes an empty one as unset."""
        return {name: value for name, value in self.Environment.items() if value or name not in ENV_FIELDS}

    def model_source(self) -> str | None:
        """What hubserve loads: HF_MODEL_ID first, as the Hugging Face toolkit does, else the model data."""
        if self.env().get("HF_MODEL_ID"):
            return None  # the spec takes it from the env
        if self.ModelDataSource is not None:
            return self.ModelDataSource.S3DataSource.S3Uri
        return self.ModelDataUrl


class Model(Shape):
    """CreateModel's request; the execution role is kept, not checked."""

    ModelName: EndpointName
    PrimaryContainer: Container | None = None
    Containers: list[Container] | None = None
    ExecutionRoleArn: Text | None = None
    Tags: list[Any] = Field(default_factory=list, exclude=True)

    @model_validator(mode="after")
    def _one_container(self) -> Model:
        if (self.PrimaryContainer is None) == (self.Containers is None):
            raise ValueError("give PrimaryContainer or Containers (one of them)")
        if self.Containers is not None and len(self.Containers) != 1:
            raise ValueError(f"hubserve serves one container per model; Containers has {len(self.Containers)}")
        container = self.container
        if not container.ModelDataUrl and container.ModelDataSource is None and not container.env().get(
                "HF_MODEL_ID"):
            raise ValueError("the container names no model: give ModelDataUrl (s3://, https://, file:// or a "
                             "folder; a model.tar.gz or a model folder) or the HF_MODEL_ID environment variable")
        return self

    @property
    def container(self) -> Container:
        if self.PrimaryContainer is not None:
            return self.PrimaryContainer
        assert self.Containers is not None
        return self.Containers[0]

    def containers(self) -> Iterator[Container]:
        if self.PrimaryContainer is not None:
            yield self.PrimaryContainer
        yield from self.Containers or ()


# endpoint configs
# How long a serverless endpoint idles before it scales to zero: SageMaker does not say, and keeps a warm instance
# for some minutes.
SERVERLESS_IDLE_S = 300.0


class Serverless(Shape):
    """A serverless variant: one replica at most, started by the first request after it scaled to zero (or kept
    warm with ProvisionedConcurrency), taking at most MaxConcurrency requests at once (ThrottlingException past
    it). MemorySizeInMB is kept for DescribeEndpoint: the server's --max-memory budget bounds the replicas."""

    MemorySizeInMB: int = Field(ge=1024, le=6144)
    MaxConcurrency: int = Field(ge=1, le=200)
    ProvisionedConcurrency: int | None = Field(default=None, ge=1, le=200)

    def autoscaling(self) -> AutoscalingSpec:
        return AutoscalingSpec(min_replicas=1 if self.ProvisionedConcurrency else 0, max_replicas=1,
                               target=float(self.MaxConcurrency), scale_to_zero_after_s=SERVERLESS_IDLE_S)


class ProductionVariant(Shape):
    VariantName: EndpointName
    ModelName: EndpointName
    InitialInstanceCount: int | None = Field(default=None, ge=1)
    InstanceType: Text | None = None
    InitialVariantWeight: float | None = Field(default=None, ge=0)
    ServerlessConfig: Serverless | None = None

    @model_validator(mode="after")
    def _capacity(self) -> ProductionVariant:
        if self.InitialInstanceCount is None and self.ServerlessConfig is None:
            raise ValueError("give InitialInstanceCount (and InstanceType), or ServerlessConfig")
        return self

    @property
    def replicas(self) -> int:
        return 1 if self.ServerlessConfig is not None or self.InitialInstanceCount is None \
            else self.InitialInstanceCount

    @property
    def accelerated(self) -> bool:
        return self.InstanceType is not None and self.InstanceType.startswith(ACCELERATED_FAMILIES)


class Notifications(Shape):
    SuccessTopic: Text | None = None
    ErrorTopic: Text | None = None


class AsyncOutput(Shape):
    S3OutputPath: Text = Field(min_length=1)
    S3FailurePath: Text | None = Field(default=None, min_length=1)
    NotificationConfig: Notifications | None = None


class AsyncClient(Shape):
    MaxConcurrentInvocationsPerInstance: int | None = Field(default=None, ge=1, le=1000)


class AsyncConfig(Shape):
    OutputConfig: AsyncOutput
    ClientConfig: AsyncClient | None = None

    def spec(self) -> AsyncInferenceSpec:
        """hubserve's async settings. SNS topics mean nothing here: only URLs become webhooks."""
        output = self.OutputConfig
        topics = output.NotificationConfig or Notifications()
        concurrency = self.ClientConfig.MaxConcurrentInvocationsPerInstance if self.ClientConfig else None
        return AsyncInferenceSpec(
            output_path=output.S3OutputPath, failure_path=output.S3FailurePath,
            success_webhook=webhook(topics.SuccessTopic), error_webhook=webhook(topics.ErrorTopic),
            **({"max_concurrency": concurrency} if concurrency is not None else {}))


def webhook(topic: str | None) -> str | None:
    return topic if topic is not None and topic.startswith(WEBHOOK_SCHEMES) else None


class EndpointConfig(Shape):
    """CreateEndpointConfig's request."""

    EndpointConfigName: EndpointName
    ProductionVariants: list[ProductionVariant] = Field(min_length=1)
    AsyncInferenceConfig: AsyncConfig | None = None
    Tags: list[Any] = Field(default_factory=list, exclude=True)

    @field_validator("ProductionVariants")
    @classmethod
    def _one_variant(cls, variants: list[ProductionVariant]) -> list[ProductionVariant]:
        if len(variants) > 1:
            raise ValueError(f"hubserve serves one production variant per endpoint; this config has {len(variants)}")
        return variants

    @property
    def variant(self) -> ProductionVariant:
        return self.ProductionVariants[0]


def endpoint_spec(name: str, model: Model, config: EndpointConfig | None = None) -> EndpointSpec:
    """The hubserve endpoint `name` serving `model` as `config` says (one replica on the CPU when no config).

    Raises pydantic's ValidationError, in the spec's own terms, when they make no valid endpoint."""
    container = model.container
    data: dict[str, Any] = {"name": name, "env": container.env(), "device": "cpu"}
    source = container.model_source()
    if source is not None:
        data["model"] = source
    if config is not None:
        data["replicas"] = config.variant.replicas
        data["device"] = "auto" if config.variant.accelerated else "cpu"
        serverless = config.variant.ServerlessConfig
        if serverless is not None:
            data["autoscaling"] = serverless.autoscaling()
            data["max_concurrency"] = serverless.MaxConcurrency
        if config.AsyncInferenceConfig is not None:
            data["async_inference"] = config.AsyncInferenceConfig.spec()
    return EndpointSpec.model_validate(data)


# records
class ModelRecord(BaseModel):
    model: Model
    created_at: float = Field(default_factory=time.time)


class ConfigRecord(BaseModel):
    config: EndpointConfig
    created_at: float = Field(default_factory=time.time)


class EndpointRecord(BaseModel):
    """Which config a hubserve endpoint was made or last updated from, with a copy of it: the SDK deletes the
    config while the endpoint lives on. `created_at` is the endpoint's own: a record whose endpoint was deleted
    and made again through hubserve's API no longer matches."""

    name: str
    config: EndpointConfig
    created_at: float


class SageMakerRecords:
    def __init__(self, store: Store) -> None:
        store.ensure_schema(SCHEMA)
        self._store = store

    # models
    def add_model(self, record: ModelRecord) -> None:
        model = record.model.model_copy(deep=True)
        sealed: dict[int, dict[str, str]] = {}
        for index, container in enumerate(model.containers()):
            sealed[index] = {n: v for n, v in container.Environment.items() if is_secret(n)}
            container.Environment = {n: v for n, v in container.Environment.items() if n not in sealed[index]}
        secrets = self._store.seal(json.dumps(sealed)) if any(sealed.values()) else None
        self._store.query("INSERT INTO sagemaker_models(name, definition, sealed_env, created_at) VALUES (?, ?, ?, ?)",
                          (model.ModelName, model.model_dump_json(), secrets, record.created_at))

    def model(self, name: str) -> ModelRecord | None:
        rows = self._store.query(
            "SELECT definition, sealed_env, created_at FROM sagemaker_models WHERE name = ?", (name,))
        return self._model(*rows[0]) if rows else None

    def models(self) -> list[ModelRecord]:
        rows = self._store.query("SELECT definition, sealed_env, created_at FROM sagemaker_models")
        return [self._model(*row) for row in rows]

    def _model(self, definition: str, sealed: str | None, created_at: float) -> ModelRecord:
        model = Model.model_validate_json(definition)
        if sealed is not None:
            secrets = json.loads(self._store.unseal(sealed))
            for index, container in enumerate(model.containers()):
                container.Environment = {**container.Environment, **secrets.get(str(index), {})}
        return ModelRecord(model=model, created_at=created_at)

    def delete_model(self, name: str) -> None:
        self._store.query("DELETE FROM sagemaker_models WHERE name = ?", (name,))

    # endpoint configs
    def add_config(self, record: ConfigRecord) -> None:
        self._store.query("INSERT INTO sagemaker_endpoint_configs(name, definition, created_at) VALUES (?, ?, ?)",
                          (record.config.EndpointConfigName, record.config.model_dump_json(), record.created_at))

    def config(self, name: str) -> ConfigRecord | None:
        rows = self._store.query(
            "SELECT definition, created_at FROM sagemaker_endpoint_configs WHERE name = ?", (name,))
        return ConfigRecord(config=EndpointConfig.model_validate_json(rows[0][0]), created_at=rows[0][1]) \
            if rows else None

    def delete_config(self, name: str) -> None:
        self._store.query("DELETE FROM sagemaker_endpoint_configs WHERE name = ?", (name,))

    # endpoints
    def save_endpoint(self, record: EndpointRecord) -> None:
        self._store.query(
            "INSERT INTO sagemaker_endpoints(name, config_name, config, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET config_name=excluded.config_name, config=excluded.config, "
            "created_at=excluded.created_at",
            (record.name, record.config.EndpointConfigName, record.config.model_dump_json(), record.created_at))

    def endpoint(self, name: str, created_at: float) -> EndpointRecord | None:
        """The record of endpoint `name` made at `created_at`; None for one SageMaker did not make."""
        rows = self._store.query("SELECT config FROM sagemaker_endpoints WHERE name = ? AND created_at = ?",
                                 (name, created_at))
        return EndpointRecord(name=name, config=EndpointConfig.model_validate_json(rows[0][0]),
                              created_at=created_at) if rows else None

    def delete_endpoint(self, name: str) -> None:
        self._store.query("DELETE FROM sagemaker_endpoints WHERE name = ?", (name,))
