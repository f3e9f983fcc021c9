"""The durable queue of asynchronous requests: each claimed once, an id queued once, nothing lost to a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubserve.serving.async_queue import DONE_RETENTION_S, AsyncQueue, AsyncRequest, output_location
from hubserve.spec import AsyncInferenceSpec
from hubserve.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "hubserve.db")
    yield opened
    opened.close()


def request(request_id: str, endpoint: str = "e", created_at: float | None = None, ttl_s: float = 600,
            body: bytes = b"{}") -> AsyncRequest:
    return AsyncRequest(endpoint=endpoint, id=request_id, input_location=None, body=body, content_type=None,
                        accept="application/json", attributes={"X-Amzn-SageMaker-Inference-Id": request_id},
                        output_location=f"file:///out/{request_id}.out",
                        failure_location=f"file:///out/{request_id}-error.out", ttl_s=ttl_s, timeout_s=900,
                        created_at=time.time() if created_at is None else created_at)


def test_an_id_is_queued_once(store: Store) -> None:
    queue = AsyncQueue(store)
    first = queue.submit(request("a", body=b"first"))
    again = queue.submit(request("a", body=b"second"))
    assert again.body == first.body == b"first"
    assert len(queue.claim("e", 10, time.time())) == 1
    assert queue.submit(request("a", endpoint="other")).endpoint == "other"  # ids are per endpoint


def test_claims_take_each_request_once_oldest_first(store: Store) -> None:
    queue = AsyncQueue(store)
    now = time.time()
    for index in range(5):
        queue.submit(request(f"r{index}", created_at=now - 10 + index))
    assert [r.id for r in queue.claim("e", 2, now)] == ["r0", "r1"]
    assert [r.id for r in queue.claim("e", 10, now)] == ["r2", "r3", "r4"]
    assert queue.claim("e", 10, now) == []
    assert queue.backlog("e").model_dump() == {"queued": 0, "running": 5, "oldest_age_s": pytest.approx(10, abs=1)}


def test_retry_later_waits_and_counts(store: Store) -> None:
    queue = AsyncQueue(store)
    queue.submit(request("r"))
    claimed = queue.claim("e", 1, time.time())[0]
    queue.retry_later(claimed, 60, counts=True)
    assert queue.claim("e", 1, time.time()) == []
    again = queue.claim("e", 1, time.time() + 61)[0]
    assert again.attempts == 1


def test_expired_claims_ignore_the_rest(store: Store) -> None:
    queue = AsyncQueue(store)
    now = time.time()
    queue.submit(request("old", created_at=now - 120, ttl_s=60))
    queue.submit(request("young", created_at=now, ttl_s=60))
    expired = queue.claim("e", 10, now, expired_only=True)
    assert [r.id for r in expired] == ["old"]
    assert expired[0].expired(now)


def test_restart_requeues_running_requests_marked_resumed(tmp_path: Path) -> None:
    path = tmp_path / "hubserve.db"
    store = Store(path)
    queue = AsyncQueue(store)
    for index, name in enumerate(("done", "running", "queued")):
        queue.submit(request(name, created_at=time.time() + index / 100))
    done, running = queue.claim("e", 2, time.time() + 1)
    queue.finish(done, "output")
    store.close()
    reopened = Store(path)  # a restart: the same database, a new process
    queue = AsyncQueue(reopened)
    queue.recover()
    claimed = {r.id: r for r in queue.claim("e", 10, time.time() + 1)}
    assert set(claimed) == {"running", "queued"}
    assert claimed["running"].resumed and not claimed["queued"].resumed
    assert claimed["running"].body == b"{}"  # inline bodies survive
    reopened.close()


def test_drop_keeps_the_requests_of_a_new_endpoint_of_the_same_name(store: Store) -> None:
    queue = AsyncQueue(store)
    now = time.time()
    queue.submit(request("waiting", created_at=now - 5))
    queue.submit(request("finished", created_at=now - 4))
    queue.finish(queue.claim("e", 2, now)[1], "output")
    queue.submit(request("new", created_at=now + 1))
    assert [r.id for r in queue.drop("e", now)] == ["waiting"]  # those not done
    assert [r.id for r in queue.claim("e", 10, now + 2)] == ["new"]


def test_done_requests_are_kept_for_a_while(store: Store) -> None:
    queue = AsyncQueue(store)
    queue.submit(request("r", body=b"first"))
    queue.finish(queue.claim("e", 1, time.time())[0], "output")
    queue.purge("e", time.time())
    # Sent again within the retention: the request done already, not a new one (its body is no longer kept).
    assert queue.submit(request("r", body=b"again")).body is None
    assert queue.claim("e", 1, time.time()) == []
    queue.purge("e", time.time() + DONE_RETENTION_S + 1)
    assert queue.endpoints() == set()


def test_output_location() -> None:
    settings = AsyncInferenceSpec(output_path="s3://b/out/")
    assert output_location(settings, "id") == "s3://b/out/id.out"
    assert output_location(settings, "id", "/2026/a/", "f.json") == "s3://b/out/2026/a/f.json"
