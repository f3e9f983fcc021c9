"""What a backend gives an encoder adapter: a `RuntimeSession` (named numpy inputs in, named numpy outputs out) over
an `Export` of its model; or, where it cannot, a `BackendUnavailable` saying why."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hubserve.errors import HubserveError

if TYPE_CHECKING:
    from hubserve.worker.tasks.base import LoadOptions


class RuntimeSession(Protocol):
    """One forward pass of an encoder: named numpy arrays (token ids, masks: any integer type, extra names ignored)
    in, its named float32 outputs out."""

    @property
    def backend(self) -> str:
        """What runs it: "torch", "onnx"."""

    @property
    def dtype(self) -> str:
        """What the weights compute in: "float32", "bfloat16", ..."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class BackendUnavailable(HubserveError):
    """The backend asked for cannot serve this model; the message says why (a replica that cannot load fails
    with it)."""


def failure_reason(exc: BaseException) -> str:
    """What a failed export or load says: a BackendUnavailable's message, or any other error's type and message."""
    return str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"


class Export:
    """What a runtime runs: the model in `model_dir` as `auto_class` (a transformers Auto class's name) loads it,
    giving these `outputs` (fields of its output), fed what its `tokenizer` makes of texts. The tokenizer and the
    config load when first asked for."""

    def __init__(self, model_dir: Path, auto_class: str, outputs: tuple[str, ...], options: LoadOptions) -> None:
        self.model_dir = model_dir
        self.auto_class = auto_class
        self.outputs = outputs
        self.options = options

    @functools.cached_property
    def tokenizer(self) -> Any:
        from hubserve.worker.tasks.loading import load_tokenizer  # (the tasks import this package)

        return load_tokenizer(self.model_dir, self.options)

    @functools.cached_property
    def config(self) -> Any:
        from transformers import AutoConfig

        from hubserve.worker.tasks.loading import pretrained_kwargs

        return AutoConfig.from_pretrained(self.model_dir, **pretrained_kwargs(self.options))
