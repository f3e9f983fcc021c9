"""A quick run of the benchmark harness (`python -m benchmarks.run --quick`): tiny models, a few requests, every
embedding peer and the cold starts; the figures are meaningless, the rows and their numbers must be there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "embeddings": {
        "offline encode, batch 32 (limit)": {"throughput"},
        "offline encode([sentence]) (direct call)": {"latency p50"},
        "hubserve": {"throughput (c=32)", "latency p50 (c=1)"},
        "one-at-a-time FastAPI": {"throughput (c=32)", "latency p50 (c=1)"},
        "LitServe, batching": {"throughput (c=32)", "latency p50 (c=1)"},
    },
    "coldstart": {
        "tiny embedding model (sentence-embeddings)": {"new replica: ask -> first answer"},
        "tiny Llama (GGUF) (text-generation)": {"new replica: ask -> first answer"},
    },
}


def test_quick_benchmark_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "embeddings,coldstart", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hubserve" in done.stdout and "vs baseline" in done.stdout  # the printed table

    results = json.loads(out.read_text())
    assert results["quick"] is True and results["machine"]["cpu_count"] >= 1
    found: dict[str, dict[str, set[str]]] = {}
    for row in results["rows"]:
        assert isinstance(row["value"], float) and row["value"] > 0, row
        found.setdefault(row["suite"], {}).setdefault(row["config"], set()).add(row["metric"])
    assert found == EXPECTED

    by_key = {(row["config"], row["metric"]): row for row in results["rows"]}
    hubserve = by_key["hubserve", "throughput (c=32)"]
    assert hubserve["baseline"] == "offline encode, batch 32 (limit), alternating with hubserve / throughput"
    assert hubserve["ratio"] > 0 and hubserve["target"] == ">= 0.85x" and isinstance(hubserve["met"], bool)
    latency = by_key["hubserve", "latency p50 (c=1)"]
    assert latency["delta"] is not None and latency["target"] == "<= +3 ms"


def test_quick_soak(tmp_path: Path) -> None:
    """The soak's harness end to end: steady load with a lane of bad requests, each answered as expected."""
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "soak", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["metric"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["requests answered as expected"]["value"] > 0, rows
    assert rows["unexpected answers"]["value"] == 0, rows["requests answered as expected"]["details"]
    assert set(rows["requests answered as expected"]["details"]["expected_by_kind"]) >= {"embed", "generate",
                                                                                         "depth bomb", "wrong type"}
    assert isinstance(rows["RSS growth (server + replicas)"]["value"], float)


def test_quick_sagemaker_stream(tmp_path: Path) -> None:
    """The SageMaker streaming suite end to end: both routes measured in alternating rounds, the response stream
    judged against `POST /endpoints/{name}`, and its first tokens arriving before the generations end."""
    out = tmp_path / "sagemaker.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "sagemaker_stream", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(row["config"], row["metric"]): row for row in json.loads(out.read_text())["rows"]}
    post = 'POST /endpoints/{name} "stream": true (httpx), 16 streams'
    stream = "InvokeEndpointWithResponseStream (boto3), 16 streams"
    metrics = {"aggregate throughput", "TTFT p50", "TTFT / time to last token, p50"}
    assert set(rows) == {(config, metric) for config in (post, stream) for metric in metrics}
    assert all(isinstance(row["value"], float) and row["value"] > 0 for row in rows.values()), rows
    throughput = rows[stream, "aggregate throughput"]
    assert throughput["baseline"] == f"{post} / aggregate throughput" and throughput["target"] == ">= 0.9x"
    assert len(throughput["details"]["samples"]) == len(throughput["details"]["ratios_by_round"]) == 3
    assert rows[stream, "TTFT / time to last token, p50"]["met"] is True
