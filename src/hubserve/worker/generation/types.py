"""What a generation request asks for (`SamplingParams`, `GenerationLimits`) and what it gets back (`TokenEvent`,
`GenerationResult`): plain dataclasses shared by the scheduler, the engine and the task adapter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hubserve.errors import BadRequest

if TYPE_CHECKING:
    from hubserve.worker.generation.grammar import Grammar

FinishReason = Literal["length", "eos_token", "stop_sequence"]
# The most alternatives a token may come with (OpenAI's `top_logprobs` allows as many).
MAX_TOP_N_TOKENS = 20


@dataclass(frozen=True)
class SamplingParams:
    """One request's decoding settings, with generate()'s meaning: the warpers (`temperature`, `top_k`, `top_p`,
    `typical_p`) only act when `do_sample`; `top_k=0`, `top_p=1.0` and `typical_p=1.0` turn them off; `seed` makes
    sampling reproducible. `frequency_penalty` and `presence_penalty` are OpenAI's, over the generated tokens;
    `top_n_tokens` asks for each token's most likely alternatives; `grammar` constrains what may be generated."""

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    typical_p: float = 1.0
    top_n_tokens: int = 0
    grammar: Grammar | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # The tokens that end generation; None: the model's generation config's `eos_token_id`.
    eos_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        problems = [
            ("`max_new_tokens` must be strictly positive", self.max_new_tokens < 1),
            ("`min_new_tokens` must be >= 0", self.min_new_tokens < 0),
            ("`temperature` must be strictly positive", self.do_sample and not self.temperature > 0),
            ("`top_k` must be >= 0", self.top_k < 0),
            ("`top_p` must be > 0.0 and <= 1.0", not 0.0 < self.top_p <= 1.0),
            ("`repetition_penalty` must be strictly positive", not self.repetition_penalty > 0),
            ("`frequency_penalty` must be >= -2.0 and <= 2.0", not -2.0 <= self.frequency_penalty <= 2.0),
            ("`presence_penalty` must be >= -2.0 and <= 2.0", not -2.0 <= self.presence_penalty <= 2.0),
            ("`typical_p` must be > 0.0 and <= 1.0", not 0.0 < self.typical_p <= 1.0),
            (f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}", not 0 <= self.top_n_tokens <= MAX_TOP_N_TOKENS),
            ("`seed` must be an integer in [0, 2**64)", self.seed is not None and not 0 <= self.seed < 2**64),
            ("`stop` sequences must be non-empty strings", not all(isinstance(s, str) and s for s in self.stop)),
        ]
        for message, failed in problems:
            if failed:
                raise BadRequest(message)


@dataclass(frozen=True)
class GenerationLimits:
    """TGI's request limits: `None` leaves a limit off. `max_batch_size` bounds the rows decoded together (more
    requests wait their turn); `max_concurrent_requests` bounds those running or waiting (over it: 429)."""

    max_batch_size: int = 32
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_concurrent_requests: int = 128
    # Prompt tokens (padded) prefilled together in one forward; one request is always admitted.
    max_prefill_tokens: int = 4096
    # When idle, how long a first arrival waits for others to share its prefill (a burst of requests).
    max_batch_delay_ms: float = 5.0
    # A longer prompt is prefilled this many tokens per step: rows decoding go on between its chunks, and a
    # cancelled request is dropped within one chunk.
    prefill_chunk_tokens: int = 4096

    def __post_init__(self) -> None:
        total, given = self.max_total_tokens, self.max_input_tokens
        if total is not None and given is not None and given >= total:
            raise ValueError(f"max_input_tokens ({given}) must be less than max_total_tokens ({total})")
        if self.prefill_chunk_tokens < 1:
            raise ValueError("prefill_chunk_tokens must be at least 1")

    def updated(self, **changes: Any) -> GenerationLimits:
        """These limits with `changes` (None leaves one as it is); a new `max_total_tokens` without a
        `max_input_tokens` brings that to one less, as TGI defaults it."""
        changes = {name: value for name, value in changes.items() if value is not None}
        if "max_total_tokens" in changes and "max_input_tokens" not in changes:
            changes["max_input_tokens"] = changes["max_total_tokens"] - 1
        return dataclasses.replace(self, **changes)

    def check(self, input_tokens: int, max_new_tokens: int) -> None:
        """BadRequest, worded as TGI words it, when a request does not fit the limits."""
        if input_tokens == 0:
            raise BadRequest("`inputs` cannot be empty")
        check_input_tokens(input_tokens, self.max_input_tokens)
        if self.max_total_tokens is not None and input_tokens + max_new_tokens > self.max_total_tokens:
            raise BadRequest(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {input_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )


def check_input_tokens(input_tokens: int, max_input_tokens: int | None) -> None:
    """BadRequest in TGI's words when a prompt has more than `max_input_tokens` (None: no limit)."""
    if max_input_tokens is not None and input_tokens > max_input_tokens:
        raise BadRequest(f"`inputs` must have less than {max_input_tokens} tokens. Given: {input_tokens}")


@dataclass(frozen=True)
class GenerationResult:
    """How a request ended: the generated text (decoded from all generated tokens, special ones skipped, a matched
    stop sequence included as TGI does), the token ids, and the seed sampling used (None when greedy)."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    seed: int | None

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class TopToken:
    """One of the most likely tokens at a step, under the distribution the generated token was chosen from."""

    id: int
    text: str  # the token decoded alone
    logprob: float
    special: bool


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: `index` counts from 1, `text` is what this token adds to the decoded text (empty while
    it ends in an incomplete UTF-8 character); the last event of a request carries its `result`. `top_tokens`: the
    `top_n_tokens` most likely tokens at this step, most likely first (those with any probability)."""

    index: int
    id: int
    text: str
    logprob: float
    special: bool
    result: GenerationResult | None = field(default=None)
    top_tokens: tuple[TopToken, ...] = ()
