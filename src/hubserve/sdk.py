"""`Model(...).deploy()` and `Predictor`, `Model(...).transformer()` and `Transformer`, shaped like the SageMaker
SDK's HuggingFaceModel."""

from __future__ import annotations

import json
import sys
from typing import Any

from hubserve.client import Client, HubserveAPIError, job_spec, unique_job_name
from hubserve.jobs.spec import TransformJobSpec
from hubserve.spec import EndpointSpec

# What a job says about its model, as an endpoint's spec does (or the running endpoint it uses).
SOURCE_FIELDS = (set(TransformJobSpec.model_fields) & set(EndpointSpec.model_fields) - {"name"}) | {"endpoint"}


class Predictor:
    """Calls one endpoint: JSON in, JSON out (bytes in, bytes out)."""

    def __init__(self, endpoint_name: str, client: Client | None = None) -> None:
        self.endpoint_name = endpoint_name
        self.client = client or Client()

    def predict(self, data: Any, content_type: str = "application/json", accept: str = "application/json") -> Any:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        raw, returned_type = self.client.invoke(self.endpoint_name, body, content_type, accept)
        return json.loads(raw) if returned_type.startswith("application/json") else raw

    def pause(self) -> dict[str, Any]:
        """Stops the endpoint's replicas, keeping its spec; it answers 503 until `resume`. The paused endpoint."""
        return self.client.pause_endpoint(self.endpoint_name)

    def resume(self, wait: bool = True, timeout: float = 600.0) -> dict[str, Any]:
        """Deploys the paused endpoint again; with `wait`, returns once it serves. The endpoint."""
        endpoint = self.client.resume_endpoint(self.endpoint_name)
        return self.client.wait(self.endpoint_name, timeout=timeout) if wait else endpoint

    def delete_endpoint(self) -> None:
        self.client.delete_endpoint(self.endpoint_name)


class Model:
    """A model and how to serve it; `deploy` makes it an endpoint."""

    def __init__(self, model: str | None = None, task: str | None = None, env: dict[str, str] | None = None,
                 client: Client | None = None, **settings: Any) -> None:
        self.spec: dict[str, Any] = {"model": model, "task": task, "env": env or {}, **settings}
        self.client = client or Client()

    def deploy(self, name: str, replicas: int = 1, wait: bool = True, timeout: float = 600.0,
               **settings: Any) -> Predictor:
        spec = {k: v for k, v in {**self.spec, **settings, "name": name, "replicas": replicas}.items()
                if v is not None}
        self.client.create_endpoint(spec)
        if wait:
            self.client.wait(name, timeout=timeout)
        return Predictor(name, self.client)

    def transformer(self, instance_count: int = 1, instance_type: str | None = None, strategy: str | None = None,
                    assemble_with: str | None = None, output_path: str | None = None, accept: str | None = None,
                    env: dict[str, str] | None = None, max_concurrent_transforms: int | None = None,
                    max_payload: int | None = None, base_transform_job_name: str | None = None) -> Transformer:
        """A Transformer running this model on `instance_count` replicas of its own per job. `instance_type` is
        taken for the sagemaker SDK's sake only: the model's `device` says where it runs."""
        source = {key: value for key, value in self.spec.items() if key in SOURCE_FIELDS}
        source["env"] = {**source.get("env", {}), **(env or {})}
        return Transformer(source, instance_count=instance_count, strategy=strategy, assemble_with=assemble_with,
                           output_path=output_path, accept=accept, max_concurrent_transforms=max_concurrent_transforms,
                           max_payload=max_payload, base_transform_job_name=base_transform_job_name,
                           client=self.client)


