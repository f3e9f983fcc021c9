"""Embeddings past PyTorch: the offline limits of MiniLM on PyTorch, ONNX Runtime and OpenVINO f32 (batch 32 and the
direct batch-1 call), and hubserve on its `onnx` backend (what `auto` picks) against them, at concurrency 32 and at
concurrency 1; and at concurrency 32 hubserve on its opt-in `openvino` backend (against PyTorch and OpenVINO) and
on its opt-in int8 precision (ONNX Runtime's dynamic quantisation, against PyTorch and float32 ONNX Runtime).

Throughput is sampled in rounds (`rounds.py`): each round one sample of every runtime's batch-32 limit and one of
hubserve at concurrency 32, the order rotated. Latency at concurrency 1 alternates blocks of hubserve requests with
blocks of each runtime's direct call, as `embeddings` does.
"""

from __future__ import annotations

import json
import statistics
from functools import partial
from typing import Any

from benchmarks.context import Context
from benchmarks.encoders import ONNX_RUNTIME, OPENVINO, PYTORCH, Encoder, load_encoders, max_difference
from benchmarks.load import Latency, alternating_latency, request_load, run_async
from benchmarks.processes import Unavailable
from benchmarks.report import Row, Target, attempt, row, say, unavailable
from benchmarks.rounds import EXTRA_ROUNDS, Sample, alternate, by_round
from benchmarks.workload import sentences

SUITE = "encoders"
BATCH = 32  # the offline limits' batch and hubserve's concurrency
LATENCY_BLOCK = 10
# hubserve's endpoints by name: the engine each runs and the offline runtime it is judged against beside PyTorch.
SERVED = {"onnx": ({"backend": "onnx"}, ONNX_RUNTIME), "openvino": ({"backend": "openvino"}, OPENVINO),
          "onnx-int8": ({"backend": "onnx", "precision": "int8"}, ONNX_RUNTIME),
          "openvino-bf16": ({"backend": "openvino", "precision": "bf16"}, OPENVINO)}
HUBSERVE = "hubserve, onnx backend"
PER_SECOND = "sentences/s"
THROUGHPUT = f"throughput (c={BATCH})"
LATENCY = "latency p50 (c=1)"
# What the issue measured on this machine, for the offline rows.
ISSUE = {ONNX_RUNTIME: ("issue: 2.3x", "issue: 2.2 ms against 8.9 ms"),
         OPENVINO: ("issue: about as fast as ONNX Runtime", "")}


def served_config(name: str) -> str:
    engine, _ = SERVED[name]
    return f"hubserve, {engine['backend']} backend" + (f", {engine['precision']}" if "precision" in engine else "")


def endpoint_name(backend: str) -> str:
    return f"encoders-minilm-{backend}"


def limit_config(runtime: str) -> str:
    return f"offline {runtime}, batch {BATCH}" + (" (limit)" if runtime == PYTORCH else "")


def direct_config(runtime: str) -> str:
    return f"offline {runtime}, batch 1 (direct call)"


def _limit_sampler(encoder: Encoder, texts: list[str]) -> Sample:
    return lambda warmup: encoder.sentences_per_second(texts[:BATCH] if warmup else texts, BATCH)


def _hubserve_sampler(url: str, texts: list[str], warmup_requests: int) -> Sample:
    bodies = [json.dumps({"inputs": text}).encode() for text in texts]
    return lambda warmup: run_async(request_load(url, bodies[:warmup_requests] if warmup else bodies, BATCH))


def _median_row(config: str, metric: str, samples: list[float] | Unavailable, unit: str,
                baseline: Row | None = None, target: Target | None = None, note: str = "",
                details: dict[str, Any] | None = None) -> Row:
    if isinstance(samples, Unavailable):
        return unavailable(SUITE, config, [(metric, unit)], str(samples))[0]
    samples = [round(sample, 2) for sample in samples]
    return row(SUITE, config, metric, statistics.median(samples), unit, baseline=baseline, target=target, note=note,
               details={"samples": samples, **by_round(samples, baseline), **(details or {})})


def throughput_rows(encoders: dict[str, Encoder | Unavailable], texts: list[str],
                    results: dict[str, list[Any] | Unavailable], accuracy: dict[str, Any],
                    stats: dict[str, Any]) -> list[Row]:
    """The runtimes' batch-32 limits (each against PyTorch's) and hubserve's throughput against PyTorch's and ONNX
    Runtime's; `results` holds the limits' samples (sentences/s) and hubserve's (`RequestLoad`s) by config."""
    rows: dict[str, Row] = {}
    for runtime, encoder in encoders.items():
        samples = encoder if isinstance(encoder, Unavailable) else results[limit_config(runtime)]
        rows[runtime] = _median_row(limit_config(runtime), "throughput", samples, PER_SECOND,
                                    baseline=None if runtime == PYTORCH else rows[PYTORCH],
                                    note=ISSUE.get(runtime, ("", ""))[0],
                                    details={"sentences": len(texts), **accuracy.get(runtime, {})})
    served: list[Row] = []
    for backend, (_, runtime) in SERVED.items():
        loads = results[served_config(backend)]
        per_second = loads if isinstance(loads, Unavailable) else [load.per_second for load in loads]
        cpu = {} if isinstance(loads, Unavailable) else {
            "client_cpu_cores": [round(load.client_cpu_s / load.wall_s, 3) for load in loads]}
        served += [
            _median_row(served_config(backend), THROUGHPUT, per_second, PER_SECOND, baseline=rows[PYTORCH],
                        target=Target("ratio_min", 1.8), details={**cpu, **stats.get(backend, {})}),
            _median_row(served_config(backend), f"{THROUGHPUT} against {runtime}", per_second, PER_SECOND,
                        baseline=rows[runtime], target=Target("ratio_min", 0.85)),
        ]
    return [*rows.values(), *served]


