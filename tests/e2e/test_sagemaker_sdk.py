"""The SageMaker Python SDK v2, unmodified, against hubserve: the guides' seed code (tests/clients/sagemaker_flows.py)
runs in a venv of its own, in subprocesses whose only change is the environment -- hubserve for SageMaker, its
runtime and CloudWatch Logs, moto's S3 server for S3, AWS keys that `hubserve token create --aws --admin` printed,
and an SDK defaults file naming the default bucket. hubserve reads model.tar.gz and batch input from that S3 and
writes async answers and batch output there; the Hub models the guides name come from an offline Hub cache.

Every deploy costs the SDK's 30 s sleep before its first DescribeEndpoint, so the flows all start together when
the module's fixture is set up, and each test waits for its own. The only skip: the SDK's venv cannot be built
(no package index reachable)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from clients.client_venv import client_python
from conftest import ADMIN_TOKEN, Server, nearly_equal, start_server
from custom_models import tar_gz
from sources_fixtures import build_hub_cache, moto_s3_server

CLIENTS = Path(__file__).parents[1] / "clients"
REQUIREMENTS = CLIENTS / "sagemaker-requirements.txt"
BUCKET = "sagemaker-hubserve-sdk-tests"  # the SDK's default bucket, named in its defaults file
CLASSIFIER, GENERATOR = "sdk-classifier", "sdk-generator"  # made through hubserve's own API
# The Hub ids the guides deploy, served offline from a cache holding tiny models under their names.
HUB_MODELS = {"distilbert-base-uncased-distilled-squad": "question-answering",
              "distilbert-base-uncased-finetuned-sst-2-english": "text-classification"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FLOWS = ("model-data", "hub-model", "predictors", "async", "transform")
# Flows whose HuggingFaceModel.deploy() (or .transformer()) names a model.
DEPLOYING = {"model-data", "hub-model", "async", "transform"}
# The batch transform flow's tweets.
SENTENCES = ["I love using SageMaker with Hugging Face.", "The batch job was slow.", "Records in, answers out."]
FLOW_TIMEOUT_S = 300.0
# What pip says when no index answers: only then is the test skipped rather than failed.
OFFLINE_SIGNS = ("(from versions: none)", "NewConnectionError", "Temporary failure in name resolution",
                 "Network is unreachable", "ConnectTimeout", "ProxyError")
DEFAULTS_YAML = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      Session:
        DefaultS3Bucket: {bucket}
"""


@dataclass
class Flows:
    """The running flow processes, the server they talk to, and moto's S3 (a boto3 client on it)."""

    server: Server
    s3: Any
    processes: dict[str, subprocess.Popen[str]]
    logs: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def result(self, flow: str) -> dict[str, Any]:
        """What the flow printed; the test fails with its output and the server's log when it failed."""
        with self.lock:
            if flow not in self.results:
                self.results[flow] = self._wait(flow)
            return self.results[flow]

    def _wait(self, flow: str) -> dict[str, Any]:
        process = self.processes[flow]
        try:
            process.wait(timeout=FLOW_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"flow {flow} did not end in {FLOW_TIMEOUT_S} s{self._outputs(flow)}")
        if process.returncode != 0:
            pytest.fail(f"flow {flow} failed (rc {process.returncode}){self._outputs(flow)}")
        lines = (self.logs / f"{flow}.out").read_text().splitlines()
        return dict(json.loads(lines[-1]))

    def _outputs(self, flow: str) -> str:
        out, err = ((self.logs / f"{flow}.{kind}").read_text() for kind in ("out", "err"))
        said = [line for line in err.splitlines() if line.startswith("flow error: ")]
        return (f"\n{said[-1] if said else ''}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-6000:]}"
                f"\n--- server log\n{self.server.log.read_text()[-4000:]}")


def sdk_python() -> Path:
    """The sagemaker venv's python; the test is skipped (saying why) only when no package index is reachable."""
    try:
        return client_python(REQUIREMENTS)
    except RuntimeError as error:
        if any(sign in str(error) for sign in OFFLINE_SIGNS):
            pytest.skip(f"the sagemaker SDK venv cannot be built: no package index reachable ({error})"[:2000])
        raise


def hub_cache(root: Path, tiny_model: Callable[[str], Path]) -> Path:
    """A Hub cache holding, under the guides' model ids, tiny models of their tasks."""
    for repo_id, task in HUB_MODELS.items():
        folder = tiny_model(task)
        files = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        build_hub_cache(root, repo_id, {COMMIT: files}, {"main": COMMIT})
    return root


