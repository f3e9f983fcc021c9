"""Generation: 16 chat prompts, exactly 64 new tokens each (greedy, min_new_tokens=64). Offline: sequential
`generate` and one left-padded batch of the 16 (the limit); served: hubserve and `transformers serve
--continuous-batching`, 16 concurrent streams each, for aggregate tokens/s and time to first token."""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks import peers
from benchmarks.context import Context
from benchmarks.hubserve_api import engine
from benchmarks.load import StreamLoad, StreamProtocol, run_async, stream_load
from benchmarks.report import Row, Target, guarded, row, say
from benchmarks.workload import NEW_TOKENS, PROMPTS, chat

SUITE = "generation"
ENDPOINT = "smollm2"
WARMUP_TOKENS = 8
THROUGHPUT = "aggregate throughput"
PER_SECOND = "tokens/s"
STREAM_METRICS = [(THROUGHPUT, PER_SECOND), ("TTFT p50", "ms"), ("TTFT p90", "ms")]
HUBSERVE = f"hubserve, torch backend, {len(PROMPTS)} streams"  # llama.cpp's: suites/llamacpp.py
TRANSFORMERS_SERVE = f"transformers serve --continuous-batching, {len(PROMPTS)} streams"


def _greedy(tokens: int) -> dict[str, Any]:
    return {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}


def _tgi_tokens(event: dict[str, Any]) -> int:
    token = event.get("token")
    return int(isinstance(token, dict) and not token.get("special"))


def _tgi_total(event: dict[str, Any]) -> int | None:
    details = event.get("details")
    return details.get("generated_tokens") if isinstance(details, dict) else None


def _openai_tokens(event: dict[str, Any]) -> int:
    return sum(1 for choice in event.get("choices") or [] if (choice.get("delta") or {}).get("content"))


def _openai_total(event: dict[str, Any]) -> int | None:
    usage = event.get("usage")
    return usage.get("completion_tokens") if isinstance(usage, dict) else None


# hubserve streams TGI-style events: one per token, then one with `generated_text` and `details`.
TGI = StreamProtocol("tgi", _tgi_tokens, _tgi_total)
# transformers serve streams OpenAI chat-completion chunks, and the usage in its last one.
OPENAI = StreamProtocol("openai", _openai_tokens, _openai_total)


