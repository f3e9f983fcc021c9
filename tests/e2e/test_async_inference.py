"""Asynchronous inference (InvokeEndpointAsync) end to end: a real server whose AWS_ENDPOINT_URL_S3 is moto's S3
server, endpoints with async_inference, boto3 and the AWS CLI v1 as users call them, the objects they poll for,
webhooks, the backlog in the stats, and a server killed in the middle of the work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import Server, sagemaker_runtime, start_server
from custom_models import write_echo_model
from sources_fixtures import moto_s3_server

S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ECHO = "async-echo"
FILES = "async-files"
BROKEN = "async-broken"
TTL_S = 60  # the least AWS allows

FAILS_TO_LOAD = '''
def model_fn(model_dir):
    raise RuntimeError("this model never loads")
'''

# Counts each time the model sees a request (one line per call in a file named by its inference id), then sleeps.
COUNTING = '''
import os
import time


def model_fn(model_dir):
    return None


def predict_fn(data, model, context):
    inference_id = context.request_processor[0].get_request_properties()["X-Amzn-SageMaker-Inference-Id"]
    with open(os.path.join(os.environ["COUNT_DIR"], inference_id), "a") as handle:
        handle.write("seen\\n")
    time.sleep(float(data["seconds"]))
    return {"id": inference_id, "inputs": data["inputs"]}
'''


def code_model(folder: Path, code: str) -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "inference.py").write_text(textwrap.dedent(code))
    return folder


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


class Webhooks:
    """A loopback HTTP server that keeps the JSON each POST brings."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[dict[str, Any]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- the base class's name
                received.append({"path": self.path, **json.loads(self.rfile.read(int(self.headers["content-length"])))})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base class's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, inference_id: str) -> dict[str, Any]:
        return wait_for(lambda: next((n for n in self.received if n["inferenceId"] == inference_id), None),
                        what=f"a webhook notice about {inference_id}")


class Objects:
    """moto's S3, as the test reads it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                               aws_secret_access_key="testing")

    def bucket(self, name: str, versioned: bool = False) -> str:
        self.s3.create_bucket(Bucket=name)
        if versioned:  # each write of a key is a version of its own: "written once" can be counted
            self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def put(self, url: str, body: bytes, content_type: str | None = None) -> str:
        bucket, key = split(url)
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, **({"ContentType": content_type} if content_type else {}))
        return url

    def get(self, url: str) -> dict[str, Any] | None:
        bucket, key = split(url)
        try:
            answer: dict[str, Any] = self.s3.get_object(Bucket=bucket, Key=key)
        except self.s3.exceptions.NoSuchKey:
            return None
        return {"body": answer["Body"].read(), "content_type": answer["ContentType"]}

    def wait(self, url: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(lambda: self.get(url), timeout, what=f"{url} written")

    def versions(self, url: str) -> int:
        bucket, key = split(url)
        listing = self.s3.list_object_versions(Bucket=bucket, Prefix=key)
        return sum(1 for version in listing.get("Versions", []) if version["Key"] == key)


def split(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


@pytest.fixture(scope="module")
def s3() -> Iterator[Objects]:
    with moto_s3_server() as url:
        objects = Objects(url)
        objects.bucket("async-in")
        objects.bucket("async-out", versioned=True)
        yield objects


@pytest.fixture(scope="module")
def webhooks() -> Iterator[Webhooks]:
    hooks = Webhooks()
    yield hooks
    hooks.server.shutdown()
    hooks.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: Objects) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("async") / "home", env={**S3_KEYS, "AWS_ENDPOINT_URL_S3": s3.url})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def endpoints(server: Server, webhooks: Webhooks, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An echo endpoint answering to S3 (webhooks on), one answering to local files one request at a time, and one
    that never loads, whose queue only ever expires. The expiring request is sent here, first, so that its TTL
    runs while the other tests do."""
    root = tmp_path_factory.mktemp("async-models")
    client = server.client()
    client.create_endpoint({"name": ECHO, "model": str(write_echo_model(root / "echo")), "async_inference": {
        "output_path": "s3://async-out/results", "failure_path": "s3://async-out/failures", "max_concurrency": 2,
        "success_webhook": f"{webhooks.url}/ok", "error_webhook": f"{webhooks.url}/failed"}})
    files = root / "answers"
    client.create_endpoint({"name": FILES, "model": str(write_echo_model(root / "echo-files")),
                            "async_inference": {"output_path": files.as_uri(), "max_concurrency": 1}})
    client.create_endpoint({"name": BROKEN, "model": str(code_model(root / "broken", FAILS_TO_LOAD)),
                            "async_inference": {"output_path": "s3://async-out/broken"}})
    expiring = sagemaker_runtime(server.url).invoke_endpoint_async(
        EndpointName=BROKEN, Body=b'{"inputs": "too late"}', RequestTTLSeconds=TTL_S)
    for name in (ECHO, FILES):
        client.wait(name, timeout=300)
    return {"files": files, "expiring": expiring, "expiring_sent": time.monotonic()}


