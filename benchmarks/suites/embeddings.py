"""Embeddings of 12-word sentences: the offline batch-32 limit and a direct in-process call, then hubserve, a
one-request-at-a-time FastAPI server and LitServe with batching, each over HTTP with one sentence per request.

The machine's speed drifts (by a third within minutes on the shared development machine), so each figure is compared
with a baseline taken over the same stretch of time: each server's throughput samples alternate with samples of the
offline limit, and its ratio is to the limit samples of its own run; its concurrency-1 latency is measured in blocks
alternating with direct calls, and its difference is to the direct calls of its own run. The limit and direct-call
rows pool every server's samples.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from benchmarks import peers
from benchmarks.context import Context
from benchmarks.hubserve_api import engine
from benchmarks.load import Latency, alternating_latency, request_load, run_async
from benchmarks.processes import ServerProcess, Unavailable
from benchmarks.report import Row, Target, attempt, row, say, unavailable
from benchmarks.workload import sentences

SUITE = "embeddings"
BATCH_SIZE = 32  # the offline limit's batch, and the concurrency of the throughput rows
LATENCY_BLOCK = 10  # requests in a row, then as many direct calls
ENDPOINT = "minilm"
PER_SECOND = "sentences/s"
THROUGHPUT = f"throughput (c={BATCH_SIZE})"
LATENCY = "latency p50 (c=1)"
SERVER_METRICS = [(THROUGHPUT, PER_SECOND), (LATENCY, "ms")]
HUBSERVE = "hubserve, torch backend"  # PyTorch as every peer here; the other backends: suites/encoders.py
# The figures for the peers, as fractions of the offline limit and ms above a direct call.
PEERS = {"one-at-a-time FastAPI": ("onebyone", "issue: 0.22x, +5.7 ms"),
         "LitServe, batching": ("litserve_embed", "issue: 0.38x")}


class Offline:
    """The embedding model in this process, warmed up."""

    def __init__(self, context: Context, texts: list[str]) -> None:
        from sentence_transformers import SentenceTransformer

        self.texts = texts
        self.model = SentenceTransformer(str(context.models.embedding), device="cpu")
        self.model.encode(texts[:BATCH_SIZE], batch_size=BATCH_SIZE)

    def limit_sample(self) -> float:
        """Sentences/s of `encode` over all texts at batch 32."""
        started = time.perf_counter()
        self.model.encode(self.texts, batch_size=BATCH_SIZE, show_progress_bar=False)
        return len(self.texts) / (time.perf_counter() - started)

    def direct_call(self, index: int) -> float:
        """Seconds `encode([sentence])` takes for the `index`-th text."""
        started = time.perf_counter()
        self.model.encode([self.texts[index]], show_progress_bar=False)
        return time.perf_counter() - started


@dataclass
class ServerFigures:
    """What one server did: throughput samples at concurrency 32 and the offline limit's samples between them,
    latencies at concurrency 1 and the direct calls between them."""

    requests: int  # per throughput sample
    throughput_samples: list[float]
    limit_samples: list[float]  # sentences/s, one before each throughput sample and one after the last
    client_cpu_cores: list[float]  # the load generator's own CPU use during each throughput sample
    latency: Latency
    direct: list[float]  # seconds per direct call, taken between the latency blocks
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return statistics.median(self.throughput_samples)

    @property
    def limit(self) -> float:
        return statistics.median(self.limit_samples)


def measure_server(context: Context, offline: Offline, config: str, url: str) -> ServerFigures:
    """Throughput at concurrency 32 (median of `repeats`, each sample between two of the offline limit's), then
    latency at concurrency 1 in blocks alternating with direct calls; one sentence per request, each after an untimed
    warm-up at the same concurrency."""
    counts = context.counts
    bodies = [json.dumps({"inputs": text}).encode() for text in offline.texts]
    warmup = bodies[: counts.warmup_requests]
    limits, loads = [offline.limit_sample()], []
    for _ in range(counts.repeats):
        loads.append(run_async(request_load(url, bodies, BATCH_SIZE, warmup)))
        limits.append(offline.limit_sample())
    served, calls = run_async(alternating_latency(url, bodies[: counts.latency_requests],
                                                  {DIRECT: offline.direct_call}, LATENCY_BLOCK, warmup))
    direct = calls[DIRECT]
    latency = Latency.of(served)
    figures = ServerFigures(len(bodies), [load.per_second for load in loads], limits,
                            [round(load.client_cpu_s / load.wall_s, 3) for load in loads], latency, direct)
    say(f"{config}: {figures.throughput:.0f} sentences/s at c={BATCH_SIZE} (offline limit meanwhile: "
        f"{figures.limit:.0f}), p50 {latency.p50 * 1000:.2f} ms at c=1 (direct calls meanwhile: "
        f"{Latency.of(direct).p50 * 1000:.2f} ms)")
    return figures


def _measure_hubserve(context: Context, offline: Offline) -> ServerFigures:
    admin = context.hubserve
    if not context.counts.launch_peers_early:  # else created at the suite's start
        _create_endpoint(context)
    try:
        admin.wait_running(ENDPOINT, backend="torch")
        figures = measure_server(context, offline, HUBSERVE, admin.endpoint_url(ENDPOINT))
        figures.details.update(admin.stats(ENDPOINT))
        return figures
    finally:
        admin.delete(ENDPOINT)


def _create_endpoint(context: Context) -> None:
    context.hubserve.create(ENDPOINT, str(context.models.embedding), "sentence-embeddings", **engine("torch"))


def _measure_peer(context: Context, offline: Offline, config: str, peer: ServerProcess) -> ServerFigures:
    with peer:
        return measure_server(context, offline, config, peer.url + peers.EMBEDDING_ROUTE)


DIRECT = "offline encode([sentence]) (direct call)"


LIMIT = f"offline encode, batch {BATCH_SIZE} (limit)"


def server_rows(config: str, figures: ServerFigures | Unavailable, note: str = "",
                throughput_target: Target | None = None, latency_target: Target | None = None) -> list[Row]:
    """Throughput as a fraction of the limit samples and p50 latency as ms above the direct calls that alternated
    with it (or why not measured)."""
    if isinstance(figures, Unavailable):
        return unavailable(SUITE, config, SERVER_METRICS, str(figures))
    throughput_details = {"samples": figures.throughput_samples, "limit_samples": figures.limit_samples,
                          "requests_per_sample": figures.requests, "client_cpu_cores": figures.client_cpu_cores,
                          **figures.details}
    limit = row(SUITE, f"{LIMIT}, alternating with {config}", "throughput", figures.limit, PER_SECOND)
    direct = Latency.of(figures.direct)
    paired = row(SUITE, f"{DIRECT}, alternating with {config}", "latency p50", direct.p50 * 1000, "ms")
    return [
        row(SUITE, config, THROUGHPUT, figures.throughput, PER_SECOND, baseline=limit, target=throughput_target,
            note=note, details=throughput_details),
        row(SUITE, config, LATENCY, figures.latency.p50 * 1000, "ms", baseline=paired, compare="delta",
            target=latency_target, details={**figures.latency.as_ms(), "direct_calls": direct.as_ms()}),
    ]


def run(context: Context) -> list[Row]:
    """All rows of the embeddings suite."""
    counts = context.counts
    model, logs = context.models.embedding, context.logs
    peer_servers = {config: peers.embedding_peer(module, model, logs) for config, (module, _) in PEERS.items()}
    try:
        if counts.launch_peers_early:
            for server in peer_servers.values():
                server.launch()
            _create_endpoint(context)
        texts = sentences(counts.throughput_requests)
        offline = Offline(context, texts)
        measured = {HUBSERVE: attempt(HUBSERVE, lambda: _measure_hubserve(context, offline))}
        for config, server in peer_servers.items():
            measured[config] = attempt(config, partial(_measure_peer, context, offline, config, server))
    finally:
        for server in peer_servers.values():
            server.stop()
    figures = [figures for figures in measured.values() if isinstance(figures, ServerFigures)]
    limits = [sample for server in figures for sample in server.limit_samples]
    direct_calls = [call for server in figures for call in server.direct]
    direct = Latency.of(direct_calls) if direct_calls else None
    rows = [
        row(SUITE, LIMIT, "throughput", statistics.median(limits) if limits else None, PER_SECOND,
            note="all servers' alternating samples", details={"samples": limits, "sentences": len(texts)}),
        row(SUITE, DIRECT, "latency p50", direct.p50 * 1000 if direct else None, "ms",
            note="all servers' alternating blocks", details=direct.as_ms() if direct else {}),
    ]
    rows += server_rows(HUBSERVE, measured[HUBSERVE], throughput_target=Target("ratio_min", 0.85),
                        latency_target=Target("delta_max", 3.0))
    for config, (_, note) in PEERS.items():
        rows += server_rows(config, measured[config], note=note)
    return rows
