"""What a replica runs per request: a task model behind the default codecs (batched), or the user's own code."""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

from hubserve.errors import BadRequest, HubserveError, ModelError
from hubserve.invocation import InvocationRequest, InvocationResult
from hubserve.worker import codecs
from hubserve.worker.batching import Work
from hubserve.worker.tasks.base import TaskAdapter


@dataclass
class ChunkStream:
    """An answer user code makes piece by piece (its predict_fn returned a generator): each `next` runs the user's
    code until its next chunk, already encoded; closing it stops that code."""

    chunks: Generator[bytes, None, None]
    content_type: str

    def joined(self) -> InvocationResult:
        """The whole answer, for a caller that asked for one body."""
        return InvocationResult(b"".join(self.chunks), self.content_type)


class CustomCode(Protocol):
    """User code (`code/inference.py` or `handler.py`): it takes the raw request and answers it, whole or (`open`)
    as chunks when the code makes them one by one."""

    def __call__(self, request: InvocationRequest) -> InvocationResult: ...

    def open(self, request: InvocationRequest) -> InvocationResult | ChunkStream: ...


def parameters_key(parameters: dict[str, Any]) -> str:
    """Requests whose parameters give the same key may share a forward pass."""
    return json.dumps(parameters, sort_keys=True, default=repr)


def input_length(inputs: Any) -> int:
    # A cheap proxy for the token count, to run inputs of similar length side by side (less padding).
    return len(inputs) if isinstance(inputs, str | bytes) else len(repr(inputs))


class TaskModel:
    """A task adapter behind hubserve's default request handling: decode, check, predict (batched), encode."""

    def __init__(self, task: str, adapter: TaskAdapter) -> None:
        self.task = task
        self.adapter = adapter

    @property
    def backend(self) -> str:
        """What runs the model: "torch", "onnx", ..."""
        return self.adapter.backend

    @property
    def backend_note(self) -> str | None:
        """Why the model runs on `backend` rather than the backend meant for it, if it does."""
        return self.adapter.backend_note

    @property
    def backend_dtype(self) -> str | None:
        """What a runtime computes the model in ("float32", "int8", "bfloat16"), if one runs it."""
        return self.adapter.backend_dtype

    def decode_work(self, request: InvocationRequest) -> Work:
        payload = codecs.decode_body(request.body, request.content_type, task=self.task)
        work = self.work(payload)
        work.accept = request.accept
        return work

    def work(self, payload: dict[str, Any]) -> Work:
        if "inputs" not in payload:
            raise BadRequest('the request body needs an "inputs" field')
        parameters = payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest('"parameters" must be a JSON object')
        self.adapter.check_parameters(parameters)
        inputs = payload["inputs"]
        return Work(inputs=inputs, parameters=parameters, size=len(inputs) if isinstance(inputs, list) else 1)

    def _guarded(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        """The adapter's answer for one request, or the error to give that request alone."""
        try:
            return self.adapter.predict(inputs, dict(parameters))
        except HubserveError as exc:
            return exc
        except Exception as exc:
            return ModelError(f"{type(exc).__name__}: {exc}")

    def run_batch(self, works: list[Work]) -> list[Any]:
        """One result (or exception) per work item: single inputs with equal parameters share a forward pass."""
        results: list[Any] = [None] * len(works)
        groups: dict[str, list[int]] = {}
        for index, work in enumerate(works):
            groups.setdefault(parameters_key(work.parameters), []).append(index)
        for indices in groups.values():
            singles = sorted((i for i in indices if not isinstance(works[i].inputs, list)),
                             key=lambda i: input_length(works[i].inputs))
            for index in indices:
                if isinstance(works[index].inputs, list):  # already a batch of its own
                    results[index] = self._guarded(works[index].inputs, works[index].parameters)
            if len(singles) == 1:
                results[singles[0]] = self._guarded(works[singles[0]].inputs, works[singles[0]].parameters)
            elif singles:
                try:
                    outputs = self.adapter.predict_items([works[i].inputs for i in singles],
                                                         dict(works[singles[0]].parameters))
                except Exception:
                    # Someone's input broke the batch: run each alone so only that request fails.
                    outputs = [self._guarded(works[i].inputs, works[i].parameters) for i in singles]
                for index, output in zip(singles, outputs, strict=True):
                    results[index] = output
        return results

    def __call__(self, payload: dict[str, Any]) -> Any:
        """Run a decoded payload `{"inputs": ..., "parameters": {...}}` (what custom code calls)."""
        work = self.work(payload)
        result = self._guarded(work.inputs, work.parameters)
        if isinstance(result, BaseException):
            raise result
        return result
