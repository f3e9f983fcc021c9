"""GGUF files. A source that is one GGUF file resolves to a folder holding just that file (`place`), which the
replica serves as it is (llama.cpp runs its own quantised weights) or, where torch serves it, `convert`s once into a
safetensors folder that every later replica loads like any other model."""

from __future__ import annotations

from pathlib import Path

from hubserve.errors import BadRequest
from hubserve.gguf_header import check_gguf
from hubserve.sources.cache import sha256_text
from hubserve.sources.endpoint_cache import EndpointCache


def _key(gguf_file: Path) -> str:
    """The file's identity: its path, mtime and size (a changed file is placed and converted again)."""
    info = gguf_file.stat()
    return sha256_text(str(gguf_file), str(info.st_mtime_ns), str(info.st_size))


def check(gguf_file: Path) -> None:
    """A BadRequest unless `gguf_file` reads as GGUF (its header, metadata and tensor table; milliseconds)."""
    try:
        check_gguf(gguf_file)
    except (OSError, ValueError) as error:
        raise BadRequest(f"could not read the GGUF file '{gguf_file.name}': {error}") from error


def place(gguf_file: Path, cache: EndpointCache) -> Path:
    """A folder holding only `gguf_file` (a link to it, under its own name), checked to read as GGUF: what the
    replica loads, with nothing else of the file's own folder beside it."""
    real = gguf_file.resolve()
    check(real)
    return cache.folder("linked", _key(real), lambda work: (work / real.name).symlink_to(real))


def convert(gguf_file: Path, cache: EndpointCache) -> Path:
    """The converted folder for `gguf_file`, converted again only when its path, mtime or size change."""
    real = gguf_file.resolve()
    return cache.folder("gguf", _key(real), lambda work: _convert(real, work))


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