def latency_rows(served: list[float] | Unavailable, direct: dict[str, list[float] | Unavailable]) -> list[Row]:
    """Each runtime's direct call (against PyTorch's) and hubserve's p50 at concurrency 1, in ms."""
    rows: dict[str, Row] = {}
    for runtime, calls in direct.items():
        config = direct_config(runtime)
        if isinstance(calls, Unavailable):
            rows[runtime] = unavailable(SUITE, config, [("latency p50", "ms")], str(calls))[0]
            continue
        latency = Latency.of(calls)
        rows[runtime] = row(SUITE, config, "latency p50", latency.p50 * 1000, "ms",
                            baseline=None if runtime == PYTORCH else rows[PYTORCH],
                            note=ISSUE.get(runtime, ("", ""))[1], details=latency.as_ms())
    if isinstance(served, Unavailable):
        return [*rows.values(), *unavailable(SUITE, HUBSERVE, [(LATENCY, "ms")], str(served))]
    latency = Latency.of(served)
    return [*rows.values(), row(SUITE, HUBSERVE, LATENCY, latency.p50 * 1000, "ms", baseline=rows[PYTORCH],
                                compare="delta", target=Target("delta_max", 0.0), details=latency.as_ms())]


def measure_latency(url: str | None, encoders: dict[str, Encoder], texts: list[str],
                    warmup: int) -> tuple[list[float] | None, dict[str, list[float]]]:
    """hubserve's latencies at concurrency 1 (None without `url`) and each runtime's direct calls, in alternating
    blocks."""
    calls = {name: (lambda index, encoder=encoder: encoder.call_seconds(texts[index]))
             for name, encoder in encoders.items()}
    if url is None:
        return None, {name: [call(index) for index in range(len(texts))] for name, call in calls.items()}
    bodies = [json.dumps({"inputs": text}).encode() for text in texts]
    served, direct = run_async(alternating_latency(url, bodies, calls, LATENCY_BLOCK, bodies[:warmup]))
    say(f"{HUBSERVE}: p50 {Latency.of(served).p50 * 1000:.2f} ms at c=1 (PyTorch's direct call meanwhile: "
        f"{Latency.of(direct[PYTORCH]).p50 * 1000:.2f} ms)")
    return served, direct


def run(context: Context) -> list[Row]:
    """All rows of the encoders suite."""
    admin, counts, models = context.hubserve, context.counts, context.models
    texts = sentences(counts.throughput_requests)
    # The replicas start (and export the model, the first time) while the offline runtimes load.
    for backend, (spec, _) in SERVED.items():
        admin.create(endpoint_name(backend), str(models.embedding), "sentence-embeddings", engine=spec)
    try:
        encoders = load_encoders(models.embedding, models.cache)
        usable = {name: encoder for name, encoder in encoders.items() if isinstance(encoder, Encoder)}
        accuracy = {name: {"max_abs_difference_to_pytorch": max_difference(encoder, usable[PYTORCH], texts[:64])}
                    for name, encoder in usable.items() if name != PYTORCH}
        ready = {name: attempt(served_config(name), partial(admin.wait_running, endpoint_name(name),
                                                            backend=spec["backend"]))
                 for name, (spec, _) in SERVED.items()}
        urls = {backend: admin.endpoint_url(endpoint_name(backend)) for backend, status in ready.items()
                if not isinstance(status, Unavailable)}
        configs = {limit_config(name): _limit_sampler(encoder, texts) for name, encoder in usable.items()}
        for backend, url in urls.items():
            configs[served_config(backend)] = _hubserve_sampler(url, texts, counts.warmup_requests)
        results = alternate(configs, counts.repeats + EXTRA_ROUNDS)
        served, calls = measure_latency(urls.get("onnx"), usable, texts[:counts.latency_requests],
                                        counts.warmup_requests)
        stats = {backend: admin.stats(endpoint_name(backend)) for backend in urls}
    finally:
        for backend in SERVED:
            admin.delete(endpoint_name(backend))
    for backend, status in ready.items():
        if isinstance(status, Unavailable):
            results[served_config(backend)] = status
    direct: dict[str, list[float] | Unavailable] = {name: calls.get(name, Unavailable(str(encoder)))
                                                    for name, encoder in encoders.items()}
    return [*throughput_rows(encoders, texts, results, accuracy, stats),
            *latency_rows(served if served is not None else Unavailable(str(ready["onnx"])), direct)]
