"""A job's spec: the transient replicas it describes."""

from __future__ import annotations

from hubserve.jobs.spec import TransformJobSpec
from hubserve.spec import ResourcesSpec


def test_a_jobs_replicas_ask_for_its_instance_count_and_resources() -> None:
    spec = TransformJobSpec.model_validate({"name": "job", "model": "org/model", "input": "in/", "output": "out/",
                                            "instance_count": 3, "resources": {"cpus": 2, "gpus": 1}})
    replicas = spec.endpoint_spec()
    assert (replicas.replicas, replicas.resources) == (3, ResourcesSpec(cpus=2, gpus=1))
    assert TransformJobSpec.model_validate({**spec.model_dump(), "resources": None}).endpoint_spec().resources is None
