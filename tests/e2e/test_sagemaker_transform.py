"""SageMaker's transform jobs and CloudWatch Logs' reads of their logs, through boto3 and the AWS CLI v1, on a real
server reading and writing moto's S3 server: a job from a SageMaker model, its output as SageMaker writes it, its
description, listing and stop, its log read back by GetLogEvents' paging, and SageMaker's error codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import ADMIN_TOKEN, Server, admin_client, running_endpoints, start_server
from custom_models import tar_gz
from hubserve.env_secrets import MASK
from sources_fixtures import moto_s3_server

ROLE = "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ARN_PREFIX = "arn:aws:sagemaker:us-east-1:000000000000:"
BUCKET = "batch"
MODEL = "tiny-classifier"
JOB_GROUP = "/aws/sagemaker/TransformJobs"
FAST = {"Delay": 1, "MaxAttempts": 300}
SENTENCES = ["I love this.", "This is terrible.", "It is fine, I guess.", "Best day ever!", "Meh."]


@pytest.fixture(scope="module")
def s3(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """moto's S3 with the model's model.tar.gz and a JSON Lines input."""
    with moto_s3_server() as url:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        archive = tar_gz(tiny_model("text-classification"), tmp_path_factory.mktemp("transform") / "model.tar.gz")
        client.upload_file(str(archive), BUCKET, "model/model.tar.gz")
        lines = [json.dumps({"id": index, "inputs": text}) for index, text in enumerate(SENTENCES)]
        client.put_object(Bucket=BUCKET, Key="in/input.jsonl", Body="\n".join(lines).encode() + b"\n")
        yield client
        client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: Any) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("sagemaker-transform") / "home",
                           env={**S3_KEYS, "AWS_ENDPOINT_URL_S3": s3.meta.endpoint_url})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sm(server: Server) -> Iterator[Any]:
    client = admin_client("sagemaker", server.url)
    client.create_model(ModelName=MODEL, ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": "huggingface-pytorch-inference",
                                          "ModelDataUrl": f"s3://{BUCKET}/model/model.tar.gz",
                                          "Environment": {"HF_TASK": "text-classification"}})
    yield client
    client.close()


@pytest.fixture(scope="module")
def logs(server: Server) -> Iterator[Any]:
    client = admin_client("logs", server.url)
    yield client
    client.close()


def job_request(name: str, output: str, **extra: Any) -> dict[str, Any]:
    """What the sagemaker SDK's transformer sends for one JSON Lines file, split by line."""
    return {"TransformJobName": name, "ModelName": MODEL,
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                               "S3Uri": f"s3://{BUCKET}/in/input.jsonl"}},
                               "ContentType": "application/json", "SplitType": "Line"},
            "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/{output}", "AssembleWith": "Line"},
            "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}, **extra}


def run_job(sm: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Create the job, wait with boto3's waiter until it ends, and describe it."""
    arn = sm.create_transform_job(**request)["TransformJobArn"]
    assert arn == f"{ARN_PREFIX}transform-job/{request['TransformJobName']}"
    sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName=request["TransformJobName"],
                                                             WaiterConfig=FAST)
    return dict(sm.describe_transform_job(TransformJobName=request["TransformJobName"]))


def output_lines(s3: Any, key: str) -> list[Any]:
    return [json.loads(line) for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines()]


def error_of(call: Callable[[], Any]) -> dict[str, str]:
    with pytest.raises(ClientError) as raised:
        call()
    return dict(raised.value.response["Error"])


@pytest.fixture(scope="module")
def completed(sm: Any) -> dict[str, Any]:
    """A job of the SDK's shape, one record per request, run to its end."""
    return run_job(sm, job_request("sentiments", "out", BatchStrategy="SingleRecord", MaxPayloadInMB=1,
                                   Environment={"SOME_SETTING": "on", "HF_TOKEN": "hf_secret"}))


def test_job_writes_one_answer_per_line(completed: dict[str, Any], s3: Any) -> None:
    assert completed["TransformJobStatus"] == "Completed", completed.get("FailureReason")
    answers = output_lines(s3, "out/input.jsonl.out")
    assert len(answers) == len(SENTENCES)
    for answer in answers:
        assert isinstance(answer, list) and {"label", "score"} <= set(answer[0]), answer


