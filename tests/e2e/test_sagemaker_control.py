"""The SageMaker control plane through boto3's `sagemaker` client (and the AWS CLI v1) on a real server: models,
endpoint configs and endpoints, boto3's waiters, SageMaker's error codes, and one set of endpoints shared with
hubserve's own API. Models come from moto's S3 server, files and folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError, WaiterError

from conftest import ADMIN_TOKEN, Server, admin_client, sagemaker_runtime, start_server
from custom_models import tar_gz
from sources_fixtures import moto_s3_server

ROLE = "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:1.13-transformers4.26-cpu-py39"
# What the sagemaker SDK adds to every model's environment, two of them empty.
SDK_ENV = {"SAGEMAKER_PROGRAM": "", "SAGEMAKER_SUBMIT_DIRECTORY": "", "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
           "SAGEMAKER_REGION": "us-east-1"}
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ARN_PREFIX = "arn:aws:sagemaker:us-east-1:000000000000:"
FAST = {"Delay": 1, "MaxAttempts": 300}
MAX_REPLICAS = 8
SLOW_LOAD = '''
import time


def model_fn(model_dir):
    time.sleep(60)


def predict_fn(data, model):
    return data
'''


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_s3_server() as url:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        client.create_bucket(Bucket="models")
        yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: Any) -> Iterator[Server]:
    """A server of its own: it reads s3:// from moto, and runs few replicas (a request for more is refused)."""
    running = start_server(tmp_path_factory.mktemp("sagemaker-control") / "home",
                           env={**S3_KEYS, "AWS_ENDPOINT_URL_S3": s3.meta.endpoint_url,
                                "HUBSERVE_MAX_REPLICAS": str(MAX_REPLICAS)})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sm(server: Server) -> Any:
    return admin_client("sagemaker", server.url)


@pytest.fixture(scope="module")
def classifier(tiny_model: Callable[[str], Path]) -> Path:
    return tiny_model("text-classification")


def create_model(sm: Any, name: str, **container: Any) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE, **container})


def create_config(sm: Any, name: str, model: str, count: int = 1, instance_type: str = "ml.m5.xlarge",
                  **extra: Any) -> None:
    variant = {"VariantName": "AllTraffic", "ModelName": model, "InitialVariantWeight": 1,
               "InitialInstanceCount": count, "InstanceType": instance_type}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], **extra)


def deploy(sm: Any, name: str, model_source: dict[str, Any], **config: Any) -> None:
    """Model, config and endpoint all named `name` (the SDK names the config as the endpoint)."""
    create_model(sm, name, **model_source)
    create_config(sm, name, name, **config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=[])


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as raised:
        call()
    error: dict[str, Any] = raised.value.response["Error"]
    return error


def hubserve_endpoint(server: Server, name: str) -> dict[str, Any]:
    endpoint: dict[str, Any] = server.client().get_endpoint(name)
    return endpoint


def classify(server: Server, name: str, text: str) -> Any:
    answer = sagemaker_runtime(server.url).invoke_endpoint(EndpointName=name, ContentType="application/json",
                                                           Accept="application/json", Body=json.dumps({"inputs": text}))
    return json.loads(answer["Body"].read())


