"""Batch transform jobs through the control API (/api/v1/jobs) end to end: a real server, real worker processes
(custom code that echoes each record, a tiny random classifier), inputs and outputs as local files and on moto's S3
server, each split type, batch strategy, filter and on_error mode, stopping, and a server killed mid-job."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from conftest import Server, start_server
from custom_models import write_echo_model
from sources_fixtures import moto_s3_server

S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ECHO = "jobs-echo"

# Writes each record's id to a file as it runs it (so a test sees how far a job got, and what ran twice), slowly.
COUNTING = '''
import os
import time


def model_fn(model_dir):
    return None


def predict_fn(data, model):
    with open(os.environ["COUNT_FILE"], "a") as handle:
        handle.write(f"{data['inputs']}\\n")
    time.sleep(float(os.environ.get("SECONDS_PER_RECORD", "0")))
    return {"id": data["inputs"]}
'''


def code_model(folder: Path, code: str) -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "inference.py").write_text(textwrap.dedent(code))
    return folder


class Jobs:
    """The jobs API as a test calls it."""

    def __init__(self, server: Server) -> None:
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                                 timeout=60)

    def create(self, spec: dict[str, Any]) -> httpx.Response:
        return self.http.post("/api/v1/jobs", json=spec)

    def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.create(spec)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def get(self, name: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/jobs/{name}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait(self, name: str, timeout: float = 180.0, until: Callable[[dict[str, Any]], bool] | None = None
             ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(name)
            if (until or ended)(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {name} still {self.get(name)['state']} after {timeout} s: {self.logs(name)}")

    def run(self, spec: dict[str, Any], state: str = "Completed") -> dict[str, Any]:
        self.start(spec)
        job = self.wait(spec["name"])
        assert job["state"] == state, (job, self.logs(spec["name"]))
        return job

    def logs(self, name: str) -> str:
        return self.http.get(f"/api/v1/jobs/{name}/logs", params={"tail": 1000}).text


def ended(job: dict[str, Any]) -> bool:
    return job["state"] in ("Completed", "Failed", "Stopped")


def lines(records: list[Any]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def answers(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def echoed(texts: list[str]) -> list[dict[str, Any]]:
    return [{"echo": text, "parameters": None, "custom_attributes": None} for text in texts]


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with moto_s3_server() as url:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        client.create_bucket(Bucket="jobs")
        client.meta.url = url  # type: ignore[attr-defined]
        yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: Any) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("jobs") / "home",
                           env={**S3_KEYS, "AWS_ENDPOINT_URL_S3": s3.meta.url})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def jobs(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    """The API, with the echo endpoint running (for jobs on a named endpoint)."""
    client = server.client()
    client.create_endpoint({"name": ECHO, "model": str(write_echo_model(tmp_path_factory.mktemp("echo")))})
    client.wait(ECHO, timeout=300)
    api = Jobs(server)
    yield api
    api.http.close()


@pytest.fixture(scope="module")
def echo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_echo_model(tmp_path_factory.mktemp("echo-transient"))


def test_multi_record_lines_on_transient_replicas(jobs: Jobs, server: Server, echo_model: Path,
                                                  tmp_path: Path) -> None:
    """A folder of files, each line a record, mini-batches on the job's own replicas: one answer per line in input
    order, under the output with each file's relative name; the replicas are not an endpoint and are gone after."""
    texts = [f"sentence {i}" for i in range(300)]
    source = tmp_path / "in"
    (source / "part").mkdir(parents=True)
    (source / "a.jsonl").write_bytes(lines([{"inputs": t} for t in texts[:200]]))
    # Blank lines are skipped (as SageMaker does); the last line has no line end.
    (source / "part" / "b.jsonl").write_bytes(lines([{"inputs": t} for t in texts[200:250]]) + b"\n\n"
                                              + lines([{"inputs": t} for t in texts[250:]]).rstrip(b"\n"))
    out = tmp_path / "out"
    job = jobs.run({"name": "multi-lines", "model": str(echo_model), "instance_count": 2, "input": str(source),
                    "output": str(out), "batch_strategy": "MultiRecord"})
    assert answers(out / "a.jsonl.out") == echoed(texts[:200])
    assert answers(out / "part" / "b.jsonl.out") == echoed(texts[200:])
    assert (out / "a.jsonl.out").read_bytes().endswith(b"}\n")
    assert sorted(p.name for p in out.rglob("*")) == ["a.jsonl.out", "b.jsonl.out", "part"]
    assert job["progress"] | {"records_per_s": None} == {
        "records_done": 300, "records_total": 300, "records_failed": 0, "files_done": 2, "files_total": 2,
        "records_per_s": None, "eta_s": None}
    assert job["started_at"] <= job["ended_at"]
    assert "multi-lines" not in {e["spec"]["name"] for e in server.client().list_endpoints()}
    assert not any(e["spec"]["name"].startswith("job-") for e in server.client().list_endpoints())
    log = jobs.logs("multi-lines")
    for event in ("started: 2 input file(s)", "replicas ready: 2 of 2", "file a.jsonl started",
                  "file part/b.jsonl finished: 100 record(s), 0 failed", "Completed: 300 record(s) done"):
        assert event in log, log
    assert all(line[:4].isdigit() and "T" in line.split(" ", 1)[0] for line in log.splitlines())
    assert not (server.home / "jobs" / "multi-lines").exists()