def test_describe_answers_the_request_and_the_times(completed: dict[str, Any]) -> None:
    assert completed["TransformJobArn"] == f"{ARN_PREFIX}transform-job/sentiments"
    assert completed["ModelName"] == MODEL
    assert completed["TransformInput"]["SplitType"] == "Line"
    assert completed["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/in/input.jsonl"
    assert completed["TransformOutput"] == {"S3OutputPath": f"s3://{BUCKET}/out", "AssembleWith": "Line"}
    assert completed["TransformResources"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}
    assert (completed["BatchStrategy"], completed["MaxPayloadInMB"]) == ("SingleRecord", 1)
    assert completed["Environment"] == {"SOME_SETTING": "on", "HF_TOKEN": MASK}
    assert completed["CreationTime"] <= completed["TransformStartTime"] <= completed["TransformEndTime"]
    assert "FailureReason" not in completed


def test_hubserve_api_sees_the_same_job(completed: dict[str, Any], server: Server) -> None:
    job = httpx.get(f"{server.url}/api/v1/jobs/sentiments", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert job.status_code == 200, job.text
    spec = job.json()["spec"]
    # SageMaker's defaults, and the variables a batch container sees.
    assert (spec["split_type"], spec["batch_strategy"], spec["max_payload_mb"]) == ("Line", "SingleRecord", 1)
    assert spec["device"] == "cpu" and spec["timeout_s"] == 600
    assert spec["env"]["SAGEMAKER_BATCH"] == "true" and spec["env"]["SAGEMAKER_BATCH_STRATEGY"] == "SingleRecord"


def test_data_processing_joins_input_and_answer(sm: Any, s3: Any) -> None:
    described = run_job(sm, job_request("joined", "joined", DataProcessing={
        "InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$['id','SageMakerOutput']"}))
    assert described["TransformJobStatus"] == "Completed", described.get("FailureReason")
    assert described["DataProcessing"]["JoinSource"] == "Input"
    joined = output_lines(s3, "joined/input.jsonl.out")
    assert [line["id"] for line in joined] == list(range(len(SENTENCES)))
    assert all(set(line) == {"id", "SageMakerOutput"} for line in joined), joined


def test_list_filters_sorts_and_pages(completed: dict[str, Any], sm: Any) -> None:
    listed = sm.list_transform_jobs(StatusEquals="Completed", SortBy="Name", SortOrder="Ascending")
    names = [summary["TransformJobName"] for summary in listed["TransformJobSummaries"]]
    assert "sentiments" in names and names == sorted(names)
    summary = next(s for s in listed["TransformJobSummaries"] if s["TransformJobName"] == "sentiments")
    assert summary["TransformEndTime"] == completed["TransformEndTime"] == summary["LastModifiedTime"]
    paged = list(sm.get_paginator("list_transform_jobs").paginate(StatusEquals="Completed", SortBy="Name",
                                                                 SortOrder="Ascending",
                                                                 PaginationConfig={"PageSize": 1}))
    assert [s["TransformJobName"] for page in paged for s in page["TransformJobSummaries"]] == names
    assert sm.list_transform_jobs(NameContains="no-such-job")["TransformJobSummaries"] == []


def test_stop_a_running_job(sm: Any, s3: Any) -> None:
    lines = "".join(json.dumps({"inputs": f"sentence {index}"}) + "\n" for index in range(20000))
    s3.put_object(Bucket=BUCKET, Key="long/input.jsonl", Body=lines.encode())
    request = job_request("long-one", "long-out", BatchStrategy="SingleRecord")
    request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] = f"s3://{BUCKET}/long/"
    sm.create_transform_job(**request)
    sm.stop_transform_job(TransformJobName="long-one")
    assert sm.describe_transform_job(TransformJobName="long-one")["TransformJobStatus"] in ("Stopping", "Stopped")
    sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="long-one", WaiterConfig=FAST)
    assert sm.describe_transform_job(TransformJobName="long-one")["TransformJobStatus"] == "Stopped"
    ended = error_of(lambda: sm.stop_transform_job(TransformJobName="long-one"))
    assert ended["Code"] == "ValidationException" and "Stopped" in ended["Message"], ended


