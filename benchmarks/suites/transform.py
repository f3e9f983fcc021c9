"""Batch transform jobs at the engine's speed: 10,000 twelve-word sentences (JSON Lines) through MiniLM as a job on its
own replica, MultiRecord and SingleRecord, against the offline batch-32 limits of PyTorch and of ONNX Runtime (what
`auto` serves MiniLM on) in alternating rounds; the peak resident memory of hubserve's process tree during a
10,000-line and a 100,000-line job; 500 chat prompts x 32 new tokens through SmolLM2's GGUF (torch's continuous
batching, as `auto` picks it for a job's own replicas: engine.goal throughput) against offline padded batches of
`generate`, alternating.

A job's throughput is its records over the time from its log's "replicas ready" to its file's "finished" line: the
model's start and stop are the cold start suite's business; they are in the details (`create_to_end_s`).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.context import QUICK, Context
from benchmarks.encoders import ONNX_RUNTIME, PYTORCH, Encoder, load_encoders
from benchmarks.processes import Unavailable
from benchmarks.report import Row, Target, attempt, row, say, unavailable
from benchmarks.rounds import EXTRA_ROUNDS, Sample, alternate, by_round
from benchmarks.suites.generation import _generate, _greedy, _load_model
from benchmarks.suites.soak import tree_rss_bytes
from benchmarks.workload import chat, sentences
from hubserve.client import Client

SUITE = "transform"
BATCH = 32  # the offline embedding limits' batch
GENERATION_BATCH = 16  # the offline padded batch, as the generation suite's limit
RSS_EVERY_S = 0.25  # also how often a running job is polled
MIN_RATIO, MAX_RSS_RATIO = 0.9, 1.1
PER_SECOND, TOKENS_PER_SECOND = "records/s", "tokens/s"
EMBED_METRICS = [("throughput", PER_SECOND)]
LOG_LINE = re.compile(r"^(\S+) (.*)$")


@dataclass(frozen=True)
class Sizes:
    sentences: int  # records of the embedding jobs
    big: int  # records of the large job whose memory is weighed against the small one's
    offline_sentences: int  # sentences per offline embedding sample
    prompts: int  # records of the generation job
    offline_prompts: int  # prompts per offline generation sample
    new_tokens: int


FULL_SIZES = Sizes(sentences=10_000, big=100_000, offline_sentences=2_048, prompts=500, offline_prompts=128,
                   new_tokens=32)
QUICK_SIZES = Sizes(sentences=256, big=2_560, offline_sentences=64, prompts=8, offline_prompts=8, new_tokens=4)


@dataclass(frozen=True)
class JobRun:
    """One job, run to completion."""

    records: int
    processing_s: float  # its log's "replicas ready" to its last "file ... finished"
    create_to_end_s: float  # POST /api/v1/jobs to the job's end (its replicas' start and stop included)
    peak_rss: int  # bytes: the largest sum of hubserve's process tree (server, zygote, replicas) seen meanwhile
    backend: str | None  # as the job's log names it, if it does

    @property
    def per_second(self) -> float:
        return self.records / self.processing_s


class Jobs:
    """Runs jobs on one hubserve, each over a JSON Lines file of its own, and reads how they went."""

    def __init__(self, context: Context, folder: Path) -> None:
        self.client = Client(url=context.hubserve.url, token=context.hubserve.token)
        self.server_pid = context.hubserve_pid
        self.folder = folder
        self.count = 0

    def close(self) -> None:
        self.client.close()

    def write_input(self, name: str, records: list[dict[str, Any]] | list[str]) -> Path:
        """A folder holding one JSON Lines file of `records` (a string is sent as `{"inputs": ...}`)."""
        folder = self.folder / f"in-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "records.jsonl", "w") as handle:
            for record in records:
                handle.write(json.dumps({"inputs": record} if isinstance(record, str) else record) + "\n")
        return folder

    def run(self, source: dict[str, Any], input_folder: Path, records: int, **options: Any) -> JobRun:
        """Runs a job over `input_folder` to its end, sampling the process tree's memory; `Unavailable` unless it
        completes with one answer per record."""
        self.count += 1
        name = f"bench-{self.count}"
        output = self.folder / f"out-{name}"
        started = time.monotonic()
        self.client.create_job({"name": name, **source, "input": str(input_folder), "output": str(output),
                                **options})
        peak = 0
        while True:
            peak = max(peak, sum(tree_rss_bytes(self.server_pid).values()))
            job = self.client.get_job(name)
            if job["state"] in ("Completed", "Failed", "Stopped"):
                break
            time.sleep(RSS_EVERY_S)
        create_to_end = time.monotonic() - started
        if job["state"] != "Completed":
            raise Unavailable(f"job {name} {job['state']}: {job['failure_reason']}")
        with open(output / "records.jsonl.out", "rb") as answers_file:
            answers = sum(1 for _ in answers_file)
        if answers != records:
            raise Unavailable(f"job {name} wrote {answers} answers for {records} records")
        processing, backend = self._timing(name)
        return JobRun(records, processing, create_to_end, peak, backend)

    def _timing(self, name: str) -> tuple[float, str | None]:
        """Seconds from "replicas ready" to the last file's "finished", and the backend the log names."""
        ready = finished = None
        backend = None
        for line in self.client.job_logs(name, tail=1000).splitlines():
            match = LOG_LINE.match(line)
            if not match:
                continue
            at, message = datetime.fromisoformat(match[1]).timestamp(), match[2]
            if message.startswith("replicas ready"):
                ready = at
                named = re.search(r"(\w+) backend", message)
                backend = named[1] if named else None
            elif message.startswith("file ") and " finished" in message:
                finished = at
        if ready is None or finished is None:
            raise Unavailable(f"job {name}'s log has no 'replicas ready' and 'file ... finished' lines")
        return finished - ready, backend


