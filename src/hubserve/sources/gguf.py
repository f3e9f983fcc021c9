"""GGUF files: converted once into a safetensors folder that every replica then loads like any other model."""

from __future__ import annotations

from pathlib import Path

from hubserve.errors import BadRequest
from hubserve.sources.cache import sha256_text
from hubserve.sources.endpoint_cache import EndpointCache


def convert(gguf_file: Path, cache: EndpointCache) -> Path:
    """The converted folder for `gguf_file`, converted again only when its path, mtime or size change."""
    real = gguf_file.resolve()
    info = real.stat()
    key = sha256_text(str(real), str(info.st_mtime_ns), str(info.st_size))
    return cache.folder("gguf", key, lambda work: _convert(real, work))


def _convert(gguf_file: Path, out: Path) -> None:
    # Imported here: torch and transformers take seconds to import, and most sources never need them.
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        # Dequantized on load: a model that keeps its GGUF blocks refuses to be saved.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as error:  # a file we cannot read fails in many ways, all of them the source's fault
        raise BadRequest(f"could not convert the GGUF file '{gguf_file}': {error}") from error
    # transformers 5 always writes safetensors (its `safe_serialization` flag is gone).
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
