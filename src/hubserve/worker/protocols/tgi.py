"""TGI's API on text-generation endpoints: /generate, /generate_stream, the Inference Endpoints root (TGI's compat
route, as huggingface_hub's `text_generation` posts to it), /tokenize and /info; generation goes through the
adapter's continuous batching, shared with every other request."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from hubserve import __version__
from hubserve.errors import BadRequest, NotFound
from hubserve.invocation import InvocationRequest, InvocationResult, Route
from hubserve.worker.generation import TokenEvent, TokenStream
from hubserve.worker.generation.answers import Plan, Prompt, tgi_chunk, tgi_event
from hubserve.worker.protocols import Handler, json_result, register
from hubserve.worker.tasks.text_generation import TextGenerationAdapter
from hubserve.worker.tasks.truncation import leading_text

if TYPE_CHECKING:
    from hubserve.worker.engine import Engine

TASKS = ("text-generation",)
# TGI's default `--max-stop-sequences`: a stop string is looked for in the text after every token.
MAX_STOP_SEQUENCES = 4


def generator(engine: Engine) -> TextGenerationAdapter:
    adapter = engine.generator
    if not isinstance(adapter, TextGenerationAdapter):
        raise NotFound(f"this endpoint's task ({engine.task}) does not generate text")
    return adapter


async def collect(tokens: TokenStream) -> list[TokenEvent]:
    """Every token event of one generation (the last carries the result); cancelled if the caller goes away."""
    try:
        return [event async for event in tokens]
    finally:
        tokens.cancel()


def open_one(adapter: TextGenerationAdapter, inputs: Any, parameters: dict[str, Any], *,
             streaming: bool) -> tuple[Plan, TokenStream]:
    """One prompt (or conversation) planned and queued: BadRequest or Overloaded before anything runs."""
    if adapter.engine is None:
        raise BadRequest("this model is served by the transformers pipeline only, which cannot stream nor give "
                         "token details")
    plan = adapter.plan(inputs, parameters, streaming=streaming)
    if plan.listed:
        raise BadRequest("`inputs` must be one prompt string (or one conversation), not a list")
    return plan, adapter.open(plan, shape=tgi_chunk if streaming else None)[0]


def decoded(engine: Engine, request: InvocationRequest, *, full_text: bool | None) -> tuple[Any, dict[str, Any]]:
    """A GenerateRequest's `inputs` and `parameters` (checked by the adapter), `return_full_text` defaulted to
    `full_text` unless None."""
    assert engine.model is not None
    work = engine.model.decode_work(request)
    parameters = dict(work.parameters)
    stop = parameters.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
        raise BadRequest(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stop)}")
    if full_text is not None and parameters.get("return_full_text") is None:
        parameters["return_full_text"] = full_text
    return work.inputs, parameters


def prefix(adapter: TextGenerationAdapter, prompt: Prompt) -> str:
    """What `return_full_text` puts before the generated text: the prompt, or the conversation as rendered."""
    if prompt.messages is not None:
        return adapter.render_chat(prompt.messages)
    return prompt.text or ""


def token(event: TokenEvent) -> dict[str, Any]:
    return {"id": event.id, "text": event.text, "logprob": event.logprob, "special": event.special}


async def generated(adapter: TextGenerationAdapter, inputs: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """TGI's GenerateResponse for one prompt: `details` (with the tokens) only when asked for."""
    if not parameters.get("details") and adapter.engine is None:  # the pipeline's answer has the same text
        answer = await adapter.predict_async(inputs, parameters)
        return dict(answer[0])
    plan, tokens = open_one(adapter, inputs, parameters, streaming=False)
    events = await collect(tokens)
    end = events[-1].result
    assert end is not None
    text = (prefix(adapter, plan.prompts[0]) if plan.return_full_text else "") + end.text
    if not parameters.get("details"):
        return {"generated_text": text}
    details: dict[str, Any] = {"finish_reason": end.finish_reason, "generated_tokens": end.generated_tokens,
                               "seed": end.seed, "prefill": [], "tokens": [token(event) for event in events]}
    if parameters.get("top_n_tokens"):
        details["top_tokens"] = [[dataclasses.asdict(top) for top in event.top_tokens] for event in events]
    return {"generated_text": text, "details": details}


