"""Generation parameters: the `GenerationConfig` attributes a request may set, and the length default."""

from __future__ import annotations

import copy
from typing import Any

from transformers import GenerationConfig

from hubserve.errors import BadRequest

# Attributes that only change the shape of `generate()`'s return value, which a JSON answer cannot carry.
_NOT_SERVED = {
    "transformers_version",
    "return_dict_in_generate",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
}
GENERATION_PARAMETERS: frozenset[str] = frozenset(
    name for name in GenerationConfig().to_dict() if not name.startswith("_") and name not in _NOT_SERVED
)
# What `generate()` produces when nothing bounds the length (its `max_length=20` counts the prompt too).
DEFAULT_MAX_NEW_TOKENS = 20


def check_generation_parameters(model_config: GenerationConfig, kwargs: dict[str, Any]) -> None:
    """BadRequest when `kwargs` on top of the model's generation config are invalid (`update` validates)."""
    config = copy.deepcopy(model_config)
    try:
        config.update(**{name: value for name, value in kwargs.items() if name in GENERATION_PARAMETERS})
    except ValueError as exc:
        raise BadRequest(f"invalid generation parameters: {exc}") from None


def with_length_default(generation_config: GenerationConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus `max_new_tokens=20` when neither they nor the model's generation config bound the length."""
    bounded = {"max_new_tokens", "max_length"} & (set(kwargs) | set(generation_config.to_diff_dict()))
    return kwargs if bounded else {**kwargs, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS}
