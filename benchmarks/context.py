"""What every suite gets: the request counts of this run, the models, the running hubserve and a work folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.hubserve_api import HubserveAdmin
from benchmarks.models import Models


@dataclass(frozen=True)
class Counts:
    """How much work each configuration gets."""

    throughput_requests: int  # sentences sent per throughput measurement
    latency_requests: int  # sequential requests per latency measurement
    warmup_requests: int  # untimed requests first, at the measurement's concurrency
    repeats: int  # throughput measurements per configuration; the median is reported
    sequential_prompts: int  # prompts of the sequential `generate` baseline (of the 16)
    coldstart_repeats: int  # timed cold starts per model; the median is reported
    soak_s: float  # the soak's measured window
    soak_warmup_s: float  # its untimed warm-up at the same load, before the first memory sample
    # Launch a suite's peers (and create its hubserve endpoint) together at its start instead of one by one: faster,
    # but their start-up then competes with the measurements for the CPU, so only for quick runs.
    launch_peers_early: bool = False
    # Compile peers that need it (llama-server, about 15 min on 2 cores the first time): a quick run uses only a
    # binary an earlier run cached.
    build_peers: bool = True


FULL = Counts(throughput_requests=512, latency_requests=200, warmup_requests=64, repeats=3, sequential_prompts=16,
              coldstart_repeats=3, soak_s=600.0, soak_warmup_s=60.0)
QUICK = Counts(throughput_requests=32, latency_requests=10, warmup_requests=4, repeats=1, sequential_prompts=2,
               coldstart_repeats=1, soak_s=10.0, soak_warmup_s=3.0, launch_peers_early=True,
               build_peers=False)


@dataclass(frozen=True)
class Context:
    counts: Counts
    models: Models
    hubserve: HubserveAdmin
    hubserve_pid: int  # the server process: its tree (zygote, replicas) is what the soak weighs
    logs: Path  # server logs of this run
