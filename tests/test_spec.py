"""The endpoint spec: names, env translation, updates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hubserve.spec import EndpointSpec, EndpointUpdate


@pytest.mark.parametrize("name", ["a", "my-endpoint", "A1--b2", "x" * 63])
def test_valid_names(name: str) -> None:
    assert EndpointSpec(name=name, model="m").name == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "x" * 64, "a b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError):
        EndpointSpec(name=name, model="m")


def test_sagemaker_env_fills_fields() -> None:
    spec = EndpointSpec.model_validate({"name": "e", "env": {
        "HF_MODEL_ID": "org/model", "HF_TASK": "text-classification", "HF_MODEL_REVISION": "v1",
        "HF_TRUST_REMOTE_CODE": "True"}})
    assert (spec.model, spec.task, spec.revision, spec.trust_remote_code) == (
        "org/model", "text-classification", "v1", True)


def test_explicit_fields_win_over_env() -> None:
    spec = EndpointSpec.model_validate({"name": "e", "model": "mine", "env": {"HF_MODEL_ID": "theirs"}})
    assert spec.model == "mine"


def test_model_is_required() -> None:
    with pytest.raises(ValidationError, match="model"):
        EndpointSpec.model_validate({"name": "e"})


def test_bad_trust_remote_code_value() -> None:
    with pytest.raises(ValidationError, match="HF_TRUST_REMOTE_CODE|truth"):
        EndpointSpec.model_validate({"name": "e", "model": "m", "env": {"HF_TRUST_REMOTE_CODE": "maybe"}})


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "auto"])
def test_devices(device: str) -> None:
    assert EndpointSpec(name="e", model="m", device=device).device == device


def test_bad_device_and_dtype() -> None:
    with pytest.raises(ValidationError):
        EndpointSpec(name="e", model="m", device="tpu")
    with pytest.raises(ValidationError):
        EndpointSpec(name="e", model="m", dtype="int3")


def test_defaults() -> None:
    spec = EndpointSpec(name="e", model="m")
    assert spec.max_payload_bytes == 6 * 1024 * 1024
    assert spec.timeout_s == 60
    assert spec.replicas == 1
    assert spec.security == "public"


def test_update_changes_only_given_fields() -> None:
    spec = EndpointSpec(name="e", model="m", task="fill-mask", replicas=2)
    new = spec.updated(EndpointUpdate(replicas=3))
    assert (new.model, new.task, new.replicas) == ("m", "fill-mask", 3)
    assert not new.needs_new_replicas(spec)
    moved = spec.updated(EndpointUpdate.model_validate({"env": {"HF_MODEL_ID": "other"}}))
    assert moved.model == "other"
    assert moved.needs_new_replicas(spec)


def test_update_is_validated() -> None:
    with pytest.raises(ValidationError):
        EndpointUpdate(replicas=0)