@pytest.fixture(scope="module")
def runtime(server: Server, endpoints: dict[str, Any]) -> Any:
    return sagemaker_runtime(server.url)


def test_s3_input_to_s3_output(runtime: Any, s3: Objects, webhooks: Webhooks) -> None:
    source = s3.put("s3://async-in/first.json", b'{"inputs": "from s3"}', "application/json")
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, InputLocation=source, CustomAttributes="trace=7",
                                           Accept="application/json")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    inference_id = answer["InferenceId"]
    assert uuid.UUID(inference_id)
    assert answer["OutputLocation"] == f"s3://async-out/results/{inference_id}.out"
    assert answer["FailureLocation"] == f"s3://async-out/failures/{inference_id}-error.out"
    output = s3.wait(answer["OutputLocation"])
    assert json.loads(output["body"]) == {"echo": "from s3", "parameters": None, "custom_attributes": "trace=7"}
    assert output["content_type"] == "application/json"
    assert s3.get(answer["FailureLocation"]) is None
    notice = webhooks.about(inference_id)
    assert notice["path"] == "/ok"
    assert notice["invocationStatus"] == "Completed"
    assert notice["responseParameters"]["outputLocation"] == answer["OutputLocation"]
    assert notice["requestParameters"] == {"endpointName": ECHO, "inputLocation": source, "contentType": None,
                                           "accept": "application/json"}


def test_content_type_of_the_input_object(runtime: Any, s3: Objects) -> None:
    # The SDK's predict_async sends no content type: the object's own is the input's, here CSV.
    source = s3.put("s3://async-in/table", b"inputs\nfirst row\n", "text/csv")
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, InputLocation=source)
    assert json.loads(s3.wait(answer["OutputLocation"])["body"])["echo"] == ["first row"]
    # Stored without a type (S3 says binary/octet-stream): JSON, as for a real-time call without Content-Type.
    source = s3.put("s3://async-in/untyped", b'{"inputs": "untyped"}')
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, InputLocation=source)
    assert json.loads(s3.wait(answer["OutputLocation"])["body"])["echo"] == "untyped"


def test_inline_body(runtime: Any, s3: Objects) -> None:
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, Body=b"inputs\ninline\n", ContentType="text/csv")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert json.loads(s3.wait(answer["OutputLocation"])["body"])["echo"] == ["inline"]


def test_model_error_goes_to_the_failure_object(runtime: Any, s3: Objects, webhooks: Webhooks) -> None:
    source = s3.put("s3://async-in/raise.json", b'{"inputs": "raise"}', "application/json")
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, InputLocation=source)
    failure = json.loads(s3.wait(answer["FailureLocation"])["body"])
    assert failure["ErrorCode"] == "CLIENT_ERROR_FROM_MODEL"
    assert "the model refused this input" in failure["OriginalMessage"]
    assert "the model refused this input" in failure["Message"]
    assert s3.get(answer["OutputLocation"]) is None
    notice = webhooks.about(answer["InferenceId"])
    assert (notice["path"], notice["invocationStatus"]) == ("/failed", "Failed")
    assert notice["responseParameters"]["failureLocation"] == answer["FailureLocation"]
    assert "the model refused this input" in notice["failureReason"]


def test_missing_input_goes_to_the_failure_object(runtime: Any, s3: Objects) -> None:
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, InputLocation="s3://async-in/no-such-object")
    failure = json.loads(s3.wait(answer["FailureLocation"])["body"])
    assert failure["ErrorCode"] == "ValidationError"
    assert "s3://async-in/no-such-object" in failure["Message"]


def test_invocation_timeout(runtime: Any, s3: Objects) -> None:
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, Body=b'{"inputs": "sleep", "parameters": {"seconds": 4}}',
                                           InvocationTimeoutSeconds=1)
    failure = json.loads(s3.wait(answer["FailureLocation"])["body"])
    assert failure["ErrorCode"] == "ModelInvocationTimeExceeded"
    assert "InvocationTimeoutSeconds (1 s)" in failure["Message"]


