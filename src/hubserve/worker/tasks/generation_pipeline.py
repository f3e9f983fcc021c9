"""The transformers text-generation pipeline under a request's `PromptBounds`: each prompt's tokens truncated or
refused, and its new tokens fitted to the endpoint's limits, exactly as the continuous-batching engine does; and
`UntilCancelled`, which ends its generate() at the next token once the request is cancelled."""

from __future__ import annotations

import threading
from typing import Any

import torch
from transformers import StoppingCriteria, TextGenerationPipeline

from hubserve.worker.generation.params import PromptBounds

# Where `preprocess` leaves a prompt's fitted max_new_tokens for `_forward` (model inputs travel between them).
NEW_TOKENS = "hubserve_max_new_tokens"


class UntilCancelled(StoppingCriteria):
    """Stops every row once `cancelled` is set (from the event loop whose caller went away)."""

    def __init__(self, cancelled: threading.Event) -> None:
        self.cancelled = cancelled

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.cancelled.is_set(), dtype=torch.bool,  # type: ignore[return-value]
                          device=input_ids.device)


class BoundedTextGenerationPipeline(TextGenerationPipeline):
    """Takes a `bounds` (PromptBounds) call argument; without it, the pipeline as transformers has it."""

    def _sanitize_parameters(self, bounds: PromptBounds | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if bounds is not None:
            preprocess["bounds"] = bounds
        return preprocess, forward, postprocess

    def preprocess(self, prompt_text: Any, bounds: PromptBounds | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        inputs = super().preprocess(prompt_text, **kwargs)
        if bounds is not None:
            kept, inputs[NEW_TOKENS] = bounds.fit(int(inputs["input_ids"].shape[-1]))
            # The pipeline's answer counts the prompt's tokens from these, and puts the whole prompt text before it.
            for name in ("input_ids", "attention_mask"):
                if name in inputs:
                    inputs[name] = inputs[name][:, -kept:]
        return inputs

    def _forward(self, model_inputs: Any, **generate_kwargs: Any) -> Any:  # type: ignore[override]
        new_tokens = model_inputs.pop(NEW_TOKENS, None)
        if new_tokens is not None:  # it already accounts for a max_length, which would otherwise compete with it
            generate_kwargs = {**generate_kwargs, "max_new_tokens": new_tokens}
            generate_kwargs.pop("max_length", None)
        return super()._forward(model_inputs, **generate_kwargs)