class Transformer:
    """Batch transform jobs of one model, in the sagemaker SDK's shape: `transform` starts a job over a file, a folder
    or a prefix of records, `wait`, `describe` and `stop` act on the latest one. The model is a source (`model` and
    the fields an endpoint's spec has, as `Model` keeps them) or a running endpoint: `{"endpoint": "name"}`."""

    def __init__(self, source: dict[str, Any], instance_count: int = 1, strategy: str | None = None,
                 assemble_with: str | None = None, output_path: str | None = None, accept: str | None = None,
                 max_concurrent_transforms: int | None = None, max_payload: int | None = None,
                 base_transform_job_name: str | None = None, client: Client | None = None) -> None:
        self.source = source
        self.instance_count = instance_count
        self.strategy = strategy
        self.assemble_with = assemble_with
        self.output_path = output_path
        self.accept = accept
        self.max_concurrent_transforms = max_concurrent_transforms
        self.max_payload = max_payload
        self.base_transform_job_name = base_transform_job_name or "transform"
        self.client = client or Client()
        # The name of the job `transform` started last (the sagemaker SDK keeps a job object there).
        self.latest_transform_job: str | None = None

    @classmethod
    def attach(cls, transform_job_name: str, client: Client | None = None) -> Transformer:
        """A Transformer for a job that exists (started elsewhere, or before a restart), as its latest job."""
        client = client or Client()
        spec = client.get_job(transform_job_name)["spec"]
        source = {"endpoint": spec["endpoint"]} if spec["endpoint"] else {
            key: value for key, value in spec.items() if key in SOURCE_FIELDS and value is not None}
        transformer = cls(source, instance_count=spec["instance_count"], strategy=spec["batch_strategy"],
                          assemble_with=spec["assemble_with"], output_path=spec["output"], accept=spec["accept"],
                          max_concurrent_transforms=spec["max_concurrent_transforms"],
                          max_payload=spec["max_payload_mb"], client=client)
        transformer.latest_transform_job = transform_job_name
        return transformer

    def transform(self, data: str, content_type: str | None = None, split_type: str | None = "Line",
                  job_name: str | None = None, input_filter: str | None = None, output_filter: str | None = None,
                  join_source: str | None = None, on_error: str | None = None, wait: bool = True,
                  logs: bool = True) -> None:
        """Starts a job over `data` (a file, a folder or a prefix: a local path or a file://, s3:// or http(s)://
        URL) writing `{output_path}/{file}.out`; with `wait`, returns when it has ended (raising if it failed).
        `split_type=None` makes each file one record, as in the sagemaker SDK."""
        if self.output_path is None:
            raise ValueError("a Transformer needs an output_path: the folder the job writes its answers to")
        name = job_name or unique_job_name(self.base_transform_job_name)
        replicas = {"instance_count": self.instance_count} if "model" in self.source else {}
        self.client.create_job(job_spec({
            "name": name, **self.source, **replicas, "input": data, "output": self.output_path,
            "content_type": content_type, "split_type": split_type or "None", "batch_strategy": self.strategy,
            "max_payload_mb": self.max_payload, "max_concurrent_transforms": self.max_concurrent_transforms,
            "accept": self.accept, "assemble_with": self.assemble_with, "input_filter": input_filter,
            "output_filter": output_filter, "join_source": join_source, "on_error": on_error}))
        self.latest_transform_job = name
        if wait:
            self.wait(logs=logs)

    def wait(self, logs: bool = True) -> None:
        """Until the latest job has ended, printing its log as it goes with `logs`; raises if it failed (a
        stopped job is not an error, as in the sagemaker SDK)."""
        name = self._latest()
        if logs:
            for line in self.client.follow_job_logs(name):
                sys.stdout.write(line)
        job = self.client.wait_job(name)
        if job["state"] == "Failed":
            raise HubserveAPIError(424, f"job {name} failed: {job['failure_reason']}")

    def describe(self) -> dict[str, Any]:
        """The latest job: its spec, state, progress (records done and total, records/s, ETA) and failure reason."""
        return self.client.get_job(self._latest())

    def stop(self, wait: bool = True) -> None:
        """Stops the latest job; with `wait`, returns once it has (records done so far stay written)."""
        name = self._latest()
        self.client.stop_job(name)
        if wait:
            self.client.wait_job(name)

    stop_transform_job = stop  # the sagemaker SDK's name

    def _latest(self) -> str:
        if self.latest_transform_job is None:
            raise ValueError("no transform job yet: call transform() first")
        return self.latest_transform_job
