"""Secrets in an endpoint's env: which names are secrets, masked wherever an endpoint is shown, and kept
when a client sends the masked value back in an update."""

from __future__ import annotations

import json

import pytest

from hubserve.env_secrets import MASK, is_secret, masked
from hubserve.spec import Endpoint, EndpointSpec, EndpointStatus, EndpointUpdate

ENV = {"HF_TOKEN": "hf_real", "AWS_SECRET_ACCESS_KEY": "aws_real", "HF_TASK": "fill-mask"}


@pytest.mark.parametrize("name", ["HF_TOKEN", "HF_API_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SESSION_TOKEN",
                                  "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "CLIENT_SECRET", "DB_PASSWORD",
                                  "hf_token", "PASSWORD"])
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["HF_TASK", "HF_MODEL_ID", "AWS_ACCESS_KEY_ID", "TOKENIZERS_PARALLELISM",
                                  "KEYBOARD", "HF_HUB_OFFLINE"])
def test_other_names(name: str) -> None:
    assert not is_secret(name)


def test_an_endpoint_is_shown_with_its_secrets_masked() -> None:
    spec = EndpointSpec(name="e", model="m", env=ENV)
    endpoint = Endpoint(spec=spec, status=EndpointStatus())
    expected = {"HF_TOKEN": MASK, "AWS_SECRET_ACCESS_KEY": MASK, "HF_TASK": "fill-mask"}
    assert json.loads(endpoint.model_dump_json())["spec"]["env"] == expected
    assert endpoint.model_dump()["spec"]["env"] == expected == masked(ENV)
    assert endpoint.spec.env == ENV  # the object itself keeps them: the runtime and the store need them
    assert spec.model_dump_json().count("hf_real") == 1


def test_an_update_that_sends_the_mask_back_keeps_the_secret() -> None:
    spec = EndpointSpec(name="e", model="m", env=ENV)
    shown = json.loads(Endpoint(spec=spec, status=EndpointStatus()).model_dump_json())["spec"]["env"]
    same = spec.updated(EndpointUpdate(env=shown))
    assert same.env == ENV and not same.needs_new_replicas(spec)
    changed = spec.updated(EndpointUpdate(env={**shown, "HF_TOKEN": "hf_new", "NEW_TOKEN": MASK}))
    # A new value replaces the secret; the mask for a secret the endpoint never had is taken as it is.
    assert changed.env == {**ENV, "HF_TOKEN": "hf_new", "NEW_TOKEN": MASK}
