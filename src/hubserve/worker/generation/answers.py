"""What the text-generation adapter answers, built from engine results: the pipeline's output shapes for
`predict`, and TGI's /generate_stream events for streaming."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from hubserve.worker.generation.stream import TokenStream
from hubserve.worker.generation.types import GenerationResult, SamplingParams, TokenEvent


@dataclass(frozen=True)
class Prompt:
    """One prompt as the engine gets it: its token ids, and what answers are built from."""

    ids: list[int]
    text: str | None  # the prompt string; None for a conversation
    messages: list[dict[str, Any]] | None  # the conversation


@dataclass(frozen=True)
class Plan:
    """A checked request for the engine: one settings per prompt, and how to shape the answers."""

    prompts: list[Prompt]
    params: list[SamplingParams]
    return_full_text: bool
    listed: bool  # `inputs` was a list of prompts or conversations: one answer list each
    streaming: bool = False  # its events go out as they come (else they are wanted all at once, at the end)


def answer(prompt: Prompt, result: GenerationResult, full_text: bool) -> dict[str, Any]:
    """The pipeline's answer for one prompt (see its `postprocess`)."""
    if not full_text:
        return {"generated_text": result.text}
    if prompt.messages is None:
        return {"generated_text": (prompt.text or "") + result.text}
    last = prompt.messages[-1]
    if last["role"] == "assistant":  # an assistant prefill: the reply continues it
        continued = {"role": last["role"], "content": last["content"] + result.text}
        return {"generated_text": [*prompt.messages[:-1], continued]}
    return {"generated_text": [*prompt.messages, {"role": "assistant", "content": result.text}]}


async def tgi_events(tokens: TokenStream, prefix: str) -> AsyncIterator[dict[str, Any]]:
    """`tokens` as TGI events (`prefix` before the last one's text); closing this iterator cancels the request."""
    try:
        async for event in tokens:
            yield tgi_event(event, prefix)
    finally:
        tokens.cancel()


def tgi_chunk(event: TokenEvent) -> tuple[bytes]:
    """A token's TGI stream event, but the last, written by the generation thread (see generation.direct): compact,
    as TGI's own (serde_json) are, and in orjson, the fastest there (a -inf or NaN log-probability, which JSON
    cannot hold, is null)."""
    return (orjson.dumps(tgi_event(event, "")),)


def tgi_event(event: TokenEvent, prefix: str) -> dict[str, Any]:
    """TGI's /generate_stream event: the token (and its alternatives, when asked for), and on the last one the whole
    text and the details."""
    result = event.result
    # A special token (the end of turn) streams with no text: TGI sends its text, which huggingface_hub and
    # LangChain then hand to the user as the answer's last words ("<|im_end|>").
    token = {"id": event.id, "text": "" if event.special else event.text, "logprob": event.logprob,
             "special": event.special}
    shaped: dict[str, Any] = {"index": event.index, "token": token}
    if event.top_tokens:
        shaped["top_tokens"] = [dataclasses.asdict(top) for top in event.top_tokens]
    if result is None:
        return {**shaped, "generated_text": None, "details": None}
    details = {"finish_reason": result.finish_reason, "generated_tokens": result.generated_tokens, "seed": result.seed}
    return {**shaped, "generated_text": prefix + result.text, "details": details}