def test_single_record_on_a_running_endpoint_s3_to_s3(jobs: Jobs, s3: Any) -> None:
    texts = [f"s3 record {i}" for i in range(20)]
    s3.put_object(Bucket="jobs", Key="in/data-1.jsonl", Body=lines([{"inputs": t} for t in texts[:12]]))
    s3.put_object(Bucket="jobs", Key="in/data-2.jsonl", Body=lines([{"inputs": t} for t in texts[12:]]))
    s3.put_object(Bucket="jobs", Key="in/other.jsonl", Body=b'{"inputs": "not in the prefix"}\n')
    job = jobs.run({"name": "single-s3", "endpoint": ECHO, "input": "s3://jobs/in/data-", "output": "s3://jobs/out/",
                    "batch_strategy": "SingleRecord", "max_concurrent_transforms": 4})
    assert job["progress"]["files_total"] == 2
    first = s3.get_object(Bucket="jobs", Key="out/data-1.jsonl.out")
    assert first["ContentType"] == "application/json"
    assert [json.loads(x) for x in first["Body"].read().splitlines()] == echoed(texts[:12])
    second = s3.get_object(Bucket="jobs", Key="out/data-2.jsonl.out")["Body"].read()
    assert [json.loads(x) for x in second.splitlines()] == echoed(texts[12:])
    assert server_endpoint_still_serves(jobs)


def server_endpoint_still_serves(jobs: Jobs) -> bool:
    """A job on a named endpoint leaves it running."""
    response = jobs.http.get(f"/api/v1/endpoints/{ECHO}")
    return bool(response.json()["status"]["state"] == "running")


def test_split_none_each_file_is_one_record(jobs: Jobs, tmp_path: Path) -> None:
    """split_type None: a whole file is one record, even over many lines; assemble_with None: no line end."""
    source = tmp_path / "docs"
    source.mkdir()
    (source / "one.json").write_text('{\n  "inputs": "first\\ndocument"\n}\n')
    (source / "two.json").write_text('{"inputs": "second"}')
    out = tmp_path / "out"
    jobs.run({"name": "split-none", "endpoint": ECHO, "input": source.as_uri(), "output": out.as_uri(),
              "split_type": "None", "assemble_with": "None"})
    assert json.loads((out / "one.json.out").read_bytes()) == echoed(["first\ndocument"])[0]
    assert not (out / "two.json.out").read_bytes().endswith(b"\n")