def aws_keys(server: Server) -> dict[str, str]:
    """Admin AWS keys, from the CLI as a user makes them: its two `NAME=value` lines."""
    created = subprocess.run(
        [sys.executable, "-m", "hubserve", "--url", server.url, "--token", ADMIN_TOKEN, "token", "create", "sdk",
         "--aws", "--admin"], capture_output=True, text=True, timeout=60,
    )
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    keys = dict(line.split("=", 1) for line in lines)
    assert list(keys) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], created.stdout
    return keys


def control_client(server: Server, environment: dict[str, str]) -> Any:
    """boto3's SageMaker control-plane client with the flows' admin keys."""
    return boto3.client("sagemaker", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"])


def model_made(control: Any, before: int, process: subprocess.Popen[str]) -> None:
    """Waits until the flow's deploy has made its model (or the flow ended). The SDK names a model after its image
    and the time to the millisecond, so two flows deploying the same image at once could take the same name --
    as two such scripts would on SageMaker; the next one starts only after this one's name is taken."""
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    while len(control.list_models()["Models"]) <= before and process.poll() is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


def flow_env(server: Server, s3_url: str, keys: dict[str, str], home: Path) -> dict[str, str]:
    """The environment of every flow: nothing else of this process's leaks in (no proxy, no AWS profile)."""
    defaults = home / "sagemaker-defaults.yaml"
    defaults.write_text(DEFAULTS_YAML.format(bucket=BUCKET))
    return {
        "PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
        "AWS_ENDPOINT_URL_SAGEMAKER": server.url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": server.url,
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": server.url,
        "AWS_ENDPOINT_URL_S3": s3_url, **keys, "AWS_DEFAULT_REGION": "us-east-1",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(defaults),
    }


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Iterator[Flows]:
    """moto's S3 with the guides' model.tar.gz, a hubserve reading it (and a Hub cache), two endpoints made
    through hubserve's API, and the four flows started together; the SDK's venv is built meanwhile."""
    root = tmp_path_factory.mktemp("sagemaker-sdk")
    processes: dict[str, subprocess.Popen[str]] = {}
    with ThreadPoolExecutor(1) as pool, moto_s3_server() as s3_url:
        venv = pool.submit(sdk_python)  # its skip, if any, is raised again by result()
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="moto",
                          aws_secret_access_key="moto")
        for bucket in ("models", BUCKET):
            s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(tar_gz(tiny_model("text-classification"), root / "model.tar.gz")), "models",
                       "my-bert-model/model.tar.gz")
        env = {"AWS_ENDPOINT_URL_S3": s3_url, "AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto",
               "AWS_DEFAULT_REGION": "us-east-1", "HF_HUB_CACHE": str(hub_cache(root / "hub", tiny_model)),
               "HF_HOME": str(root / "hf-home")}
        server = start_server(root / "home", env=env)
        try:
            client = server.client()
            client.create_endpoint({"name": CLASSIFIER, "model": str(tiny_model("text-classification")),
                                    "security": "protected"})
            client.create_endpoint({"name": GENERATOR, "model": str(tiny_model("text-generation")),
                                    "task": "text-generation", "security": "protected"})
            for name in (CLASSIFIER, GENERATOR):
                client.wait(name, timeout=600)
            python = venv.result()
            environment = flow_env(server, s3_url, aws_keys(server), root)
            given = json.dumps({"classifier": CLASSIFIER, "generator": GENERATOR, "sentences": SENTENCES})
            control = control_client(server, environment)
            for flow in FLOWS:
                models = len(control.list_models()["Models"])
                with open(root / f"{flow}.out", "w") as out, open(root / f"{flow}.err", "w") as err:
                    processes[flow] = subprocess.Popen(
                        [str(python), str(CLIENTS / "sagemaker_flows.py"), flow, given],
                        env=environment, cwd=root, stdout=out, stderr=err, text=True,
                    )
                if flow in DEPLOYING:
                    model_made(control, models, processes[flow])
            yield Flows(server=server, s3=s3, processes=processes, logs=root)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
            server.stop()


