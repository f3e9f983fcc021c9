"""From a text-generation pipeline's request to the engine's settings: the `GenerationConfig` generate() would use
(the pipeline's own defaults included), what of it the engine cannot do, TGI's limits from the environment, and a
request's prompt and length bounded by them (`PromptBounds`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import GenerationConfig, Pipeline

from hubserve.errors import BadRequest
from hubserve.worker.generation.types import GenerationLimits, SamplingParams

# Generation settings the engine implements; any other setting must keep its neutral value (below) for the
# engine to produce what generate() would.
HANDLED = frozenset(
    {
        "max_new_tokens", "max_length", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k",
        "top_p", "typical_p", "repetition_penalty", "eos_token_id", "pad_token_id", "bos_token_id",
        "decoder_start_token_id", "use_cache", "cache_implementation", "cache_config", "return_dict_in_generate",
        "output_scores", "output_logits", "output_attentions", "output_hidden_states", "remove_invalid_values",
        "renormalize_logits", "transformers_version", "compile_config", "disable_compile", "prefill_chunk_size",
        "max_cache_len", "continuous_batching_config", "use_mtp", "is_assistant", "speculation_type",
        # Assisted decoding changes the speed only, and needs an assistant or prompt lookup asked for on its own.
        "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
        "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind",
        "target_lookbehind", "assistant_ensemble_weight",
    }
)
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "num_beams": (None, 1),
    "num_beam_groups": (None, 1),
    "num_return_sequences": (None, 1),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "encoder_repetition_penalty": (None, 1.0),
    "length_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "guidance_scale": (None, 1.0),
    "low_memory": (None, False),
    "early_stopping": (None, False),
    "diversity_penalty": (None, 0.0),
}

# TGI's launcher variables (and their older names) for the request limits.
LIMIT_VARIABLES = {
    "max_input_tokens": ("MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH"),
    "max_total_tokens": ("MAX_TOTAL_TOKENS",),
    "max_concurrent_requests": ("MAX_CONCURRENT_REQUESTS",),
    "max_batch_size": ("MAX_BATCH_SIZE",),
    "max_prefill_tokens": ("MAX_BATCH_PREFILL_TOKENS",),
}


def resolved_config(pipe: Pipeline, kwargs: dict[str, Any]) -> GenerationConfig:
    """The config generate() runs with for this pipeline call: the request's `kwargs` on top of the model's
    generation config, the pipeline's defaults, and generate()'s global defaults."""
    generate_kwargs = pipe._prepare_generate_kwargs(dict(kwargs))
    model: Any = pipe.model
    config, _ = model._prepare_generation_config(None, **generate_kwargs)
    return config  # type: ignore[no-any-return]


def unsupported_settings(config: GenerationConfig) -> list[str]:
    """The settings of `config` the engine does not implement (sorted); empty when it can run it."""
    unsupported = []
    for name, value in config.to_dict().items():
        if name.startswith("_") or name in HANDLED:
            continue
        neutral = NEUTRAL.get(name, (None, False, {}, []))
        if not any(value is v or (type(value) is type(v) and value == v) for v in neutral):
            unsupported.append(name)
    return sorted(unsupported)


def new_tokens(config: GenerationConfig, input_tokens: int) -> int:
    """The most tokens generate() makes after a prompt of `input_tokens` tokens under `config`."""
    if config.max_new_tokens is not None:
        return int(config.max_new_tokens)
    return (config.max_length or 0) - input_tokens


@dataclass(frozen=True)
class PromptBounds:
    """One request under the endpoint's limits, as TGI bounds it: `truncate` keeps only the prompt's last tokens;
    a max_new_tokens the request set (`explicit`, or its max_length) must fit max_total_tokens, a defaulted one is
    reduced to fit."""

    limits: GenerationLimits
    config: GenerationConfig  # what generate() runs with: where a defaulted length comes from
    truncate: int | None = None
    explicit: bool = False

    def __post_init__(self) -> None:
        bound = self.limits.max_input_tokens
        if self.truncate is not None and (self.truncate < 1 or (bound is not None and self.truncate > bound)):
            within = "" if bound is None else f" and less than {bound}"
            raise BadRequest(f"`truncate` must be strictly positive{within}. Given: {self.truncate}")

    def fit(self, input_tokens: int) -> tuple[int, int]:
        """How many of the prompt's last tokens the model reads, and the most tokens it may generate after them;
        BadRequest (in TGI's words) when the request does not fit."""
        kept = input_tokens if self.truncate is None else min(input_tokens, self.truncate)
        most = new_tokens(self.config, kept)
        if not self.explicit and self.limits.max_total_tokens is not None:
            most = min(most, self.limits.max_total_tokens - kept)
        self.limits.check(kept, most)
        if most < 1:
            raise BadRequest("`max_new_tokens` must be strictly positive")
        return kept, most


def sampling_params(
    config: GenerationConfig,
    max_new_tokens: int,
    input_tokens: int,
    seed: int | None,
    stop: Sequence[str],
    **settings: Any,
) -> SamplingParams:
    """The engine's settings for one prompt of `input_tokens` tokens under `config`, with `settings` that no
    GenerationConfig holds (`frequency_penalty`, `presence_penalty`, `top_n_tokens`, `grammar`)."""
    min_new = config.min_new_tokens
    if min_new is None:
        min_new = max((config.min_length or 0) - input_tokens, 0)
    eos = config.eos_token_id
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new,
        do_sample=bool(config.do_sample),
        temperature=1.0 if config.temperature is None else float(config.temperature),
        top_k=config.top_k or 0,
        top_p=1.0 if config.top_p is None else float(config.top_p),
        repetition_penalty=1.0 if config.repetition_penalty is None else float(config.repetition_penalty),
        typical_p=1.0 if config.typical_p is None else float(config.typical_p),
        seed=seed,
        stop=tuple(stop),
        eos_token_ids=None if eos is None else tuple(eos if isinstance(eos, list) else [eos]),
        **settings,
    )


def limits_from_env(env: Mapping[str, str]) -> dict[str, int]:
    """GenerationEngine limits from TGI's variables, those set (`max_input_tokens` defaults, as in TGI, to one
    less than `max_total_tokens`)."""
    limits: dict[str, int] = {}
    for name, variables in LIMIT_VARIABLES.items():
        for variable in variables:
            if env.get(variable, "").strip():
                limits[name] = int(env[variable])
                break
    if "max_input_tokens" not in limits and "max_total_tokens" in limits:
        limits["max_input_tokens"] = limits["max_total_tokens"] - 1
    return limits
