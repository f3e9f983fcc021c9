"""The server's state as Prometheus metric families, made at each scrape: endpoints and replicas by state, requests
in flight, the replicas' engine histograms (queue wait, batch size, time to first token, inter-token latency) and
generated tokens summed per endpoint, asynchronous backlogs, and batch transform jobs' progress."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from hubserve.histogram import BATCH_SIZE_BOUNDS, Histogram, bucket_of
from hubserve.jobs.spec import JobState, TransformJob
from hubserve.serving.async_queue import AsyncBacklog
from hubserve.serving.endpoint import EndpointRuntime
from hubserve.serving.replica import ReplicaState
from hubserve.spec import EndpointState

# A replica that is stopping still finishes its requests: it shows as `draining`, not as the state it had.
REPLICA_STATES = (*(state.value for state in ReplicaState), "draining")
# (metric, help, where in a replica's stats: section and key) of the engines' latency histograms.
REPLICA_HISTOGRAMS = (
    ("hubserve_queue_wait_seconds", "Time requests waited in a replica's dynamic batching queue",
     "batching", "queue_wait_s"),
    ("hubserve_time_to_first_token_seconds", "Time from a generation request's arrival in the replica to its first "
     "token", "generation", "time_to_first_token_s"),
    ("hubserve_inter_token_latency_seconds", "Time between two tokens of one generation request",
     "generation", "inter_token_s"),
)
ReplicaStats = Mapping[str, Sequence[Mapping[str, Any]]]


class Families:
    """Metric families by name, each made once with its labels."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def gauge(self, name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
        family = self._families.setdefault(name, GaugeMetricFamily(name, documentation, labels=labels))
        assert isinstance(family, GaugeMetricFamily)
        return family

    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> CounterMetricFamily:
        family = self._families.setdefault(name, CounterMetricFamily(name, documentation, labels=labels))
        assert isinstance(family, CounterMetricFamily)
        return family

    def histogram(self, name: str, documentation: str, labels: Sequence[str]) -> HistogramMetricFamily:
        family = self._families.setdefault(name, HistogramMetricFamily(name, documentation, labels=labels))
        assert isinstance(family, HistogramMetricFamily)
        return family

    def collect(self) -> Iterator[Metric]:
        return iter(self._families.values())


def endpoint_families(runtimes: Iterable[EndpointRuntime], backlogs: Mapping[str, AsyncBacklog | None]) -> Families:
    """Each endpoint's state, replicas by state, requests in flight or held, and asynchronous backlog."""
    families = Families()
    state = families.gauge("hubserve_endpoint_state", "1 for the endpoint's current state, 0 for the others",
                           ["endpoint", "state"])
    replicas = families.gauge("hubserve_replicas", "The endpoint's replicas by state", ["endpoint", "state"])
    in_flight = families.gauge("hubserve_in_flight_requests", "Requests at the endpoint's replicas or held for one",
                               ["endpoint"])
    held = families.gauge("hubserve_held_requests", "Requests waiting for a replica to become ready", ["endpoint"])
    queued = families.gauge("hubserve_async_backlog", "Asynchronous requests not done yet, by state",
                            ["endpoint", "state"])
    oldest = families.gauge("hubserve_async_oldest_age_seconds", "Age of the oldest asynchronous request not done",
                            ["endpoint"])
    for runtime in runtimes:
        name = runtime.spec.name
        for value in EndpointState:
            state.add_metric([name, value.value], float(runtime.status.state == value))
        members = runtime.active.replicas if runtime.active is not None else []
        counts = dict.fromkeys(REPLICA_STATES, 0)
        for replica in members:
            counts["draining" if replica.stopping else replica.state.value] += 1
        for replica_state, count in counts.items():
            replicas.add_metric([name, replica_state], count)
        in_flight.add_metric([name], sum(replica.in_flight for replica in members) + runtime.held)
        held.add_metric([name], runtime.held)
        backlog = backlogs.get(name)
        if backlog is not None:
            queued.add_metric([name, "queued"], backlog.queued)
            queued.add_metric([name, "running"], backlog.running)
            oldest.add_metric([name], backlog.oldest_age_s or 0.0)
    return families


def replica_families(stats: ReplicaStats) -> Families:
    """The replicas' engine counters and histograms (stats as EndpointRuntime.stats gives them), summed per
    endpoint. A replica that stopped takes its counts along: Prometheus reads the drop as a counter reset."""
    families = Families()
    tokens = families.counter("hubserve_generated_tokens", "Tokens generated by the endpoint's ready replicas",
                              ["endpoint"])
    batch_sizes = families.histogram("hubserve_batch_size", "Items per batch the replicas' dynamic batching ran",
                                     ["endpoint"])
    latencies = {metric: families.histogram(metric, documentation, ["endpoint"])
                 for metric, documentation, _, _ in REPLICA_HISTOGRAMS}
    for name, replicas in stats.items():
        generated = [r["generation"].get("tokens_generated", 0) for r in replicas if "generation" in r]
        if generated:
            tokens.add_metric([name], sum(generated))
        sizes = merged(batch_size_histogram(r["batching"].get("batch_sizes", {})) for r in replicas
                       if "batching" in r)
        if sizes is not None:
            batch_sizes.add_metric([name], sizes.cumulative(), sizes.sum)
        for metric, _, section, key in REPLICA_HISTOGRAMS:
            histogram = merged(Histogram.from_dict(r[section][key]) for r in replicas if key in r.get(section, {}))
            if histogram is not None:
                latencies[metric].add_metric([name], histogram.cumulative(), histogram.sum)
    return families


def batch_size_histogram(sizes: Mapping[str, int]) -> Histogram:
    """A replica's exact batch size counts ({items: batches}) in BATCH_SIZE_BOUNDS buckets."""
    histogram = Histogram(BATCH_SIZE_BOUNDS)
    for size, count in sizes.items():
        histogram.counts[bucket_of(BATCH_SIZE_BOUNDS, int(size))] += count
        histogram.sum += int(size) * count
    return histogram


def merged(histograms: Iterable[Histogram]) -> Histogram | None:
    """The histograms added up; None for none."""
    total: Histogram | None = None
    for histogram in histograms:
        if total is None:
            total = Histogram(histogram.bounds)
        total.add(histogram)
    return total


def job_families(jobs: Iterable[TransformJob]) -> Families:
    """Batch transform jobs' state and progress."""
    families = Families()
    state = families.gauge("hubserve_job_state", "1 for the transform job's current state, 0 for the others",
                           ["job", "state"])
    records = families.gauge("hubserve_job_records", "A transform job's records: done, failed, and expected "
                             "(known once every input file is counted)", ["job", "progress"])
    files = families.gauge("hubserve_job_files", "A transform job's input files: done and expected",
                           ["job", "progress"])
    for job in jobs:
        name, progress = job.spec.name, job.progress
        for value in JobState:
            state.add_metric([name, value.value], float(job.state == value))
        records.add_metric([name, "done"], progress.records_done)
        records.add_metric([name, "failed"], progress.records_failed)
        if progress.records_total is not None:
            records.add_metric([name, "expected"], progress.records_total)
        files.add_metric([name, "done"], progress.files_done)
        files.add_metric([name, "expected"], progress.files_total)
    return families