def test_filters_and_join(jobs: Jobs, tmp_path: Path) -> None:
    """InputFilter picks what the model sees, JoinSource Input puts the answer beside the whole input, and
    OutputFilter keeps a part of the joined record."""
    source = tmp_path / "records.jsonl"
    source.write_bytes(lines([{"id": i, "payload": {"inputs": f"text {i}"}} for i in range(5)]))
    out = tmp_path / "out"
    jobs.run({"name": "filtered", "endpoint": ECHO, "input": str(source), "output": str(out),
              "data_processing": {"input_filter": "$.payload", "join_source": "Input",
                                  "output_filter": "$.SageMakerOutput.echo"}})
    assert answers(out / "records.jsonl.out") == [f"text {i}" for i in range(5)]
    joined = tmp_path / "joined"
    jobs.run({"name": "joined", "endpoint": ECHO, "input": str(source), "output": str(joined),
              "data_processing": {"input_filter": "$.payload", "join_source": "Input"}})
    first = answers(joined / "records.jsonl.out")[0]
    assert first == {"id": 0, "payload": {"inputs": "text 0"}, "SageMakerOutput": echoed(["text 0"])[0]}


def test_an_invalid_filter_is_a_400(jobs: Jobs, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines([{"inputs": "x"}]))
    response = jobs.create({"name": "bad-filter", "endpoint": ECHO, "input": str(source), "output": str(tmp_path),
                            "data_processing": {"input_filter": "$..[?(@.a)"}})
    assert response.status_code == 400, response.text
    assert jobs.http.get("/api/v1/jobs/bad-filter").status_code == 404


BAD_RECORDS = [{"inputs": "fine 0"}, {"inputs": "raise"}, {"inputs": "fine 2"}]


def bad_input(folder: Path) -> Path:
    """Line 2 makes the model raise, line 4 is not JSON, line 5 is blank, line 7 is over 1 MB."""
    folder.mkdir()
    path = folder / "bad.jsonl"
    path.write_bytes(lines(BAD_RECORDS) + b"{not json\n\n" + lines([{"inputs": "fine 5"}, {"inputs": "x" * (1 << 20)}]))
    return path


def test_on_error_skip_writes_errors_beside_the_output(jobs: Jobs, tmp_path: Path) -> None:
    source = bad_input(tmp_path / "in")
    out = tmp_path / "out"
    job = jobs.run({"name": "skipping", "endpoint": ECHO, "input": str(source), "output": str(out),
                    "on_error": "skip", "max_payload_mb": 1})
    assert answers(out / "bad.jsonl.out") == echoed(["fine 0", "fine 2", "fine 5"])
    errors = answers(out / "bad.jsonl.errors")
    assert [e["line"] for e in errors] == [2, 4, 7]
    assert "the model refused this input" in errors[0]["error"]
    assert errors[2]["error"].startswith("record at line 7 is 1.0 MB, over MaxPayloadInMB")
    assert (job["progress"]["records_done"], job["progress"]["records_failed"]) == (6, 3)
    assert "skipped bad.jsonl line 4" in jobs.logs("skipping")


def test_on_error_fail_names_the_file_and_line(jobs: Jobs, tmp_path: Path) -> None:
    source = bad_input(tmp_path / "in")
    out = tmp_path / "out"
    job = jobs.run({"name": "failing", "endpoint": ECHO, "input": str(source), "output": str(out),
                    "batch_strategy": "SingleRecord"}, state="Failed")
    assert job["failure_reason"].startswith("bad.jsonl line 2: "), job["failure_reason"]
    assert "the model refused this input" in job["failure_reason"]
    assert not out.exists()  # no half-written answers
    assert "Failed" in jobs.logs("failing").splitlines()[-1]


