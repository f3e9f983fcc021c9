"""text-generation: a causal LM (also GGUF) for prompts or chat messages, through the continuous-batching engine
(concurrent requests share its batch; streaming too) or, for what the engine does not do, the transformers pipeline."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from transformers import set_seed

from hubserve.errors import BadRequest, HubserveError
from hubserve.worker.generation import GenerationEngine, TokenStream
from hubserve.worker.generation.answers import Plan, Prompt, answer, tgi_events
from hubserve.worker.generation.params import limits_from_env, resolved_config, sampling_params, unsupported_settings
from hubserve.worker.tasks.base import LoadOptions
from hubserve.worker.tasks.generation import (
    GENERATION_PARAMETERS,
    check_generation_parameters,
    with_length_default,
)
from hubserve.worker.tasks.pipeline import PipelineAdapter, require_texts

log = logging.getLogger("hubserve.worker")

# Names clients use for stop strings; the pipeline takes them as `stop_sequence`.
STOP_ALIASES = ("stop", "stop_sequences", "stop_strings")
# TGI's parameters the pipeline has no use for: a seed for sampling, and `details` (always sent when streaming).
ENGINE_ONLY_PARAMETERS = frozenset({"seed", "details"})
# The parameters the engine serves; a request with any other goes to the pipeline (and cannot stream).
ENGINE_PARAMETERS = frozenset(
    {"max_new_tokens", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k", "top_p",
     "repetition_penalty", "return_full_text", "stop_sequence", *STOP_ALIASES, *ENGINE_ONLY_PARAMETERS}
)
PIPELINE_PARAMETERS = frozenset(
    {
        "return_full_text",
        "return_text",
        "return_tensors",
        "clean_up_tokenization_spaces",
        "prefix",
        "handle_long_generation",
        "stop_sequence",
        "truncation",
        "continue_final_message",
        "skip_special_tokens",
        "tokenizer_encode_kwargs",
        "tools",
        "documents",
    }
)


def is_chat(inputs: Any) -> bool:
    """Whether `inputs` is one conversation: a non-empty list of {"role", "content"} messages."""
    return (
        isinstance(inputs, list)
        and bool(inputs)
        and all(isinstance(message, dict) and {"role", "content"} <= set(message) for message in inputs)
    )


class TextGenerationAdapter(PipelineAdapter):
    """`[{"generated_text": str}]` per prompt (the prompt included unless `return_full_text` is false); for chat
    messages, `[{"generated_text": [...the messages, {"role": "assistant", "content": reply}]}]`.

    Requests go through the continuous-batching `GenerationEngine` when it can serve their parameters (identical
    answers), through the pipeline otherwise. `predict_async` and `stream_async` are what an event loop calls.
    """

    task = "text-generation"
    parameters = GENERATION_PARAMETERS | PIPELINE_PARAMETERS | frozenset(STOP_ALIASES) | ENGINE_ONLY_PARAMETERS
    warmup_inputs = "warm up"
    warmup_parameters = {"max_new_tokens": 1}
    # Whether `stream_async` works for this model (False when the engine cannot run it).
    supports_streaming: bool = True

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        super().__init__(model_dir, options)
        # What the pipeline's generate() calls start from: the model's config, sampling or not as the pipeline
        # defaults to when the model's config does not say (which decides what other parameters are valid).
        self.generation_config = copy.deepcopy(self.pipe.model.generation_config)
        defaults = self.pipe._default_generation_config
        if defaults is not None and "do_sample" not in self.generation_config.to_diff_dict():
            self.generation_config.do_sample = defaults.do_sample
        self.engine: GenerationEngine | None = None
        unsupported = unsupported_settings(resolved_config(self.pipe, self.call_parameters({})))
        if getattr(self.pipe.tokenizer, "response_template", None) is not None:
            unsupported.append("a tokenizer response template")
        if unsupported:
            log.warning("continuous batching is off for this model, which sets %s; using the pipeline", unsupported)
        else:
            limits = limits_from_env(os.environ)
            self.engine = GenerationEngine(self.pipe.model, self.pipe.tokenizer, **limits)
        self.supports_streaming = self.engine is not None

    def configure_generation(self, **limits: Any) -> None:
        """Set the engine's limits (`GenerationLimits` names: max_batch_size, max_concurrent_requests,
        max_batch_delay_ms, ...); None leaves one as it is."""
        if self.engine is not None:
            self.engine.configure(**limits)

    def prepare(self, inputs: Any) -> Any:
        if isinstance(inputs, dict) and "messages" in inputs:
            inputs = inputs["messages"]
        chats = [inputs] if is_chat(inputs) else inputs
        if isinstance(chats, list) and chats and all(is_chat(chat) for chat in chats):
            if getattr(self.pipe.tokenizer, "chat_template", None) is None:
                raise BadRequest("this model has no chat template: send a prompt string instead of messages")
            return inputs
        return require_texts(inputs)

    def call_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        stops = [parameters.pop(name) for name in (*STOP_ALIASES, "stop_sequence") if name in parameters]
        if stops:
            flat = [stop for value in stops for stop in (value if isinstance(value, list) else [value])]
            if not all(isinstance(stop, str) and stop for stop in flat):
                raise BadRequest("stop sequences must be non-empty strings")
            parameters["stop_sequence"] = flat
        check_generation_parameters(self.generation_config, parameters)
        return with_length_default(self.pipe.model.generation_config, parameters)

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        if self._engine_takes(parameters) and not _in_event_loop():
            return asyncio.run(self.predict_async(inputs, parameters))
        return self._pipeline_predict(inputs, parameters)

    async def predict_async(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        """`predict` from an event loop: concurrent calls share the engine's batch."""
        self.check_parameters(parameters)
        if self.engine is None:
            return await asyncio.to_thread(self._pipeline_predict, inputs, parameters)
        if not self._engine_takes(parameters):
            return await self.engine.run(lambda: self._pipeline_predict(inputs, parameters))
        plan = self._plan(inputs, parameters, streaming=False)
        streams = self._open(plan)
        try:
            results = await asyncio.gather(*(stream.result() for stream in streams))
        finally:
            for stream in streams:
                stream.cancel()
        answers = [
            [answer(prompt, result, plan.return_full_text)]
            for prompt, result in zip(plan.prompts, results, strict=True)
        ]
        return answers if plan.listed else answers[0]

    async def stream_async(self, inputs: Any, parameters: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """TGI's stream events for one prompt or conversation: checked here (BadRequest, Overloaded) before any
        event; closing the returned iterator cancels the generation."""
        if self.engine is None:
            raise BadRequest("this model cannot stream: it is served by the transformers pipeline only")
        self.check_parameters(parameters)
        if not self._engine_takes(parameters):
            others = sorted(set(parameters) - ENGINE_PARAMETERS)
            raise BadRequest(f"these parameters cannot be used when streaming: {others}")
        plan = self._plan(inputs, parameters, streaming=True)
        if plan.listed:
            raise BadRequest("streaming takes one prompt or one conversation, not a list")
        prompt, prefix = plan.prompts[0], ""
        if plan.return_full_text:  # TGI puts the prompt before the text; a conversation's is its rendering
            rendered = prompt.text if prompt.messages is None else self._chat_template(prompt.messages, tokenize=False)
            prefix = str(rendered)
        return tgi_events(self._open(plan)[0], prefix)

    def warmup(self) -> None:
        if self.engine is not None:
            try:
                self.predict(self.warmup_inputs, dict(self.warmup_parameters))
                return
            except HubserveError as exc:  # e.g. a model whose cache the engine cannot batch
                log.warning("continuous batching is off for this model (%s); using the pipeline", exc)
                self.engine.stop()
                self.engine, self.supports_streaming = None, False
        super().warmup()

    def _engine_takes(self, parameters: dict[str, Any]) -> bool:
        return self.engine is not None and set(parameters) <= ENGINE_PARAMETERS

    def _pipeline_predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        if parameters.get("seed") is not None:
            set_seed(_seed(parameters["seed"]))
        parameters = {name: value for name, value in parameters.items() if name not in ENGINE_ONLY_PARAMETERS}
        return super().predict(inputs, parameters)

    def _plan(self, inputs: Any, parameters: dict[str, Any], *, streaming: bool) -> Plan:
        self.check_parameters(parameters)
        prepared = self.prepare(inputs)
        kwargs = self.call_parameters(copy.deepcopy(parameters))
        stop = kwargs.pop("stop_sequence", [])
        full_text = bool(kwargs.pop("return_full_text", not streaming))
        seed = kwargs.pop("seed", None)
        seed = None if seed is None else _seed(seed)
        kwargs.pop("details", None)
        config = resolved_config(self.pipe, kwargs)
        unsupported = unsupported_settings(config)
        if unsupported:
            raise BadRequest(f"the continuous-batching engine does not implement these settings: {unsupported}")
        listed = isinstance(prepared, list) and not is_chat(prepared)
        prompts = [self._encode(item) for item in (prepared if listed else [prepared])]
        params = [sampling_params(config, len(prompt.ids), seed, stop) for prompt in prompts]
        return Plan(prompts, params, full_text, listed)

    def _encode(self, item: str | list[dict[str, Any]]) -> Prompt:
        """A prompt's tokens as the pipeline makes them (no special tokens added; chats through their template)."""
        if isinstance(item, str):
            tokenizer: Any = self.pipe.tokenizer
            return Prompt(list(tokenizer(item, add_special_tokens=False)["input_ids"]), item, None)
        return Prompt(list(self._chat_template(item, tokenize=True)["input_ids"]), None, item)

    def _chat_template(self, messages: list[dict[str, Any]], *, tokenize: bool) -> Any:
        """The conversation rendered (or tokenized) to be answered, or continued when it ends with the assistant."""
        ongoing = messages[-1]["role"] == "assistant"
        tokenizer: Any = self.pipe.tokenizer
        return tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=not ongoing,
            continue_final_message=ongoing,
            tokenize=tokenize,
            return_dict=tokenize,
        )

    def _open(self, plan: Plan) -> list[TokenStream]:
        """Queue every prompt of `plan`; if one is refused, those already queued are cancelled."""
        assert self.engine is not None
        streams: list[TokenStream] = []
        try:
            for prompt, params in zip(plan.prompts, plan.params, strict=True):
                streams.append(self.engine.open(prompt.ids, params))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return streams


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise BadRequest("`seed` must be an integer in [0, 2**64)")
    return value


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