def test_sagemaker_errors(completed: dict[str, Any], sm: Any) -> None:
    unknown_model = error_of(lambda: sm.create_transform_job(**{**job_request("x1", "x1"), "ModelName": "nope"}))
    assert unknown_model == {"Code": "ValidationException",
                             "Message": f'Could not find model "{ARN_PREFIX}model/nope".'}
    duplicate = error_of(lambda: sm.create_transform_job(**job_request("sentiments", "again")))
    assert duplicate["Code"] == "ResourceInUse" and "already exists" in duplicate["Message"], duplicate
    bad_path = error_of(lambda: sm.create_transform_job(**job_request("x2", "x2", DataProcessing={
        "InputFilter": "$.[unclosed"})))
    assert bad_path["Code"] == "ValidationException" and "$.[unclosed" in bad_path["Message"], bad_path
    missing = job_request("x3", "x3")
    missing["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] = f"s3://{BUCKET}/no-such/input.jsonl"
    no_input = error_of(lambda: sm.create_transform_job(**missing))
    assert no_input["Code"] == "ValidationException" and "no-such" in no_input["Message"], no_input
    record_io = job_request("x4", "x4")
    record_io["TransformInput"]["SplitType"] = "RecordIO"
    assert "SplitType RecordIO" in error_of(lambda: sm.create_transform_job(**record_io))["Message"]
    unknown_job = error_of(lambda: sm.describe_transform_job(TransformJobName="no-such-job"))
    assert unknown_job["Code"] == "ResourceNotFound" and "no-such-job" in unknown_job["Message"]
    assert error_of(lambda: sm.stop_transform_job(TransformJobName="no-such-job"))["Code"] == "ResourceNotFound"
    # None of the refused jobs was made.
    names = {s["TransformJobName"] for s in sm.list_transform_jobs(MaxResults=100)["TransformJobSummaries"]}
    assert not names & {"x1", "x2", "x3", "x4"}


def job_log(server: Server, name: str) -> list[str]:
    """The job's log through hubserve's own API."""
    answer = httpx.get(f"{server.url}/api/v1/jobs/{name}/logs", params={"tail": 10000},
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200, answer.text
    return [line for line in answer.text.splitlines() if line.strip()]


def test_cloudwatch_reads_the_job_log_page_by_page(completed: dict[str, Any], logs: Any, server: Server) -> None:
    streams = logs.describe_log_streams(logGroupName=JOB_GROUP, logStreamNamePrefix="sentiments/",
                                        orderBy="LogStreamName", limit=1)
    assert [s["logStreamName"] for s in streams["logStreams"]] == ["sentiments/hubserve"]
    assert "nextToken" not in streams  # the sagemaker SDK asks for exactly one stream per instance
    # As the SDK's log reader: forward from the head, a token at a time, until a page comes back empty.
    messages, token, timestamps = [], None, []
    while True:
        page = logs.get_log_events(logGroupName=JOB_GROUP, logStreamName="sentiments/hubserve", startFromHead=True,
                                   limit=2, **({"nextToken": token} if token else {}))
        if not page["events"]:
            assert page["nextForwardToken"] == token  # the end: the same token back
            break
        messages += [event["message"] for event in page["events"]]
        timestamps += [event["timestamp"] for event in page["events"]]
        token = page["nextForwardToken"]
    assert messages == job_log(server, "sentiments")
    assert timestamps == sorted(timestamps)
    start, end = completed["TransformStartTime"].timestamp() * 1000, completed["TransformEndTime"].timestamp() * 1000
    assert start - 1000 <= timestamps[0] and timestamps[-1] <= end + 1000
    # Without startFromHead, the latest events; from a startTime, only those at or after it.
    latest = logs.get_log_events(logGroupName=JOB_GROUP, logStreamName="sentiments/hubserve", limit=2)
    assert [event["message"] for event in latest["events"]] == messages[-2:]
    later = logs.get_log_events(logGroupName=JOB_GROUP, logStreamName="sentiments/hubserve", startFromHead=True,
                                startTime=timestamps[-1])
    assert [event["message"] for event in later["events"]] == [
        message for message, stamp in zip(messages, timestamps, strict=True) if stamp >= timestamps[-1]]


@pytest.fixture(scope="module")
def endpoint(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[str]:
    """An endpoint made through hubserve's own API."""
    with running_endpoints(server, [{"name": "logged", "model": str(tiny_model("text-classification"))}]):
        yield "logged"


def test_cloudwatch_reads_an_endpoint_log(endpoint: str, logs: Any, server: Server) -> None:
    group = f"/aws/sagemaker/Endpoints/{endpoint}"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["AllTraffic/hubserve"]
    events = logs.get_log_events(logGroupName=group, logStreamName="AllTraffic/hubserve", startFromHead=True)
    expected = httpx.get(f"{server.url}/api/v1/endpoints/{endpoint}/logs", params={"tail": 10000},
                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).text
    assert [e["message"] for e in events["events"]] == [line for line in expected.splitlines() if line.strip()]


def test_a_job_made_by_hubserves_api_described_as_sagemaker_would(endpoint: str, sm: Any, server: Server) -> None:
    """A job on a running endpoint: its model is the endpoint's implied one, its instance this server."""
    created = httpx.post(f"{server.url}/api/v1/jobs", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, json={
        "name": "by-api", "endpoint": endpoint, "input": f"s3://{BUCKET}/in/input.jsonl",
        "output": f"s3://{BUCKET}/by-api"})
    assert created.status_code == 201, created.text
    sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="by-api", WaiterConfig=FAST)
    described = sm.describe_transform_job(TransformJobName="by-api")
    assert (described["TransformJobStatus"], described["ModelName"]) == ("Completed", endpoint)
    assert described["TransformResources"] == {"InstanceType": "local", "InstanceCount": 1}
    assert described["TransformInput"]["SplitType"] == "Line"
    assert described["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/by-api"


def test_cloudwatch_errors(logs: Any) -> None:
    no_group = error_of(lambda: logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/none"))
    assert no_group == {"Code": "ResourceNotFoundException", "Message": "The specified log group does not exist."}
    no_stream = error_of(lambda: logs.get_log_events(logGroupName=JOB_GROUP, logStreamName="none/hubserve"))
    assert no_stream["Code"] == "ResourceNotFoundException"
    bad_token = error_of(lambda: logs.get_log_events(logGroupName=JOB_GROUP, logStreamName="none/hubserve",
                                                     nextToken="garbage"))
    assert bad_token["Code"] in ("InvalidParameterException", "ResourceNotFoundException")
    by_time = error_of(lambda: logs.describe_log_streams(logGroupName=JOB_GROUP, logStreamNamePrefix="a",
                                                         orderBy="LastEventTime"))
    assert by_time["Code"] == "InvalidParameterException"


def aws_keys(server: Server) -> dict[str, str]:
    """An admin AWS key pair, as `hubserve token create --aws --admin` prints it."""
    printed = subprocess.run([sys.executable, "-m", "hubserve", "--url", server.url, "--token", ADMIN_TOKEN,
                              "token", "create", "transform-cli", "--aws", "--admin"],
                             capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in printed.split())


def test_aws_cli_and_signed_boto3_by_environment(completed: dict[str, Any], server: Server, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The AWS CLI v1 and boto3, signing with an admin key, reach hubserve by the environment alone: botocore
    reads CloudWatch Logs' endpoint from AWS_ENDPOINT_URL_CLOUDWATCH_LOGS (its service id), not _LOGS."""
    env = {**os.environ, **aws_keys(server), "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_ENDPOINT_URL_SAGEMAKER": server.url, "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": server.url}
    aws = str(Path(sys.executable).with_name("aws"))
    described = subprocess.run([aws, "sagemaker", "describe-transform-job", "--transform-job-name", "sentiments"],
                               capture_output=True, text=True, env=env, timeout=60)
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["TransformJobStatus"] == "Completed"
    events = subprocess.run([aws, "logs", "get-log-events", "--log-group-name", JOB_GROUP, "--log-stream-name",
                             "sentiments/hubserve", "--start-from-head"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert events.returncode == 0, events.stderr
    assert [e["message"] for e in json.loads(events.stdout)["events"]] == job_log(server, "sentiments")
    missing = subprocess.run([aws, "sagemaker", "stop-transform-job", "--transform-job-name", "no-such-job"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 255 and "(ResourceNotFound)" in missing.stderr, missing.stderr
    signed = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", server.url)
    logs = signed.client("logs")
    try:
        assert logs.describe_log_streams(logGroupName=JOB_GROUP, logStreamNamePrefix="sentiments/")["logStreams"]
    finally:
        logs.close()