def test_engine_answers_as_the_endpoint_does(jobs: Jobs, server: Server, tiny_model: Callable[[str], Path],
                                             tmp_path: Path) -> None:
    """Records through a model's engine (batched) are answered as InvokeEndpoint answers each alone."""
    model = tiny_model("text-classification")
    texts = [f"a sentence number {i} " * (1 + i % 4) for i in range(40)]
    source = tmp_path / "texts.jsonl"
    source.write_bytes(lines([{"inputs": t} for t in texts]))
    out = tmp_path / "out"
    jobs.run({"name": "classify", "model": str(model), "task": "text-classification", "input": str(source),
              "output": str(out)})
    client = server.client()
    client.create_endpoint({"name": "classify-check", "model": str(model), "task": "text-classification"})
    client.wait("classify-check", timeout=300)
    try:
        alone = [json.loads(client.invoke("classify-check", json.dumps({"inputs": t}).encode())[0]) for t in texts]
    finally:
        client.delete_endpoint("classify-check")
    from conftest import nearly_equal

    assert nearly_equal(answers(out / "texts.jsonl.out"), alone)


def test_a_gguf_job_runs_for_throughput_unless_it_asks_for_latency(jobs: Jobs, tiny_model: Callable[[str], Path],
                                                                  tmp_path: Path) -> None:
    """`auto` serves a GGUF file on llama.cpp for an endpoint (one fast stream), but a job's own replicas aim at
    throughput: torch's continuous batching; a job that names `engine.goal: latency` gets llama.cpp, and both answer
    every record."""
    from tiny_models import TINY_GGUF_FILE

    gguf = tiny_model("text-generation-gguf") / TINY_GGUF_FILE
    source = tmp_path / "prompts.jsonl"
    source.write_bytes(lines([{"inputs": f"prompt {i}", "parameters": {"max_new_tokens": 4, "do_sample": False}}
                              for i in range(6)]))
    for name, engine, backend in (("gguf-throughput", {}, "torch"),
                                  ("gguf-latency", {"goal": "latency"}, "llamacpp")):
        out = tmp_path / name
        job = jobs.run({"name": name, "model": str(gguf), "task": "text-generation", "engine": engine,
                        "input": str(source), "output": str(out)})
        assert job["state"] == "Completed", job
        assert f"replicas ready: 1 of 1 ({backend} backend)" in jobs.logs(name)
        assert len(answers(out / "prompts.jsonl.out")) == 6


def test_missing_input_is_a_400_and_nothing_is_kept(jobs: Jobs, tmp_path: Path) -> None:
    for source in (str(tmp_path / "absent.jsonl"), "s3://jobs/no-such-prefix/", str(tmp_path)):
        response = jobs.create({"name": "no-input", "endpoint": ECHO, "input": source, "output": str(tmp_path)})
        assert response.status_code == 400, response.text
        assert source.rstrip("/").rsplit("/", 1)[-1] in response.json()["error"]
    assert jobs.http.get("/api/v1/jobs/no-input").status_code == 404
    assert "no-input" not in {j["spec"]["name"] for j in jobs.http.get("/api/v1/jobs").json()["jobs"]}


def test_refusals(jobs: Jobs, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines([{"inputs": "x"}]))
    spec = {"name": "refusals", "endpoint": ECHO, "input": str(source), "output": str(tmp_path / "out")}
    assert jobs.create({**spec, "endpoint": "no-such-endpoint"}).status_code == 404
    assert jobs.create({**spec, "model": "x"}).status_code == 400  # both a model and an endpoint
    jobs.run(spec)
    again = jobs.create(spec)
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    assert jobs.http.post("/api/v1/jobs/refusals/stop").status_code == 409
    assert jobs.http.get("/api/v1/jobs/nope").status_code == 404
    assert jobs.http.post("/api/v1/jobs/nope/stop").status_code == 404
    assert jobs.http.get("/api/v1/jobs/nope/logs").status_code == 404
    assert httpx.get(jobs.http.base_url.join("/api/v1/jobs")).status_code == 401
    listed = jobs.http.get("/api/v1/jobs").json()["jobs"]
    assert "refusals" in {j["spec"]["name"] for j in listed}


