"""RECORDS: a batch transform's mini-batch goes to a real replica in one message and comes back with one result per
record, each exactly what the DEFAULT route answers for that record alone, or its error with its status; a bad
record never fails its neighbours. Embeddings and a classifier run their records in the dynamic batcher's batches,
text generation (torch, and a GGUF on llama.cpp) in the continuous-batching engine's, custom code each record as its
own request. The endpoint's payload limit holds per record, a mini-batch larger than the replica's generation
concurrency waits its turn instead of failing, and a replica dying under a message is a ReplicaLost to retry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from custom_models import write_echo_model
from hubserve.errors import HubserveError, ReplicaLost
from hubserve.invocation import (
    InvocationRequest,
    RecordResult,
    Route,
    decode_record_results,
    encode_record_results,
    pack_frames,
    records_request,
    unpack_frames,
)
from hubserve.serving.context import ServingContext
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.hub import WorkerHub
from hubserve.serving.spawner import Spawner
from hubserve.spec import EndpointSpec, EndpointState, EndpointStatus, EngineSpec
from tiny_models import TINY_GGUF_FILE

T = TypeVar("T")
SENTENCES = ["the cat sat on the mat", "a quick brown fox", "hello", "records travel together in one message",
             "batch transform", "the last one"]
GREEDY = {"max_new_tokens": 6, "do_sample": False}


class Replicas:
    """Real replicas of endpoints on an event loop of their own, as the server runs them (zygote and worker hub)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.context = ServingContext(hub=WorkerHub(), spawner=Spawner(folder / "zygote.log"), logs_dir=folder,
                                      models_dir=folder, drain_timeout_s=1, save=lambda spec, status: None)
        self.runtimes: list[EndpointRuntime] = []
        self.run(self._start())

    async def _start(self) -> None:
        await self.context.hub.start()
        self.context.spawner.start_zygote()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def endpoint(self, name: str, model: Path, **spec: Any) -> EndpointRuntime:
        """A running endpoint of one replica."""
        runtime = EndpointRuntime(EndpointSpec(name=name, model=str(model), **spec), EndpointStatus(), self.context)
        self.runtimes.append(runtime)
        self.run(self._deploy(runtime))
        assert runtime.status.state == EndpointState.running, runtime.status.message
        return runtime

    @staticmethod
    async def _deploy(runtime: EndpointRuntime) -> None:
        runtime.deploy()
        while runtime.status.state in (EndpointState.initializing, EndpointState.pending):
            await asyncio.sleep(0.05)

    def records(self, runtime: EndpointRuntime, records: list[bytes], content_type: str = "application/json",
                accept: str = "application/json") -> list[RecordResult]:
        return self.run(runtime.invoke_records(records, content_type, accept, 120))

    def alone(self, runtime: EndpointRuntime, record: bytes, content_type: str = "application/json",
              accept: str = "application/json") -> RecordResult:
        """What the DEFAULT route answers for `record` sent by itself."""
        try:
            answer = self.run(runtime.invoke(InvocationRequest(record, content_type, accept), 120))
        except HubserveError as exc:
            return RecordResult(ok=False, status=exc.status, message=exc.message)
        return RecordResult(ok=True, body=answer.body, content_type=answer.content_type)

    def stats(self, runtime: EndpointRuntime) -> dict[str, Any]:
        return self.run(runtime.stats())[0]

    def close(self) -> None:
        async def stop() -> None:
            for runtime in self.runtimes:
                await runtime.stop()
            await self.context.hub.close()
            await self.context.spawner.close()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    running = Replicas(tmp_path_factory.mktemp("records-route"))
    yield running
    running.close()


def inputs(text: str, **parameters: Any) -> bytes:
    return orjson.dumps({"inputs": text, **({"parameters": parameters} if parameters else {})})


def assert_as_alone(replicas: Replicas, runtime: EndpointRuntime, records: list[bytes], **types: str) -> None:
    """Each record's result is what the DEFAULT route gives it alone."""
    results = replicas.records(runtime, records, **types)
    assert len(results) == len(records)
    for record, result in zip(records, results, strict=True):
        assert result == replicas.alone(runtime, record, **types), record


def test_the_framing_round_trips() -> None:
    records = [b"", b"a", b'{"inputs": "x"}', bytes(range(256)) * 3]
    request = records_request(records, "text/csv", "application/json")
    assert request.route is Route.RECORDS and unpack_frames(request.body) == records
    assert InvocationRequest.from_header(request.header(), request.body).route is Route.RECORDS
    results = [RecordResult(ok=True, body=b"[1]", content_type="application/json"),
               RecordResult(ok=False, status=400, message="bad record")]
    assert decode_record_results(encode_record_results(results).body) == results
    with pytest.raises(ValueError, match="past the end"):
        unpack_frames(pack_frames([b"abcdef"])[:-1])


