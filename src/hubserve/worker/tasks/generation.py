"""Generation parameters: the `GenerationConfig` attributes a request may set, their types, and the length default."""

from __future__ import annotations

import copy
from typing import Any

from transformers import GenerationConfig

from hubserve.errors import BadRequest
from hubserve.worker.tasks.parameter_types import (
    BOOLEAN,
    INTEGER,
    INTEGERS,
    NUMBER,
    STRING,
    STRINGS,
    Expected,
    one_of,
    optional,
)

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
_INTEGERS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_beam_groups",
             "num_return_sequences", "top_k", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "max_cache_len",
             "pad_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id", "num_assistant_tokens",
             "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "prefill_chunk_size",
             "assistant_lookbehind", "target_lookbehind")
_NUMBERS = ("temperature", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
            "encoder_repetition_penalty", "length_penalty", "guidance_scale", "max_time", "diversity_penalty",
            "penalty_alpha", "assistant_confidence_threshold", "assistant_ensemble_weight")
_BOOLEANS = ("do_sample", "use_cache", "renormalize_logits", "remove_invalid_values", "token_healing", "low_memory",
             "is_assistant", "disable_compile", "use_mtp")
# The types of the generation parameters of scalar type (null leaves one unset, as in TGI); with TGI's own.
GENERATION_PARAMETER_TYPES: dict[str, Expected] = {
    **{name: optional(INTEGER) for name in (*_INTEGERS, "seed", "truncate")},
    **{name: optional(NUMBER) for name in _NUMBERS},
    **{name: optional(BOOLEAN) for name in (*_BOOLEANS, "details", "return_full_text")},
    **{name: optional(INTEGER | INTEGERS) for name in ("eos_token_id", "forced_eos_token_id")},
    **{name: optional(INTEGERS) for name in ("suppress_tokens", "begin_suppress_tokens")},
    "early_stopping": optional(BOOLEAN | one_of("never")),
    "cache_implementation": optional(STRING),
    "num_assistant_tokens_schedule": optional(STRING),
    "stop_strings": optional(STRING | STRINGS),
}
# Parameters that set how many tokens to generate: over the model's limits, a request that sets one gets a 400
# (a defaulted length is reduced to fit instead).
LENGTH_PARAMETERS = ("max_new_tokens", "max_length")
# What `generate()` produces when nothing bounds the length (its `max_length=20` counts the prompt too).
DEFAULT_MAX_NEW_TOKENS = 20


def check_generation_parameters(model_config: GenerationConfig, kwargs: dict[str, Any]) -> None:
    """BadRequest when `kwargs` on top of the model's generation config are invalid (`update` validates)."""
    typical_p = kwargs.get("typical_p")
    if typical_p is not None and not 0.0 < typical_p <= 1.0:  # generate() would fail on it only once running
        raise BadRequest("`typical_p` must be > 0.0 and <= 1.0")
    config = copy.deepcopy(model_config)
    try:
        config.update(**{name: value for name, value in kwargs.items() if name in GENERATION_PARAMETERS})
    except ValueError as exc:
        raise BadRequest(f"invalid generation parameters: {exc}") from None


def with_length_default(generation_config: GenerationConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus `max_new_tokens=20` when neither they nor the model's generation config bound the length."""
    bounded = {"max_new_tokens", "max_length"} & (set(kwargs) | set(generation_config.to_diff_dict()))
    return kwargs if bounded else {**kwargs, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS}