def test_custom_and_repeated_inference_id(runtime: Any, s3: Objects) -> None:
    inference_id = f"order-{uuid.uuid4().hex[:8]}"
    first = runtime.invoke_endpoint_async(EndpointName=ECHO, InferenceId=inference_id,
                                          Body=b'{"inputs": "sleep", "parameters": {"seconds": 1}}')
    # The same id again, while it runs and once it is done: the same answer, and the model runs it once.
    again = runtime.invoke_endpoint_async(EndpointName=ECHO, InferenceId=inference_id, Body=b'{"inputs": "other"}')
    assert first["InferenceId"] == again["InferenceId"] == inference_id
    assert first["OutputLocation"] == again["OutputLocation"] == f"s3://async-out/results/{inference_id}.out"
    s3.wait(first["OutputLocation"])
    late = runtime.invoke_endpoint_async(EndpointName=ECHO, InferenceId=inference_id, Body=b'{"inputs": "late"}')
    assert late["OutputLocation"] == first["OutputLocation"]
    time.sleep(2)
    assert s3.versions(first["OutputLocation"]) == 1
    assert json.loads(s3.get(first["OutputLocation"])["body"])["parameters"] == {"seconds": 1}


def test_output_path_extension_and_filename(runtime: Any, s3: Objects) -> None:
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, Body=b'{"inputs": "named"}',
                                           S3OutputPathExtension="2026/batch-1", Filename="answer.json")
    assert answer["OutputLocation"] == "s3://async-out/results/2026/batch-1/answer.json"
    assert json.loads(s3.wait(answer["OutputLocation"])["body"])["echo"] == "named"


def test_file_input_and_output(runtime: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "input.json"
    source.write_text('{"inputs": "from a file"}')
    answer = runtime.invoke_endpoint_async(EndpointName=FILES, InputLocation=source.as_uri())
    output = endpoints["files"] / f"{answer['InferenceId']}.out"
    assert answer["OutputLocation"] == output.as_uri()
    assert answer["FailureLocation"] == (endpoints["files"] / f"{answer['InferenceId']}-error.out").as_uri()
    wait_for(output.exists, what=f"{output} written")
    assert json.loads(output.read_text())["echo"] == "from a file"
    assert not any(path.name.endswith(".partial") for path in endpoints["files"].iterdir())


def test_backlog_in_the_stats(runtime: Any, server: Server, endpoints: dict[str, Any]) -> None:
    stats_url = f"{server.url}/api/v1/endpoints/{FILES}/stats"
    headers = {"Authorization": f"Bearer {server.token}"}
    answers = [runtime.invoke_endpoint_async(EndpointName=FILES, Body=b'{"inputs": "sleep", "parameters": '
                                                                      b'{"seconds": 1}}') for _ in range(4)]
    backlog = httpx.get(stats_url, headers=headers).json()["async_backlog"]
    # One request at a time (max_concurrency 1 × one replica): the rest wait.
    assert backlog["running"] <= 1
    assert backlog["queued"] + backlog["running"] >= 3
    assert backlog["oldest_age_s"] >= 0
    for answer in answers:
        wait_for((endpoints["files"] / f"{answer['InferenceId']}.out").exists, what="the backlog done")
    assert httpx.get(stats_url, headers=headers).json()["async_backlog"] == {"queued": 0, "running": 0,
                                                                          "oldest_age_s": None}
    assert httpx.get(f"{server.url}/api/v1/endpoints/{BROKEN}/stats", headers=headers).json()["async_backlog"]


def test_aws_cli_invoke_endpoint_async(server: Server, s3: Objects, endpoints: dict[str, Any],
                                       tmp_path: Path) -> None:
    source = s3.put("s3://async-in/cli.json", b'{"inputs": "from the cli"}', "application/json")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("aws")), "sagemaker-runtime", "invoke-endpoint-async", "--endpoint-url",
         server.url, "--endpoint-name", ECHO, "--input-location", source, "--inference-id", "from-cli"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["InferenceId"] == "from-cli"
    assert printed["OutputLocation"] == "s3://async-out/results/from-cli.out"
    assert json.loads(s3.wait(printed["OutputLocation"])["body"])["echo"] == "from the cli"


