"""The registry the owner publishes to and data-plane servers long-poll (the actor's class, run here without Ray):
a poll answers at once when a newer version is there, waits for the next publish otherwise, and gives up after its
timeout with the same version. The same for the load data-plane servers report and the owner long-polls, where a
server that stops reporting is forgotten."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hubserve.serving.context import RemoteLoad
from hubserve.serving.ray_registry import LoadReporter, Publisher, Registry, Snapshot, snapshot_of
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


class LocalHandle:
    """The registry's class called as its actor's handle is (`handle.method.remote(...)`), in this process."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(remote=getattr(self._registry, name))


def test_loads_are_summed_over_servers_and_a_poll_wakes_only_when_they_change() -> None:
    async def main() -> None:
        registry = Registry()
        version, loads = await registry.wait_loads(0, 0.01)
        assert (version, loads) == (0, {})
        await registry.report("a", {"e": 2, "f": 0}, ["e"])
        await registry.report("b", {"e": 1}, [])
        version, loads = await registry.wait_loads(0, 60)
        assert loads["e"][0] == 3 and loads["e"][1] < 60
        assert "f" not in loads  # no load there, and no request came
        waiting = asyncio.ensure_future(registry.wait_loads(version, 60))
        await registry.report("b", {"e": 1}, [])  # a heartbeat: nothing changed
        await asyncio.sleep(0)
        assert not waiting.done()
        await registry.report("b", {"e": 0}, [])
        assert (await waiting)[1]["e"][0] == 2

    asyncio.run(main())


def test_a_request_that_came_and_went_between_two_reports_still_counts_as_activity() -> None:
    async def main() -> None:
        registry = Registry()
        version, _ = await registry.wait_loads(0, 0.01)
        waiting = asyncio.ensure_future(registry.wait_loads(version, 60))
        await registry.report("a", {"e": 0}, ["e"])
        _, loads = await waiting
        load, idle_s = loads["e"]
        assert load == 0 and 0 <= idle_s < 60

    asyncio.run(main())


def test_a_server_that_stops_reporting_is_forgotten_and_the_poll_says_so() -> None:
    async def main() -> None:
        registry = Registry(load_ttl_s=0.2)
        await registry.report("dead", {"e": 4}, ["e"])
        version, loads = await registry.wait_loads(0, 60)
        assert loads["e"][0] == 4
        started = time.monotonic()
        _, loads = await registry.wait_loads(version, 60)  # no report comes: it answers once "dead" expires
        assert loads["e"][0] == 0
        assert 0.1 < time.monotonic() - started < 30

    asyncio.run(main())


def test_the_owner_sees_the_reported_load_and_the_end_of_the_last_request_as_activity() -> None:
    async def main() -> None:
        registry = Registry()
        handle = LocalHandle(registry)
        here = {"e": (0, 0)}
        reporter = LoadReporter(lambda: dict(here))
        publisher = Publisher(lambda: "{}")
        tasks = [asyncio.ensure_future(reporter._run(handle)), asyncio.ensure_future(publisher._follow_loads(handle))]

        async def until(seen: Callable[[RemoteLoad], bool]) -> RemoteLoad:
            while not seen(load := publisher.remote_load("e")):
                await asyncio.sleep(0.01)
            return load

        try:
            assert publisher.remote_load("e") == RemoteLoad()
            here["e"] = (2, 2)
            reporter.changed()
            came = await asyncio.wait_for(until(lambda load: load.load == 2), 30)
            assert came.last_request > time.monotonic() - 30
            ended = time.monotonic()
            here["e"] = (0, 2)  # the two ended, and no other came: their end is the last activity
            reporter.changed()
            went = await asyncio.wait_for(until(lambda load: load.load == 0), 30)
            assert went.last_request >= ended
        finally:
            for task in tasks:
                task.cancel()

    asyncio.run(main())
