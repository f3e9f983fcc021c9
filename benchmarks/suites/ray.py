"""Replicas on a Ray cluster (`hubserve serve --ray`): embeddings throughput at concurrency 32 with one replica on
one single-CPU node and with two on two, and the per-request cost of a Ray-placed replica against a local process
at concurrency 1. The issue's target: adding a replica adds throughput.

The cluster is local, every node on 127.0.0.1: a head that holds no CPU and nodes that declare one. A node of the
throughput rows is pinned to a core of its own (its raylet is started with that CPU affinity, and the workers it
starts inherit it; a replica sizes torch's threads from its affinity), so it is a single-CPU machine rather than a
one-CPU share of the whole one. The hop rows use one unpinned node instead, so the Ray replica sees the same cores,
and so runs as many torch threads, as the local one it is compared with. The rows' details say, from `/proc`, what
each replica was allowed to run on.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.context import QUICK, Context
from benchmarks.hubserve_api import HubserveAdmin, engine
from benchmarks.load import Latency, request_load, run_async
from benchmarks.processes import Unavailable
from benchmarks.report import Row, Target, attempt, row, say, unavailable
from benchmarks.rounds import EXTRA_ROUNDS, Sample, alternate, by_round
from benchmarks.workload import sentences

SUITE = "ray"
CONCURRENCY = 32
THROUGHPUT = (f"throughput (c={CONCURRENCY})", "sentences/s")
LATENCY = ("latency p50 (c=1)", "ms")
ONE_NODE = "hubserve --ray, 1 replica on one single-CPU node"
TWO_NODES = "hubserve --ray, 2 replicas on two single-CPU nodes"
RAY_REPLICA = "hubserve --ray, 1 replica (Ray actor's process)"
LOCAL_REPLICA = "hubserve, 1 replica (local process)"
TASK = "sentence-embeddings"
SPEC: dict[str, Any] = {"resources": {"cpus": 1}, **engine("torch")}
# Ray otherwise takes this machine's network address as every node's, and dials it.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
HOP_NOTE = ("the local replica dials the server's worker hub over loopback TCP; the Ray replica dials its actor's "
            "relay on its node, which carries the channel on to the hub: one more hop on the request's path")


@contextlib.contextmanager
def loopback_cluster() -> Iterator[Any]:
    """A Ray cluster on 127.0.0.1 whose head holds no CPU: every replica goes to a node added to it."""
    saved = {name: os.environ.get(name) for name in LOOPBACK_ONLY}
    os.environ.update(LOOPBACK_ONLY)
    try:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        try:
            yield cluster
        finally:
            cluster.shutdown()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def add_node(cluster: Any, core: int | None, cpus: int = 1) -> Any:
    """A node declaring `cpus`; with `core`, its processes may run on that core only (the raylet is started from
    this thread, whose affinity it inherits and hands to the workers it starts)."""
    everything = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        return cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1")
    finally:
        os.sched_setaffinity(0, everything)


def placement(replicas: list[dict[str, Any]], spec_replicas: int) -> list[dict[str, Any]]:
    """Where each replica runs and on what: its node, the cores it may use, the OpenMP setting it inherited, and the
    torch threads that follows: on Ray the CPUs it asked for, which the placement also gives as OMP_NUM_THREADS;
    locally the cores in its affinity over the spec's replicas (`worker/loader.py`)."""
    described = []
    for replica in replicas:
        pid = replica["pid"]
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            described.append({"node": replica.get("node"), "pid": pid})
            continue
        cores = len(os.sched_getaffinity(pid))
        omp = [item.split(b"=", 1)[1].decode() for item in environ if item.startswith(b"OMP_NUM_THREADS=")]
        described.append({
            "node": replica.get("node"), "pid": pid,
            "cpus_allowed": next(line.split(":", 1)[1].strip() for line in status
                                 if line.startswith("Cpus_allowed_list")),
            "OMP_NUM_THREADS": omp[0] if omp else None,
            "torch_threads": int(omp[0]) if omp else max(1, cores // spec_replicas)})
    return described


class Measurer:
    """One sentence per request to an endpoint, as the embeddings suite sends them."""

    def __init__(self, context: Context) -> None:
        counts = context.counts
        self.bodies = [json.dumps({"inputs": text}).encode() for text in sentences(counts.throughput_requests)]
        self.warmup = self.bodies[: counts.warmup_requests]
        self.sequential = self.bodies[: counts.latency_requests]

    def throughput(self, url: str, warm: bool) -> tuple[float, float]:
        """Sentences/s at concurrency 32 after an untimed warm-up at the same concurrency, and the client's CPU."""
        load = run_async(request_load(url, self.warmup if warm else self.bodies, CONCURRENCY,
                                      () if warm else self.warmup))
        return load.per_second, load.client_cpu_s / load.wall_s

    def latencies(self, url: str, warm: bool) -> list[float]:
        """Seconds per request, one at a time, after an untimed warm-up."""
        return run_async(request_load(url, self.warmup if warm else self.sequential, 1,
                                      () if warm else self.warmup[:4])).latencies


def scaled_throughput(admin: HubserveAdmin, name: str, replicas: int, measurer: Measurer,
                      placements: list[list[dict[str, Any]]], warm: bool) -> tuple[float, float]:
    """Scale the endpoint to `replicas`, each on a node of its own, then one throughput sample."""
    running = admin.scale(name, replicas)
    if len({r["node"] for r in running}) != replicas:
        raise Unavailable(f"{replicas} replicas share a node: {running}")
    placements.append(placement(running, replicas))
    return measurer.throughput(admin.endpoint_url(name), warm)


def throughput_rows(context: Context, on_ray: HubserveAdmin, cluster: Any, measurer: Measurer,
                    rounds: int) -> list[Row]:
    """One replica against two, each on a single-CPU node pinned to its own core, in alternating rounds."""
    cores = sorted(os.sched_getaffinity(0))
    nodes = [add_node(cluster, cores[index % len(cores)]) for index in range(2)]
    name = "ray-minilm-scaled"
    placements: dict[str, list[list[dict[str, Any]]]] = {ONE_NODE: [], TWO_NODES: []}
    try:
        on_ray.create(name, str(context.models.embedding), TASK, **SPEC)
        on_ray.wait_running(name, backend="torch")
        configs: dict[str, Sample] = {
            config: partial(scaled_throughput, on_ray, name, replicas, measurer, placements[config])
            for config, replicas in ((ONE_NODE, 1), (TWO_NODES, 2))}
        results = alternate(configs, rounds)
        stats = on_ray.stats(name)
    finally:
        on_ray.delete(name)
        for node in nodes:
            cluster.remove_node(node)
    one, two = results[ONE_NODE], results[TWO_NODES]
    for result in (one, two):
        if isinstance(result, Unavailable):
            raise result
    assert isinstance(one, list) and isinstance(two, list)
    rows: list[Row] = []
    for config, samples, target in ((ONE_NODE, one, None), (TWO_NODES, two, Target("ratio_min", 1.0))):
        per_second = [sample[0] for sample in samples]
        details = {"samples": [round(s, 1) for s in per_second], "requests_per_sample": len(measurer.bodies),
                   "client_cpu_cores": [round(sample[1], 3) for sample in samples],
                   "node_cores": cores[:2] if len(cores) > 1 else cores, "placements": placements[config]}
        if rows:
            details.update(by_round(per_second, rows[0]))
        else:
            details.update(stats)
        rows.append(row(SUITE, config, THROUGHPUT[0], statistics.median(per_second), THROUGHPUT[1],
                        baseline=rows[0] if rows else None, target=target, details=details,
                        note="alternating rounds; the server and the load generator share the machine's cores"))
        say(f"{config}: {rows[-1].value:.0f} sentences/s at c={CONCURRENCY}")
    return rows


def hop_rows(context: Context, on_ray: HubserveAdmin, cluster: Any, measurer: Measurer, rounds: int) -> list[Row]:
    """A replica placed by Ray against one the local server forks, at concurrency 1, in alternating rounds; both see
    every core, and run as many torch threads (the Ray node is not pinned, and the Ray replica asks for every core:
    a replica on Ray runs the CPUs it asks for as threads)."""
    cores = len(os.sched_getaffinity(0))
    node = add_node(cluster, None, cpus=cores)
    name = "ray-minilm-hop"
    local = context.hubserve
    every_core = {**SPEC, "resources": {"cpus": cores}}
    try:
        urls = {RAY_REPLICA: on_ray.deploy(name, str(context.models.embedding), TASK, **every_core),
                LOCAL_REPLICA: local.deploy(name, str(context.models.embedding), TASK, **SPEC)}
        placements = {config: placement(admin.status(name)["replicas"], 1)
                      for config, admin in ((RAY_REPLICA, on_ray), (LOCAL_REPLICA, local))}
        results = alternate({config: partial(measurer.latencies, url) for config, url in urls.items()}, rounds)
    finally:
        on_ray.delete(name)
        local.delete(name)
        cluster.remove_node(node)
    rows: list[Row] = []
    for config in (LOCAL_REPLICA, RAY_REPLICA):
        samples = results[config]
        if isinstance(samples, Unavailable):
            raise samples
        latency = Latency.of([s for block in samples for s in block])
        p50s = [Latency.of(block).p50 * 1000 for block in samples]
        details: dict[str, Any] = {**latency.as_ms(), "p50_by_round_ms": [round(p, 3) for p in p50s],
                                   "placement": placements[config]}
        if rows:
            local_p50s = rows[0].details["p50_by_round_ms"]
            details["differences_by_round_ms"] = [round(a - b, 3) for a, b in zip(p50s, local_p50s, strict=False)]
        rows.append(row(SUITE, config, LATENCY[0], latency.p50 * 1000, LATENCY[1], baseline=rows[0] if rows else None,
                        compare="delta", details=details, note=HOP_NOTE if rows else "alternating rounds"))
        say(f"{config}: p50 {latency.p50 * 1000:.2f} ms at c=1")
    return rows


def measured(configs: dict[str, tuple[str, str]], measure: Callable[[], list[Row]]) -> list[Row]:
    """`measure()`'s rows, or rows without figures for each of `configs` (config -> its metric and unit) saying why
    they could not be measured."""
    result = attempt(" / ".join(configs), measure)
    if isinstance(result, Unavailable):
        return [row for config, metric in configs.items() for row in unavailable(SUITE, config, [metric], str(result))]
    return result


def run(context: Context) -> list[Row]:
    """All rows of the Ray suite."""
    rounds = context.counts.repeats + (0 if context.counts == QUICK else EXTRA_ROUNDS)
    measurer = Measurer(context)
    scaled = {ONE_NODE: THROUGHPUT, TWO_NODES: THROUGHPUT}
    hop = {LOCAL_REPLICA: LATENCY, RAY_REPLICA: LATENCY}
    with contextlib.ExitStack() as stack:
        def start() -> tuple[HubserveAdmin, Any]:
            cluster = stack.enter_context(loopback_cluster())
            token = "hs_admin_bench-" + secrets.token_hex(8)
            server = stack.enter_context(peers.hubserve(context.logs.parent / "hubserve-ray-home", token,
                                                        context.logs, ray_address=cluster.address, env=LOOPBACK_ONLY))
            on_ray = HubserveAdmin(server.url, token)
            stack.callback(on_ray.close)
            return on_ray, cluster

        started = attempt("a Ray cluster and hubserve --ray", start)
        if isinstance(started, Unavailable):
            return measured({**scaled, **hop}, partial(_raise, started))
        on_ray, cluster = started
        return (measured(scaled, partial(throughput_rows, context, on_ray, cluster, measurer, rounds))
                + measured(hop, partial(hop_rows, context, on_ray, cluster, measurer, rounds)))


def _raise(error: Exception) -> list[Row]:
    raise error
