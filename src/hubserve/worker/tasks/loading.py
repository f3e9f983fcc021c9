"""Loading models, tokenizers and pipelines from a local folder with the endpoint's `LoadOptions`.

The one place that maps `device`, `dtype`, `trust_remote_code` and `gguf_file` onto transformers' arguments.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    Pipeline,
    PreTrainedModel,
    PreTrainedTokenizer,
    PreTrainedTokenizerFast,
    pipeline,
)

from hubserve.worker.tasks.base import LoadOptions

# Tasks whose `auto` dtype on the CPU is bfloat16 where the CPU computes in it natively: token-by-token decoding
# reads every weight for each token, and half the bytes decode faster.
BFLOAT16_ON_CPU_TASKS = frozenset({"text-generation"})


def torch_dtype(options: LoadOptions, task: str | None = None) -> torch.dtype | str:
    """`auto` keeps the checkpoint's dtype on an accelerator and float32 on the CPU, except bfloat16 for the
    tasks of `BFLOAT16_ON_CPU_TASKS` on a CPU with native bfloat16 (elsewhere its matmuls are several times slower)."""
    if options.dtype == "auto":
        if options.device != "cpu":
            return "auto"
        return torch.bfloat16 if task in BFLOAT16_ON_CPU_TASKS and cpu_has_native_bfloat16() else torch.float32
    return getattr(torch, options.dtype)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX-512 BF16, AMX, or AVX-512 BW/VL/DQ)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pretrained_kwargs(options: LoadOptions) -> dict[str, Any]:
    """Keyword arguments every `from_pretrained` of a model gets (never reaching out to the Hub)."""
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code, "local_files_only": True}
    if options.gguf_file:
        kwargs["gguf_file"] = options.gguf_file
    return kwargs


def load_model(auto_class: Any, model_dir: Path, options: LoadOptions) -> PreTrainedModel:
    """`auto_class.from_pretrained` on the options' device and dtype, in eval mode."""
    model = auto_class.from_pretrained(model_dir, dtype=torch_dtype(options), **pretrained_kwargs(options))
    return model.to(options.device).eval()


def load_tokenizer(model_dir: Path, options: LoadOptions) -> PreTrainedTokenizer | PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(model_dir, **pretrained_kwargs(options))


def sentence_transformers_kwargs(options: LoadOptions) -> dict[str, Any]:
    """Keyword arguments of a `SentenceTransformer` or `CrossEncoder` over a local folder."""
    return {
        "device": options.device,
        "trust_remote_code": options.trust_remote_code,
        "local_files_only": True,
        "model_kwargs": {"dtype": torch_dtype(options)},
    }


def build_pipeline(task: str, model_dir: Path, options: LoadOptions,
                   pipeline_class: type[Pipeline] | None = None) -> Pipeline:
    """A transformers pipeline for `task` over the folder, on the options' device and dtype (of `pipeline_class`, a
    subclass of the task's pipeline, when given)."""
    model_kwargs: dict[str, Any] = {}
    tokenizer = None
    if options.gguf_file:
        # The pipeline does not pass `gguf_file` to the tokenizer: load it ourselves.
        model_kwargs["gguf_file"] = options.gguf_file
        tokenizer = load_tokenizer(model_dir, options)
    return pipeline(  # type: ignore[call-overload]  # transformers types `task` as literals only
        task,
        model=str(model_dir),
        tokenizer=tokenizer,
        device=options.device,
        dtype=torch_dtype(options, task),
        trust_remote_code=options.trust_remote_code,
        model_kwargs=model_kwargs,
        pipeline_class=pipeline_class,
    )
