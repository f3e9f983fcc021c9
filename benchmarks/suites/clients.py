"""The clients' routes at speed: OpenAI chat streams against the offline padded batch and `transformers serve`,
grammar-constrained against unconstrained streams, and the OpenAI and TEI embedding routes against `POST
/endpoints/{name}`.

The machine's speed drifts by a third within minutes, so every figure and its baseline are sampled in rounds: each
round takes one sample of every configuration, in an order rotated by one from the round before, and a figure is the
median of its samples. The first round is an untimed warm-up of every configuration.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx

from benchmarks import peers
from benchmarks.context import Context
from benchmarks.load import StreamLoad, request_load, run_async, stream_load
from benchmarks.processes import Unavailable
from benchmarks.report import Row, Target, attempt, row, say, unavailable
from benchmarks.rounds import EXTRA_ROUNDS, Sample, alternate, by_round
from benchmarks.suites.generation import OPENAI, WARMUP_TOKENS, _generate, _load_model
from benchmarks.workload import NEW_TOKENS, PROMPTS, chat, sentences

SUITE = "clients"
CHAT_ENDPOINT = "clients-smollm2"
EMBED_ENDPOINT = "clients-minilm"
STREAMS = len(PROMPTS)
CONCURRENCY = 32  # of the embedding routes
THROUGHPUT = "aggregate throughput"
TOKENS = "tokens/s"
REQUESTS = "requests/s"
EMBED_THROUGHPUT = f"throughput (c={CONCURRENCY})"

LIMIT = f"offline padded batch of {STREAMS} (limit)"
CHAT = f"hubserve OpenAI chat, {STREAMS} streams"
GRAMMAR = f"hubserve OpenAI chat + json_schema, {STREAMS} streams"
PEER = f"transformers serve --continuous-batching, OpenAI chat, {STREAMS} streams"
# A schema no answer can complete within NEW_TOKENS tokens, so constrained streams are as long as the others (a
# finished grammar ends its stream early); its string is the kind of free text structured answers carry.
MIN_LENGTH = 2000
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "minLength": MIN_LENGTH}},
          "required": ["answer"]}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
CONSTRAINED = re.compile(r'\s*\{\s*"answer"\s*:\s*"')

# --- chat streams ---------------------------------------------------------------------------------------------------

def chat_body(model: str, **extra: Any) -> Callable[[str, int], dict[str, Any]]:
    """The OpenAI chat request for a prompt and a token count: greedy (temperature 0), streamed."""
    def body(prompt: str, tokens: int) -> dict[str, Any]:
        return {"model": model, "messages": chat(prompt), "stream": True, "max_tokens": tokens, "temperature": 0,
                **extra}

    return body


def stream_sampler(url: str, body: Callable[[str, int], dict[str, Any]]) -> Sample:
    """16 concurrent streams of NEW_TOKENS tokens (WARMUP_TOKENS when warming up)."""
    def sample(warmup: bool) -> StreamLoad:
        tokens = WARMUP_TOKENS if warmup else NEW_TOKENS
        return run_async(stream_load(url, [json.dumps(body(p, tokens)).encode() for p in PROMPTS], OPENAI))

    return sample


def constrained_sampler(url: str) -> Sample:
    """Streams under the schema; warming up also checks that one answer follows it (a server that ignored
    `response_format` would measure nothing)."""
    streams = stream_sampler(url, chat_body(CHAT_ENDPOINT, stream_options={"include_usage": True},
                                            response_format=RESPONSE_FORMAT))

    def sample(warmup: bool) -> StreamLoad:
        if warmup:
            check_constrained(url)
        return streams(warmup)

    return sample


def check_constrained(url: str) -> None:
    """One (non-streamed) answer under the schema begins as the schema says, or `Unavailable`."""
    # Enough tokens for the opening `{"answer": "` even in a tiny byte-level vocabulary (--quick).
    body = {**chat_body(CHAT_ENDPOINT, response_format=RESPONSE_FORMAT)(PROMPTS[0], 4 * WARMUP_TOKENS), "stream": False}
    response = httpx.post(url, json=body, timeout=120)
    if response.status_code != 200:
        raise Unavailable(f"{url} answered {response.status_code}: {response.text[:300]}")
    content = response.json()["choices"][0]["message"]["content"] or ""
    if not CONSTRAINED.match(content):
        raise Unavailable(f"the answer does not follow the schema: {content[:100]!r}")


def offline_sampler(context: Context) -> Sample:
    """The padded batch of the 16 prompts in this process, exactly NEW_TOKENS tokens each."""
    model, tokenizer = _load_model(context)

    def sample(warmup: bool) -> float:
        tokens = WARMUP_TOKENS if warmup else NEW_TOKENS
        return STREAMS * tokens / _generate(model, tokenizer, list(PROMPTS), tokens)

    return sample


def stream_row(config: str, loads: list[StreamLoad] | Unavailable, baseline: Row | None,
               target: Target | None = None, note: str = "", **details: Any) -> Row:
    """Median aggregate tokens/s of a served configuration, with every sample's tokens per stream and TTFT."""
    if isinstance(loads, Unavailable):
        return unavailable(SUITE, config, [(THROUGHPUT, TOKENS)], str(loads))[0]
    counts = sorted({s.tokens for load in loads for s in load.streams})
    if counts != [NEW_TOKENS]:
        note = (note + "; " if note else "") + (f"some streams ended before {NEW_TOKENS} tokens ({counts[0]} the "
                                                f"shortest): tokens/s counts the tokens sent")
    samples = [round(load.tokens_per_second, 2) for load in loads]
    ttft = statistics.median(load.ttft.p50 for load in loads)
    say(f"{config}: {statistics.median(samples):.0f} tok/s, TTFT p50 {ttft * 1000:.0f} ms")
    return row(SUITE, config, THROUGHPUT, statistics.median(samples), TOKENS, baseline=baseline, target=target,
               note=note, details={"samples": samples, **by_round(samples, baseline),
                                   "ttft_p50_ms": [round(load.ttft.p50 * 1000, 1) for load in loads],
                                   "tokens_per_stream": counts, **details})