def test_model_archive_on_s3_create_invoke_update_delete(server: Server, sm: Any, s3: Any, classifier: Path,
                                                          tmp_path: Path) -> None:
    """The calls `HuggingFaceModel(model_data=...).deploy()`, `predict()`, an update and the SDK's deletes make."""
    s3.upload_file(str(tar_gz(classifier, tmp_path / "model.tar.gz")), "models", "bert/model.tar.gz")
    created = sm.create_model(ModelName="life-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": "s3://models/bert/model.tar.gz", "Environment": SDK_ENV})
    assert created["ModelArn"] == ARN_PREFIX + "model/life-model"
    create_config(sm, "life", "life-model")
    answer = sm.create_endpoint(EndpointName="life", EndpointConfigName="life", Tags=[])
    assert answer["EndpointArn"] == ARN_PREFIX + "endpoint/life"
    assert sm.describe_endpoint(EndpointName="life")["EndpointStatus"] in ("Creating", "InService")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="life", WaiterConfig=FAST)

    described = sm.describe_endpoint(EndpointName="life")
    assert (described["EndpointName"], described["EndpointConfigName"]) == ("life", "life")
    assert described["EndpointStatus"] == "InService" and "FailureReason" not in described
    assert described["ProductionVariants"] == [{"VariantName": "AllTraffic", "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                                                "CurrentInstanceCount": 1, "DesiredInstanceCount": 1}]
    assert described["LastModifiedTime"] >= described["CreationTime"]
    labels = classify(server, "life", "I love this movie")
    assert {item["label"] for item in labels} <= {"NEGATIVE", "POSITIVE"}
    spec = hubserve_endpoint(server, "life")["spec"]  # the same endpoint, seen through hubserve's own API
    assert (spec["model"], spec["replicas"], spec["device"]) == ("s3://models/bert/model.tar.gz", 1, "cpu")
    assert spec["env"] == SDK_ENV

    create_config(sm, "life-2", "life-model", count=2)
    sm.update_endpoint(EndpointName="life", EndpointConfigName="life-2")
    assert sm.describe_endpoint(EndpointName="life")["EndpointStatus"] in ("Updating", "InService")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="life", WaiterConfig=FAST)
    described = sm.describe_endpoint(EndpointName="life")
    assert described["EndpointConfigName"] == "life-2"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert classify(server, "life", "I love this movie") == labels

    # predictor.delete_model(), then predictor.delete_endpoint(): the config goes first, while still in use.
    config_name = sm.describe_endpoint(EndpointName="life")["EndpointConfigName"]
    model_names = [v["ModelName"] for v in sm.describe_endpoint_config(EndpointConfigName=config_name)
                   ["ProductionVariants"]]
    assert model_names == ["life-model"]
    sm.delete_model(ModelName="life-model")
    sm.delete_endpoint_config(EndpointConfigName="life-2")
    sm.delete_endpoint_config(EndpointConfigName="life")
    sm.delete_endpoint(EndpointName="life")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="life", WaiterConfig=FAST)
    for call, kind, arn in ((lambda: sm.describe_endpoint(EndpointName="life"), "endpoint", "endpoint/life"),
                            (lambda: sm.describe_endpoint_config(EndpointConfigName="life"),
                             "endpoint configuration", "endpoint-config/life"),
                            (lambda: sm.describe_model(ModelName="life-model"), "model", "model/life-model")):
        assert error_of(call) == {"Code": "ValidationException",
                                  "Message": f'Could not find {kind} "{ARN_PREFIX}{arn}".'}
    assert "life" not in {e["name"] for e in server.client().list_endpoints()}


def test_an_update_is_rolling_and_refuses_another_meanwhile(server: Server, sm: Any, classifier: Path,
                                                            tmp_path: Path) -> None:
    deploy(sm, "rolling", {"ModelDataUrl": str(classifier)})
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName="rolling", WaiterConfig=FAST)
        labels = classify(server, "rolling", "I love this movie")
        create_model(sm, "rolling-slow", ModelDataUrl=str(slow_model(tmp_path / "slow")))
        create_config(sm, "rolling-slow", "rolling-slow")
        sm.update_endpoint(EndpointName="rolling", EndpointConfigName="rolling-slow")
        described = sm.describe_endpoint(EndpointName="rolling")
        assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("Updating", "rolling-slow")
        assert classify(server, "rolling", "I love this movie") == labels  # the old replicas serve meanwhile
        with pytest.raises(sm.exceptions.ResourceInUse, match="is Updating"):
            sm.update_endpoint(EndpointName="rolling", EndpointConfigName="rolling")
    finally:
        sm.delete_endpoint(EndpointName="rolling")


def slow_model(folder: Path) -> Path:
    """A model whose loading takes a minute: its endpoint stays Creating (or Updating) that long."""
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "inference.py").write_text(textwrap.dedent(SLOW_LOAD))
    return folder


