"""Turn an endpoint spec into a ready handler: fetch the model, install its requirements, load it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Protocol

from hubserve.errors import BadRequest, HubserveError, ModelError
from hubserve.invocation import InvocationRequest, InvocationResult
from hubserve.sources import resolve_source
from hubserve.spec import EndpointSpec
from hubserve.worker import codecs
from hubserve.worker.config import WorkerConfig
from hubserve.worker.custom_code import load_custom_code
from hubserve.worker.requirements import install_requirements
from hubserve.worker.tasks import adapter_class, infer_task
from hubserve.worker.tasks.base import LoadOptions, TaskAdapter

log = logging.getLogger("hubserve.worker")


class Handler(Protocol):
    task: str

    def __call__(self, request: InvocationRequest) -> InvocationResult: ...


class TaskModel:
    """A task adapter behind hubserve's default request handling: decode, check, predict, encode."""

    def __init__(self, task: str, adapter: TaskAdapter) -> None:
        self.task = task
        self.adapter = adapter

    def __call__(self, payload: dict[str, Any]) -> Any:
        """Run a decoded payload `{"inputs": ..., "parameters": {...}}` (what custom code calls)."""
        if "inputs" not in payload:
            raise BadRequest('the request body needs an "inputs" field')
        parameters = payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest('"parameters" must be a JSON object')
        self.adapter.check_parameters(parameters)
        try:
            return self.adapter.predict(payload["inputs"], dict(parameters))
        except HubserveError:
            raise
        except Exception as exc:
            raise ModelError(f"{type(exc).__name__}: {exc}") from exc

    def handle(self, request: InvocationRequest) -> InvocationResult:
        payload = codecs.decode_body(request.body, request.content_type, task=self.task)
        return codecs.encode_result(self(payload), request.accept)


class TaskHandler:
    """The handler for a model without custom code."""

    def __init__(self, model: TaskModel) -> None:
        self.model = model
        self.task = model.task

    def __call__(self, request: InvocationRequest) -> InvocationResult:
        return self.model.handle(request)


class CustomHandler:
    """The handler for a model folder with `code/inference.py` or `handler.py`."""

    def __init__(self, custom: Any) -> None:
        self.custom = custom
        self.task = "custom"

    def __call__(self, request: InvocationRequest) -> InvocationResult:
        result: InvocationResult = self.custom(request)
        return result


def resolve_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise BadRequest(f"device {device} was asked for, but no CUDA device is available")
    return "cuda:0" if device == "cuda" else device


def hub_token(spec: EndpointSpec) -> str | None:
    return spec.env.get("HF_TOKEN") or spec.env.get("HF_API_TOKEN") or spec.env.get("HUGGING_FACE_HUB_TOKEN")


def load_task_model(spec: EndpointSpec, path: Path, options: LoadOptions) -> TaskModel:
    task = spec.task or infer_task(path, gguf_file=options.gguf_file)
    log.info("loading %s as %s on %s", path, task, options.device)
    adapter = adapter_class(task)(path, options)
    adapter.warmup()
    return TaskModel(task, adapter)


def load_handler(config: WorkerConfig) -> Handler:
    spec = config.spec
    models_dir = Path(config.models_dir)
    resolved = resolve_source(spec.model, revision=spec.revision, token=hub_token(spec),
                              cache_dir=models_dir, endpoint=spec.name)
    options = LoadOptions(device=resolve_device(spec.device), dtype=spec.dtype,
                          trust_remote_code=spec.trust_remote_code, gguf_file=resolved.gguf_file)
    extra_paths: list[Path] = []
    packages = install_requirements(resolved.path, models_dir / "packages" / spec.name)
    if packages is not None:
        extra_paths.append(packages)
        sys.path.insert(0, str(packages))
    custom = load_custom_code(resolved.path, default_model_fn=lambda p: load_task_model(spec, p, options),
                              extra_sys_path=extra_paths)
    if custom is not None:
        log.info("loaded custom code (%s) from %s", custom.kind, resolved.path)
        return CustomHandler(custom)
    return TaskHandler(load_task_model(spec, resolved.path, options))
