"""Soak: steady mixed load on an embedding and a generation endpoint for a fixed time (10 minutes in a full run),
with a lane of bad requests among the good ones. Every answer must be the one expected (200 for good requests, the
right 4xx for bad ones), and the memory of hubserve's whole process tree must not grow: its resident set at the end
of the measured window against its start, after an untimed warm-up at the same load.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.context import Context
from benchmarks.load import JSON_HEADERS, client, run_async
from benchmarks.report import Row, Target, guarded, row, say
from benchmarks.workload import sentences

SUITE = "soak"
EMBEDDING, GENERATION = "soak-embed", "soak-generate"
EMBEDDING_LANES, GENERATION_LANES, BAD_LANES = 4, 2, 1
RSS_EVERY_S = 5.0
MAX_RSS_GROWTH = 0.05
METRICS = [("requests answered as expected", "requests"), ("unexpected answers", "requests"),
           ("RSS growth (server + replicas)", "%")]


@dataclass(frozen=True)
class Probe:
    """One request of the soak and the status it must get."""

    endpoint: str
    body: bytes
    expected: int
    label: str


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def good_probes() -> dict[str, list[Probe]]:
    texts = sentences(64, seed=7)
    return {
        EMBEDDING: [Probe(EMBEDDING, _json({"inputs": text}), 200, "embed") for text in texts],
        GENERATION: [Probe(GENERATION, _json({"inputs": text, "parameters": {"max_new_tokens": 8}}), 200, "generate")
                     for text in texts[:16]],
    }


def bad_probes() -> list[Probe]:
    """Refusals the server must keep giving, and keep giving cheaply: each is a clear 4xx (on a text-generation
    endpoint's URL, TGI's 422 validation errors)."""
    return [
        Probe(EMBEDDING, b'{"inputs": ', 400, "truncated JSON"),
        Probe(EMBEDDING, b"[" * 50_000 + b"]" * 50_000, 400, "depth bomb"),
        Probe(EMBEDDING, b'{"inputs": "x", "parameters": {"no_such_parameter": 1}}', 400, "unknown parameter"),
        Probe(EMBEDDING, b'{"inputs": "\\ud800"}', 400, "lone surrogate"),
        Probe(GENERATION, _json({"inputs": "hi", "parameters": {"max_new_tokens": "ten"}}), 422, "wrong type"),
        Probe(GENERATION, _json({"inputs": "hi", "parameters": {"max_new_tokens": 1.5}}), 422, "non-integer"),
        Probe(GENERATION, _json({"inputs": "word " * 20_000, "parameters": {"max_new_tokens": 4}}), 422,
              "prompt over the model's limit"),
        Probe("no-such-endpoint", _json({"inputs": "x"}), 404, "unknown endpoint"),
    ]


def tree_rss_bytes(root: int) -> dict[int, int]:
    """Resident bytes of `root` and every process below it (replicas forked by the zygote included), by pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    sizes, todo = {}, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            sizes[pid] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        todo += children.get(pid, [])
    return sizes


@dataclass
class Tally:
    expected: Counter[str]
    unexpected: Counter[str]
    examples: list[str]

    def record(self, probe: Probe, status: int | str, body: bytes = b"") -> None:
        if status == probe.expected:
            self.expected[probe.label] += 1
            return
        self.unexpected[probe.label] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{probe.label}: {status} {body[:200].decode(errors='replace')}")


async def _lane(http: aiohttp.ClientSession, base: str, probes: list[Probe], until: float, tally: Tally) -> None:
    index = 0
    while time.monotonic() < until:
        probe = probes[index % len(probes)]
        index += 1
        try:
            async with http.post(f"{base}/endpoints/{probe.endpoint}", data=probe.body,
                                 headers=JSON_HEADERS) as response:
                body = await response.read()
            tally.record(probe, response.status, body)
        except (aiohttp.ClientError, TimeoutError) as error:
            tally.record(probe, f"{type(error).__name__}: {error}")


async def _sample_rss(root: int, until: float, samples: list[tuple[float, int]]) -> None:
    while time.monotonic() < until:
        samples.append((time.monotonic(), sum(tree_rss_bytes(root).values())))
        await asyncio.sleep(RSS_EVERY_S)
    samples.append((time.monotonic(), sum(tree_rss_bytes(root).values())))


async def soak(base: str, root: int, warmup_s: float, duration_s: float) -> tuple[Tally, list[tuple[float, int]]]:
    """Warm up, then load every lane for `duration_s` while sampling the process tree's RSS."""
    probes = good_probes()
    lanes = ([probes[EMBEDDING]] * EMBEDDING_LANES + [probes[GENERATION]] * GENERATION_LANES
             + [bad_probes()] * BAD_LANES)
    samples: list[tuple[float, int]] = []
    async with client(len(lanes), timeout_s=120) as http:
        warmup = Tally(Counter(), Counter(), [])
        until = time.monotonic() + warmup_s
        await asyncio.gather(*(_lane(http, base, lane, until, warmup) for lane in lanes))
        tally = Tally(Counter(), Counter(), list(warmup.examples))
        tally.unexpected.update(warmup.unexpected)
        until = time.monotonic() + duration_s
        await asyncio.gather(_sample_rss(root, until, samples),
                             *(_lane(http, base, lane, until, tally) for lane in lanes))
    return tally, samples


def soak_rows(context: Context) -> list[Row]:
    admin, models, counts = context.hubserve, context.models, context.counts
    try:
        admin.deploy(EMBEDDING, str(models.embedding), "sentence-embeddings")
        admin.deploy(GENERATION, str(models.generation_source), "text-generation", dtype=models.generation_dtype)
        say(f"soak: {counts.soak_warmup_s:.0f} s warm-up, then {counts.soak_s:.0f} s measured")
        tally, samples = run_async(soak(admin.url, context.hubserve_pid, counts.soak_warmup_s, counts.soak_s))
    finally:
        admin.delete(EMBEDDING)
        admin.delete(GENERATION)
    start, end = samples[0][1], samples[-1][1]
    growth = (end - start) / start * 100
    details = {"expected_by_kind": dict(tally.expected), "unexpected_by_kind": dict(tally.unexpected),
               "unexpected_examples": tally.examples, "duration_s": counts.soak_s, "warmup_s": counts.soak_warmup_s,
               "rss_mib": [round(rss / 2**20, 1) for _, rss in samples]}
    label = f"hubserve, {EMBEDDING_LANES} embedding + {GENERATION_LANES} generation + {BAD_LANES} bad-input lanes"
    return [
        row(SUITE, label, METRICS[0][0], float(sum(tally.expected.values())), METRICS[0][1], details=details),
        row(SUITE, label, METRICS[1][0], float(sum(tally.unexpected.values())), METRICS[1][1],
            target=Target("value_max", 0)),
        row(SUITE, label, METRICS[2][0], growth, METRICS[2][1], target=Target("value_max", MAX_RSS_GROWTH * 100),
            note=f"{start / 2**20:.0f} -> {end / 2**20:.0f} MiB"),
    ]


def run(context: Context) -> list[Row]:
    """All rows of the soak suite."""
    return guarded(SUITE, "hubserve soak", METRICS, lambda: soak_rows(context))
