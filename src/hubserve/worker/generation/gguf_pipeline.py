"""What a GGUF served by llama.cpp still takes from transformers: the tokenizer transformers builds from the GGUF
(chat template, detokenization, grammars), its config and generation defaults, held by a text-generation pipeline
over a weightless model (on the meta device: the weights stay llama.cpp's). The tokenizer must split text exactly
as llama.cpp does, or llama.cpp does not serve the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, Pipeline, pipeline

from hubserve.sources.cache import build_once, sha256_text
from hubserve.worker.tasks.base import LoadOptions
from hubserve.worker.tasks.loading import load_tokenizer, pretrained_kwargs

# Texts both tokenizers must split alike: words, spaces, digits, code, accents, CJK, emoji, control characters.
PROBES = (
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\ttabs\nand new\r\nlines  ",
    "1234567890 3.14159 don't won't it's O'Brien's",
    "def main():\n    return {'a': [1, 2, 3]}\n",
    "Café, naïve, Straße, Ελληνικά, русский, 日本語の文章, 한국어, العربية",
    "emoji 🎉🚀 and symbols © ® ™ ∑ √ ∞",
)


def weightless_pipeline(model_dir: Path, options: LoadOptions, pipeline_class: type[Pipeline] | None,
                        eos_ids: Sequence[int]) -> Pipeline:
    """A text-generation pipeline with the GGUF's tokenizer and config, whose model has no weights; generation ends
    at `eos_ids` (llama.cpp's end-of-generation tokens, where its own generation stops)."""
    model_dir, options = saved_metadata(model_dir, options)
    tokenizer = load_tokenizer(model_dir, options)
    config = AutoConfig.from_pretrained(model_dir, **pretrained_kwargs(options))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=options.trust_remote_code)
    model.generation_config.eos_token_id = list(eos_ids)
    return pipeline(  # type: ignore[call-overload, no-any-return]  # transformers types `task` as literals only
        "text-generation", model=model, tokenizer=tokenizer, device="meta", pipeline_class=pipeline_class
    )


def saved_metadata(model_dir: Path, options: LoadOptions) -> tuple[Path, LoadOptions]:
    """Where to load the GGUF's tokenizer and config from: a folder they were saved to by the first replica that
    built them from the GGUF (in the exports cache; keyed by the file's path, size and modification time and by
    transformers' version), with the options that load them from there. Building them reads the GGUF's whole
    vocabulary through transformers' reader: seconds at every load (6 s of SmolLM2's 10 s cold start); the saved
    folder loads in a tenth of a second. Without an exports cache, the GGUF itself."""
    if options.exports_dir is None or options.gguf_file is None:
        return model_dir, options
    gguf_file = (model_dir / options.gguf_file).resolve()
    stat = gguf_file.stat()
    key = sha256_text("gguf-metadata", str(gguf_file), str(stat.st_size), str(stat.st_mtime_ns),
                      transformers.__version__)

    def build(folder: Path) -> None:
        load_tokenizer(model_dir, options).save_pretrained(folder)
        AutoConfig.from_pretrained(model_dir, **pretrained_kwargs(options)).save_pretrained(folder)

    return build_once(Path(options.exports_dir) / key, build), dataclasses.replace(options, gguf_file=None)


def tokenizer_mismatch(tokenizer: Any, tokenize: Any) -> str | None:
    """Why `tokenizer` (transformers') does not split text as `tokenize` (llama.cpp's) does, or None when they agree
    on the probes (and on a chat template's rendering, with its special tokens)."""
    texts = list(PROBES)
    if getattr(tokenizer, "chat_template", None) is not None:
        chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": PROBES[4]}]
        texts.append(str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)))
    for text in texts:
        theirs, ours = list(tokenize(text)), list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if theirs != ours:
            return f"transformers' tokenizer for this GGUF splits {text[:40]!r} into other tokens than llama.cpp's"
    return None
