"""Turn an endpoint spec into a ready handler: fetch the model, install its requirements, load it."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from hubserve.errors import BadRequest
from hubserve.sources import EndpointCache, resolve_source
from hubserve.sources.gguf import convert as convert_gguf
from hubserve.spec import EndpointSpec
from hubserve.worker.config import WorkerConfig
from hubserve.worker.custom_code import load_custom_code
from hubserve.worker.handlers import CustomCode, TaskModel
from hubserve.worker.requirements import install_requirements
from hubserve.worker.tasks import adapter_class, infer_task
from hubserve.worker.tasks.base import LoadOptions

log = logging.getLogger("hubserve.worker")


def resolve_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise BadRequest(f"device {device} was asked for, but no CUDA device is available")
    return "cuda:0" if device == "cuda" else device


def use_replica_cores(replicas: int, threads: int | None) -> None:
    """Torch threads to match the cores this replica owns: `threads` where its placement said, else the machine's
    shared among the replicas."""
    import torch

    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0)) // replicas))


def hub_token(spec: EndpointSpec) -> str | None:
    return spec.env.get("HF_TOKEN") or spec.env.get("HF_API_TOKEN") or spec.env.get("HUGGING_FACE_HUB_TOKEN")


def load_task_model(spec: EndpointSpec, path: Path, options: LoadOptions,
                    cache: EndpointCache | None = None) -> TaskModel:
    task = spec.task or infer_task(path, gguf_file=options.gguf_file)
    adapter_type = adapter_class(task)
    if options.gguf_file and cache is not None and not adapter_type.serves_gguf(options):
        # torch serves it: from the file converted once (a GGUF loaded as it is is dequantised at every load).
        path, options = convert_gguf(path / options.gguf_file, cache), replace(options, gguf_file=None)
    log.info("loading %s as %s on %s", path, task, options.device)
    adapter = adapter_type(path, options)
    adapter.warmup()
    return TaskModel(task, adapter)


def load_handler(config: WorkerConfig) -> TaskModel | CustomCode:
    spec = config.spec
    models_dir = Path(config.models_dir)
    use_replica_cores(spec.replicas, config.threads)
    resolved = resolve_source(spec.model, revision=spec.revision, token=hub_token(spec),
                              cache_dir=models_dir, endpoint=spec.name, limits=config.archive_limits)
    options = LoadOptions(device=resolve_device(spec.device), dtype=spec.dtype,
                          trust_remote_code=spec.trust_remote_code, gguf_file=resolved.gguf_file,
                          backend=spec.engine.backend, precision=spec.engine.precision, goal=spec.engine.goal,
                          batch_invariant=spec.engine.batch_invariant, huge_pages=spec.engine.huge_pages,
                          exports_dir=str(models_dir / "exports"))
    extra_paths: list[Path] = []
    cache = EndpointCache(models_dir, spec.name)
    packages = install_requirements(resolved.path, cache.packages)
    if packages is not None:
        extra_paths.append(packages)
        sys.path.insert(0, str(packages))
    custom = load_custom_code(resolved.path, default_model_fn=lambda p: load_task_model(spec, p, options, cache),
                              extra_sys_path=extra_paths)
    if custom is not None:
        log.info("loaded custom code (%s) from %s", custom.kind, resolved.path)
        return custom
    return load_task_model(spec, resolved.path, options, cache)