def chat_rows(context: Context) -> list[Row]:
    """Offline padded batch, hubserve's OpenAI chat with and without a schema, and `transformers serve`."""
    admin, models = context.hubserve, context.models
    folder = models.generation_folder
    peer = peers.transformers_serve(str(folder), models.generation_dtype, context.logs)
    try:
        peer.launch()  # starts loading while the offline model and hubserve's endpoint do
        configs = {LIMIT: offline_sampler(context)}
        url = admin.deploy(CHAT_ENDPOINT, str(models.generation_source), "text-generation",
                           dtype=models.generation_dtype) + "/v1/chat/completions"
        configs[CHAT] = stream_sampler(url, chat_body(CHAT_ENDPOINT, stream_options={"include_usage": True}))
        configs[GRAMMAR] = constrained_sampler(url)
        peer_started = attempt(PEER, peer.start)
        if not isinstance(peer_started, Unavailable):
            # the same requests less `stream_options`, which it refuses (it always sends the usage)
            configs[PEER] = stream_sampler(peer.url + "/v1/chat/completions", chat_body(str(folder)))
        results = alternate(configs, context.counts.repeats + EXTRA_ROUNDS)
        if isinstance(peer_started, Unavailable):
            results[PEER] = peer_started
        stats = admin.stats(CHAT_ENDPOINT)
    finally:
        peer.stop()
        admin.delete(CHAT_ENDPOINT)
    limits = results[LIMIT]
    limit = unavailable(SUITE, LIMIT, [(THROUGHPUT, TOKENS)], str(limits))[0] if isinstance(limits, Unavailable) \
        else row(SUITE, LIMIT, THROUGHPUT, statistics.median(limits), TOKENS, note="in the benchmark process",
                 details={"samples": [round(sample, 2) for sample in limits], "dtype": models.generation_dtype})
    hubserve = stream_row(CHAT, results[CHAT], limit, Target("ratio_min", 0.9), **stats)
    peer_row = stream_row(PEER, results[PEER], limit, note="the same requests less `stream_options`")
    versus = row(SUITE, CHAT, f"{THROUGHPUT} vs transformers serve", hubserve.value, TOKENS, baseline=peer_row,
                 note="" if hubserve.value else hubserve.note,
                 details=by_round(hubserve.details.get("samples", []), peer_row))
    return [limit, hubserve,
            stream_row(GRAMMAR, results[GRAMMAR], hubserve, Target("ratio_min", 0.85),
                       note=f"schema: an object with a string of >= {MIN_LENGTH} characters",
                       response_format=RESPONSE_FORMAT),
            peer_row, versus]


