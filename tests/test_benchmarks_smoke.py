"""A quick run of the benchmark harness (`python -m benchmarks.run --quick`): tiny models, a few requests, every
embedding peer, the encoder runtimes, llama.cpp and the cold starts; the figures are meaningless, the rows and their
numbers must be there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLD = {"new replica: ask -> first answer"}
EXPECTED = {
    "embeddings": {
        "offline encode, batch 32 (limit)": {"throughput"},
        "offline encode([sentence]) (direct call)": {"latency p50"},
        "hubserve, torch backend": {"throughput (c=32)", "latency p50 (c=1)"},
        "one-at-a-time FastAPI": {"throughput (c=32)", "latency p50 (c=1)"},
        "LitServe, batching": {"throughput (c=32)", "latency p50 (c=1)"},
    },
    "encoders": {
        **{f"offline {runtime}, batch 32{' (limit)' if runtime == 'PyTorch' else ''}": {"throughput"}
           for runtime in ("PyTorch", "ONNX Runtime", "OpenVINO f32")},
        **{f"offline {runtime}, batch 1 (direct call)": {"latency p50"}
           for runtime in ("PyTorch", "ONNX Runtime", "OpenVINO f32")},
        "hubserve, onnx backend": {"throughput (c=32)", "throughput (c=32) against ONNX Runtime", "latency p50 (c=1)"},
        "hubserve, openvino backend": {"throughput (c=32)", "throughput (c=32) against OpenVINO f32"},
        "hubserve, onnx backend, int8": {"throughput (c=32)", "throughput (c=32) against ONNX Runtime"},
        "hubserve, openvino backend, bf16": {"throughput (c=32)", "throughput (c=32) against OpenVINO f32"},
    },
    "coldstart": {
        "tiny embedding model (sentence-embeddings, torch backend)": COLD,
        "tiny embedding model (sentence-embeddings, onnx backend)": COLD,
        "tiny Llama (GGUF) (text-generation, torch backend)": COLD,
        "tiny Llama (GGUF) (text-generation, llamacpp backend)": COLD,
    },
}


def test_quick_benchmark_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "embeddings,encoders,coldstart", "--out",
               str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
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
    hubserve = by_key["hubserve, torch backend", "throughput (c=32)"]
    assert hubserve["baseline"] == ("offline encode, batch 32 (limit), alternating with hubserve, torch backend / "
                                    "throughput")
    assert hubserve["ratio"] > 0 and hubserve["target"] == ">= 0.85x" and isinstance(hubserve["met"], bool)
    latency = by_key["hubserve, torch backend", "latency p50 (c=1)"]
    assert latency["delta"] is not None and latency["target"] == "<= +3 ms"

    onnx = by_key["hubserve, onnx backend", "throughput (c=32)"]
    assert onnx["baseline"] == "offline PyTorch, batch 32 (limit) / throughput" and onnx["target"] == ">= 1.8x"
    assert len(onnx["details"]["samples"]) == len(onnx["details"]["ratios_by_round"]) == 3
    against_ort = by_key["hubserve, onnx backend", "throughput (c=32) against ONNX Runtime"]
    assert against_ort["baseline"] == "offline ONNX Runtime, batch 32 / throughput" and against_ort["ratio"] > 0
    assert by_key["hubserve, onnx backend", "latency p50 (c=1)"]["target"] == "<= +0 ms"
    against_openvino = by_key["hubserve, openvino backend", "throughput (c=32) against OpenVINO f32"]
    assert against_openvino["baseline"] == "offline OpenVINO f32, batch 32 / throughput"
    for runtime in ("ONNX Runtime", "OpenVINO f32"):  # the same embeddings as PyTorch's
        assert by_key[f"offline {runtime}, batch 32", "throughput"]["details"]["max_abs_difference_to_pytorch"] < 1e-4
    assert by_key["tiny embedding model (sentence-embeddings, onnx backend)", "new replica: ask -> first answer"][
        "target"] == "<= 0.5 s"


def test_quick_llamacpp(tmp_path: Path) -> None:
    """hubserve's llamacpp backend beside llama-server on a bf16 GGUF and on the source GGUF, its torch backend
    beside them; llama-server's rows say why when no binary was built before (a quick run compiles nothing)."""
    out = tmp_path / "llamacpp.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "llamacpp", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(row["config"], row["metric"]): row for row in json.loads(out.read_text())["rows"]}
    metrics = ("one stream", "16 streams", "TTFT p50 (16 streams)")
    servers = ("llama-server, BF16 GGUF", "hubserve, llamacpp backend, BF16 GGUF", "llama-server, F32 GGUF",
               "hubserve, llamacpp backend, F32 GGUF", "hubserve, torch backend, bf16 from the F32 GGUF")
    assert set(rows) == {("llama-server build", "cmake build (configure + --parallel 16)")} | {
        (server, metric) for server in servers for metric in metrics}
    built = rows["llama-server build", "cmake build (configure + --parallel 16)"]["value"] is not None
    for (config, _), row in rows.items():
        if config.startswith("llama-server") and not built:
            assert "a --quick run builds nothing" in row["note"], row
        else:
            assert isinstance(row["value"], float) and row["value"] > 0, row
    for label in ("BF16", "F32"):
        hubserve = rows[f"hubserve, llamacpp backend, {label} GGUF", "16 streams"]
        assert hubserve["target"] == ">= 1x" and (hubserve["ratio"] is not None) == built
        ttft = rows[f"hubserve, llamacpp backend, {label} GGUF", "TTFT p50 (16 streams)"]
        assert ttft["target"] == "<= 1x" and ttft["baseline"] == f"llama-server, {label} GGUF / TTFT p50 (16 streams)"


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
    # Streamed, not answered whole (a whole answer's first token comes with its last: 100%). The suite's own target,
    # 50%, is judged by `make bench` on a quiet machine: here it shares the cores with the rest of the test run,
    # which once took a CI run's median over 50% (it measures 21-31% alone).
    assert rows[stream, "TTFT / time to last token, p50"]["value"] < 90