def direct(server: Server, name: str, inputs: Any) -> Any:
    """The endpoint's answer through hubserve's own invocation route, with the admin token."""
    response = httpx.post(f"{server.url}/endpoints/{name}/invocations", json={"inputs": inputs},
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def assert_deleted(server: Server, outcome: dict[str, Any]) -> None:
    """After delete_model() and delete_endpoint(), the control plane knows none of the three, with
    SageMaker's error code, and hubserve's API no longer lists the endpoint."""
    for kind, answer in outcome["after_delete"].items():
        assert answer.get("raised") == "ClientError", (kind, answer)
        assert "ValidationException" in answer["message"] and "Could not find" in answer["message"], (kind, answer)
    assert outcome["endpoint_name"] not in {item["spec"]["name"] for item in server.client().list_endpoints()}


def test_model_data_deploy_predict_delete(flows: Flows) -> None:
    outcome = flows.result("model-data")
    text = "Camera - You are awarded a SageMaker Camera for completing the task."
    assert nearly_equal(outcome["prediction"], direct(flows.server, CLASSIFIER, text))
    described = outcome["described"]
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointName"] == described["EndpointConfigName"] == outcome["endpoint_name"]
    assert outcome["model_name"] != outcome["endpoint_name"]  # the SDK stamps each with its own time
    assert_deleted(flows.server, outcome)


def test_hub_model_env_deploy_predict_delete(flows: Flows) -> None:
    outcome = flows.result("hub-model")
    answer = outcome["prediction"]
    context = "My Name is Philipp and I live in Nuremberg. This model is used with sagemaker for inference."
    assert set(answer) >= {"answer", "score", "start", "end"}, answer
    assert context[answer["start"]:answer["end"]] == answer["answer"]
    assert_deleted(flows.server, outcome)


def test_predictors_on_existing_endpoints(flows: Flows) -> None:
    outcome = flows.result("predictors")
    text = "I love using SageMaker with Hugging Face."
    expected = direct(flows.server, CLASSIFIER, text)
    assert nearly_equal(outcome["prediction"], expected)
    assert outcome["raw_type"] == "bytes" and nearly_equal(json.loads(outcome["raw"]), expected)
    assert len(outcome["tokens"]) == 8
    assert "".join(outcome["tokens"]) == outcome["generated_text"]
    # One set of endpoints: the control plane describes one that hubserve's API made.
    described = outcome["described"]
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointName"] == described["EndpointConfigName"] == CLASSIFIER


def test_async_deploy_predict_async_get_result_delete(flows: Flows) -> None:
    outcome = flows.result("async")
    inputs = [
        "it 's a charming and often affecting journey .",
        "it 's slow -- very , very slow",
        "the mesmerizing performances of the leads keep the film grounded and keep the audience riveted .",
        "the emotions are raw and will strike a nerve with anyone who 's ever had family trauma .",
    ]
    expected = direct(flows.server, CLASSIFIER, inputs)  # the same tiny model, under the guide's Hub id
    assert nearly_equal(outcome["result"], expected)
    assert outcome["at_once"] == "not yet" or nearly_equal(outcome["at_once"], expected), outcome["at_once"]
    output_prefix = f"s3://{BUCKET}/async_inference/output/"
    assert outcome["output_path"].startswith(output_prefix) and outcome["output_path"].endswith(".out")
    assert outcome["failure_path"].startswith(f"s3://{BUCKET}/async-endpoint-failures/")
    assert outcome["failure_path"].endswith("-error.out")
    # Exactly one answer object: the output, written where OutputLocation said; no failure object.
    output_key = outcome["output_path"].removeprefix(f"s3://{BUCKET}/")
    stored = flows.s3.get_object(Bucket=BUCKET, Key=output_key)["Body"].read()
    assert nearly_equal(json.loads(stored), expected)
    failure_key = outcome["failure_path"].removeprefix(f"s3://{BUCKET}/")
    assert flows.s3.list_objects_v2(Bucket=BUCKET, Prefix=failure_key)["KeyCount"] == 0
    assert_deleted(flows.server, outcome)



def test_transform_follows_the_log_and_writes_the_output(flows: Flows) -> None:
    outcome = flows.result("transform")
    expected = [direct(flows.server, CLASSIFIER, text)[0] for text in SENTENCES]
    assert nearly_equal(outcome["result"], expected)
    described = outcome["described"]
    assert described["TransformJobStatus"] == "Completed"
    assert described["TransformInput"]["SplitType"] == "Line" and described["BatchStrategy"] == "SingleRecord"
    # `wait(logs=True)` printed the job's log, read through CloudWatch Logs, line for line.
    log = httpx.get(f"{flows.server.url}/api/v1/jobs/{outcome['job_name']}/logs", params={"tail": 10000},
                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert log.status_code == 200, log.text
    printed = (flows.logs / "transform.out").read_text().splitlines()
    lines = [line for line in log.text.splitlines() if line.strip()]
    assert lines and all(line in printed for line in lines), (lines, printed)
    assert any("Completed" in line for line in lines)
