"""`Telemetry`: the API process' request counts and latencies (for Prometheus and the analytics API), the ready
replicas sampled each minute, and a scrape that gathers the replicas' engine stats."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest

from hubserve.errors import NotFound
from hubserve.histogram import EXPORTED_LATENCY_BOUNDS_S
from hubserve.jobs.spec import TransformJob
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.manager import EndpointManager
from hubserve.serving.telemetry.analytics import EndpointAnalytics
from hubserve.serving.telemetry.prometheus import endpoint_families, job_families, replica_families

# How often the ready replicas are sampled into the analytics' minutes.
SAMPLE_EVERY_S = 15.0
# A replica that does not answer its stats by then is left out of a scrape: a stuck one must not stall /metrics.
REPLICA_STATS_TIMEOUT_S = 2.0


class Telemetry:
    """One server's telemetry: `record` each invocation, `scrape` for Prometheus, `analytics` per endpoint.

    Analytics live with the endpoint's runtime (weakly keyed): deleting the endpoint forgets them, and a new
    endpoint of the same name starts empty. They are kept in memory only, for the last 24 hours.
    """

    def __init__(self, manager: EndpointManager, jobs: Callable[[], Sequence[TransformJob]]) -> None:
        self._manager = manager
        self._jobs = jobs
        # A registry per server (not prometheus_client's global one): a process may run several, as tests do.
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter("hubserve_requests", "Invocations answered, by endpoint, route and status",
                                 ["endpoint", "route", "status"], registry=self.registry)
        self._durations = Histogram("hubserve_request_duration_seconds",
                                    "Time from an invocation's arrival to the end of its answer (of a stream too)",
                                    ["endpoint", "route"], buckets=EXPORTED_LATENCY_BOUNDS_S, registry=self.registry)
        self._analytics: weakref.WeakKeyDictionary[EndpointRuntime, EndpointAnalytics] = weakref.WeakKeyDictionary()
        self._sampler: asyncio.Task[None] | None = None

    def _runtime(self, name: str | None) -> EndpointRuntime | None:
        if not name:
            return None
        with contextlib.suppress(NotFound):
            return self._manager.get(name)
        return None

    def record(self, endpoint: str | None, route: str, status: int, duration_s: float) -> None:
        """One invocation answered. `endpoint` is labelled only while it exists: calls to random names (404s)
        count under "" rather than each making series of its own."""
        runtime = self._runtime(endpoint)
        name = runtime.spec.name if runtime is not None else ""
        self._requests.labels(name, route, str(status)).inc()
        self._durations.labels(name, route).observe(duration_s)
        if runtime is not None:
            self.analytics(runtime).record(status, duration_s, time.time())

    def analytics(self, runtime: EndpointRuntime) -> EndpointAnalytics:
        analytics = self._analytics.get(runtime)
        if analytics is None:
            analytics = self._analytics[runtime] = EndpointAnalytics()
        return analytics

    def runtimes(self) -> list[EndpointRuntime]:
        return [self._manager.get(endpoint.spec.name) for endpoint in self._manager.list()]

    def sample_replicas(self) -> None:
        now = time.time()
        for runtime in self.runtimes():
            self.analytics(runtime).sample_replicas(runtime.ready_count, now)

    def start(self) -> None:
        self._sampler = asyncio.ensure_future(self._sample_forever())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    async def _sample_forever(self) -> None:
        while True:
            self.sample_replicas()
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def scrape(self) -> bytes:
        """The Prometheus text of everything: the requests, then the state and the replicas' stats right now."""
        runtimes = self.runtimes()
        stats = await replica_stats(runtimes)
        backlogs = {runtime.spec.name: self._manager.async_runners.backlog(runtime.spec.name) for runtime in runtimes}
        return generate_latest(Scrape((self.registry, endpoint_families(runtimes, backlogs), replica_families(stats),
                                       job_families(self._jobs()))))


class Scrape:
    """Several collectors read as one registry (what `generate_latest` takes)."""

    def __init__(self, sources: Sequence[Any]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


async def replica_stats(runtimes: Sequence[EndpointRuntime]) -> Mapping[str, list[dict[str, Any]]]:
    """Each endpoint's ready replicas' engine stats, those that answered within REPLICA_STATS_TIMEOUT_S."""
    replicas = [(runtime.spec.name, replica) for runtime in runtimes
                for replica in (runtime.active.replicas if runtime.active is not None else []) if replica.ready]
    answers = await asyncio.gather(*(asyncio.wait_for(replica.stats(), REPLICA_STATS_TIMEOUT_S)
                                     for _, replica in replicas), return_exceptions=True)
    stats: dict[str, list[dict[str, Any]]] = {runtime.spec.name: [] for runtime in runtimes}
    for (name, _), answer in zip(replicas, answers, strict=True):
        if isinstance(answer, dict):
            stats[name].append(answer)
    return stats