def _load_model(context: Context) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = context.models.generation_folder
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, context.models.generation_dtype))
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def _generate(model: Any, tokenizer: Any, prompts: list[str], tokens: int) -> float:
    """Seconds to generate exactly `tokens` new tokens for `prompts` in one left-padded batch."""
    import torch

    texts = [tokenizer.apply_chat_template(chat(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**batch, **_greedy(tokens), pad_token_id=tokenizer.pad_token_id)
    elapsed = time.perf_counter() - started
    if output.shape[1] - batch["input_ids"].shape[1] != tokens:
        raise RuntimeError(f"generate produced {output.shape[1] - batch['input_ids'].shape[1]} tokens, not {tokens}")
    return elapsed


def offline_rows(context: Context) -> tuple[Row, Row]:
    """Sequential `generate` (one prompt at a time) and one padded batch of all 16 prompts, in this process."""
    model, tokenizer = _load_model(context)
    _generate(model, tokenizer, list(PROMPTS), WARMUP_TOKENS)  # warm up
    some = list(PROMPTS[: context.counts.sequential_prompts])
    sequential = len(some) * NEW_TOKENS / sum(_generate(model, tokenizer, [p], NEW_TOKENS) for p in some)
    samples = [len(PROMPTS) * NEW_TOKENS / _generate(model, tokenizer, list(PROMPTS), NEW_TOKENS)
               for _ in range(context.counts.repeats)]
    batch = statistics.median(samples)
    del model
    gc.collect()
    say(f"offline: sequential {sequential:.1f} tok/s ({len(some)} prompts), padded batch {batch:.0f} tok/s")
    label = "sequential generate" + (f" ({len(some)} of {len(PROMPTS)} prompts)" if len(some) < len(PROMPTS) else "")
    dtype = context.models.generation_dtype
    return (
        row(SUITE, label, THROUGHPUT, sequential, PER_SECOND, details={"prompts": len(some), "dtype": dtype}),
        row(SUITE, f"one padded batch of {len(PROMPTS)} (limit)", THROUGHPUT, batch, PER_SECOND,
            details={"samples": samples, "dtype": dtype}),
    )


def _measure(url: str, body: Callable[[str, int], dict[str, Any]], protocol: StreamProtocol) -> StreamLoad:
    """16 concurrent streams of NEW_TOKENS tokens, after an untimed round of 16 short ones."""
    warmup = [json.dumps(body(p, WARMUP_TOKENS)).encode() for p in PROMPTS]
    bodies = [json.dumps(body(p, NEW_TOKENS)).encode() for p in PROMPTS]
    load = run_async(stream_load(url, bodies, protocol, warmup))
    short = [s.tokens for s in load.streams if s.tokens != NEW_TOKENS]
    if short:
        raise RuntimeError(f"some streams did not produce {NEW_TOKENS} tokens: {short}")
    return load


def _hubserve_load(context: Context) -> tuple[StreamLoad, dict[str, Any]]:
    admin = context.hubserve
    url = admin.deploy(ENDPOINT, str(context.models.generation_source), "text-generation",
                       dtype=context.models.generation_dtype, **engine("torch"))
    try:
        load = _measure(url, lambda prompt, tokens: {"inputs": chat(prompt), "parameters": _greedy(tokens),
                                                     "stream": True}, TGI)
        return load, admin.stats(ENDPOINT)
    finally:
        admin.delete(ENDPOINT)


def _transformers_serve_load(context: Context) -> StreamLoad:
    from transformers import GenerationConfig

    folder = context.models.generation_folder
    defaults = GenerationConfig.from_pretrained(folder)
    config = {**_greedy(NEW_TOKENS), "eos_token_id": defaults.eos_token_id, "pad_token_id": defaults.pad_token_id}
    model_id = str(folder)  # the server pins its model under the name given on its command line

    def body(prompt: str, tokens: int) -> dict[str, Any]:
        return {"model": model_id, "messages": chat(prompt), "stream": True, "max_tokens": tokens,
                "generation_config": json.dumps({**config, **_greedy(tokens)})}

    with peers.transformers_serve(model_id, context.models.generation_dtype, context.logs) as server:
        return _measure(server.url + "/v1/chat/completions", body, OPENAI)


def stream_rows(config: str, load: StreamLoad, limit: Row, ttft_baseline: Row | None = None,
                throughput_target: Target | None = None, ttft_target: Target | None = None,
                note: str = "") -> list[Row]:
    """Aggregate tokens/s (as a fraction of the padded batch) and TTFT p50/p90 of one served configuration."""
    ttft = load.ttft
    say(f"{config}: {load.tokens_per_second:.0f} tok/s, TTFT p50 {ttft.p50 * 1000:.0f} ms")
    details = {"tokens": load.tokens, "wall_s": round(load.wall_s, 3), "ttft": ttft.as_ms()}
    return [
        row(SUITE, config, THROUGHPUT, load.tokens_per_second, PER_SECOND, baseline=limit,
            target=throughput_target, note=note, details=details),
        row(SUITE, config, "TTFT p50", ttft.p50 * 1000, "ms", baseline=ttft_baseline, target=ttft_target),
        row(SUITE, config, "TTFT p90", ttft.p90 * 1000, "ms"),
    ]


def run(context: Context) -> list[Row]:
    """All rows of the generation suite."""
    sequential, limit = offline_rows(context)
    rows = [sequential, limit]
    peer_rows = guarded(SUITE, TRANSFORMERS_SERVE, STREAM_METRICS, lambda: stream_rows(
        TRANSFORMERS_SERVE, _transformers_serve_load(context), limit, note="issue: 220 tok/s (padded batch 419)"))

    def hubserve_rows() -> list[Row]:
        load, stats = _hubserve_load(context)
        result = stream_rows(HUBSERVE, load, limit, ttft_baseline=peer_rows[1],
                             throughput_target=Target("ratio_min", 0.9), ttft_target=Target("ratio_max", 0.5))
        result[0].details.update(stats)
        return result

    return [*rows, *guarded(SUITE, HUBSERVE, STREAM_METRICS, hubserve_rows), *peer_rows]