def test_a_replica_dying_under_a_request_is_not_its_failure(runtime: Any, s3: Objects, tmp_path: Path) -> None:
    """The replica's death is the server's trouble: the request waits for the replacement and runs again."""
    marker = tmp_path / "died-once"
    body = json.dumps({"inputs": "crash-once", "parameters": {"marker": str(marker)}}).encode()
    answer = runtime.invoke_endpoint_async(EndpointName=ECHO, Body=body)
    assert "pid" in json.loads(s3.wait(answer["OutputLocation"], timeout=120)["body"])
    assert marker.exists()
    assert s3.get(answer["FailureLocation"]) is None


@pytest.mark.parametrize(("headers", "named"), [
    ({"X-Amzn-SageMaker-RequestTTLSeconds": "59"}, "X-Amzn-SageMaker-RequestTTLSeconds"),
    ({"X-Amzn-SageMaker-RequestTTLSeconds": "six hours"}, "X-Amzn-SageMaker-RequestTTLSeconds"),
    ({"X-Amzn-SageMaker-InvocationTimeoutSeconds": "3601"}, "X-Amzn-SageMaker-InvocationTimeoutSeconds"),
    ({"X-Amzn-SageMaker-Inference-Id": "a/b"}, "X-Amzn-SageMaker-Inference-Id"),
    ({"X-Amzn-SageMaker-Inference-Id": "x" * 65}, "X-Amzn-SageMaker-Inference-Id"),
    ({"X-Amzn-SageMaker-Inference-Id": "a\\b"}, "X-Amzn-SageMaker-Inference-Id"),
    ({"X-Amzn-SageMaker-Content-Type": "text/" + "x" * 1020}, "X-Amzn-SageMaker-Content-Type"),
    ({"X-Amzn-SageMaker-Filename": "a.b.c"}, "X-Amzn-SageMaker-Filename"),
    ({"X-Amzn-SageMaker-S3OutputPathExtension": "a/../b"}, "X-Amzn-SageMaker-S3OutputPathExtension"),
    ({"X-Amzn-SageMaker-InputLocation": "no-scheme/key"}, "X-Amzn-SageMaker-InputLocation"),
    ({"X-Amzn-SageMaker-InputLocation": "nosuchstore://bucket/key"}, "X-Amzn-SageMaker-InputLocation"),
])
def test_bad_headers_are_refused(server: Server, endpoints: dict[str, Any], headers: dict[str, str],
                                 named: str) -> None:
    response = httpx.post(f"{server.url}/endpoints/{ECHO}/async-invocations", content=b'{"inputs": 1}',
                          headers=headers)
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "ValidationError"
    assert named in response.json()["message"]


def test_input_in_the_body_or_at_a_location(runtime: Any, server: Server, endpoints: dict[str, Any]) -> None:
    url = f"{server.url}/endpoints/{ECHO}/async-invocations"
    both = httpx.post(url, content=b'{"inputs": 1}', headers={"X-Amzn-SageMaker-InputLocation": "s3://async-in/x"})
    assert both.status_code == 400
    assert "not both" in both.json()["message"]
    with pytest.raises(ClientError, match="X-Amzn-SageMaker-InputLocation is required") as neither:
        runtime.invoke_endpoint_async(EndpointName=ECHO)
    assert neither.value.response["Error"]["Code"] == "ValidationError"
    # The server's own files (its database, keys, tokens) are no one's input.
    with pytest.raises(ClientError, match="must not be a file of the server's home folder"):
        runtime.invoke_endpoint_async(EndpointName=ECHO, InputLocation=(server.home / "hubserve.key").as_uri())


def test_endpoint_without_async_inference(server: Server, runtime: Any, tmp_path: Path) -> None:
    client = server.client()
    client.create_endpoint({"name": "sync-only", "model": str(code_model(tmp_path / "m", FAILS_TO_LOAD))})
    try:
        with pytest.raises(ClientError, match="is not an async endpoint") as refused:
            runtime.invoke_endpoint_async(EndpointName="sync-only", InputLocation="s3://async-in/first.json")
        assert refused.value.response["Error"]["Code"] == "ValidationError"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    finally:
        client.delete_endpoint("sync-only")
    with pytest.raises(ClientError, match="Endpoint no-such of account .* not found"):
        runtime.invoke_endpoint_async(EndpointName="no-such", InputLocation="s3://async-in/first.json")


