"""What the scheduler asks of a model: `BatchModel` prefills prompts into a `RunningBatch`, decodes it, and keeps
`SharedPrefix`es. Two implement it: `TorchModel` (batch.py, a transformers model over a DynamicCache) and
`LlamaCppModel` (llamacpp.py, a GGUF file on llama.cpp, one sequence per row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

Logits = torch.Tensor | np.ndarray


class SharedPrefix(Protocol):
    """Prompt tokens whose cache is computed once, then shared by the rows whose prompts start with them."""

    @property
    def token_ids(self) -> tuple[int, ...]: ...


class RunningBatch(Protocol):
    """Rows decoded together. `token_ids` holds every row's tokens so far, left-padded with -1, generated tokens last
    (what the penalties read); its last column is the token each row feeds next."""

    @property
    def token_ids(self) -> torch.Tensor: ...

    def append(self, tokens: torch.Tensor | np.ndarray) -> None:
        """Record the tokens just chosen: each row feeds its own next."""

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows`, in that order (the others' cache is freed)."""

    def extend(self, other: Any) -> None:
        """Append the rows of `other` (a batch of the same model, used up) after these."""


class BatchModel(Protocol):
    """A model under the scheduler. Logits are float rows of the vocabulary's width on `device` (a numpy array for a
    model on the CPU that computes outside torch), valid until the next call. A model may name `torch_threads`: the
    generation thread's torch thread count (where torch only samples beside the model's own threads)."""

    device: torch.device
    vocab_size: int  # the width of the logits
    eos_ids: tuple[int, ...]  # the tokens that end a request that names none
    step_tokens: int  # prompt tokens worth prefilling in one step (the default prefill budget and chunk)

    def prefill(self, prompts: Sequence[Sequence[int]], prefix: Any = None,
                adopt: bool = False) -> tuple[RunningBatch, Logits]:
        """A batch of `prompts` (each after `prefix`, which each then starts with), and each row's next-token
        logits. `adopt`: the one prompt is the prefix's own (a long prompt prefilled in chunks), which this uses
        up."""

    def decode(self, batch: Any) -> Logits:
        """One forward of every row's next token: its logits."""

    def prefix(self, token_ids: Sequence[int], after: Any = None) -> SharedPrefix:
        """A prefix of `token_ids` (after the tokens of `after`, which this uses up), computed in one forward."""


def serves(prefix: SharedPrefix, prompts: Sequence[Sequence[int]]) -> bool:
    """Whether every prompt starts with `prefix` and goes on after it."""
    width = len(prefix.token_ids)
    return all(len(prompt) > width and tuple(prompt[:width]) == prefix.token_ids for prompt in prompts)


def as_batch_model(model: Any) -> BatchModel:
    """`model` itself when it is a `BatchModel`, else a transformers causal LM under `TorchModel`."""
    if hasattr(model, "prefill") and hasattr(model, "step_tokens"):
        return model  # type: ignore[no-any-return]
    from hubserve.worker.generation.batch import TorchModel

    return TorchModel(model)