# --- embeddings -----------------------------------------------------------------------------------------------------

ROOT_ROUTE = "POST /endpoints/{name}"


def embedding_routes(endpoint: str, server: str) -> dict[str, tuple[str, Callable[[str], dict[str, Any]]]]:
    """Each embedding route of one endpoint, the baseline first: its config name, URL and body for a text."""
    def openai(encoding: str) -> Callable[[str], dict[str, Any]]:
        return lambda text: {"model": EMBED_ENDPOINT, "input": text, "encoding_format": encoding}

    return {
        ROOT_ROUTE: (endpoint, lambda text: {"inputs": text}),
        "POST /endpoints/{name}/v1/embeddings (float)": (endpoint + "/v1/embeddings", openai("float")),
        "POST /endpoints/{name}/v1/embeddings (base64, the openai SDK's default)": (endpoint + "/v1/embeddings",
                                                                                   openai("base64")),
        "POST /v1/embeddings (server-wide, float)": (server + "/v1/embeddings", openai("float")),
        "POST /endpoints/{name}/embed (TEI)": (endpoint + "/embed", lambda text: {"inputs": text}),
    }


def embedding_rows(context: Context) -> list[Row]:
    """Requests/s of every embedding route at concurrency 32, one sentence per request, the same sentences; each
    against `POST /endpoints/{name}`."""
    admin, counts = context.hubserve, context.counts
    texts = sentences(counts.throughput_requests)

    def sampler(url: str, body: Callable[[str], dict[str, Any]]) -> Sample:
        bodies = [json.dumps(body(text)).encode() for text in texts]
        return lambda warmup: run_async(request_load(url, bodies[: counts.warmup_requests] if warmup else bodies,
                                                     CONCURRENCY))

    url = admin.deploy(EMBED_ENDPOINT, str(context.models.embedding), "sentence-embeddings")
    try:
        routes = embedding_routes(url, admin.url)
        results = alternate({name: sampler(*route) for name, route in routes.items()}, context.counts.repeats
                            + EXTRA_ROUNDS)
        stats = admin.stats(EMBED_ENDPOINT)
    finally:
        admin.delete(EMBED_ENDPOINT)
    root = embedding_row(ROOT_ROUTE, results.pop(ROOT_ROUTE), None, stats)
    return [root, *(embedding_row(name, loads, root) for name, loads in results.items())]


def embedding_row(config: str, loads: list[Any] | Unavailable, baseline: Row | None,
                  details: dict[str, Any] | None = None) -> Row:
    """Median requests/s of one route (`RequestLoad` samples), as a fraction of `baseline`'s."""
    if isinstance(loads, Unavailable):
        return unavailable(SUITE, config, [(EMBED_THROUGHPUT, REQUESTS)], str(loads))[0]
    samples = [round(load.per_second, 1) for load in loads]
    say(f"{config}: {statistics.median(samples):.0f} requests/s at c={CONCURRENCY}")
    return row(SUITE, config, EMBED_THROUGHPUT, statistics.median(samples), REQUESTS, baseline=baseline,
               target=Target("ratio_min", 0.95) if baseline else None,
               details={"samples": samples, **by_round(samples, baseline), "requests": len(loads[0].latencies),
                        "client_cpu_cores": [round(load.client_cpu_s / load.wall_s, 3) for load in loads],
                        **(details or {})})


def run(context: Context) -> list[Row]:
    """All rows of the clients suite."""
    parts = [(embedding_rows, [(name, EMBED_THROUGHPUT, REQUESTS) for name in embedding_routes("", "")]),
             (chat_rows, [(name, THROUGHPUT, TOKENS) for name in (LIMIT, CHAT, GRAMMAR, PEER)])]
    rows: list[Row] = []
    for part, configs in parts:
        result = attempt(part.__name__, partial(part, context))
        if isinstance(result, Unavailable):
            result = [Row(SUITE, config, metric, None, unit, note=f"unavailable: {result}")
                      for config, metric, unit in configs]
        rows += result
    return rows