def test_expired_request_goes_to_the_failure_object(endpoints: dict[str, Any], s3: Objects) -> None:
    """Sent first (the endpoints fixture) to an endpoint that never loads: it waits in the queue until its TTL."""
    expiring = endpoints["expiring"]
    assert expiring["FailureLocation"] == f"s3://async-out/broken/{expiring['InferenceId']}-error.out"
    left = TTL_S - (time.monotonic() - endpoints["expiring_sent"])
    failure = json.loads(s3.wait(expiring["FailureLocation"], timeout=left + 30)["body"])
    assert failure["ErrorCode"] == "RequestExpired"
    assert f"RequestTTLSeconds ({TTL_S} s)" in failure["Message"]
    assert s3.get(expiring["OutputLocation"]) is None


def test_deleting_an_endpoint_fails_its_queue(server: Server, runtime: Any, s3: Objects) -> None:
    waiting = runtime.invoke_endpoint_async(EndpointName=BROKEN, Body=b'{"inputs": "never run"}')
    server.client().delete_endpoint(BROKEN)
    failure = json.loads(s3.wait(waiting["FailureLocation"])["body"])
    assert "its endpoint was deleted" in failure["Message"]


def test_a_killed_server_loses_and_repeats_nothing(tmp_path: Path, s3: Objects) -> None:
    """Requests queued and running when the server is killed: after a restart on the same home each has exactly one
    answer, written once; the model saw again only those it was running when the server died."""
    s3.bucket("restart-out", versioned=True)
    counts = tmp_path / "counts"
    counts.mkdir()
    home = tmp_path / "home"
    env = {**S3_KEYS, "AWS_ENDPOINT_URL_S3": s3.url}
    first = start_server(home, env=env)
    try:
        first.client().create_endpoint({
            "name": "counted", "model": str(code_model(tmp_path / "counting", COUNTING)),
            "env": {"COUNT_DIR": str(counts)},
            "async_inference": {"output_path": "s3://restart-out/out", "max_concurrency": 2}})
        first.client().wait("counted", timeout=300)
        runtime = sagemaker_runtime(first.url)
        ids = [f"req-{index}" for index in range(8)]
        for index, inference_id in enumerate(ids):
            payload = json.dumps({"inputs": index, "seconds": 3}).encode()
            if index % 2:  # half inline, half from S3
                runtime.invoke_endpoint_async(EndpointName="counted", InferenceId=inference_id, Body=payload)
            else:
                source = s3.put(f"s3://async-in/restart/{inference_id}", payload, "application/json")
                runtime.invoke_endpoint_async(EndpointName="counted", InferenceId=inference_id, InputLocation=source)
        answer = {i: f"s3://restart-out/out/{i}.out" for i in ids}
        # Killed once the first two are answered and the next two are running.
        wait_for(lambda: s3.get(answer["req-0"]) and s3.get(answer["req-1"]) and (counts / "req-2").exists()
                 and (counts / "req-3").exists(), timeout=120, what="the second pair running")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    finally:
        first.stop()
    time.sleep(1)  # a worker that was handed a request as the server died has seen it by now
    written = {i for i in ids if s3.get(answer[i])}
    seen = {i: seen_times(counts, i) for i in ids}
    assert {"req-0", "req-1"} <= written and "req-7" not in written
    # The server can also die between writing an answer and marking it done: that request is found written.
    db = sqlite3.connect(home / "hubserve.db")
    with db:
        db.execute("UPDATE async_requests SET state = 'running' WHERE id = 'req-0'")
    db.close()

    second = start_server(home, env=env)
    try:
        for i in ids:
            s3.wait(answer[i], timeout=120)
        backlog = httpx.get(f"{second.url}/api/v1/endpoints/counted/stats",
                            headers={"Authorization": f"Bearer {second.token}"}).json()["async_backlog"]
        assert (backlog["queued"], backlog["running"]) == (0, 0)
    finally:
        second.stop()
    for index, i in enumerate(ids):
        assert json.loads(s3.get(answer[i])["body"]) == {"id": i, "inputs": index}
        assert s3.versions(answer[i]) == 1, f"{i} was written more than once"
        assert s3.get(f"s3://restart-out/out/{i}-error.out") is None
        if i in written:
            assert seen_times(counts, i) == seen[i] == 1, f"{i} was answered before the kill, yet run again"
        else:  # run once after the restart; twice if it was running when the server died
            assert seen_times(counts, i) == seen[i] + 1
    assert any(seen[i] == 1 for i in ids if i not in written), "no request was cut off by the kill"


def seen_times(counts: Path, inference_id: str) -> int:
    path = counts / inference_id
    return len(path.read_text().splitlines()) if path.exists() else 0
