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


def test_a_fixed_replica_count_ends_autoscaling_and_other_changes_keep_it() -> None:
    spec = EndpointSpec(name="e", model="m", autoscaling={"min_replicas": 0, "max_replicas": 3})
    assert spec.updated(EndpointUpdate(timeout_s=5)).autoscaling == spec.autoscaling
    fixed = spec.updated(EndpointUpdate(replicas=2))
    assert (fixed.replicas, fixed.autoscaling) == (2, None)
    bounded = spec.updated(EndpointUpdate.model_validate({"replicas": 2, "autoscaling": {"max_replicas": 4}}))
    assert bounded.autoscaling is not None and bounded.autoscaling.max_replicas == 4


def test_update_is_validated() -> None:
    with pytest.raises(ValidationError):
        EndpointUpdate(replicas=0)


@pytest.mark.parametrize("fields", [
    {"model": "\ud800"}, {"revision": "v\udfff"}, {"task": "\ud800"}, {"env": {"\ud800": "v"}},
    {"env": {"K": "\ud800"}}, {"env": {"K": "a\0b"}}, {"model": "m\0"}, {"env": {"": "v"}}, {"env": {"A=B": "v"}},
    {"env": {"HF_MODEL_ID": "\ud800"}},
])
def test_text_that_no_file_database_or_process_env_takes_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EndpointSpec.model_validate({"name": "e", "model": "m", **fields})
    with pytest.raises(ValidationError):
        EndpointUpdate.model_validate(fields)


@pytest.mark.parametrize("name", ["a\n", "a\ud800", "é"])
def test_names_match_whole(name: str) -> None:
    with pytest.raises(ValidationError):
        EndpointSpec(name=name, model="m")


def test_device_matches_whole() -> None:
    with pytest.raises(ValidationError):
        EndpointSpec(name="e", model="m", device="cpu\n")


@pytest.mark.parametrize("fields", [{"timeout_s": float("inf")}, {"timeout_s": float("nan")},
                                    {"engine": {"max_batch_delay_ms": float("inf")}}])
def test_non_finite_numbers_are_refused(fields: dict[str, object]) -> None:
    # Infinity passes `gt=0`, then breaks every JSON answer and is saved as null, which the store cannot load back.
    with pytest.raises(ValidationError, match="finite"):
        EndpointSpec.model_validate({"name": "e", "model": "m", **fields})


def test_env_value_of_the_wrong_type_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="string"):
        EndpointSpec.model_validate({"name": "e", "model": "m", "env": {"HF_TRUST_REMOTE_CODE": 1}})


def test_payload_limit_fits_one_channel_frame() -> None:
    with pytest.raises(ValidationError):
        EndpointSpec(name="e", model="m", max_payload_bytes=(1 << 30) + 1)


def test_valid_unicode_text_is_kept() -> None:
    spec = EndpointSpec.model_validate({"name": "e", "model": "/models/modèle-😀", "env": {"GREETING": "grüße\n"}})
    assert spec.model == "/models/modèle-😀" and spec.env == {"GREETING": "grüße\n"}


@pytest.mark.parametrize("fields", [{"replicas": "2"}, {"replicas": True}, {"replicas": 2.5},
                                    {"engine": {"max_batch_delay_ms": False}}, {"trust_remote_code": "yes"}])
def test_values_are_not_coerced(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EndpointSpec.model_validate({"name": "e", "model": "m", **fields})


def test_whole_numbers_written_as_floats_are_integers() -> None:
    """JSON Schema's "integer" includes 2.0, as the OpenAPI document tells clients and schemathesis checks."""
    spec = EndpointSpec.model_validate_json('{"name": "e", "model": "m", "replicas": 2.0, "engine": '
                                            '{"max_concurrent_requests": 64.0}}')
    assert (spec.replicas, spec.engine.max_concurrent_requests) == (2, 64)
