"""Adapters over transformers pipelines: the shared base, and the pass-through for any other pipeline task."""

from __future__ import annotations

import copy
import functools
import inspect
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import Pipeline

from hubserve.errors import BadRequest
from hubserve.worker.backends import Export, RuntimeSession, open_runtime
from hubserve.worker.backends.torch_session import TorchSession
from hubserve.worker.tasks.base import LoadOptions, TaskAdapter, unused_parameters_message
from hubserve.worker.tasks.generation import GENERATION_PARAMETERS
from hubserve.worker.tasks.loading import build_pipeline
from hubserve.worker.tasks.media import decode_audio, decode_images
from hubserve.worker.tasks.runtime_pipelines import runtime_pipeline
from hubserve.worker.tasks.truncation import context_length, cut_texts

# Arguments of `Pipeline.__call__` itself that a request may set.
CALL_PARAMETERS = frozenset({"batch_size"})


def plain(value: Any) -> Any:
    """Plain Python numbers and lists for numpy and torch values (images stay: the codecs encode them)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray | np.generic | torch.Tensor):
        return value.tolist()
    return value


def require_text(inputs: Any) -> str:
    """A string (one input of a batch), or a BadRequest saying so."""
    if isinstance(inputs, str):
        return inputs
    raise BadRequest("inputs must be a string or a non-empty list of strings")


def require_texts(inputs: Any) -> str | list[str]:
    """A string or a non-empty list of strings, or a BadRequest saying so."""
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and all(isinstance(item, str) for item in inputs)
    ):
        return inputs
    raise BadRequest("inputs must be a string or a non-empty list of strings")


class PipelineAdapter(TaskAdapter):
    """A task served by the transformers pipeline of the same name: `predict` calls it with the parameters."""

    # A small request `warmup` sends, or None to skip it.
    warmup_inputs: ClassVar[Any] = None
    warmup_parameters: ClassVar[dict[str, Any]] = {}
    # A subclass of the task's pipeline to build instead of it, or None for the task's own.
    pipeline_class: ClassVar[type[Pipeline] | None] = None
    # What a runtime (ONNX Runtime) may run of this task's model instead of torch: its transformers Auto class and
    # the output fields the pipeline reads (see runtime_pipelines); None: torch only.
    runtime_export: ClassVar[tuple[str, tuple[str, ...]] | None] = None

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        # The forward pass of a protocol route's texts (Operations): the runtime's, or the pipeline's torch model.
        self.session: RuntimeSession | None = None
        if self.runtime_export is not None:
            export = Export(model_dir, *self.runtime_export, options)
            self.session = open_runtime(self, export)
            if self.session is not None:
                self.pipe = runtime_pipeline(self.task, self.session, export.tokenizer, export.config)
                return
        self.pipe = build_pipeline(self.task, model_dir, options, self.pipeline_class)
        if self.runtime_export is not None:
            tokenizer: Any = self.pipe.tokenizer
            self.session = TorchSession(self.pipe.model, tokenizer.model_input_names, self.runtime_export[1])

    @functools.cached_property
    def context_tokens(self) -> int | None:
        """How many tokens the model reads in one sequence (None: no limit known)."""
        return context_length(self.pipe.model.config, self.pipe.tokenizer)

    @functools.cached_property
    def text_tokens(self) -> int | None:
        """How many tokens of one text the model reads besides its special tokens (None: no limit known)."""
        tokenizer: Any = self.pipe.tokenizer
        context = self.context_tokens
        return None if context is None else context - tokenizer.num_special_tokens_to_add(pair=False)

    def prepare(self, inputs: Any) -> Any:
        """Validate and decode `inputs` for the pipeline."""
        return inputs

    def call_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The pipeline keyword arguments for a request's (checked, copied) parameters."""
        return parameters

    def pipeline_kwargs(self, parameters: dict[str, Any]) -> dict[str, Any]:
        self.check_parameters(parameters)
        # Pipelines may write into nested parameter dicts (tokenizer kwargs): never hand them the caller's.
        kwargs = self.call_parameters(copy.deepcopy(parameters))
        routed_parameters(self.pipe, self.task, kwargs)
        return kwargs

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        kwargs = self.pipeline_kwargs(parameters)
        return plain(self.pipe(self.shorten(self.prepare(inputs), kwargs), **kwargs))

    def predict_items(self, items: list[Any], parameters: dict[str, Any]) -> list[Any]:
        kwargs = self.pipeline_kwargs(parameters)
        prepared = [self.shorten(self.prepare(item), kwargs) for item in items]
        outputs = self.pipe(prepared, batch_size=self.forward_rows(len(prepared), kwargs), **kwargs)
        return [self.item_output(plain(output), item, kwargs) for output, item in zip(outputs, prepared, strict=True)]

    def input_tokens(self, kwargs: dict[str, Any]) -> int | None:
        """How many tokens of each text the model reads under `kwargs`: longer texts are cut to them before the
        tokenizer sees them (as TEI truncates). None leaves texts whole: the task windows or refuses long ones."""
        return None

    def shorten(self, prepared: Any, kwargs: dict[str, Any]) -> Any:
        """`prepared` with every text cut to its first `input_tokens(kwargs)` tokens."""
        tokens = self.input_tokens(kwargs)
        return prepared if tokens is None else cut_texts(prepared, self.pipe.tokenizer, tokens)

    def forward_rows(self, items: int, kwargs: dict[str, Any]) -> int:
        """The pipeline's batch size for `items` inputs: all of them in one forward."""
        return items

    def item_output(self, output: Any, item: Any, kwargs: dict[str, Any]) -> Any:
        """What `predict(item)` returns, given the pipeline's output for that (prepared) item within a list."""
        return output

    def warmup(self) -> None:
        if self.warmup_inputs is not None:
            self.predict(self.warmup_inputs, dict(self.warmup_parameters))