def _job_sample(jobs: Jobs, source: dict[str, Any], folder: Path, warmup_folder: Path, records: int,
                warmup_records: int, **options: Any) -> Sample:
    return lambda warmup: (jobs.run(source, warmup_folder, warmup_records, **options) if warmup
                           else jobs.run(source, folder, records, **options))


def _checked_backend(runs: list[JobRun], expected: str) -> dict[str, Any]:
    """The backend the runs' logs name; `Unavailable` if one names another than `expected`."""
    named = {run.backend for run in runs} - {None}
    if named - {expected}:
        raise Unavailable(f"the job's replicas ran on {', '.join(sorted(named))}, not {expected}")
    return {"backend": expected if named else f"not named in the job log ({expected} expected)"}


def _job_rows(config: str, runs: list[JobRun] | Unavailable, baselines: list[Row], expected_backend: str,
              unit: str = PER_SECOND, scale: float = 1.0) -> list[Row]:
    """A job configuration's throughput (the median of its rounds) against each baseline, the first one targeted."""
    if isinstance(runs, Unavailable):
        return unavailable(SUITE, config, [("throughput", unit)], str(runs))
    checked = attempt(config, lambda: _checked_backend(runs, expected_backend))
    if isinstance(checked, Unavailable):
        return unavailable(SUITE, config, [("throughput", unit)], str(checked))
    samples = [round(run.per_second * scale, 2) for run in runs]
    details = {"samples": samples, "records": runs[0].records, **checked,
               "create_to_end_s": [round(run.create_to_end_s, 2) for run in runs]}
    return [row(SUITE, config, "throughput" + ("" if index == 0 else f" against {baseline.config}"),
                statistics.median(samples), unit, baseline=baseline, target=Target("ratio_min", MIN_RATIO),
                details={**details, **by_round(samples, baseline)})
            for index, baseline in enumerate(baselines)]


def _offline_row(config: str, samples: list[float] | Unavailable, unit: str, details: dict[str, Any]) -> Row:
    if isinstance(samples, Unavailable):
        return unavailable(SUITE, config, [("throughput", unit)], str(samples))[0]
    rounded = [round(sample, 2) for sample in samples]
    return row(SUITE, config, "throughput", statistics.median(rounded), unit, details={"samples": rounded, **details})


def embedding_rows(context: Context, jobs: Jobs, sizes: Sizes) -> list[Row]:
    """The embedding jobs in rounds with the offline limits, then the large job whose memory is compared."""
    texts = sentences(sizes.sentences)
    folder = jobs.write_input("sentences", list(texts))
    warm_texts = texts[:BATCH * 2]
    warmup = jobs.write_input("sentences-warmup", list(warm_texts))
    source = {"model": str(context.models.embedding), "task": "sentence-embeddings"}
    encoders = load_encoders(context.models.embedding, context.models.cache)
    offline = texts[:sizes.offline_sentences]
    configs: dict[str, Sample] = {
        f"offline {runtime}, batch {BATCH}": (lambda warm, encoder=encoder: encoder.sentences_per_second(
            offline[:BATCH] if warm else offline, BATCH))
        for runtime, encoder in encoders.items() if runtime in (PYTORCH, ONNX_RUNTIME) and isinstance(encoder, Encoder)}
    strategies = {f"job, {strategy}, {sizes.sentences:,} sentences": strategy
                  for strategy in ("MultiRecord", "SingleRecord")}
    for config, strategy in strategies.items():
        configs[config] = _job_sample(jobs, source, folder, warmup, sizes.sentences, len(warm_texts),
                                      batch_strategy=strategy)
    results = alternate(configs, context.counts.repeats + EXTRA_ROUNDS)
    limits = [_offline_row(f"offline {runtime}, batch {BATCH}",
                           results.get(f"offline {runtime}, batch {BATCH}", Unavailable(str(encoders[runtime]))),
                           PER_SECOND, {"sentences": len(offline)})
              for runtime in (ONNX_RUNTIME, PYTORCH)]
    rows = list(limits)
    for config in strategies:
        rows += _job_rows(config, results[config], limits, "onnx")
    multi = results[next(iter(strategies))]
    return rows + memory_rows(jobs, source, sizes, multi)


