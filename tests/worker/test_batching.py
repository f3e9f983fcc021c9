"""The dynamic batcher and the batched task path: batches form, results reach the right caller,
parameters never mix, a poisoned input fails only its request, an idle replica never waits."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import nearly_equal
from hubserve.errors import BadRequest, HubserveError, ModelError, NotAcceptable
from hubserve.invocation import InvocationRequest
from hubserve.spec import EngineSpec
from hubserve.worker.batching import DynamicBatcher, Work
from hubserve.worker.engine import Engine
from hubserve.worker.handlers import TaskModel
from hubserve.worker.tasks import adapter_class
from hubserve.worker.tasks.base import LoadOptions


def run_batches(run: Callable[[list[Work]], list[Any]], works: list[Work], max_batch_size: int = 8,
                max_delay_s: float = 0.0, stagger_s: float = 0.0) -> tuple[list[Any], DynamicBatcher]:
    async def main() -> tuple[list[Any], DynamicBatcher]:
        batcher = DynamicBatcher(run, ThreadPoolExecutor(1), max_batch_size, max_delay_s)
        batcher.start()

        async def one(index: int, work: Work) -> Any:
            await asyncio.sleep(stagger_s * index)
            try:
                return await batcher.submit(work)
            except HubserveError as exc:
                return exc

        results = await asyncio.gather(*(one(i, w) for i, w in enumerate(works)))
        return list(results), batcher

    return asyncio.run(main())


def slow_echo(works: list[Work]) -> list[Any]:
    time.sleep(0.05)
    return [(w.inputs, len(works)) for w in works]


def test_batches_form_under_concurrency_and_results_go_back_to_their_caller() -> None:
    works = [Work(inputs=i, parameters={}) for i in range(20)]
    results, batcher = run_batches(slow_echo, works, max_batch_size=8)
    assert [inputs for inputs, _ in results] == list(range(20))
    assert batcher.stats.largest_batch == 8
    assert batcher.stats.batches < 20
    assert batcher.stats.requests == 20


def test_a_lone_request_runs_at_once_even_with_a_delay() -> None:
    started = []

    def run(works: list[Work]) -> list[Any]:
        started.append(time.monotonic())
        return [w.inputs for w in works]

    begin = time.monotonic()
    results, batcher = run_batches(run, [Work(inputs="x", parameters={})], max_delay_s=1.0)
    assert results == ["x"]
    assert started[0] - begin < 0.5  # did not sit out the 1 s batching delay
    assert batcher.stats.sizes == {1: 1}


def test_under_load_a_batch_waits_for_more_up_to_the_delay() -> None:
    works = [Work(inputs=i, parameters={}) for i in range(6)]
    # Requests trickle in 10 ms apart while a 50 ms batch runs: later batches gather several of them.
    results, batcher = run_batches(slow_echo, works, max_batch_size=4, max_delay_s=0.03, stagger_s=0.01)
    assert [inputs for inputs, _ in results] == list(range(6))
    assert batcher.stats.largest_batch >= 3


def closed_loop_sizes(callers: int, rounds: int, return_gap_s: float, max_delay_s: float) -> list[int]:
    """Batch sizes when `callers` clients each send `rounds` requests, one after another: after an answer, caller i
    sends its next request `i * return_gap_s` later (answers reach clients one by one, as over HTTP)."""
    sizes: list[int] = []

    def run(works: list[Work]) -> list[Any]:
        sizes.append(len(works))
        time.sleep(0.02)
        return [w.inputs for w in works]

    async def main() -> None:
        batcher = DynamicBatcher(run, ThreadPoolExecutor(1), callers, max_delay_s)
        batcher.start()

        async def caller(index: int) -> None:
            for _ in range(rounds):
                await batcher.submit(Work(inputs=index, parameters={}))
                await asyncio.sleep(index * return_gap_s)

        await asyncio.gather(*(caller(i) for i in range(callers)))

    asyncio.run(main())
    return sizes


def test_under_load_a_batch_waits_for_the_callers_the_last_one_answered() -> None:
    # The 8 callers come back spread over 28 ms: more than any fixed gap between arrivals, less than the delay.
    sizes = closed_loop_sizes(callers=8, rounds=5, return_gap_s=0.004, max_delay_s=0.2)
    assert sizes[1:] == [8] * 4  # the first batch is whoever came first; then every caller, every time


def test_callers_that_do_not_come_back_cost_at_most_the_delay() -> None:
    started = time.monotonic()
    sizes = closed_loop_sizes(callers=4, rounds=1, return_gap_s=0, max_delay_s=0.05)
    assert sum(sizes) == 4
    assert time.monotonic() - started < 1.0


def test_list_inputs_count_by_their_size() -> None:
    works = [Work(inputs=[1, 2, 3], parameters={}, size=3) for _ in range(4)]
    _, batcher = run_batches(slow_echo, works, max_batch_size=6)
    assert batcher.stats.largest_batch <= 6
    assert set(batcher.stats.sizes) <= {3, 6}


def test_cancelled_callers_are_dropped() -> None:
    seen: list[Any] = []

    def run(works: list[Work]) -> list[Any]:
        seen.extend(w.inputs for w in works)
        time.sleep(0.05)
        return [w.inputs for w in works]

    async def main() -> None:
        batcher = DynamicBatcher(run, ThreadPoolExecutor(1), 8, 0.0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(Work(inputs="first", parameters={})))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.submit(Work(inputs="gone", parameters={})))
        await asyncio.sleep(0)
        gone.cancel()
        assert await first == "first"
        assert await batcher.submit(Work(inputs="after", parameters={})) == "after"

    asyncio.run(main())
    assert "gone" not in seen


@pytest.fixture(scope="module")
def classifier(tiny_model: Callable[[str], Path]) -> TaskModel:
    import torch

    torch.set_num_threads(1)
    task = "text-classification"
    return TaskModel(task, adapter_class(task)(tiny_model(task), LoadOptions()))


def test_batched_outputs_equal_single_outputs(classifier: TaskModel) -> None:
    texts = ["a good day", "the movie was long and bad", "good", "a day"]
    single = [classifier.adapter.predict(t, {}) for t in texts]
    works = [Work(inputs=t, parameters={}) for t in texts]
    assert classifier.run_batch(works) == single


def test_parameters_never_mix(classifier: TaskModel) -> None:
    works = [Work(inputs="a good day", parameters={}), Work(inputs="a good day", parameters={"top_k": 2}),
             Work(inputs="a bad day", parameters={})]
    results = classifier.run_batch(works)
    assert len(results[0]) == 1 and len(results[1]) == 2 and len(results[2]) == 1
    assert results[1] == classifier.adapter.predict("a good day", {"top_k": 2})


def test_a_poisoned_input_fails_only_its_request(classifier: TaskModel) -> None:
    works = [Work(inputs="a good day", parameters={}), Work(inputs=12345, parameters={}),
             Work(inputs="a bad day", parameters={}), Work(inputs=["x", "y"], parameters={}, size=2)]
    results = classifier.run_batch(works)
    assert results[0] == classifier.adapter.predict("a good day", {})
    assert isinstance(results[1], BadRequest | ModelError)
    assert results[2] == classifier.adapter.predict("a bad day", {})
    assert results[3] == classifier.adapter.predict(["x", "y"], {})


@pytest.mark.parametrize("task, inputs, parameters", [
    ("token-classification", ["my name is clara", "a day in berkeley"], {}),
    ("fill-mask", ["the [MASK] is good", "a [MASK] day"], {}),
    ("feature-extraction", ["a good day", "the movie"], {}),
    ("sentence-embeddings", ["a good day", "the movie was long"], {}),
    ("sentence-similarity", [{"source_sentence": "a good day", "sentences": ["a day", "the movie"]},
                             {"source_sentence": "the movie was long", "sentences": ["long"]}], {}),
    ("sentence-ranking", [{"query": "a good day", "texts": ["a day", "the movie"]},
                          {"query": "the movie", "texts": ["long"]}], {}),
    ("zero-shot-classification", ["a good day", "the movie was long and bad"],
     {"candidate_labels": ["good", "bad", "long"]}),
    ("question-answering", [{"question": "Where do I live?", "context": "My name is Sarah and I live in London"},
                            {"question": "Who?", "context": "Clara"}], {}),
    ("question-answering", [{"question": "Where?", "context": "a b c d e f g h " * 60},
                            {"question": "Who?", "context": "Clara"}], {"top_k": 2, "max_seq_len": 64}),
    ("summarization", ["a good day", "the movie was long and bad"], {"max_new_tokens": 5}),
    ("text2text-generation", ["a good day", "the movie"], {"max_new_tokens": 5, "num_return_sequences": 2,
                                                             "num_beams": 2}),
])
def test_batchable_adapters_match_their_single_answers(task: str, inputs: list[Any], parameters: dict[str, Any],
                                                       tiny_model: Callable[[str], Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One forward for every input (the per-item fallback is off), and each answer as its request alone gets it."""
    adapter = adapter_class(task)(tiny_model(task), LoadOptions())
    monkeypatch.setattr(adapter, "predict", lambda *_: pytest.fail("predict_items ran the items one by one"))
    batched = adapter.predict_items(inputs, dict(parameters))
    monkeypatch.undo()
    for item, output in zip(inputs, batched, strict=True):
        single = adapter.predict(item, dict(parameters))
        assert nearly_equal(output, single), task



