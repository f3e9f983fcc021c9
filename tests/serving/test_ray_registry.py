"""The registry the owner publishes to and data-plane servers long-poll (the actor's class, run here without Ray):
a poll answers at once when a newer version is there, waits for the next publish otherwise, and gives up after its
timeout with the same version."""

from __future__ import annotations

import asyncio

from hubserve.serving.ray_registry import Registry, Snapshot, snapshot_of
from hubserve.spec import Endpoint, EndpointSpec, EndpointStatus
from hubserve.store import TokenRecord


def test_a_poll_answers_at_once_with_a_newer_version_and_waits_for_the_next_one_otherwise() -> None:
    async def main() -> None:
        registry = Registry()
        assert await registry.wait(0, 0.01) == (0, Snapshot().model_dump_json())  # nothing published: timed out
        assert await registry.publish("one") == 1
        assert await registry.wait(0, 60) == (1, "one")
        waiting = [asyncio.ensure_future(registry.wait(1, 60)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        await registry.publish("two")
        assert await asyncio.gather(*waiting) == [(2, "two")] * 3

    asyncio.run(main())


def test_a_snapshot_holds_bearer_token_digests_and_masked_secrets_only() -> None:
    bearer = TokenRecord(id="b", name="b", digest="d1", created_at=0.0)
    aws = TokenRecord(id="HSAKX", name="k", digest="", created_at=0.0, kind="aws")
    spec = EndpointSpec(name="e", model="m", env={"HF_TOKEN": "hf_secret_value"})
    endpoint = Endpoint(spec=spec, status=EndpointStatus())
    raw = snapshot_of("http://owner:8080", "admin-digest", [bearer, aws], [endpoint])
    snapshot = Snapshot.model_validate_json(raw)
    assert [t.id for t in snapshot.tokens] == ["b"]
    assert snapshot.admin_digest == "admin-digest" and snapshot.owner_url == "http://owner:8080"
    assert "hf_secret_value" not in raw