class GenericPipelineAdapter(PipelineAdapter):
    """Any pipeline task without an adapter of its own: inputs and parameters pass through as they are.

    Parameters are those of the pipeline's `_sanitize_parameters`; images and audio may come as bytes or base64.
    """

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        unknown = unknown_pipeline_parameters(self.pipe, self.task, parameters)
        if unknown:
            raise BadRequest(unused_parameters_message(unknown, self.task))

    def prepare(self, inputs: Any) -> Any:
        """Images (the main input of vision pipelines, or an "image"/"images" entry) and the audio of audio
        pipelines are decoded here, so that the pipeline never opens a path or URL a request names."""
        if isinstance(inputs, dict) and {"image", "images"} & set(inputs):
            return {
                key: decode_images(value) if key in ("image", "images") else value
                for key, value in inputs.items()
            }
        if getattr(self.pipe, "_load_image_processor", False):
            return decode_images(inputs)
        rate = getattr(self.pipe.feature_extractor, "sampling_rate", None)
        if getattr(self.pipe, "_load_feature_extractor", False) and rate:
            return decode_audio(inputs, rate)
        return inputs


def routed_parameters(pipe: Pipeline, task: str, kwargs: dict[str, Any]) -> set[str]:
    """The names the pipeline's `_sanitize_parameters` routes to a stage; a value it rejects is a BadRequest."""
    stage_kwargs = {name: value for name, value in kwargs.items() if name not in CALL_PARAMETERS}
    try:
        stages = pipe._sanitize_parameters(**copy.deepcopy(stage_kwargs))
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest(f"invalid parameters for {task}: {exc}") from None
    return {name for stage in stages for name in stage}


def unknown_pipeline_parameters(pipe: Pipeline, task: str, parameters: dict[str, Any]) -> list[str]:
    """The names in `parameters` that the pipeline would not use (sorted)."""
    signature = inspect.signature(pipe._sanitize_parameters)
    named = {
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    rest = {name: value for name, value in parameters.items() if name not in named | CALL_PARAMETERS}
    if getattr(pipe, "_pipeline_calls_generate", False):
        rest = {name: value for name, value in rest.items() if name not in GENERATION_PARAMETERS}
    if not rest or not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return sorted(rest)
    # It takes `**kwargs`: those it routes to its preprocess, forward or postprocess stage are used.
    return sorted(set(rest) - routed_parameters(pipe, task, rest))


@functools.cache
def pipeline_adapter(task: str) -> type[TaskAdapter]:
    """The pass-through adapter class for a transformers pipeline task (one class per task)."""
    name = "".join(part.capitalize() for part in task.replace("_", "-").split("-")) + "Adapter"
    return type(name, (GenericPipelineAdapter,), {"task": task, "__module__": __name__})
