"""Invocation over real HTTP: the SageMaker path (boto3 and the AWS CLI), the Inference Endpoints
path, content types, and every error status with its body."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from botocore.exceptions import ClientError

from conftest import Server, sagemaker_runtime
from custom_models import write_echo_model

NAME = "echo"


@pytest.fixture(scope="module")
def echo(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    client = server.client()
    model = write_echo_model(tmp_path_factory.mktemp("echo"))
    client.create_endpoint({"name": NAME, "model": str(model), "timeout_s": 3,
                            "max_payload_bytes": 10_000})
    client.wait(NAME, timeout=300)
    yield f"{server.url}/endpoints/{NAME}"
    client.delete_endpoint(NAME)


@pytest.fixture(scope="module")
def runtime(server: Server) -> Iterator[object]:
    client = sagemaker_runtime(server.url)
    yield client
    client.close()


def test_boto3_invoke_endpoint(echo: str, runtime: object) -> None:
    response = runtime.invoke_endpoint(
        EndpointName=NAME, Body=json.dumps({"inputs": "hi", "parameters": {"a": 1}}),
        ContentType="application/json", Accept="application/json",
        CustomAttributes="trace=1", InferenceId="req-1", TargetVariant="AllTraffic",
    )
    assert json.loads(response["Body"].read()) == {"echo": "hi", "parameters": {"a": 1},
                                                    "custom_attributes": "trace=1"}
    assert response["ContentType"].startswith("application/json")
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ResponseMetadata"]["RequestId"]


def test_boto3_without_content_type(echo: str, runtime: object) -> None:
    # botocore sends no Content-Type when the caller leaves it out: JSON is assumed.
    response = runtime.invoke_endpoint(EndpointName=NAME, Body=b'{"inputs": "x"}')
    assert json.loads(response["Body"].read())["echo"] == "x"


def test_aws_cli_invoke_endpoint(echo: str, server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [sys.executable, "-m", "awscli", "sagemaker-runtime", "invoke-endpoint", "--endpoint-url", server.url,
         "--endpoint-name", NAME, "--content-type", "application/json",
         "--body", '{"inputs": "from the cli"}', str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["echo"] == "from the cli"
    assert json.loads(result.stdout)["InvokedProductionVariant"] == "AllTraffic"


def test_inference_endpoints_path(echo: str) -> None:
    response = httpx.post(echo, json={"inputs": "ie"})
    assert response.status_code == 200
    assert response.json()["echo"] == "ie"


def test_json_with_charset(echo: str) -> None:
    response = httpx.post(echo, content='{"inputs": "é"}'.encode(),
                          headers={"content-type": "application/json; charset=utf-8"})
    assert response.json()["echo"] == "é"


def test_csv_body(echo: str) -> None:
    response = httpx.post(echo, content=b"inputs\nfirst\nsecond\n", headers={"content-type": "text/csv"})
    assert response.json()["echo"] == ["first", "second"]


def test_npy_body_and_accept(echo: str) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.float32).reshape(2, 3))
    response = httpx.post(echo, content=buffer.getvalue(), headers={"content-type": "application/x-npy"})
    assert response.json()["echo"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_csv_accept(echo: str) -> None:
    response = httpx.post(echo, json={"inputs": "x"}, headers={"accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines()[0] == "echo,parameters,custom_attributes"


# errors on the Inference Endpoints path: our JSON body {"error", "error_type"}
def test_bad_json_is_400(echo: str) -> None:
    response = httpx.post(echo, content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]


def test_unsupported_content_type_is_415(echo: str) -> None:
    response = httpx.post(echo, content=b"x", headers={"content-type": "application/x-unknown"})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_body_over_the_limit_is_413(echo: str) -> None:
    response = httpx.post(echo, content=b"x" * 20_000, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "10000" in response.json()["error"]


def test_model_error_is_424_and_server_keeps_serving(echo: str) -> None:
    response = httpx.post(echo, json={"inputs": "raise"})
    assert response.status_code == 424
    assert "the model refused this input" in response.json()["error"]
    assert "Traceback" not in response.text
    assert httpx.post(echo, json={"inputs": "ok"}).status_code == 200


def test_timeout_is_504(echo: str) -> None:
    response = httpx.post(echo, json={"inputs": "sleep", "parameters": {"seconds": 6}}, timeout=30)
    assert response.status_code == 504
    assert "timeout" in response.json()["error"]


# errors on the SageMaker path, as botocore parses them
def client_error(call: object) -> ClientError:
    with pytest.raises(ClientError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_sagemaker_unknown_endpoint(runtime: object) -> None:
    error = client_error(lambda: runtime.invoke_endpoint(EndpointName="nope", Body=b"{}"))
    assert error.response["Error"]["Code"] == "ValidationError"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Endpoint nope of account" in error.response["Error"]["Message"]


def test_sagemaker_model_error(echo: str, runtime: object) -> None:
    error = client_error(lambda: runtime.invoke_endpoint(
        EndpointName=NAME, Body=b'{"inputs": "raise"}', ContentType="application/json"))
    assert error.response["Error"]["Code"] == "ModelError"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error.response["OriginalStatusCode"] == 400
    assert "the model refused this input" in error.response["OriginalMessage"]
    assert "LogStreamArn" in error.response


def test_sagemaker_bad_json(echo: str, runtime: object) -> None:
    error = client_error(lambda: runtime.invoke_endpoint(
        EndpointName=NAME, Body=b"{nope", ContentType="application/json"))
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error.response["Error"]["Code"] == "ValidationError"


def test_sagemaker_unsupported_type_and_payload(echo: str, runtime: object) -> None:
    error = client_error(lambda: runtime.invoke_endpoint(
        EndpointName=NAME, Body=b"x", ContentType="application/x-unknown"))
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 415
    error = client_error(lambda: runtime.invoke_endpoint(
        EndpointName=NAME, Body=b"x" * 20_000, ContentType="application/json"))
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 413
