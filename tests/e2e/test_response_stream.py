"""InvokeEndpointWithResponseStream through boto3: a text-generation endpoint streams TGI's server-sent events, one
per PayloadPart, read with the AWS guides' line iterator; custom code's generators stream their chunks as they make
them; any other endpoint answers whole in one part; errors before the first part are InvokeEndpoint's, later ones a
ModelStreamError; a caller that goes away stops the work. The framing itself is checked against botocore's own
event-stream parser."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.eventstream import EventStream
from botocore.exceptions import ClientError, EventStreamError
from botocore.parsers import EventStreamJSONParser

from conftest import Server, sagemaker_runtime
from hubserve.api import eventstream

PROMPT = "My name is Sarah and I live in"
CUSTOM = "rs-custom"
# A SageMaker script whose predict_fn returns a generator, made to show when its chunks go out and what stops it.
STREAMING_INFERENCE = """
import json
import os
import time


def input_fn(body, content_type):
    return json.loads(body)


def predict_fn(data, model):
    return GENERATORS[data["inputs"]](**data.get("parameters", {}))


def model_fn(model_dir):
    return None


def wait_for(path, timeout=20):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear: the first chunk never reached the caller")
        time.sleep(0.01)


def words(count, gate=None):
    for index in range(count):
        yield f"word{index} "
        if gate and index == 0:
            wait_for(gate)  # the rest only once the caller holds the first


def objects(count):
    for index in range(count):
        yield {"index": index}


def fail_first():
    raise ValueError("the model refused this input")
    yield


def fail_later():
    yield "one "
    raise ValueError("the model broke mid-stream")


def endless(marker):
    try:
        while True:
            yield "tick "
            time.sleep(0.02)
    finally:
        with open(marker, "w") as closed:
            closed.write("closed")


GENERATORS = {"words": words, "objects": objects, "fail_first": fail_first, "fail_later": fail_later,
              "endless": endless}
"""


class LineIterator:
    """The AWS guides' helper: PayloadPart bytes cut into lines, however the parts split them."""

    def __init__(self, stream: Any) -> None:
        self.byte_iterator = iter(stream)
        self.buffer = io.BytesIO()
        self.read_pos = 0

    def __iter__(self) -> LineIterator:
        return self

    def __next__(self) -> bytes:
        while True:
            self.buffer.seek(self.read_pos)
            line = self.buffer.readline()
            if line and line[-1] == ord("\n"):
                self.read_pos += len(line)
                return line[:-1]
            chunk = next(self.byte_iterator)  # StopIteration ends the lines
            self.buffer.seek(0, io.SEEK_END)
            self.buffer.write(chunk["PayloadPart"]["Bytes"])


@pytest.fixture(scope="module")
def endpoints(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[dict[str, str]]:
    client = server.client()
    names = {"text-generation": "rs-gen", "text-classification": "rs-cls"}
    for task, name in names.items():
        client.create_endpoint({"name": name, "model": str(tiny_model(task)), "task": task, "dtype": "float32"})
    for name in names.values():
        client.wait(name, timeout=600)
    yield names
    for name in names.values():
        client.delete_endpoint(name)


@pytest.fixture(scope="module")
def custom(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = tmp_path_factory.mktemp("streaming")
    (model / "code").mkdir()
    (model / "code" / "inference.py").write_text(STREAMING_INFERENCE)
    client = server.client()
    client.create_endpoint({"name": CUSTOM, "model": str(model)})
    client.wait(CUSTOM, timeout=300)
    yield CUSTOM
    client.delete_endpoint(CUSTOM)


@pytest.fixture(scope="module")
def runtime(server: Server) -> Iterator[Any]:
    client = sagemaker_runtime(server.url)
    yield client
    client.close()


def stream(runtime: Any, name: str, inputs: str, **parameters: Any) -> Any:
    return runtime.invoke_endpoint_with_response_stream(
        EndpointName=name, ContentType="application/json",
        Body=json.dumps({"inputs": inputs, "parameters": parameters}))


def parts(response: Any) -> list[bytes]:
    return [event["PayloadPart"]["Bytes"] for event in response["Body"]]


def replica_stats(server: Server, name: str) -> dict[str, Any]:
    stats = httpx.get(f"{server.url}/api/v1/endpoints/{name}/stats",
                      headers={"authorization": f"Bearer {server.token}"}).json()
    replica: dict[str, Any] = stats["replicas"][0]
    return replica


def test_tokens_stream_as_tgi_events_in_payload_parts(server: Server, endpoints: dict[str, str]) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}, "stream": True}
    response = sagemaker_runtime(server.url).invoke_endpoint_with_response_stream(
        EndpointName=endpoints["text-generation"], ContentType="application/json", Body=json.dumps(body))
    assert response["ContentType"] == "text/event-stream"
    events = [json.loads(line.removeprefix(b"data:")) for line in LineIterator(response["Body"])
              if line.startswith(b"data:")]
    assert [event["index"] for event in events] == list(range(1, 9))
    whole = httpx.post(f"{server.url}/endpoints/{endpoints['text-generation']}/generate",
                       json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}).json()
    text = "".join(event["token"]["text"] for event in events)
    assert text == events[-1]["generated_text"] == whole["generated_text"]
    assert events[-1]["details"]["finish_reason"] == "length"


