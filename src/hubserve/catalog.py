"""The model catalog: the models this machine holds (the Hugging Face cache, installed model packages, the home's
catalog folder), each with the id to deploy it by and the tasks it serves.

It runs in the API process, so it reads files only (config.json, modules.json, the model card's front matter, a
GGUF header) and never imports torch, transformers or numpy.
"""

from __future__ import annotations

import json
import os
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from hubserve.gguf_header import gguf_architecture
from hubserve.task_names import GGUF_ARCHITECTURES, SERVED_TASKS, architecture_task

Source = Literal["package", "hub-cache", "folder"]
Format = Literal["transformers", "sentence-transformers", "gguf"]

# Hub pipeline tags that hubserve serves under another name.
TASK_ALIASES = {"text-ranking": "sentence-ranking", "sentiment-analysis": "text-classification",
                "ner": "token-classification"}
# What else a model of a task serves, beside the task itself.
RELATED_TASKS: dict[str, tuple[str, ...]] = {
    "text2text-generation": ("summarization", "translation"),
    "summarization": ("text2text-generation",),
    "translation": ("text2text-generation",),
}
# A sentence-transformers model: the first is what task inference gives it without a model card.
SENTENCE_TASKS = ("sentence-embeddings", "sentence-similarity", "feature-extraction")
_CARD_TAG = re.compile(r"^pipeline_tag:\s*['\"]?([\w-]+)", re.MULTILINE)


class CatalogModel(BaseModel):
    id: str  # what to put in an endpoint's `model`: a Hub id, or a local path
    name: str
    source: Source
    format: Format
    tasks: list[str]  # the first is the one hubserve infers when the endpoint names none
    path: str
    size_bytes: int


def catalog_dir(home: Path) -> Path:
    """The folder whose model folders and .gguf files the catalog lists (the user puts or links them there)."""
    return home / "catalog"


def list_models(home: Path) -> list[CatalogModel]:
    """Every model found: installed packages, then the Hugging Face cache, then the home's catalog folder."""
    return [*package_models(), *hub_cache_models(), *folder_models(catalog_dir(home))]


def package_models() -> Iterator[CatalogModel]:
    """Installed Python packages that ship a model: a `model/` folder, or .gguf files (found without importing)."""
    for module in pkgutil.iter_modules():
        location = getattr(module.module_finder, "path", None)
        if not module.ispkg or not isinstance(location, str):
            continue
        package = Path(location) / module.name
        folder = package / "model"
        if is_model_folder(folder):
            yield describe_folder(folder, str(folder), module.name, "package")
        for gguf_file in sorted(package.glob("*.gguf")):
            yield describe_gguf(gguf_file, str(gguf_file), gguf_file.stem, "package")


def hub_cache_models() -> Iterator[CatalogModel]:
    """The model repos of the Hugging Face cache (HF_HUB_CACHE, else HF_HOME's), each at its `main` snapshot."""
    from huggingface_hub import CachedRepoInfo, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos: frozenset[CachedRepoInfo] = scan_cache_dir().repos
    except CacheNotFound:
        return
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        folder = Path(revision.snapshot_path)
        if is_model_folder(folder):
            yield describe_folder(folder, repo.repo_id, repo.repo_id, "hub-cache", revision.size_on_disk)
            continue
        gguf_files = sorted(folder.glob("*.gguf"))
        for gguf_file in gguf_files:  # one file: the repo id serves; several: each file by its path
            model_id = repo.repo_id if len(gguf_files) == 1 else str(gguf_file)
            yield describe_gguf(gguf_file, model_id, f"{repo.repo_id}/{gguf_file.name}", "hub-cache")


def folder_models(root: Path) -> Iterator[CatalogModel]:
    """The model folders and .gguf files in `root` (links followed); a folder of .gguf files alone lists each."""
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.suffix.lower() == ".gguf":
            yield describe_gguf(entry, str(entry), entry.stem, "folder")
        elif is_model_folder(entry):
            yield describe_folder(entry, str(entry), entry.name, "folder")
        elif entry.is_dir():
            for gguf_file in sorted(entry.glob("*.gguf")):
                yield describe_gguf(gguf_file, str(gguf_file), f"{entry.name}/{gguf_file.stem}", "folder")


def is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "modules.json").is_file()


def describe_folder(folder: Path, model_id: str, name: str, source: Source, size: int | None = None) -> CatalogModel:
    sentence = (folder / "modules.json").is_file()
    return CatalogModel(id=model_id, name=name, source=source,
                        format="sentence-transformers" if sentence else "transformers",
                        tasks=folder_tasks(folder), path=str(folder),
                        size_bytes=folder_size(folder) if size is None else size)


def describe_gguf(path: Path, model_id: str, name: str, source: Source) -> CatalogModel:
    task = GGUF_ARCHITECTURES.get(gguf_architecture(path), "text-generation")
    return CatalogModel(id=model_id, name=name, source=source, format="gguf", tasks=[task], path=str(path),
                        size_bytes=path.stat().st_size)


def folder_tasks(folder: Path) -> list[str]:
    """The tasks a model folder serves, in the order hubserve's task inference (worker/tasks/infer.py) tries them:
    the card's pipeline_tag, the config's architecture, sentence-transformers' modules.json."""
    config = read_json(folder / "config.json")
    found: list[str] = []
    tag = card_pipeline_tag(folder / "README.md")
    if tag:
        found.append(TASK_ALIASES.get(tag, tag))
    found.extend(config_tasks(config))
    if (folder / "modules.json").is_file():
        found.extend(SENTENCE_TASKS)
    elif not found and config.get("architectures"):  # a bare encoder (BertModel, ViTModel): its hidden states
        found.append("image-feature-extraction" if "image_size" in config else "feature-extraction")
    for task in list(found):
        found.extend(RELATED_TASKS.get(task, ()))
    return [task for index, task in enumerate(found) if task in SERVED_TASKS and task not in found[:index]]


def config_tasks(config: dict[str, Any]) -> list[str]:
    """What config.json's first architecture serves."""
    architectures = config.get("architectures")
    first = architectures[0] if isinstance(architectures, list) and architectures else None
    if not isinstance(first, str):
        return []
    # `...ForConditionalGeneration` also names speech (Whisper) and vision-language models.
    if first.endswith("ForConditionalGeneration") and "vision_config" in config:
        return ["image-text-to-text"]
    if first.endswith("ForConditionalGeneration") and "num_mel_bins" in config:
        return ["automatic-speech-recognition"]
    task = architecture_task(first)
    if task == "text-classification" and _is_nli(config):
        return [task, "zero-shot-classification"]
    return [task] if task else []


def _is_nli(config: dict[str, Any]) -> bool:
    """Labels that name entailment: a natural language inference model, which zero-shot classification uses."""
    labels = config.get("id2label")
    return isinstance(labels, dict) and any("entail" in str(label).lower() for label in labels.values())


def card_pipeline_tag(card: Path) -> str | None:
    """`pipeline_tag` from a model card's YAML front matter (a scalar: read without a YAML parser)."""
    try:
        text = card.read_text(errors="replace")
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    front, _, _ = text[3:].partition("\n---")
    match = _CARD_TAG.search(front)
    return match.group(1) if match else None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def folder_size(folder: Path) -> int:
    return sum(os.path.getsize(Path(root) / name) for root, _, names in os.walk(folder, followlinks=True)
               for name in names)