def test_model_runs_off_the_event_loop() -> None:
    loop_thread: list[int] = []
    model_thread: list[int] = []

    def run(works: list[Work]) -> list[Any]:
        model_thread.append(threading.get_ident())
        return [w.inputs for w in works]

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        batcher = DynamicBatcher(run, ThreadPoolExecutor(1), 4, 0.0)
        batcher.start()
        await batcher.submit(Work(inputs=1, parameters={}))

    asyncio.run(main())
    assert model_thread and model_thread[0] != loop_thread[0]


def test_answers_are_encoded_per_caller_in_the_batch(classifier: TaskModel) -> None:
    """Encoding happens with the batch, on the model thread: an Accept the answer has no form in fails its caller
    alone, and each caller gets its own type."""
    engine = Engine(classifier, EngineSpec())

    async def main() -> list[Any]:
        engine.start()
        accepts = ["application/json", "image/png", "text/csv"]
        requests = [InvocationRequest(body=b'{"inputs": "a good day"}', accept=accept) for accept in accepts]
        return await asyncio.gather(*(engine.invoke(r) for r in requests), return_exceptions=True)

    as_json, as_png, as_csv = asyncio.run(main())
    assert json.loads(as_json.body) == classifier.adapter.predict("a good day", {})
    assert isinstance(as_png, NotAcceptable)
    assert as_csv.content_type == "text/csv" and as_csv.body.startswith(b"label,score")
    assert engine.batcher is not None and engine.batcher.stats.sizes == {3: 1}  # one forward for all three