def test_other_tasks_answer_whole_in_one_part(server: Server, endpoints: dict[str, str]) -> None:
    runtime = sagemaker_runtime(server.url)
    body = json.dumps({"inputs": "I love this movie"})
    name = endpoints["text-classification"]
    response = runtime.invoke_endpoint_with_response_stream(EndpointName=name, ContentType="application/json",
                                                            Body=body)
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    # One line: the guides' line iterators (and the sagemaker SDK's, which loops on a last line without a newline)
    # read it whole.
    assert parts == [runtime.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=body)["Body"]
                     .read() + b"\n"]
    assert response["ContentType"] == "application/json"
    lines = list(LineIterator(runtime.invoke_endpoint_with_response_stream(
        EndpointName=name, ContentType="application/json", Body=body)["Body"]))
    assert [json.loads(line) for line in lines] == [json.loads(parts[0])]


def test_errors_before_the_first_part_are_invoke_endpoints(server: Server, endpoints: dict[str, str]) -> None:
    runtime = sagemaker_runtime(server.url)
    with pytest.raises(ClientError) as unknown:
        runtime.invoke_endpoint_with_response_stream(EndpointName="no-such-endpoint", Body=b'{"inputs": "x"}')
    assert unknown.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as bad:
        runtime.invoke_endpoint_with_response_stream(
            EndpointName=endpoints["text-generation"], ContentType="application/json",
            Body=json.dumps({"inputs": "x", "parameters": {"max_new_tokens": "ten"}}))
    assert bad.value.response["Error"]["Code"] == "ValidationError"
    assert "max_new_tokens" in bad.value.response["Error"]["Message"]


def parsed(frames: bytes) -> EventStream:
    """`frames` read by botocore as boto3 reads InvokeEndpointWithResponseStream's body."""
    operation = botocore.session.get_session().get_service_model("sagemaker-runtime").operation_model(
        "InvokeEndpointWithResponseStream")

    class Raw:
        def stream(self) -> Iterator[bytes]:
            yield frames

    return EventStream(Raw(), operation.output_shape.members["Body"], EventStreamJSONParser(), operation.name)


def test_frames_are_what_botocore_reads() -> None:
    frames = eventstream.payload_part(b"data: one\n\n") + eventstream.payload_part("é".encode())
    assert list(parsed(frames)) == [{"PayloadPart": {"Bytes": b"data: one\n\n"}},
                                    {"PayloadPart": {"Bytes": "é".encode()}}]
    failed = parsed(eventstream.payload_part(b"first") + eventstream.model_stream_error("the replica died"))
    events = iter(failed)
    assert next(events) == {"PayloadPart": {"Bytes": b"first"}}
    with pytest.raises(EventStreamError) as raised:
        next(events)
    assert raised.value.response["Error"] == {"Code": "ModelStreamError", "Message": "the replica died"}