def test_serverless_and_async_configs_map_onto_the_spec(server: Server, sm: Any, classifier: Path,
                                                        tmp_path: Path) -> None:
    """HF_MODEL_ID/HF_TASK name the model (here a folder), secrets stay masked, ServerlessConfig and
    AsyncInferenceConfig are kept and become the spec's replicas and async settings."""
    create_model(sm, "mapped", Environment={**SDK_ENV, "HF_MODEL_ID": str(classifier), "HF_TASK": "text-classification",
                                            "HF_TOKEN": "hf_secret"})
    serverless = {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    async_config = {"OutputConfig": {"S3OutputPath": (tmp_path / "out").as_uri(),
                                     "S3FailurePath": (tmp_path / "failed").as_uri(),
                                     "NotificationConfig": {"SuccessTopic": "https://hooks.example/done",
                                                            "ErrorTopic": "arn:aws:sns:us-east-1:111122223333:errors"}},
                    "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 3}}
    sm.create_endpoint_config(EndpointConfigName="mapped", AsyncInferenceConfig=async_config, ProductionVariants=[
        {"VariantName": "Serverless", "ModelName": "mapped", "ServerlessConfig": serverless}])
    sm.create_endpoint(EndpointName="mapped", EndpointConfigName="mapped")
    try:
        spec = hubserve_endpoint(server, "mapped")["spec"]
        assert (spec["model"], spec["task"], spec["replicas"]) == (str(classifier), "text-classification", 1)
        assert spec["env"]["HF_TOKEN"] == "***" and spec["env"]["SAGEMAKER_PROGRAM"] == ""
        assert spec["async_inference"] == {"output_path": (tmp_path / "out").as_uri(),
                                           "failure_path": (tmp_path / "failed").as_uri(), "max_concurrency": 3,
                                           "success_webhook": "https://hooks.example/done", "error_webhook": None}
        described = sm.describe_endpoint(EndpointName="mapped")
        assert described["ProductionVariants"][0]["VariantName"] == "Serverless"
        assert described["ProductionVariants"][0]["CurrentServerlessConfig"] == serverless
        assert described["AsyncInferenceConfig"] == async_config
        model = sm.describe_model(ModelName="mapped")
        assert model["PrimaryContainer"]["Environment"]["HF_TOKEN"] == "***"
        assert model["ExecutionRoleArn"] == ROLE
        assert sm.describe_endpoint_config(EndpointConfigName="mapped")["ProductionVariants"][0][
            "ServerlessConfig"] == serverless
    finally:
        sm.delete_endpoint(EndpointName="mapped")
    db = (server.home / "hubserve.db").read_bytes()
    assert b"hf_secret" not in db  # sealed, as the endpoints' own env secrets are


def test_gpu_instance_type_asks_for_cuda_and_says_when_there_is_none(server: Server, sm: Any, classifier: Path) -> None:
    deploy(sm, "gpu-type", {"ModelDataUrl": classifier.as_uri(), "Environment": SDK_ENV},
           instance_type="ml.g5.xlarge")
    try:
        assert hubserve_endpoint(server, "gpu-type")["spec"]["device"] == "auto"
        sm.get_waiter("endpoint_in_service").wait(EndpointName="gpu-type", WaiterConfig=FAST)
        log = server.client().logs("gpu-type")
        has_gpu = any(Path("/proc/driver/nvidia/gpus").glob("*"))
        note = "instance type ml.g5.xlarge asks for a GPU, and this machine has none: endpoint gpu-type runs on the CPU"
        assert (note in log) is not has_gpu, log
        assert (" on cuda" if has_gpu else " on cpu") in log
    finally:
        sm.delete_endpoint(EndpointName="gpu-type")


def test_a_model_that_cannot_load_fails_the_waiter(server: Server, sm: Any, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "model.tar.gz"
    deploy(sm, "broken", {"ModelDataUrl": missing.as_uri()})
    try:
        with pytest.raises(WaiterError, match="Failed"):
            sm.get_waiter("endpoint_in_service").wait(EndpointName="broken", WaiterConfig=FAST)
        described = sm.describe_endpoint(EndpointName="broken")
        assert described["EndpointStatus"] == "Failed"
        assert str(missing) in described["FailureReason"] and len(described["FailureReason"]) <= 1024
        failed = sm.list_endpoints(StatusEquals="Failed")["Endpoints"]
        assert [e["EndpointName"] for e in failed] == ["broken"]
    finally:
        sm.delete_endpoint(EndpointName="broken")


def test_endpoints_made_either_way_are_one_set(server: Server, sm: Any, classifier: Path) -> None:
    """An endpoint made through /api/v1 is described with itself as config and model, and the SDK's deletes
    (model, config, endpoint) work on it."""
    server.client().create_endpoint({"name": "native", "model": str(classifier), "replicas": 1})
    sm.get_waiter("endpoint_in_service").wait(EndpointName="native", WaiterConfig=FAST)
    assert "native" in {e["EndpointName"] for e in sm.list_endpoints(NameContains="nati")["Endpoints"]}
    described = sm.describe_endpoint(EndpointName="native")
    assert described["EndpointConfigName"] == "native" and described["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName="native")
    assert config["ProductionVariants"][0]["ModelName"] == "native"
    model = sm.describe_model(ModelName="native")
    assert model["PrimaryContainer"]["Environment"]["HF_MODEL_ID"] == str(classifier)
    error = error_of(lambda: sm.create_endpoint(EndpointName="native", EndpointConfigName="native"))
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith("Cannot create already existing endpoint")
    sm.delete_model(ModelName="native")
    sm.delete_endpoint_config(EndpointConfigName="native")
    sm.delete_endpoint(EndpointName="native")
    assert "native" not in {e["name"] for e in server.client().list_endpoints()}


def test_lists_filter_sort_and_paginate(server: Server, sm: Any, classifier: Path) -> None:
    names = ["page-c", "page-a", "page-b"]
    for name in names:
        create_model(sm, name, ModelDataUrl=str(classifier))
    try:
        ascending = sm.list_models(NameContains="page-", SortBy="Name", SortOrder="Ascending", MaxResults=2)
        assert [m["ModelName"] for m in ascending["Models"]] == ["page-a", "page-b"]
        rest = sm.list_models(NameContains="page-", SortBy="Name", SortOrder="Ascending",
                              NextToken=ascending["NextToken"])
        assert [m["ModelName"] for m in rest["Models"]] == ["page-c"] and "NextToken" not in rest
        newest_first = sm.get_paginator("list_models").paginate(NameContains="PAGE", PaginationConfig={"PageSize": 1})
        assert [m["ModelName"] for page in newest_first for m in page["Models"]] == names[::-1]
        assert all(m["ModelArn"] == ARN_PREFIX + "model/" + m["ModelName"] for m in ascending["Models"])
        error = error_of(lambda: sm.list_models(NextToken="not-a-token"))
        assert (error["Code"], error["Message"]) == ("ValidationException", "NextToken is not one this server gave")
    finally:
        for name in names:
            sm.delete_model(ModelName=name)

    for name in ("list-b", "list-a"):
        server.client().create_endpoint({"name": name, "model": str(classifier)})
    try:
        for name in ("list-b", "list-a"):
            sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)
        by_name = sm.list_endpoints(NameContains="list-", SortBy="Name", SortOrder="Ascending")["Endpoints"]
        assert [e["EndpointName"] for e in by_name] == ["list-a", "list-b"]
        assert {e["EndpointStatus"] for e in by_name} == {"InService"}
        pages = sm.get_paginator("list_endpoints").paginate(NameContains="list-", StatusEquals="InService",
                                                            PaginationConfig={"PageSize": 1})
        assert [e["EndpointName"] for page in pages for e in page["Endpoints"]] == ["list-a", "list-b"]
        assert sm.list_endpoints(NameContains="list-", StatusEquals="Creating")["Endpoints"] == []
    finally:
        for name in ("list-b", "list-a"):
            sm.delete_endpoint(EndpointName=name)


def test_refusals_carry_sagemakers_codes(server: Server, sm: Any, classifier: Path, tmp_path: Path) -> None:
    folder = {"ModelDataUrl": str(classifier)}
    create_model(sm, "refused", **folder)
    already = error_of(lambda: create_model(sm, "refused", **folder))
    assert already == {"Code": "ValidationException",
                       "Message": f'Cannot create already existing model "{ARN_PREFIX}model/refused".'}
    no_model = error_of(lambda: create_model(sm, "no-source", Environment=SDK_ENV))
    assert no_model["Code"] == "ValidationException" and "HF_MODEL_ID" in no_model["Message"]
    bad_name = error_of(lambda: create_model(sm, "bad_name", **folder))
    assert bad_name["Code"] == "ValidationException" and "ModelName" in bad_name["Message"]

    two = [{"VariantName": v, "ModelName": "refused", "InitialInstanceCount": 1, "InstanceType": "ml.m5.xlarge"}
           for v in ("A", "B")]
    variants = error_of(lambda: sm.create_endpoint_config(EndpointConfigName="two", ProductionVariants=two))
    assert variants["Code"] == "ValidationException" and "one production variant" in variants["Message"]
    unknown_model = error_of(lambda: create_config(sm, "orphan", "no-such-model"))
    assert unknown_model["Message"] == f'Could not find model "{ARN_PREFIX}model/no-such-model".'
    unknown_config = error_of(lambda: sm.create_endpoint(EndpointName="nowhere", EndpointConfigName="nowhere"))
    assert unknown_config["Message"] == f'Could not find endpoint configuration "{ARN_PREFIX}endpoint-config/nowhere".'

    create_config(sm, "too-big", "refused", count=64)
    with pytest.raises(sm.exceptions.ResourceLimitExceeded, match="at most 8 replicas"):
        sm.create_endpoint(EndpointName="too-big", EndpointConfigName="too-big")

    create_model(sm, "deleted-model", **folder)
    create_config(sm, "dangling", "deleted-model")
    sm.delete_model(ModelName="deleted-model")
    with pytest.raises(sm.exceptions.ResourceNotFound, match="deleted-model"):
        sm.create_endpoint(EndpointName="dangling", EndpointConfigName="dangling")

    deploy(sm, "slow", {"ModelDataUrl": str(slow_model(tmp_path / "slow"))})
    try:
        with pytest.raises(sm.exceptions.ResourceInUse, match="is Creating"):
            sm.update_endpoint(EndpointName="slow", EndpointConfigName="slow")
    finally:
        sm.delete_endpoint(EndpointName="slow")
    assert error_of(lambda: sm.delete_endpoint(EndpointName="slow"))["Code"] == "ValidationException"

    with pytest.raises(ClientError) as unknown:
        sm.list_training_jobs()
    assert unknown.value.response["Error"]["Code"] == "UnknownOperationException"


def test_malformed_requests_and_callers_without_the_admin_token(server: Server) -> None:
    def post(target: str, body: bytes, token: str | None = ADMIN_TOKEN) -> httpx.Response:
        headers = {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.post(server.url + "/", content=body, headers=headers)

    def refused(response: httpx.Response, status: int, code: str) -> str:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/x-amz-json-1.1"
        assert response.headers["x-amzn-ErrorType"] == code
        assert response.json()["__type"] == code
        return str(response.json()["message"])

    assert "not valid JSON" in refused(post("SageMaker.ListEndpoints", b"{oops"), 400, "ValidationException")
    assert "JSON object" in refused(post("SageMaker.ListEndpoints", b"[]"), 400, "ValidationException")
    missing = refused(post("SageMaker.CreateEndpoint", b'{"EndpointName": "x"}'), 400, "ValidationException")
    assert "EndpointConfigName" in missing
    assert "SageMaker.CreateTrainingJob" in refused(post("SageMaker.CreateTrainingJob", b"{}"), 400,
                                                    "UnknownOperationException")
    refused(post("SageMaker.ListEndpoints", b"{}", token=None), 401, "MissingAuthenticationTokenException")
    refused(post("SageMaker.ListEndpoints", b"{}", token="hs_not-the-admin"), 403, "AccessDeniedException")
    listed = post("SageMaker.ListEndpoints", b"{}")
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/x-amz-json-1.1"
    assert "Endpoints" in listed.json()


def aws_keys(server: Server) -> dict[str, str]:
    """An admin AWS key pair, as `hubserve token create --aws --admin` prints it."""
    printed = subprocess.run([sys.executable, "-m", "hubserve", "--url", server.url, "--token", ADMIN_TOKEN,
                              "token", "create", "control-cli", "--aws", "--admin"],
                             capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in printed.split())


def cli_has_aws_keys() -> bool:
    usage = subprocess.run([sys.executable, "-m", "hubserve", "token", "create", "--help"], capture_output=True,
                           text=True).stdout
    return "--aws" in usage


@pytest.mark.skipif(not cli_has_aws_keys(), reason="needs `hubserve token create --aws --admin` (SigV4 keys)")
def test_aws_cli_describes_an_endpoint(server: Server, sm: Any, classifier: Path, tmp_path: Path) -> None:
    server.client().create_endpoint({"name": "by-cli", "model": str(classifier)})
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName="by-cli", WaiterConfig=FAST)
        env = {**os.environ, **aws_keys(server), "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        run = subprocess.run([str(Path(sys.executable).with_name("aws")), "sagemaker", "describe-endpoint",
                              "--endpoint-name", "by-cli", "--endpoint-url", server.url],
                             capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        described = json.loads(run.stdout)
        assert (described["EndpointArn"], described["EndpointStatus"]) == (ARN_PREFIX + "endpoint/by-cli",
                                                                           "InService")
        missing = subprocess.run([str(Path(sys.executable).with_name("aws")), "sagemaker", "describe-endpoint",
                                  "--endpoint-name", "no-such", "--endpoint-url", server.url],
                                 capture_output=True, text=True, env=env, timeout=60)
        assert missing.returncode == 255
        assert "(ValidationException) when calling the DescribeEndpoint operation: Could not find endpoint" \
            in missing.stderr
    finally:
        server.client().delete_endpoint("by-cli")