def test_embeddings_answer_each_record_as_alone_in_shared_batches(replicas: Replicas,
                                                                   tiny_model: Callable[[str], Path]) -> None:
    runtime = replicas.endpoint("records-embeddings", tiny_model("sentence-embeddings"),
                                engine={"backend": "torch", "max_batch_size": 8})
    records = [inputs(text) for text in SENTENCES]
    records[2] = b'{"inputs": "broken'  # not JSON: its own 400
    records.insert(4, b'{"text": "no inputs"}')
    results = replicas.records(runtime, records)
    assert [r.status for r in results] == [200, 200, 400, 200, 400, 200, 200]
    assert "inputs" in results[4].message
    # All records were submitted at once: the batcher ran them in batches larger than one.
    assert replicas.stats(runtime)["batching"]["largest_batch"] > 1
    assert_as_alone(replicas, runtime, records)
    assert_as_alone(replicas, runtime, records, accept="text/csv")


def test_a_classifier_reads_csv_records_and_answers_in_csv(replicas: Replicas,
                                                           tiny_model: Callable[[str], Path]) -> None:
    runtime = replicas.endpoint("records-classifier", tiny_model("text-classification"),
                                engine={"backend": "torch"})
    records = [b"inputs\n" + text.encode() for text in SENTENCES[:3]] + [inputs("JSON is no CSV")]
    assert_as_alone(replicas, runtime, records, content_type="text/csv", accept="text/csv")
    results = replicas.records(runtime, records, content_type="text/csv", accept="text/csv")
    assert [r.status for r in results] == [200, 200, 200, 400] and results[0].content_type == "text/csv"
    assert_as_alone(replicas, runtime, [inputs(text) for text in SENTENCES] + [inputs("x", top_k=-3)])


def test_generation_on_torch_runs_records_as_one_continuous_batch(replicas: Replicas,
                                                                  tiny_model: Callable[[str], Path]) -> None:
    # max_concurrent_requests 3 under 7 records: they wait for a slot rather than failing with a 429.
    runtime = replicas.endpoint("records-generation", tiny_model("text-generation"),
                                engine={"backend": "torch", "max_concurrent_requests": 3})
    records = [inputs(text, **GREEDY) for text in SENTENCES] + [inputs("bad", max_new_tokens="many")]
    results = replicas.records(runtime, records)
    assert [r.ok for r in results] == [True] * len(SENTENCES) + [False] and results[-1].status == 400
    counters = replicas.stats(runtime)["generation"]
    assert counters["max_batch_size"] > 1 and counters["finished"] >= len(SENTENCES)
    assert_as_alone(replicas, runtime, records)


def test_generation_on_llama_cpp_answers_as_alone(replicas: Replicas, tiny_model: Callable[[str], Path]) -> None:
    # Batch-invariant: by default (flash attention on, as llama-server) a row's tokens may change beside others.
    runtime = replicas.endpoint("records-gguf", tiny_model("text-generation-gguf") / TINY_GGUF_FILE,
                                task="text-generation", engine=EngineSpec(batch_invariant=True))
    assert runtime.status.backend == "llamacpp"
    records = [inputs(text, **GREEDY) for text in SENTENCES] + [inputs("x", num_beams=2)]
    results = replicas.records(runtime, records)
    assert [r.ok for r in results] == [True] * len(SENTENCES) + [False]
    assert replicas.stats(runtime)["generation"]["max_batch_size"] > 1
    assert_as_alone(replicas, runtime, records)


def test_custom_code_takes_each_record_as_its_own_request(replicas: Replicas, tmp_path: Path) -> None:
    runtime = replicas.endpoint("records-custom", write_echo_model(tmp_path / "echo"), max_payload_bytes=100)
    records = [inputs("one"), inputs("raise"), b"not json", inputs("two", k=1), inputs("x" * 120), inputs("three")]
    results = replicas.records(runtime, records)
    assert [r.status for r in results] == [200, 424, 400, 200, 413, 200]
    assert orjson.loads(results[3].body)["parameters"] == {"k": 1}
    assert results[1].message == "the model refused this input"
    assert "over this endpoint's limit of 100 bytes" in results[4].message
    # Records together over the payload limit go in several messages; each answer stays in its place.
    many = [inputs(f"record {i:02d}") for i in range(12)]
    assert [orjson.loads(r.body)["echo"] for r in replicas.records(runtime, many)] == [
        f"record {i:02d}" for i in range(12)]
    assert_as_alone(replicas, runtime, [r for r in records if len(r) <= 100])


def test_a_replica_dying_under_a_message_is_replica_lost(replicas: Replicas, tmp_path: Path) -> None:
    runtime = replicas.endpoint("records-crash", write_echo_model(tmp_path / "crash"))
    with pytest.raises(ReplicaLost) as lost:
        replicas.records(runtime, [inputs("one"), inputs("crash"), inputs("two")])
    assert lost.value.status == 503 and lost.value.retry_after == 1