async def generate(engine: Engine, request: InvocationRequest) -> InvocationResult:
    inputs, parameters = decoded(engine, request, full_text=False)
    if not isinstance(inputs, str):
        raise BadRequest("`inputs` must be a prompt string")
    return json_result(await generated(generator(engine), inputs, parameters))


async def generate_stream(engine: Engine, request: InvocationRequest) -> AsyncIterator[dict[str, Any]]:
    """TGI's stream events; the last one has the whole text and the details (always: harmless to clients)."""
    adapter = generator(engine)
    inputs, parameters = decoded(engine, request, full_text=None)
    plan, tokens = open_one(adapter, inputs, parameters, streaming=True)
    start = prefix(adapter, plan.prompts[0]) if plan.return_full_text else ""
    return _events(tokens, start, len(plan.prompts[0].ids))


async def _events(tokens: TokenStream, start: str, input_length: int) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in tokens:
            shaped = tgi_event(event, start)
            if shaped["details"] is not None:
                shaped["details"]["input_length"] = input_length
            yield shaped
    finally:
        tokens.cancel()


async def compat(engine: Engine, request: InvocationRequest) -> InvocationResult:
    """TGI's `POST /`: a list of one GenerateResponse, the prompt before the text unless `return_full_text` is
    false; other inputs (lists of prompts, conversations) get the task's own answer, as before."""
    inputs, parameters = decoded(engine, request, full_text=True)
    adapter = generator(engine)
    if not parameters.get("details"):
        return json_result(await adapter.predict_async(inputs, parameters))
    if not isinstance(inputs, str):
        raise BadRequest("`details` are given for one prompt string only")
    return json_result([await generated(adapter, inputs, parameters)])


async def tokenize(engine: Engine, request: InvocationRequest) -> InvocationResult:
    """The prompt's tokens with their character offsets, as the model would read them (no special tokens added);
    refused from its first tokens alone when it is longer than the endpoint takes."""
    adapter = generator(engine)
    inputs, _ = decoded(engine, request, full_text=None)
    if not isinstance(inputs, str):
        raise BadRequest("`inputs` must be a prompt string")
    tokenizer: Any = adapter.pipe.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise NotFound("No fast tokenizer available")
    most = adapter.limits.max_input_tokens
    if most is not None and leading_text(tokenizer, inputs, most + 1) != inputs:
        raise BadRequest(f"`inputs` must have less than {most} tokens. Given: more than {most + 1}")
    encoding = tokenizer(inputs, add_special_tokens=False, return_offsets_mapping=True)
    return json_result([{"id": id_, "text": inputs[start:stop], "start": start, "stop": stop}
                   for id_, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True)])


async def info(engine: Engine, request: InvocationRequest) -> InvocationResult:
    adapter = generator(engine)
    limits = adapter.limits
    return json_result({
        "model_id": engine.model_id, "model_sha": None, "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": limits.max_concurrent_requests, "max_best_of": 1,
        "max_stop_sequences": MAX_STOP_SEQUENCES, "max_input_tokens": limits.max_input_tokens,
        "max_total_tokens": limits.max_total_tokens, "validation_workers": 1,
        "max_client_batch_size": limits.max_concurrent_requests, "router": "hubserve", "version": __version__,
        "sha": None, "docker_label": None,
    })


register(Route.GENERATE, Handler(invoke=generate), TASKS)
register(Route.GENERATE_STREAM, Handler(stream=generate_stream, direct=True), TASKS)
register(Route.ROOT, Handler(invoke=compat, stream=generate_stream, direct=True), TASKS)
register(Route.TOKENIZE, Handler(invoke=tokenize), TASKS)
register(Route.INFO, Handler(invoke=info), TASKS)
