"""Loading models, tokenizers and pipelines from a local folder with the endpoint's `LoadOptions`.

The one place that maps `device`, `dtype`, `trust_remote_code` and `gguf_file` onto transformers' arguments.
"""

from __future__ import annotations

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


def torch_dtype(options: LoadOptions) -> torch.dtype | str:
    """`auto` keeps the checkpoint's dtype on an accelerator and float32 on the CPU."""
    if options.dtype == "auto":
        return torch.float32 if options.device == "cpu" else "auto"
    return getattr(torch, options.dtype)


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


def build_pipeline(task: str, model_dir: Path, options: LoadOptions) -> Pipeline:
    """A transformers pipeline for `task` over the folder, on the options' device and dtype."""
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
        dtype=torch_dtype(options),
        trust_remote_code=options.trust_remote_code,
        model_kwargs=model_kwargs,
    )