def test_a_request_cancelled_while_queued_is_dropped_not_run(classifier: TaskModel,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What a replica does to a request past the endpoint's timeout (it cancels the request's task): one still
    waiting for the model never reaches it, and the next caller is served."""
    seen: list[Any] = []
    busy = threading.Event()
    run_batch = classifier.run_batch

    def slow_run_batch(works: list[Work]) -> list[Any]:
        seen.extend(work.inputs for work in works)
        busy.wait(5)
        return run_batch(works)

    monkeypatch.setattr(classifier, "run_batch", slow_run_batch)
    engine = Engine(classifier, EngineSpec(max_batch_delay_ms=0))

    def invoke(text: str) -> asyncio.Future[Any]:
        return asyncio.ensure_future(engine.invoke(InvocationRequest(body=json.dumps({"inputs": text}).encode())))

    async def main() -> None:
        engine.start()
        first = invoke("a good day")
        await asyncio.sleep(0.05)  # the model runs it
        queued = invoke("a bad day")
        await asyncio.sleep(0.05)
        queued.cancel()
        busy.set()
        assert json.loads((await first).body) == classifier.adapter.predict("a good day", {})
        assert json.loads((await invoke("after")).body) == classifier.adapter.predict("after", {})
        assert queued.cancelled()

    asyncio.run(main())
    assert seen == ["a good day", "after"]
    assert engine.batcher is not None and engine.batcher.stats.requests == 2