def memory_rows(jobs: Jobs, source: dict[str, Any], sizes: Sizes, small: list[JobRun] | Unavailable) -> list[Row]:
    """The peak RSS of the MultiRecord jobs of `sizes.sentences` lines (their largest), and of one job of
    `sizes.big` lines against it."""
    metrics = [("peak RSS (server + replicas)", "MiB")]
    small_config, big_config = f"job, {sizes.sentences:,} lines", f"job, {sizes.big:,} lines"
    if isinstance(small, Unavailable):
        return unavailable(SUITE, small_config, metrics, str(small)) + unavailable(SUITE, big_config, metrics,
                                                                                  str(small))
    peaks = [run.peak_rss / 2**20 for run in small]
    small_row = row(SUITE, small_config, metrics[0][0], max(peaks), "MiB",
                    details={"peaks_mib": [round(peak, 1) for peak in peaks]})
    folder = jobs.write_input("sentences-big", list(sentences(sizes.big, seed=1)))
    big = attempt(big_config, lambda: jobs.run(source, folder, sizes.big))
    if isinstance(big, Unavailable):
        return [small_row, *unavailable(SUITE, big_config, metrics, str(big))]
    say(f"{big_config}: peak RSS {big.peak_rss / 2**20:.0f} MiB, {big.per_second:.0f} records/s")
    return [small_row, row(SUITE, big_config, metrics[0][0], big.peak_rss / 2**20, "MiB", baseline=small_row,
                           target=Target("ratio_max", MAX_RSS_RATIO),
                           details={"records_per_s": round(big.per_second, 1),
                                    "create_to_end_s": round(big.create_to_end_s, 1)})]


def prompts(count: int) -> list[str]:
    """`count` distinct prompts: each asks to continue one of the workload's sentences."""
    return [f"Continue this story in a few sentences: {sentence}" for sentence in sentences(count, seed=2)]


def generation_rows(context: Context, jobs: Jobs, sizes: Sizes) -> list[Row]:
    """The generation job in rounds with offline padded batches of `generate` (torch, the run's dtype)."""
    texts = prompts(sizes.prompts)
    parameters = _greedy(sizes.new_tokens)
    folder = jobs.write_input("prompts", [{"inputs": chat(text), "parameters": parameters} for text in texts])
    warm_texts = texts[:GENERATION_BATCH]
    warmup = jobs.write_input("prompts-warmup", [{"inputs": chat(text), "parameters": _greedy(2)}
                                                 for text in warm_texts])
    offline_config = f"offline padded batches of {GENERATION_BATCH} ({context.models.generation_dtype})"
    job_config = f"job, {sizes.prompts} prompts x {sizes.new_tokens} tokens, torch backend (auto, goal throughput)"
    model = attempt(offline_config, lambda: _load_model(context))
    configs: dict[str, Sample] = {}
    if not isinstance(model, Unavailable):
        offline = texts[:sizes.offline_prompts]

        def padded(warm: bool) -> float:
            chosen = offline[:GENERATION_BATCH] if warm else offline
            seconds = sum(_generate(*model, chosen[start:start + GENERATION_BATCH], sizes.new_tokens)
                          for start in range(0, len(chosen), GENERATION_BATCH))
            return len(chosen) * sizes.new_tokens / seconds

        configs[offline_config] = padded
    source = {"model": str(context.models.generation_source), "task": "text-generation"}
    configs[job_config] = _job_sample(jobs, source, folder, warmup, sizes.prompts, len(warm_texts))
    results = alternate(configs, context.counts.repeats)
    limit = _offline_row(offline_config, results.get(offline_config, model if isinstance(model, Unavailable)
                                                      else Unavailable("not measured")),
                         TOKENS_PER_SECOND, {"prompts": sizes.offline_prompts, "new_tokens": sizes.new_tokens})
    return [limit, *_job_rows(job_config, results[job_config], [limit], "torch", TOKENS_PER_SECOND,
                              scale=sizes.new_tokens)]


def run(context: Context) -> list[Row]:
    """All rows of the transform suite."""
    sizes = QUICK_SIZES if context.counts == QUICK else FULL_SIZES
    jobs = Jobs(context, context.logs.parent / SUITE)
    try:
        return embedding_rows(context, jobs, sizes) + generation_rows(context, jobs, sizes)
    finally:
        jobs.close()