def test_unwritable_output_fails_the_job_with_the_reason(jobs: Jobs, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines([{"inputs": "x"}]))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    job = jobs.run({"name": "unwritable", "endpoint": ECHO, "input": str(source), "output": str(blocker / "out")},
                   state="Failed")
    assert job["failure_reason"].startswith(f"could not write {blocker}/out/in.jsonl.out: "), job["failure_reason"]
    assert blocker.read_text() == "not a folder"


def test_stop(jobs: Jobs, server: Server, tmp_path: Path) -> None:
    counts = tmp_path / "seen"
    model = code_model(tmp_path / "slow", COUNTING)
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines([{"inputs": i} for i in range(1000)]))
    jobs.start({"name": "stopped", "model": str(model), "env": {"COUNT_FILE": str(counts), "SECONDS_PER_RECORD":
                                                                 "0.05", "API_TOKEN": "secret-value"},
                "input": str(source), "output": str(tmp_path / "out"), "batch_strategy": "SingleRecord"})
    job = jobs.wait("stopped", until=lambda j: j["progress"]["records_done"] > 0)
    assert job["state"] == "InProgress" and job["progress"]["records_total"] == 1000
    assert job["progress"]["records_per_s"] > 0 and job["progress"]["eta_s"] > 0
    assert job["spec"]["env"]["API_TOKEN"] == "***"
    stopping = jobs.http.post("/api/v1/jobs/stopped/stop")
    assert stopping.status_code == 200 and stopping.json()["state"] in ("Stopping", "Stopped")
    job = jobs.wait("stopped")
    assert job["state"] == "Stopped" and job["progress"]["records_done"] < 1000
    assert not (tmp_path / "out").exists()
    assert jobs.http.post("/api/v1/jobs/stopped/stop").status_code == 409
    seen = len(counts.read_text().splitlines())
    time.sleep(1)
    assert len(counts.read_text().splitlines()) == seen, "the job's replicas still run after the stop"


def test_a_killed_server_resumes_every_record_exactly_once(tmp_path: Path) -> None:
    """SIGKILL mid-job, restart on the same home: the job goes on from its last checkpoint, and its output holds
    every line once, in order. Records run after the last checkpoint ran again; none before it did."""
    counts = tmp_path / "seen"
    model = code_model(tmp_path / "counting", COUNTING)
    source = tmp_path / "in.jsonl"
    total = 400
    source.write_bytes(lines([{"inputs": i} for i in range(total)]))
    out = tmp_path / "out"
    home = tmp_path / "home"
    spec = {"name": "survivor", "model": str(model), "env": {"COUNT_FILE": str(counts), "SECONDS_PER_RECORD": "0.01"},
            "input": str(source), "output": str(out), "batch_strategy": "MultiRecord"}
    first = start_server(home)
    try:
        api = Jobs(first)
        api.start({**spec, "max_payload_mb": 1})
        before = api.wait("survivor", until=lambda j: j["progress"]["records_done"] >= 50)
        assert before["state"] == "InProgress"
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        api.http.close()
    finally:
        first.stop()
    done_before = before["progress"]["records_done"]
    assert done_before < total and not out.exists()
    second = start_server(home)
    try:
        api = Jobs(second)
        job = api.wait("survivor")
        log = api.logs("survivor")
        api.http.close()
    finally:
        second.stop()
    assert job["state"] == "Completed", (job, log)
    assert "resumed at record" in log
    assert answers(out / "in.jsonl.out") == [{"id": i} for i in range(total)]
    seen = [int(x) for x in counts.read_text().split()]
    assert set(seen) == set(range(total))
    ran_twice = {i for i in set(seen) if seen.count(i) > 1}
    assert all(i >= done_before for i in ran_twice), "a record checkpointed before the kill ran again"
