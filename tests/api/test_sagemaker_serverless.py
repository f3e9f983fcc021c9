"""SageMaker Serverless Inference through boto3 on a real server: a ServerlessConfig becomes an endpoint that
scales to zero (and is InService there), takes at most MaxConcurrency requests at once (ThrottlingException past
it), and is OutOfService while paused."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import Server, admin_client, sagemaker_runtime
from custom_models import write_echo_model
from hubserve.sagemaker_records import SERVERLESS_IDLE_S, Serverless

ROLE = "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:1.13-transformers4.26-cpu-py39"
FAST = {"Delay": 1, "MaxAttempts": 300}


def test_serverless_config_maps_onto_autoscaling() -> None:
    cold = Serverless(MemorySizeInMB=2048, MaxConcurrency=5).autoscaling()
    assert (cold.min_replicas, cold.max_replicas, cold.scale_to_zero_after_s) == (0, 1, SERVERLESS_IDLE_S)
    assert Serverless(MemorySizeInMB=2048, MaxConcurrency=5, ProvisionedConcurrency=2).autoscaling().min_replicas == 1


def invoke(url: str, inputs: str, **parameters: Any) -> Any:
    answer = sagemaker_runtime(url).invoke_endpoint(
        EndpointName="serverless", ContentType="application/json",
        Body=json.dumps({"inputs": inputs, "parameters": parameters}))
    return json.loads(answer["Body"].read())


def in_flight(server: Server, name: str) -> int:
    stats = httpx.get(f"{server.url}/api/v1/endpoints/{name}/stats",
                      headers={"authorization": f"Bearer {server.token}"}, timeout=30).json()
    return sum(int(replica["in_flight"]) for replica in stats["replicas"])


def test_a_serverless_endpoint_scales_to_zero_throttles_and_pauses(server: Server, tmp_path: Path) -> None:
    sm = admin_client("sagemaker", server.url)
    sm.create_model(ModelName="serverless", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "Environment": {"HF_MODEL_ID": str(write_echo_model(tmp_path))}})
    sm.create_endpoint_config(EndpointConfigName="serverless", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "serverless",
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1}}])
    sm.create_endpoint(EndpointName="serverless", EndpointConfigName="serverless")
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName="serverless", WaiterConfig=FAST)
        spec = server.client().get_endpoint("serverless")["spec"]
        assert spec["max_concurrency"] == 1
        assert (spec["autoscaling"]["min_replicas"], spec["autoscaling"]["max_replicas"]) == (0, 1)

        slow = threading.Thread(target=invoke, args=(server.url, "sleep"), kwargs={"seconds": 5})
        slow.start()
        deadline = time.monotonic() + 30
        while not in_flight(server, "serverless"):  # the slow one is in (a busy machine may take a while)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(ClientError) as throttled:
            invoke(server.url, "x")
        slow.join()
        assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
        assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429

        admin = {"authorization": f"Bearer {server.token}"}
        httpx.patch(f"{server.url}/api/v1/endpoints/serverless", headers=admin,
                    json={"autoscaling": {**spec["autoscaling"], "scale_to_zero_after_s": 0.5}}).raise_for_status()
        deadline = time.monotonic() + 30
        while server.client().get_endpoint("serverless")["status"]["state"] != "scaledToZero":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert sm.describe_endpoint(EndpointName="serverless")["EndpointStatus"] == "InService"
        assert invoke(server.url, "hello")["echo"] == "hello"  # held while a replica starts

        server.client().pause_endpoint("serverless")
        assert sm.describe_endpoint(EndpointName="serverless")["EndpointStatus"] == "OutOfService"
        with pytest.raises(ClientError) as paused:
            invoke(server.url, "x")
        assert paused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "is paused" in paused.value.response["Error"]["Message"]
    finally:
        sm.delete_endpoint(EndpointName="serverless")
        sm.delete_endpoint_config(EndpointConfigName="serverless")
        sm.delete_model(ModelName="serverless")
