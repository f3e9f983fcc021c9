"""GET /metrics end to end: Prometheus text that prometheus_client's parser reads, with the exact counts of the calls
made, the replicas' batching and generation histograms, and the admin token unless the metrics are public."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from conftest import ADMIN_TOKEN, Server, running_endpoints, start_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
INVOCATIONS = "/endpoints/{name}/invocations"
GOOD, BAD = 5, 3


def samples(url: str, headers: dict[str, str] | None = None) -> list[Sample]:
    response = httpx.get(f"{url}/metrics", headers=ADMIN if headers is None else headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float | None:
    """The one sample `name` with exactly these labels (None if absent)."""
    matching = [s.value for s in found if s.name == name and s.labels == labels]
    assert len(matching) <= 1
    return matching[0] if matching else None


def scraped(url: str, name: str, expected: float, **labels: str) -> list[Sample]:
    """The samples once `name{labels}` reads `expected`: a call is recorded as its answer ends, just after the
    client has it."""
    deadline = time.monotonic() + 5
    while True:
        found = samples(url)
        if value(found, name, **labels) == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="module")
def classifier(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[str]:
    with running_endpoints(server, [{"name": "metered", "model": str(tiny_model("text-classification"))}]):
        yield "metered"


@pytest.fixture(scope="module")
def generator(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[str]:
    with running_endpoints(server, [{"name": "metered-lm", "model": str(tiny_model("text-generation")),
                                      "task": "text-generation", "dtype": "float32"}]):
        yield "metered-lm"


def test_requests_are_counted_by_endpoint_route_and_status(server: Server, classifier: str) -> None:
    url = f"{server.url}/endpoints/{classifier}/invocations"
    for index in range(GOOD):
        assert httpx.post(url, json={"inputs": f"a fine day {index}"}, timeout=60).status_code == 200
    for _ in range(BAD):
        response = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 400
    for index in range(4):  # unknown endpoints (SageMaker answers 400) are not labels of their own
        missing = httpx.post(f"{server.url}/endpoints/no-such-{index}/invocations", json={"inputs": "x"})
        assert missing.status_code == 400

    found = scraped(server.url, "hubserve_requests_total", BAD, endpoint=classifier, route=INVOCATIONS, status="400")
    assert value(found, "hubserve_requests_total", endpoint=classifier, route=INVOCATIONS, status="200") == GOOD
    assert value(found, "hubserve_requests_total", endpoint=classifier, route=INVOCATIONS, status="400") == BAD
    assert value(found, "hubserve_request_duration_seconds_count", endpoint=classifier, route=INVOCATIONS) == GOOD + BAD
    assert (value(found, "hubserve_request_duration_seconds_bucket", endpoint=classifier, route=INVOCATIONS,
                  le="+Inf") == GOOD + BAD)
    assert (value(found, "hubserve_requests_total", endpoint="", route=INVOCATIONS, status="400") or 0) >= 4
    assert not [s for s in found if s.labels.get("endpoint", "").startswith("no-such")]
    assert all("/endpoints/metered" not in s.labels.get("route", "") for s in found)  # templates, not paths

    # the replica's dynamic batcher: every good call waited in its queue and ran in some batch
    assert value(found, "hubserve_queue_wait_seconds_count", endpoint=classifier) == GOOD
    batches = value(found, "hubserve_batch_size_count", endpoint=classifier)
    assert batches is not None and 0 < batches <= GOOD
    assert value(found, "hubserve_batch_size_sum", endpoint=classifier) == GOOD

    assert value(found, "hubserve_endpoint_state", endpoint=classifier, state="running") == 1
    assert value(found, "hubserve_endpoint_state", endpoint=classifier, state="failed") == 0
    assert value(found, "hubserve_replicas", endpoint=classifier, state="ready") == 1
    assert value(found, "hubserve_replicas", endpoint=classifier, state="starting") == 0
    assert value(found, "hubserve_in_flight_requests", endpoint=classifier) == 0
    assert value(found, "hubserve_held_requests", endpoint=classifier) == 0


def test_a_stream_counts_its_tokens_and_their_latencies(server: Server, generator: str) -> None:
    before = samples(server.url)  # a replica may warm up with a generation of its own as it loads

    def added(found: list[Sample], name: str) -> float:
        return (value(found, name, endpoint=generator) or 0) - (value(before, name, endpoint=generator) or 0)

    body = {"inputs": "the day is", "parameters": {"max_new_tokens": 6, "do_sample": False}}
    with httpx.stream("POST", f"{server.url}/endpoints/{generator}/generate_stream", json=body,
                      timeout=120) as response:
        assert response.status_code == 200
        tokens = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line]
    assert tokens

    route = "/endpoints/{name}/generate_stream"
    found = scraped(server.url, "hubserve_requests_total", 1, endpoint=generator, route=route, status="200")
    assert value(found, "hubserve_requests_total", endpoint=generator, route=route, status="200") == 1
    assert added(found, "hubserve_generated_tokens_total") == len(tokens)
    assert added(found, "hubserve_time_to_first_token_seconds_count") == 1
    assert added(found, "hubserve_inter_token_latency_seconds_count") == len(tokens) - 1
    # the stream was timed to its end, after its first token
    duration = value(found, "hubserve_request_duration_seconds_sum", endpoint=generator, route=route)
    assert duration is not None and duration >= added(found, "hubserve_time_to_first_token_seconds_sum")


def test_metrics_need_the_admin_token(server: Server) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer hs_wrong"}).status_code == 403
    assert httpx.get(f"{server.url}/api/v1/metrics", headers=ADMIN).status_code == 404


def test_public_metrics_need_no_token(tmp_path: Path) -> None:
    public = start_server(tmp_path / "home", env={"HUBSERVE_PUBLIC_METRICS": "1"})
    try:
        response = httpx.get(f"{public.url}/metrics")
        assert response.status_code == 200
        families = {family.name: family.type for family in text_string_to_metric_families(response.text)}
        assert families["hubserve_requests"] == "counter"
        assert families["hubserve_request_duration_seconds"] == "histogram"
    finally:
        public.stop()
