"""text-generation: a causal LM (also GGUF) for prompts or chat messages, through the continuous-batching engine
(concurrent requests share its batch; streaming too) or, for what the engine does not do, the transformers pipeline.
Both hold every request to the endpoint's token limits (by default the model's context), as TGI does.

The engine runs the model on torch, or on llama.cpp for a GGUF file (`engine.backend` llamacpp, or auto on the CPU):
llama.cpp then serves the file's own quantised weights, and requests that only the pipeline implements are refused."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch
from jinja2 import TemplateError
from transformers import GenerationConfig, Pipeline, StoppingCriteriaList, set_seed

from hubserve.errors import BadRequest, HubserveError
from hubserve.worker.backends.session import BackendUnavailable
from hubserve.worker.generation import GenerationEngine, GenerationLimits, TokenStream
from hubserve.worker.generation.answers import Plan, Prompt, answer, tgi_chunk, tgi_events
from hubserve.worker.generation.direct import Shape
from hubserve.worker.generation.params import (
    PromptBounds,
    limits_from_env,
    resolved_config,
    sampling_params,
    unsupported_settings,
)
from hubserve.worker.tasks.base import LoadOptions, TaskAdapter
from hubserve.worker.tasks.generation import (
    GENERATION_PARAMETER_TYPES,
    GENERATION_PARAMETERS,
    LENGTH_PARAMETERS,
    check_generation_parameters,
    with_length_default,
)
from hubserve.worker.tasks.generation_pipeline import BoundedTextGenerationPipeline, UntilCancelled
from hubserve.worker.tasks.parameter_types import (
    BOOLEAN,
    INTEGER,
    LIST,
    NUMBER,
    OBJECT,
    STRING,
    STRINGS,
    TRUNCATION,
    one_of,
    optional,
)
from hubserve.worker.tasks.pipeline import PipelineAdapter, plain, require_texts
from hubserve.worker.tasks.truncation import context_length, prompt_ids

log = logging.getLogger("hubserve.worker")

# Names clients use for stop strings; the pipeline takes them as `stop_sequence`.
STOP_ALIASES = ("stop", "stop_sequences", "stop_strings")
# TGI's parameters the pipeline does not take: the adapter applies a `seed` and a `truncate` itself, and has
# nothing to do for `details` (always sent when streaming).
TGI_PARAMETERS = frozenset({"seed", "details", "truncate"})
# TGI's parameters hubserve implements only at their neutral values (which clients send by default).
NEUTRAL_ONLY: dict[str, tuple[Any, ...]] = {
    "watermark": (None, False),
    "best_of": (None, 1),
    "decoder_input_details": (None, False),
    "adapter_id": (None,),
}
# Settings only the engine implements, with their neutral values (which the pipeline path takes as no setting).
ENGINE_ONLY: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "top_n_tokens": (None, 0),
    "grammar": (None,),
}
# The parameters the engine serves; a request with any other goes to the pipeline (and cannot stream).
ENGINE_PARAMETERS = frozenset(
    {"max_new_tokens", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k", "top_p", "typical_p",
     "repetition_penalty", "return_full_text", "stop_sequence", *STOP_ALIASES, *TGI_PARAMETERS, *NEUTRAL_ONLY,
     *ENGINE_ONLY}
)
# The roles a chat message may have.
CHAT_ROLES = ("system", "user", "assistant", "tool")
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
    """Whether `inputs` is one conversation: a non-empty list of messages, each with a "role"."""
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(m, dict) and "role" in m for m in inputs)


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as chat templates take it: each content a string (OpenAI's text parts joined, as TGI
    joins them; no content is empty); other keys (a tool call's, a tool's name) pass as they are."""
    normalised = []
    for message in messages:
        if message["role"] not in CHAT_ROLES:
            raise BadRequest(f"a message's role must be one of {', '.join(CHAT_ROLES)}; got {message['role']!r}")
        normalised.append({**message, "content": message_text(message.get("content"))})
    return normalised


