"""The interface every task family implements inside a replica: load, check a request, predict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hubserve.errors import BadRequest
from hubserve.worker.tasks.parameter_types import Expected, check_types


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: resolved once by the replica's loader from the endpoint spec."""

    device: str = "cpu"  # "cpu", "cuda", "cuda:N" (never "auto": the loader resolves it)
    dtype: str = "auto"  # "auto", "float32", "bfloat16", "float16"
    trust_remote_code: bool = False
    gguf_file: str | None = None  # a .gguf file inside the model folder, loaded with gguf_file=
    backend: str = "auto"  # EngineSpec.backend: auto, torch, onnx, openvino, llamacpp
    precision: str = "auto"  # EngineSpec.precision: auto, int8, bf16
    goal: str = "latency"  # EngineSpec.goal: latency, throughput
    batch_invariant: bool = False  # EngineSpec.batch_invariant (llama.cpp generation)
    huge_pages: bool = True  # EngineSpec.huge_pages (llama.cpp generation)
    exports_dir: str | None = None  # where exported models (ONNX, OpenVINO) are cached by content hash


class TaskAdapter:
    """One task family. Subclasses set `task` (and `aliases`) and implement `predict`.

    `predict` receives the request's decoded `inputs` and its `parameters` dict and returns a
    JSON-able value (numpy arrays and scalars are fine: the codecs convert them) shaped as the
    classic transformers pipeline for that task returns it. Bad inputs or parameters raise
    `hubserve.errors.BadRequest`; anything else the model raises becomes a ModelError upstream.
    """

    task: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    # Parameter names this task accepts; None means it decides itself in `check_parameters`.
    parameters: ClassVar[frozenset[str] | None] = None
    # The JSON types of parameters (see parameter_types); a value of another type is a BadRequest naming it.
    parameter_types: ClassVar[Mapping[str, Expected]] = {}
    # How many inputs the dynamic batcher runs together unless the endpoint's spec says otherwise.
    default_max_batch_size: ClassVar[int] = 8

    @classmethod
    def serves_gguf(cls, options: LoadOptions) -> bool:
        """Whether this task runs a GGUF file as it is (its own quantised weights); otherwise the loader hands it
        the file converted once into a safetensors folder (see sources.gguf)."""
        return False

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        self.model_dir = model_dir
        self.options = options
        # What runs the model ("torch", "onnx", "openvino", "llamacpp"), and why it is not the one asked for (a
        # fallback's reason): the replica reports both when it is ready.
        self.backend = "torch"
        self.backend_note: str | None = None
        # What a runtime computes the model in ("float32", "int8", "bfloat16"); None on torch (the model's own dtype).
        self.backend_dtype: str | None = None

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        if self.parameters is not None:
            unknown = sorted(set(parameters) - self.parameters)
            if unknown:
                raise BadRequest(unused_parameters_message(unknown, self.task))
        check_types(parameters, self.parameter_types)

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        raise NotImplementedError

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        """Outputs for several single inputs sharing `parameters`, each exactly as `predict(item)` returns it.

        Adapters whose model takes a batch override this with one forward pass over all of them; the
        engine's dynamic batcher calls it with the inputs of concurrent requests.
        """
        return [self.predict(item, parameters) for item in items]

    def warmup(self) -> None:
        """Run one small request so the first real one does not pay for lazy initialisation."""


def regroup(values: Any, groups: Sequence[Sized]) -> list[Any]:
    """`values` (a list or array: one per member of every group, in order) cut back into one slice per group."""
    slices, start = [], 0
    for group in groups:
        slices.append(values[start:start + len(group)])
        start += len(group)
    return slices


def unused_parameters_message(names: list[str], task: str) -> str:
    # Never transformers' own sentence about unused `model_kwargs`: huggingface_hub takes a server that says it for
    # one that is not TGI, and then refuses to stream from any URL for the rest of the process.
    return f"unknown parameters for task {task}: {', '.join(names)}"
