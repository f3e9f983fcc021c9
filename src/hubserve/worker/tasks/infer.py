"""Which task a model folder serves when the endpoint names none: its model card, its config's architecture
(as the SageMaker Hugging Face toolkit matches it), sentence-transformers files, or its GGUF file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.repocard import metadata_load
from transformers.models.auto import modeling_auto

from hubserve.errors import BadRequest
from hubserve.gguf_header import gguf_architecture
from hubserve.task_names import GGUF_ARCHITECTURES, architecture_task

# `...ForConditionalGeneration` is also how speech (Whisper) and vision-language models are named.
_EXACT_ARCHITECTURES: dict[str, str] = {
    name: task
    for mapping, task in (
        (modeling_auto.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES, "automatic-speech-recognition"),
        (modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, "image-text-to-text"),
    )
    for name in mapping.values()
    if isinstance(name, str)
}


def infer_task(model_dir: Path, gguf_file: str | None = None) -> str:
    """The task to serve `model_dir` with; BadRequest when nothing tells.

    Order: the model card's `pipeline_tag`, `config.json`'s first architecture, a sentence-transformers
    `modules.json`, then the GGUF file's architecture (`gguf_file`, or any .gguf in the folder).
    """
    model_dir = Path(model_dir)
    tag = _pipeline_tag(model_dir / "README.md")
    if tag:
        return tag
    architecture = _architecture(model_dir / "config.json")
    if architecture:
        task = _EXACT_ARCHITECTURES.get(architecture) or architecture_task(architecture)
        if task:
            return task
    if (model_dir / "modules.json").is_file():
        return "sentence-embeddings"
    if gguf_file or any(model_dir.glob("*.gguf")):
        return GGUF_ARCHITECTURES.get(_gguf_architecture(model_dir, gguf_file), "text-generation")
    raise BadRequest(
        f"could not infer the task of {model_dir}: set the endpoint's `task` field (or env HF_TASK)"
    )


def _pipeline_tag(card: Path) -> str | None:
    if not card.is_file():
        return None
    try:
        metadata: Any = metadata_load(card)
    except (yaml.YAMLError, ValueError):  # a broken card is no reason to fail: the other rules may tell
        return None
    tag = metadata.get("pipeline_tag") if isinstance(metadata, dict) else None
    return tag if isinstance(tag, str) and tag else None


def _architecture(config: Path) -> str | None:
    if not config.is_file():
        return None
    try:
        architectures = json.loads(config.read_text()).get("architectures")
    except (ValueError, AttributeError):
        return None
    first = architectures[0] if isinstance(architectures, list) and architectures else None
    return first if isinstance(first, str) else None


def _gguf_architecture(model_dir: Path, gguf_file: str | None) -> str:
    """`general.architecture` of the GGUF file ("" when unreadable)."""
    return gguf_architecture(model_dir / gguf_file if gguf_file else next(iter(sorted(model_dir.glob("*.gguf")))))