def message_text(content: Any) -> str:
    """A message's content as a string: a string, null, or a list of {"type": "text", "text": ...} parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
        raise BadRequest("a message's content must be a string or a list of content parts")
    kinds = sorted({str(part.get("type")) for part in content} - {"text"})
    if kinds:
        raise BadRequest(f"this model reads text only: content parts of type {', '.join(kinds)} are not supported")
    if not all(isinstance(part.get("text"), str) for part in content):
        raise BadRequest('a text content part must have a string "text"')
    return "".join(part["text"] for part in content)


class TextGenerationAdapter(PipelineAdapter):
    """`[{"generated_text": str}]` per prompt (the prompt included unless `return_full_text` is false); for chat
    messages, `[{"generated_text": [...the messages, {"role": "assistant", "content": reply}]}]`.

    Requests go through the continuous-batching `GenerationEngine` when it can serve their parameters (identical
    answers), through the pipeline otherwise. `predict_async` and `stream_async` are what an event loop calls.
    """

    task = "text-generation"
    parameters = (GENERATION_PARAMETERS | PIPELINE_PARAMETERS | frozenset(STOP_ALIASES) | TGI_PARAMETERS
                  | frozenset(NEUTRAL_ONLY) | frozenset(ENGINE_ONLY))
    parameter_types = {
        **GENERATION_PARAMETER_TYPES,
        **{name: optional(NUMBER) for name in ("frequency_penalty", "presence_penalty")},
        **{name: optional(INTEGER) for name in ("top_n_tokens", "best_of")},
        **{name: optional(BOOLEAN) for name in ("watermark", "decoder_input_details")},
        "adapter_id": optional(STRING),
        "grammar": optional(OBJECT),
        **{name: optional(BOOLEAN) for name in ("return_text", "return_tensors", "clean_up_tokenization_spaces",
                                                "continue_final_message", "skip_special_tokens")},
        **{name: optional(STRING | STRINGS) for name in (*STOP_ALIASES, "stop_sequence")},
        "prefix": STRING,
        "handle_long_generation": one_of("hole"),
        "truncation": TRUNCATION,
        "tokenizer_encode_kwargs": OBJECT,
        "tools": LIST,
        "documents": LIST,
    }
    pipeline_class = BoundedTextGenerationPipeline
    warmup_inputs = "warm up"
    warmup_parameters = {"max_new_tokens": 1}
    # Whether `stream_async` works for this model (False when the engine cannot run it).
    supports_streaming: bool = True

    @classmethod
    def serves_gguf(cls, options: LoadOptions) -> bool:
        # (Named, on any device: open_llamacpp then says why it cannot.)
        return options.backend == "llamacpp" or (options.backend == "auto" and options.device == "cpu"
                                                 and options.goal == "latency")

    def __init__(self, model_dir: Path, options: LoadOptions) -> None:
        llama, note = open_llamacpp(model_dir, options, self.pipeline_class)
        if llama is None:
            super().__init__(model_dir, options)
        else:  # no torch pipeline: its weightless stand-in gives the tokenizer, config and generation defaults
            TaskAdapter.__init__(self, model_dir, options)
            self.pipe = llama[1]
            self.backend = "llamacpp"
        self.backend_note = note
        self.llama: Any = None if llama is None else llama[0]
        # What the pipeline's generate() calls start from: the model's config, sampling or not as the pipeline
        # defaults to when the model's config does not say (which decides what other parameters are valid).
        self.generation_config = copy.deepcopy(self.pipe.model.generation_config)
        defaults = self.pipe._default_generation_config
        if defaults is not None and "do_sample" not in self.generation_config.to_diff_dict():
            self.generation_config.do_sample = defaults.do_sample
        # The token limits: by default the model's context (TGI's), then TGI's variables, then `configure_generation`.
        context = context_length(self.pipe.model.config, self.pipe.tokenizer)
        env = limits_from_env(os.environ)
        self.limits = GenerationLimits().updated(max_total_tokens=context).updated(**env)
        self.context_tokens = context
        # The token limits the endpoint asked for (TGI's variables, the spec): llama.cpp's cache may bound the rest.
        self.asked_tokens = {name: env[name] for name in ("max_input_tokens", "max_total_tokens") if name in env}
        self.engine: GenerationEngine | None = None
        unsupported = unsupported_settings(resolved_config(self.pipe, self.call_parameters({})))
        if getattr(self.pipe.tokenizer, "response_template", None) is not None:
            unsupported.append("a tokenizer response template")
        if unsupported and self.llama is not None:
            raise BackendUnavailable(f"llama.cpp serves through the continuous-batching engine, which does not "
                                     f"implement what this model sets: {unsupported}")
        if unsupported:
            log.warning("continuous batching is off for this model, which sets %s; using the pipeline", unsupported)
        else:
            tokens: dict[str, Any] = {"max_input_tokens": self.limits.max_input_tokens,
                                      "max_total_tokens": self.limits.max_total_tokens}
            self.engine = GenerationEngine(self.pipe.model if self.llama is None else self.llama,
                                           self.pipe.tokenizer, **{**env, **tokens})
            self._fit_cache()
        self.supports_streaming = self.engine is not None

    def configure_generation(self, **limits: Any) -> None:
        """Set the limits (`GenerationLimits` names: max_input_tokens, max_total_tokens, max_batch_size,
        max_concurrent_requests, ...; see its `updated`); None leaves one as it is."""
        self.limits = self.limits.updated(**limits)
        self.asked_tokens.update({name: limits[name] for name in ("max_input_tokens", "max_total_tokens")
                                  if limits.get(name) is not None})
        if self.engine is not None:
            self.engine.configure(**limits)
            self._fit_cache()

    def _fit_cache(self) -> None:
        """On llama.cpp: size its cache for the limits, which then say what it holds: fewer rows, or shorter
        requests than the model's context, when they do not fit its memory (TGI's MAX_BATCH_TOTAL_TOKENS sizes it:
        tokens of all rows together)."""
        if self.llama is None or self.engine is None:
            return
        asked_total = self.asked_tokens.get("max_total_tokens")
        shape = cache_shape(self.llama, self.limits.max_batch_size, asked_total)
        self.llama.reshape(shape)
        total = min(asked_total or self.context_tokens or shape.row_tokens, shape.row_tokens)
        inputs = min(self.asked_tokens.get("max_input_tokens", total), total - 1)
        fitted = {"max_batch_size": shape.rows, "max_total_tokens": total, "max_input_tokens": inputs}
        self.limits = self.limits.updated(**fitted)
        self.engine.configure(**fitted)

    def prepare(self, inputs: Any) -> Any:
        if isinstance(inputs, dict) and "messages" in inputs:
            inputs = inputs["messages"]
        if is_chat(inputs):
            return self._chat(inputs)
        if isinstance(inputs, list) and inputs and all(is_chat(chat) for chat in inputs):
            return [self._chat(chat) for chat in inputs]
        return require_texts(inputs)

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The conversation as the model reads it: rendered by its chat template, the generation prompt added (or
        the last message continued, when the assistant's)."""
        return str(self._chat_template(self._chat(messages), tokenize=False))

    def _chat(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if getattr(self.pipe.tokenizer, "chat_template", None) is None:
            raise BadRequest("this model has no chat template: send a prompt string instead of messages")
        return chat_messages(messages)

    def call_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        stops = [parameters.pop(name) for name in (*STOP_ALIASES, "stop_sequence") if name in parameters]
        if stops:
            flat = [stop for value in stops for stop in (value if isinstance(value, list) else [value])]
            if not all(isinstance(stop, str) and stop for stop in flat):
                raise BadRequest("stop sequences must be non-empty strings")
            parameters["stop_sequence"] = flat
        for name in [name for name in parameters if name in NEUTRAL_ONLY]:
            if not _neutral(parameters.pop(name), NEUTRAL_ONLY[name]):
                neutral = json.dumps(NEUTRAL_ONLY[name][-1])
                raise BadRequest(f"hubserve does not implement `{name}`: leave it out, or at {neutral}")
        check_generation_parameters(self.generation_config, parameters)
        return with_length_default(self.pipe.model.generation_config, parameters)

    def predict(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        if self._engine_takes(parameters) and not _in_event_loop():
            return asyncio.run(self.predict_async(inputs, parameters))
        return self._pipeline_predict(inputs, parameters)

    async def predict_async(self, inputs: Any, parameters: dict[str, Any]) -> Any:
        """`predict` from an event loop: concurrent calls share the engine's batch."""
        self.check_parameters(parameters)
        if self.engine is None or not self._engine_takes(parameters):
            self._refuse_pipeline(parameters)
            cancelled = threading.Event()  # the caller went away (its timeout): stop generating for it
            call = functools.partial(self._pipeline_predict, inputs, parameters, cancelled)
            try:
                return await (asyncio.to_thread(call) if self.engine is None else self.engine.run(call))
            finally:
                cancelled.set()
        plan = self.plan(inputs, parameters, streaming=False)
        streams = self.open(plan)
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
        plan = self.plan(inputs, parameters, streaming=True)
        if plan.listed:
            raise BadRequest("streaming takes one prompt or one conversation, not a list")
        prompt, prefix = plan.prompts[0], ""
        if plan.return_full_text:  # TGI puts the prompt before the text; a conversation's is its rendering
            prefix = self.render_chat(prompt.messages) if prompt.messages is not None else prompt.text or ""
        return tgi_events(self.open(plan, shape=tgi_chunk)[0], prefix)

    def warmup(self) -> None:
        if self.engine is not None:
            try:
                self.engine.grammars.prepare()  # in the background, while the warm-up runs and after
                self.predict(self.warmup_inputs, dict(self.warmup_parameters))
                return
            except HubserveError as exc:  # e.g. a model whose cache the engine cannot batch
                if self.llama is not None:  # no pipeline to fall back on
                    raise
                log.warning("continuous batching is off for this model (%s); using the pipeline", exc)
                self.engine.stop()
                self.engine, self.supports_streaming = None, False
        super().warmup()

    def _engine_takes(self, parameters: dict[str, Any]) -> bool:
        return self.engine is not None and set(parameters) <= ENGINE_PARAMETERS

    def _pipeline_predict(self, inputs: Any, parameters: dict[str, Any],
                          cancelled: threading.Event | None = None) -> Any:
        """The pipeline's answer under the endpoint's limits; once `cancelled` is set, nothing more is generated
        (the answer then goes nowhere)."""
        if cancelled is not None and cancelled.is_set():  # cancelled while waiting for the generation thread
            return None
        self._refuse_pipeline(parameters)
        parameters = self._pipeline_parameters(parameters)
        if parameters.get("seed") is not None:
            set_seed(_seed(parameters["seed"]))
        kwargs = self.pipeline_kwargs({name: value for name, value in parameters.items() if name not in TGI_PARAMETERS})
        generation = {name: value for name, value in kwargs.items() if name in GENERATION_PARAMETERS}
        bounds = self._bounds(resolved_config(self.pipe, generation), parameters)
        if cancelled is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([UntilCancelled(cancelled)])
        return plain(self.pipe(self.prepare(inputs), bounds=bounds, **kwargs))

    def _refuse_pipeline(self, parameters: dict[str, Any]) -> None:
        """A BadRequest when a request needs the pipeline and llama.cpp serves the model (it has no pipeline)."""
        if self.llama is not None:
            others = sorted(set(parameters) - ENGINE_PARAMETERS)
            raise BadRequest(f"this model runs on llama.cpp, which does not implement these parameters: {others}")

    def _pipeline_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """`parameters` without the engine's own settings, which must be at their neutral values: the pipeline
        cannot honour them (a BadRequest naming them), and must not ignore them silently."""
        refused = sorted(n for n, v in parameters.items() if n in ENGINE_ONLY and not _neutral(v, ENGINE_ONLY[n]))
        if refused:
            why = ("this model runs on the transformers pipeline only" if self.engine is None else
                   f"this request also sets {sorted(set(parameters) - ENGINE_PARAMETERS)}, which only the "
                   "transformers pipeline implements")
            names = ", ".join(f"`{name}`" for name in refused)
            raise BadRequest(f"only the continuous-batching engine implements {names}, but {why}")
        return {name: value for name, value in parameters.items() if name not in ENGINE_ONLY}

    def _bounds(self, config: GenerationConfig, parameters: dict[str, Any]) -> PromptBounds:
        """The request's `truncate` and its length, set by itself or defaulted by `config`, under the limits."""
        explicit = any(parameters.get(name) is not None for name in LENGTH_PARAMETERS)
        return PromptBounds(self.limits, config, parameters.get("truncate"), explicit)

    def plan(self, inputs: Any, parameters: dict[str, Any], *, streaming: bool) -> Plan:
        """The engine's request for `inputs` (a prompt, a list of prompts, a conversation or a list of them) under
        `parameters`: everything checked (BadRequest), each prompt tokenized within the limits, a grammar compiled.
        """
        self.check_parameters(parameters)
        prepared = self.prepare(inputs)
        kwargs = self.call_parameters(copy.deepcopy(parameters))
        stop = kwargs.pop("stop_sequence", [])
        full_text = bool(kwargs.pop("return_full_text", not streaming))
        seed = kwargs.pop("seed", None)
        seed = None if seed is None else _seed(seed)
        for name in TGI_PARAMETERS:
            kwargs.pop(name, None)
        settings = self._engine_settings({name: kwargs.pop(name) for name in ENGINE_ONLY if name in kwargs})
        config = resolved_config(self.pipe, kwargs)
        unsupported = unsupported_settings(config)
        if unsupported:
            raise BadRequest(f"the continuous-batching engine does not implement these settings: {unsupported}")
        bounds = self._bounds(config, parameters)
        listed = isinstance(prepared, list) and not is_chat(prepared)
        prompts, params = [], []
        for item in prepared if listed else [prepared]:
            prompt = self._encode(item, bounds.truncate)
            kept, new_tokens = bounds.fit(len(prompt.ids))
            prompts.append(prompt)
            params.append(sampling_params(config, new_tokens, kept, seed, stop, **settings))
        return Plan(prompts, params, full_text, listed, streaming)

    def _engine_settings(self, given: dict[str, Any]) -> dict[str, Any]:
        """The engine-only settings a request gave (None for not set), as SamplingParams fields; its grammar
        compiled."""
        settings = {name: value for name, value in given.items() if value is not None}
        if "grammar" in settings:
            assert self.engine is not None
            settings["grammar"] = self.engine.grammars.compile(settings["grammar"])
        return settings

    def _encode(self, item: str | list[dict[str, Any]], truncate: int | None) -> Prompt:
        """A prompt's tokens as the pipeline makes them (no special tokens added; chats rendered by their template),
        only as many as the limits let the model read (its last `truncate`): this runs on the replica's event loop,
        where tokenizing a 6 MB prompt whole would stall every other caller for seconds."""
        text = item if isinstance(item, str) else str(self._chat_template(item, tokenize=False))
        ids = prompt_ids(self.pipe.tokenizer, text, truncate=truncate, max_input_tokens=self.limits.max_input_tokens)
        return Prompt(ids, item, None) if isinstance(item, str) else Prompt(ids, None, item)

    def _chat_template(self, messages: list[dict[str, Any]], *, tokenize: bool) -> Any:
        """The (checked) conversation rendered (or tokenized) to be answered, or continued when it ends with the
        assistant; a template that refuses it (roles out of order, say) is the caller's error."""
        ongoing = messages[-1]["role"] == "assistant"
        tokenizer: Any = self.pipe.tokenizer
        try:
            return tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=not ongoing,
                continue_final_message=ongoing,
                tokenize=tokenize,
                return_dict=tokenize,
            )
        except TemplateError as exc:
            raise BadRequest(f"the model's chat template refused these messages: {exc}") from None

    def open(self, plan: Plan, shape: Shape | None = None) -> list[TokenStream]:
        """Queue every prompt of `plan`; if one is refused, those already queued are cancelled. Streamed, `shape`
        lets the generation thread write the token events itself (see generation.direct)."""
        assert self.engine is not None
        most = self.engine.limits.max_concurrent_requests
        if len(plan.prompts) > most:  # a 429 would have the client retry a request that can never fit
            raise BadRequest(f"a request holds at most {most} prompts (max_concurrent_requests); this one has "
                             f"{len(plan.prompts)}")
        streams: list[TokenStream] = []
        try:
            for prompt, params in zip(plan.prompts, plan.params, strict=True):
                streams.append(self.engine.open(prompt.ids, params, streamed=plan.streaming, shape=shape))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return streams


def open_llamacpp(model_dir: Path, options: LoadOptions,
                  pipeline_class: type[Pipeline] | None) -> tuple[tuple[Any, Pipeline] | None, str | None]:
    """llama.cpp's model and the weightless pipeline beside it, when llama.cpp serves (`backend` llamacpp, or auto
    for a GGUF file on the CPU where the goal is latency); else None, and why torch serves a model auto meant for
    llama.cpp. A model asked to run on llama.cpp that cannot fails here, with the reason."""
    asked = options.backend == "llamacpp"
    if options.backend not in ("auto", "llamacpp") or (not asked and options.goal == "throughput"):
        return None, None
    if options.gguf_file is None or options.device != "cpu":
        if not asked:
            return None, None
        why = "a GGUF file" if options.gguf_file is None else f"the CPU; this endpoint's device is {options.device}"
        raise BackendUnavailable(f"engine.backend llamacpp serves {why}")
    model: Any = None
    try:
        from hubserve.worker.generation.gguf_pipeline import tokenizer_mismatch, weightless_pipeline
        from hubserve.worker.generation.llamacpp import LlamaCppModel

        model = LlamaCppModel(model_dir / options.gguf_file, threads=torch.get_num_threads(),
                              batch_invariant=options.batch_invariant, huge_pages=options.huge_pages)
        # The cache the adapter will most likely ask for (unless the spec's limits say otherwise), made while the
        # tokenizer and config load.
        early = _limits_from_env()
        if early is not None:
            model.reshape(cache_shape(model, early.max_batch_size, early.max_total_tokens), background=True)
        pipe = weightless_pipeline(model_dir, options, pipeline_class, model.eos_ids)
        mismatch = tokenizer_mismatch(pipe.tokenizer, model.tokenize)
        if mismatch is not None:
            raise BackendUnavailable(mismatch)
    except Exception as exc:  # llama.cpp missing, or refusing the file, in any way: torch serves, or the load fails
        reason = str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"
        if model is not None:
            model.close()  # its cache, made in the background, goes now rather than at some collection
        if asked:
            raise BackendUnavailable(f"engine.backend llamacpp cannot serve this model: {reason}") from exc
        note = f"llama.cpp could not serve this model, so torch does: {reason}"
        log.warning("%s", note)
        return None, note
    log.info("text-generation runs on llama.cpp (%s, %d threads)", options.gguf_file, model.threads)
    return (model, pipe), None


def cache_shape(llama: Any, max_batch_size: int, asked_total: int | None) -> Any:
    """llama.cpp's cache for these limits, within TGI's MAX_BATCH_TOTAL_TOKENS (the tokens of all rows) when set."""
    budget = os.environ.get("MAX_BATCH_TOTAL_TOKENS", "").strip()
    return llama.fit(max_batch_size, asked_total, int(budget) if budget else None)


def _limits_from_env() -> GenerationLimits | None:
    """The limits TGI's variables set; None when they are not valid (the adapter says why, later)."""
    try:
        return GenerationLimits().updated(**limits_from_env(os.environ))
    except (ValueError, TypeError):
        return None


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    """Whether `value` is one of `neutral` (of its type: `true` is not 1)."""
    return any(value is v or (type(value) is type(v) and value == v) for v in neutral)


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