def test_a_generator_streams_each_chunk_as_it_is_made(runtime: Any, custom: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    response = stream(runtime, custom, "words", count=4, gate=str(gate))
    assert response["ContentType"] == "application/json"  # the Accept's type, JSON by default
    events = iter(response["Body"])
    # The generator waits for the gate after its first chunk: that chunk arrives while it is still running.
    assert next(events) == {"PayloadPart": {"Bytes": b"word0 "}}
    gate.touch()
    assert [event["PayloadPart"]["Bytes"] for event in events] == [b"word1 ", b"word2 ", b"word3 "]


def test_chunk_encoding_and_content_type(runtime: Any, custom: str) -> None:
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=custom, ContentType="application/json", Accept="text/plain",
        Body=json.dumps({"inputs": "words", "parameters": {"count": 2}}))
    assert response["ContentType"] == "text/plain"
    assert parts(response) == [b"word0 ", b"word1 "]
    # Objects go out as JSON Lines, which the guides' line iterator cuts back into objects.
    lines = LineIterator(stream(runtime, custom, "objects", count=3)["Body"])
    assert [json.loads(line) for line in lines] == [{"index": 0}, {"index": 1}, {"index": 2}]


def test_invoke_endpoint_joins_a_generators_chunks(runtime: Any, custom: str) -> None:
    response = runtime.invoke_endpoint(EndpointName=custom, ContentType="application/json", Accept="text/plain",
                                       Body=json.dumps({"inputs": "words", "parameters": {"count": 3}}))
    assert response["Body"].read() == b"word0 word1 word2 "
    assert response["ContentType"].startswith("text/plain")


def test_a_generator_failing_before_its_first_chunk_is_a_model_error(runtime: Any, custom: str) -> None:
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        stream(runtime, custom, "fail_first")
    assert raised.value.response["Error"]["Code"] == "ModelError"
    assert raised.value.response["OriginalMessage"] == "the model refused this input"


def test_a_generator_failing_later_ends_with_a_model_stream_error(runtime: Any, custom: str) -> None:
    events = iter(stream(runtime, custom, "fail_later")["Body"])
    assert next(events) == {"PayloadPart": {"Bytes": b"one "}}
    with pytest.raises(EventStreamError) as raised:
        next(events)
    assert raised.value.response["Error"] == {"Code": "ModelStreamError", "Message": "the model broke mid-stream"}
    # The endpoint keeps serving.
    assert parts(stream(runtime, custom, "words", count=1)) == [b"word0 "]


def wait_until(done: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_caller_that_goes_away_stops_the_generator(server: Server, runtime: Any, custom: str,
                                                     tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    response = stream(runtime, custom, "endless", marker=str(marker))
    assert next(iter(response["Body"])) == {"PayloadPart": {"Bytes": b"tick "}}
    response["Body"].close()
    assert wait_until(marker.exists), "the generator was not closed when the caller went away"
    assert wait_until(lambda: replica_stats(server, custom)["in_flight"] == 0)


def test_a_caller_that_goes_away_stops_generation(server: Server, runtime: Any, endpoints: dict[str, str]) -> None:
    name = endpoints["text-generation"]
    cancelled = replica_stats(server, name)["generation"].get("cancelled", 0)
    response = stream(runtime, name, PROMPT, max_new_tokens=500, min_new_tokens=500, do_sample=False)
    next(iter(response["Body"]))
    response["Body"].close()

    def freed() -> bool:
        replica = replica_stats(server, name)
        return replica["in_flight"] == 0 and replica["generation"].get("running", 0) == 0

    assert wait_until(freed)
    assert replica_stats(server, name)["generation"].get("cancelled", 0) > cancelled


def test_aws_cli_v1_has_no_response_stream_command(tmp_path: Path) -> None:
    """AWS CLI v1 offers invoke-endpoint and invoke-endpoint-async only: this notices when it gains the command."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("aws")), "sagemaker-runtime", "invoke-endpoint-with-response-stream",
         "--endpoint-url", "http://127.0.0.1:9", "--endpoint-name", "x", "--body", "{}", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid choice" in result.stderr