def test_quick_transform(tmp_path: Path) -> None:
    """The transform suite end to end: embedding jobs (MultiRecord, SingleRecord) in rounds with the offline limits
    of ONNX Runtime and PyTorch, the memory of a small and a ten times larger job, and a generation job on a GGUF
    (torch: a job aims at throughput) beside offline padded batches."""
    out = tmp_path / "transform.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "transform", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(row["config"], row["metric"]): row for row in json.loads(out.read_text())["rows"]}
    assert all(isinstance(row["value"], float) and row["value"] > 0 for row in rows.values()), rows
    onnx, torch = "offline ONNX Runtime, batch 32", "offline PyTorch, batch 32"
    for strategy in ("MultiRecord", "SingleRecord"):
        job = f"job, {strategy}, 256 sentences"
        assert rows[job, "throughput"]["baseline"] == f"{onnx} / throughput"
        assert rows[job, f"throughput against {torch}"]["baseline"] == f"{torch} / throughput"
        assert rows[job, "throughput"]["target"] == ">= 0.9x" and rows[job, "throughput"]["details"]["records"] == 256
        assert len(rows[job, "throughput"]["details"]["ratios_by_round"]) == 3
    big = rows["job, 2,560 lines", "peak RSS (server + replicas)"]
    assert big["baseline"] == "job, 256 lines / peak RSS (server + replicas)" and big["target"] == "<= 1.1x"
    generation = rows["job, 8 prompts x 4 tokens, torch backend (auto, goal throughput)", "throughput"]
    assert generation["unit"] == "tokens/s" and generation["baseline"].startswith("offline padded batches of 16")


def test_quick_scale_to_zero(tmp_path: Path) -> None:
    """Cold starts and wakes from zero of both models in alternating rounds, the wake against the cold start."""
    out = tmp_path / "scale_to_zero.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "scale_to_zero", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(row["config"], row["metric"]): row for row in json.loads(out.read_text())["rows"]}
    configs = ("tiny embedding model (feature-extraction)", "tiny Llama (GGUF) (text-generation)")
    cold, wake = "cold start: create -> first answer", "wake from zero: first request -> answer"
    assert set(rows) == {(config, metric) for config in configs for metric in (cold, wake)}
    assert all(isinstance(row["value"], float) and row["value"] > 0 for row in rows.values()), rows
    for config in configs:
        woken = rows[config, wake]
        assert woken["baseline"] == f"{config} / {cold}" and woken["target"] == "<= +0.3 s"
        assert woken["delta"] is not None and isinstance(woken["met"], bool)


def test_quick_ray(tmp_path: Path) -> None:
    """The Ray suite end to end on a local loopback cluster: one replica against two on single-CPU nodes pinned to a
    core each, in alternating rounds, and a Ray-placed replica against a local process at concurrency 1."""
    out = tmp_path / "ray.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "ray", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(row["config"], row["metric"]): row for row in json.loads(out.read_text())["rows"]}
    one, two = "hubserve --ray, 1 replica on one single-CPU node", "hubserve --ray, 2 replicas on two single-CPU nodes"
    local, remote = "hubserve, 1 replica (local process)", "hubserve --ray, 1 replica (Ray actor's process)"
    throughput, latency = "throughput (c=32)", "latency p50 (c=1)"
    assert set(rows) == {(one, throughput), (two, throughput), (local, latency), (remote, latency)}
    assert all(isinstance(row["value"], float) and row["value"] > 0 for row in rows.values()), rows
    scaled = rows[two, throughput]
    assert scaled["baseline"] == f"{one} / {throughput}" and scaled["target"] == ">= 1x" and scaled["ratio"] > 0
    placed = scaled["details"]["placements"][-1]
    assert len({replica["node"] for replica in placed}) == 2
    assert {replica["cpus_allowed"] for replica in placed} == {str(core) for core in scaled["details"]["node_cores"]}
    hop = rows[remote, latency]
    assert hop["baseline"] == f"{local} / {latency}" and hop["delta"] is not None
    assert hop["details"]["placement"][0]["node"] and rows[local, latency]["details"]["placement"][0]["node"] is None
