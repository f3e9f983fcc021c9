"""OpenAI's chat completions and (legacy) completions on text-generation endpoints. A request becomes one plan for
the adapter's continuous batching: chat rendered by the model's template, `response_format` and tools as a grammar
(tools announced in the conversation as TGI does for any model); answers and stream chunks are OpenAI's, with stop
strings cut from the text as OpenAI does (TGI keeps them)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from hubserve import __version__
from hubserve.errors import BadRequest
from hubserve.invocation import InvocationRequest, InvocationResult, Route
from hubserve.worker.generation import GenerationResult, TokenEvent, TokenStream
from hubserve.worker.generation.answers import Plan
from hubserve.worker.protocols import Handler, json_object, json_result, register
from hubserve.worker.protocols.tgi import MAX_STOP_SEQUENCES, TASKS, generator
from hubserve.worker.tasks.parameter_types import (
    BOOLEAN,
    INTEGER,
    LIST,
    NULL,
    NUMBER,
    OBJECT,
    STRING,
    STRINGS,
    Expected,
    check_types,
    optional,
)
from hubserve.worker.tasks.text_generation import TextGenerationAdapter, message_text

if TYPE_CHECKING:
    from hubserve.worker.engine import Engine

# The fields each request may have, with their JSON types; `model` named the endpoint (the API chose it), `user`,
# `parallel_tool_calls`, `metadata`, `store` and `service_tier` change nothing here.
SAMPLING: dict[str, Expected] = {
    "model": optional(STRING), "user": optional(STRING), "n": optional(INTEGER), "max_tokens": optional(INTEGER),
    "temperature": optional(NUMBER), "top_p": optional(NUMBER), "stop": optional(STRING | STRINGS),
    "seed": optional(INTEGER), "frequency_penalty": optional(NUMBER), "presence_penalty": optional(NUMBER),
    "logit_bias": optional(OBJECT | LIST), "stream": optional(BOOLEAN), "stream_options": optional(OBJECT),
}
CHAT_FIELDS = {
    **SAMPLING, "messages": LIST, "max_completion_tokens": optional(INTEGER), "logprobs": optional(BOOLEAN),
    "top_logprobs": optional(INTEGER), "response_format": optional(OBJECT), "tools": optional(LIST),
    "tool_choice": optional(STRING | OBJECT), "tool_prompt": optional(STRING), "parallel_tool_calls": optional(BOOLEAN),
    "metadata": optional(OBJECT), "store": optional(BOOLEAN), "service_tier": optional(STRING),
}
COMPLETION_FIELDS = {
    **SAMPLING, "prompt": STRING | STRINGS, "logprobs": optional(INTEGER), "echo": optional(BOOLEAN),
    "suffix": optional(NULL), "best_of": optional(Expected("1", lambda value: value == 1 and value is not True)),
}
# OpenAI's bounds of the numbers it checks itself (the adapter checks the others).
CHAT_RANGES = {"temperature": (0, 2), "n": (1, None), "top_logprobs": (0, 20)}
COMPLETION_RANGES = {"temperature": (0, 2), "n": (1, None), "logprobs": (0, 5)}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}
FINGERPRINT = f"hubserve-{__version__}"
# TGI's way to let a model with tools answer in words: a function of its own, answered as plain content.
NO_TOOL = {"name": "no_tool", "description": "Open-ended response: when no other function fits, or to ask for more "
           "information.", "parameters": {"type": "object", "properties": {"content": {
               "type": "string", "description": "The response content"}}, "required": ["content"]}}
TOOL_PROMPT = ("Given the functions available, please respond with a JSON for a function call with its proper "
               'arguments that best answers the given prompt. Respond in the format {"name": function name, '
               '"arguments": dictionary of argument name and its value}. Do not use variables.')


@dataclass
class Run:
    """A checked request, planned: `plan` holds `n` choices per prompt (their index is their order)."""

    adapter: TextGenerationAdapter
    plan: Plan
    body: dict[str, Any]
    chat: bool
    n: int = 1
    stops: tuple[str, ...] = ()
    tools: bool = False  # the answer is a tool call (or `no_tool`'s content)
    model: str = ""  # what answers name the model when the request does not (the endpoint)
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": ("chatcmpl-" if self.chat else "cmpl-") + self.id, "object": kind, "created": self.created,
                "model": self.body.get("model") or self.model, "system_fingerprint": FINGERPRINT}

    def usage(self, results: list[GenerationResult]) -> dict[str, int]:
        prompt = sum(len(prompt.ids) for prompt in self.plan.prompts[::self.n])
        completion = sum(end.generated_tokens for end in results)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def fields(request: InvocationRequest, types: dict[str, Expected],
           ranges: dict[str, tuple[int, int | None]]) -> dict[str, Any]:
    body = json_object(request)
    unknown = sorted(set(body) - set(types))
    if unknown:
        raise BadRequest(f"hubserve does not implement {', '.join(f'`{name}`' for name in unknown)}")
    check_types(body, types)
    for name, (low, high) in ranges.items():
        value = body.get(name)
        if value is not None and not (low <= value and (high is None or value <= high)):
            raise BadRequest(f"`{name}` must be at least {low}" + ("" if high is None else f" and at most {high}"))
    if body.get("logit_bias"):
        raise BadRequest("hubserve does not implement `logit_bias`")
    return body


def stops_of(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > MAX_STOP_SEQUENCES:
        raise BadRequest(f"`stop` takes at most {MAX_STOP_SEQUENCES} sequences")
    return stops


def sampling(body: dict[str, Any], max_tokens: int | None) -> dict[str, Any]:
    """The adapter's parameters for OpenAI's: temperature 0 is greedy, and sampling is the default."""
    temperature = 1.0 if body.get("temperature") is None else body["temperature"]
    given = {"max_new_tokens": max_tokens, "stop": list(stops_of(body)) or None, "seed": body.get("seed"),
             "frequency_penalty": body.get("frequency_penalty"), "presence_penalty": body.get("presence_penalty")}
    if temperature > 0:  # the warpers only mean something when sampling (and generate() warns otherwise)
        given |= {"temperature": temperature, "top_p": body.get("top_p")}
    return {"do_sample": temperature > 0, **{name: value for name, value in given.items() if value is not None}}


def tuned(run: Run, length_given: bool) -> Run:
    """`run` with what OpenAI means and the adapter cannot know: each of a prompt's choices its own seed, and with no
    length asked, as many tokens as the context leaves (TGI's default too)."""
    seed, total = run.body.get("seed"), run.adapter.limits.max_total_tokens
    params = []
    for index, (prompt, params_) in enumerate(zip(run.plan.prompts, run.plan.params, strict=True)):
        changes: dict[str, Any] = {}
        if seed is not None and run.n > 1:
            changes["seed"] = (seed + index % run.n) % 2**64
        if not length_given and total is not None:
            changes["max_new_tokens"] = total - len(prompt.ids)
        params.append(dataclasses.replace(params_, **changes))
    return dataclasses.replace(run, plan=dataclasses.replace(run.plan, params=params))


def planned(engine: Engine, body: dict[str, Any], inputs: list[Any], parameters: dict[str, Any],
            max_tokens: int | None, **run: Any) -> Run:
    """The run of `n` choices for each of `inputs`."""
    adapter = generator(engine)
    if adapter.engine is None:
        raise BadRequest("this model is served by the transformers pipeline only: use POST on the endpoint URL")
    n = body.get("n") or 1
    most = adapter.limits.max_concurrent_requests
    if len(inputs) * n > most:  # refused before tokenizing them all
        raise BadRequest(f"a request asks for at most {most} completions (max_concurrent_requests); this one asks "
                         f"for {len(inputs) * n}")
    repeated = [item for item in inputs for _ in range(n)]
    plan = adapter.plan(repeated, sampling(body, max_tokens) | parameters, streaming=bool(body.get("stream")))
    planned_run = Run(adapter, plan, body, n=n, stops=stops_of(body), model=engine.name, **run)
    return tuned(planned_run, max_tokens is not None)


def chat_run(engine: Engine, request: InvocationRequest) -> Run:
    body = fields(request, CHAT_FIELDS, CHAT_RANGES)
    messages = [message(item, f"messages[{index}]") for index, item in enumerate(body["messages"])]
    if not messages:
        raise BadRequest("`messages` must not be empty")
    parameters: dict[str, Any] = {}
    grammar = response_grammar(body.get("response_format"))
    functions = offered(body)
    if functions is not None:
        if grammar is not None:
            raise BadRequest("`response_format` and `tools` cannot be used together")
        messages = announced(messages, functions, body.get("tool_prompt"))
        grammar = {"type": "json", "value": tool_schema(functions)}
    if grammar is not None:
        parameters["grammar"] = grammar
    if body.get("logprobs") and body.get("top_logprobs"):
        parameters["top_n_tokens"] = body["top_logprobs"]
    given = body.get("max_completion_tokens")
    max_tokens = body.get("max_tokens") if given is None else given
    return planned(engine, body, [messages], parameters, max_tokens, chat=True, tools=functions is not None)


def completion_run(engine: Engine, request: InvocationRequest) -> Run:
    body = fields(request, COMPLETION_FIELDS, COMPLETION_RANGES)
    prompts = [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]
    if not prompts:
        raise BadRequest("`prompt` must not be empty")
    if body.get("echo") and body.get("logprobs") is not None:
        raise BadRequest("hubserve does not give the prompt's logprobs: leave out `logprobs` or `echo`")
    parameters = {"top_n_tokens": body["logprobs"]} if body.get("logprobs") else {}
    max_tokens = 16 if body.get("max_tokens") is None else body["max_tokens"]  # OpenAI's default
    return planned(engine, body, prompts, parameters, max_tokens, chat=False)


def message(item: Any, where: str) -> dict[str, Any]:
    """One message as the chat template gets it: an assistant's tool calls written as the JSON it is asked to
    answer them in, a tool's answer with the id of the call it answers."""
    if not isinstance(item, dict) or item.get("role") not in ROLES:
        raise BadRequest(f"`{where}` must be an object whose `role` is one of {', '.join(ROLES)}")
    content = message_text(item.get("content"))
    calls = item.get("tool_calls") or []
    if item["role"] == "assistant" and calls:
        content = "\n".join([*filter(None, [content]), *(call_text(call, where) for call in calls)])
    rendered = {"role": ROLES[item["role"]], "content": content}
    if item.get("tool_call_id") is not None:
        rendered["tool_call_id"] = item["tool_call_id"]
    return rendered


def call_text(call: Any, where: str) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(f"`{where}.tool_calls` must be a list of {{\"function\": {{\"name\", \"arguments\"}}}}")
    arguments = function.get("arguments") or "{}"
    with contextlib.suppress(json.JSONDecodeError):  # else kept as the string it is
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    return json.dumps({"name": function["name"], "arguments": arguments})


def response_grammar(format_: dict[str, Any] | None) -> dict[str, Any] | None:
    """The grammar of a `response_format`: OpenAI's, huggingface_hub's rewrite of it ({"type": "json_object",
    "value": schema}), LangChain's ChatHuggingFace's ({"type": "json_object", "schema": schema}) or TGI's
    ({"type": "json" | "json_schema" | "regex", "value": ...})."""
    if format_ is None or format_.get("type") == "text":
        return None
    kind = format_.get("type")
    if kind in ("json", "json_object"):
        return {"type": "json", "value": format_.get("value") or format_.get("schema") or {}}
    if kind == "json_schema":
        spec = format_.get("json_schema") or format_.get("value")
        if not isinstance(spec, dict):
            raise BadRequest('`response_format.json_schema` must be an object {"name", "schema"}')
        return {"type": "json", "value": spec.get("schema") or {}}
    if kind == "regex":
        return {"type": "regex", "value": format_.get("value")}
    raise BadRequest(f"`response_format.type` must be text, json_object or json_schema; got {kind!r}")


def offered(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The functions the answer calls one of (`no_tool` among them when it may answer in words), or None when it
    answers in words."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or choice == "none":
        return None
    functions = [function_of(tool, f"tools[{index}]") for index, tool in enumerate(tools)]
    if choice in (None, "auto"):
        return [*functions, NO_TOOL]
    if choice == "required":
        return functions
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    chosen = [function for function in functions if function["name"] == name]
    if not chosen:
        raise BadRequest('`tool_choice` must be "auto", "none", "required" or {"type": "function", "function": '
                         '{"name": <the name of one of `tools`>}}')
    return chosen


def function_of(tool: Any, where: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(f'`{where}` must be {{"type": "function", "function": {{"name", "parameters"}}}}')
    if function["name"] == NO_TOOL["name"]:
        raise BadRequest(f"`{where}`: the function name {NO_TOOL['name']!r} is reserved")
    return function


def announced(messages: list[dict[str, Any]], functions: list[dict[str, Any]], prompt: str | None) -> list[Any]:
    """The conversation with the tools and the tool prompt after its last message, as TGI writes them."""
    tools = json.dumps([{"type": "function", "function": function} for function in functions])
    last = messages[-1]
    return [*messages[:-1], {**last, "content": f"{last['content']}\n---\n{tools}\n{prompt or TOOL_PROMPT}"}]


def tool_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    """A call of one of `functions`: {"name": its name, "arguments": what its parameters' schema allows}."""
    return {"anyOf": [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                       "properties": {"name": {"const": function["name"]},
                                      "arguments": function.get("parameters") or {"type": "object"}}}
                      for function in functions]}


class Choice:
    """One choice's text as OpenAI gives it, token by token: cut before the first stop string, the text that may
    begin one held back until the next tokens tell."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False

    def add(self, text: str) -> str:
        """What of the text so far may be given now."""
        if self.stopped:
            return ""
        text = self.held + text
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        if found:
            self.stopped, self.held = True, ""
            return text[:min(found)]
        keep = max((size for stop in self.stops for size in range(1, len(stop)) if text.endswith(stop[:size])),
                   default=0)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def end(self) -> str:
        """The text held back, at the end of the generation."""
        rest, self.held = self.held, ""
        return "" if self.stopped else rest


def ending(run: Run, end: GenerationResult, text: str) -> tuple[str | None, list[dict[str, Any]] | None, str]:
    """A finished choice's content, tool calls and finish reason; a tool call is parsed from the (constrained) text,
    and when the length cut it short, the text is the answer."""
    if not run.tools:
        return text, None, FINISH[end.finish_reason]
    try:
        call = json.loads(end.text)
        name, arguments = call["name"], call["arguments"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return end.text, None, FINISH[end.finish_reason]
    if name == NO_TOOL["name"]:
        return str(arguments.get("content", "")), None, "stop"
    function = {"name": name, "arguments": json.dumps(arguments)}
    return None, [{"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": function}], "tool_calls"


def chat_logprobs(events: list[TokenEvent]) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**entry(event.text, event.logprob),
                         "top_logprobs": [entry(top.text, top.logprob) for top in event.top_tokens]}
                        for event in events if not event.special]}


def completion_logprobs(events: list[TokenEvent], offset: int) -> dict[str, Any]:
    shown = [event for event in events if not event.special]
    offsets = [offset + sum(len(event.text) for event in shown[:index]) for index in range(len(shown))]
    return {"tokens": [event.text for event in shown], "token_logprobs": [event.logprob for event in shown],
            "top_logprobs": [{top.text: top.logprob for top in event.top_tokens} for event in shown],
            "text_offset": offsets}


def logprobs(run: Run, events: list[TokenEvent], offset: int = 0) -> dict[str, Any] | None:
    wanted = run.body.get("logprobs")  # chat: true or false; completions: how many alternatives (0 too)
    if wanted is None or wanted is False:
        return None
    return chat_logprobs(events) if run.chat else completion_logprobs(events, offset)


def piece(run: Run, index: int, text: str | None, events: list[TokenEvent], offset: int = 0, reason: str | None = None,
          **extra: Any) -> dict[str, Any]:
    """One choice's part of a stream chunk, or all of a whole answer's (`events` the tokens it covers; `extra` the
    chat's message or delta)."""
    if run.chat:
        return {"index": index, **extra, "logprobs": logprobs(run, events), "finish_reason": reason}
    return {"index": index, "text": text, "logprobs": logprobs(run, events, offset), "finish_reason": reason}


async def merged(streams: list[TokenStream]) -> AsyncIterator[tuple[int, TokenEvent]]:
    """The events of `streams` as they come, each with its stream's index; closing this cancels them all."""
    if len(streams) == 1:
        try:
            async for event in streams[0]:
                yield 0, event
        finally:
            streams[0].cancel()
        return
    queue: asyncio.Queue[tuple[int, TokenEvent | Exception]] = asyncio.Queue()

    async def pump(index: int, stream: TokenStream) -> None:
        try:
            async for event in stream:
                queue.put_nowait((index, event))
        except Exception as exc:
            queue.put_nowait((index, exc))

    pumps = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    try:
        running = len(streams)
        while running:
            index, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            running -= item.result is not None
            yield index, item
    finally:
        for task in pumps:
            task.cancel()
        for stream in streams:
            stream.cancel()


def prompt_text(run: Run, index: int) -> str:
    return (run.plan.prompts[index].text or "") if run.body.get("echo") else ""


async def answer(run: Run) -> InvocationResult:
    events: list[list[TokenEvent]] = [[] for _ in run.plan.prompts]
    async for index, event in merged(run.adapter.open(run.plan)):
        events[index].append(event)
    ends = [tokens[-1].result for tokens in events]
    choices = []
    for index, (tokens, end) in enumerate(zip(events, ends, strict=True)):
        assert end is not None
        choice = Choice(run.stops)
        content, calls, reason = ending(run, end, choice.add(end.text) + choice.end())
        if run.chat:
            said = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
            choices.append(piece(run, index, None, tokens, reason=reason, message=said))
        else:
            start = prompt_text(run, index)
            choices.append(piece(run, index, start + (content or ""), tokens, len(start), reason))
    return json_result({**run.head(chunk=False), "choices": choices, "usage": run.usage([end for end in ends if end])})


class ChoiceChunks:
    """One choice's stream chunks as its tokens come: its opening (the assistant's role; the prompt echoed), then its
    text, held back where a stop string may begin (`Choice`), with the tokens' log-probabilities when asked for.
    For a lone choice they are made on the generation thread itself (`direct`), all but the last token's; the event
    loop then makes only the last one's, with the same state."""

    def __init__(self, run: Run, index: int, head: dict[str, Any]) -> None:
        self.run = run
        self.index = index
        self.head = head
        self.choice = Choice(run.stops)
        self.offset = len(prompt_text(run, index))
        self.opened = False

    def opening(self) -> list[dict[str, Any]]:
        """The role (and the echoed prompt) before the first token; nothing once given."""
        if self.opened:
            return []
        self.opened = True
        if not (self.run.chat or self.offset):
            return []
        start = piece(self.run, self.index, prompt_text(self.run, self.index), [],
                      delta={"role": "assistant", "content": ""})
        return [{**self.head, "choices": [start]}]

    def token(self, event: TokenEvent) -> list[dict[str, Any]]:
        """The chunk of a token that is not the last (none while its text is held back and no logprobs are asked)."""
        run = self.run
        said = "" if run.tools or event.special else self.choice.add(event.text)  # as the whole answer's text
        if not said and logprobs(run, [event]) is None:
            return []
        part = piece(run, self.index, said, [event], self.offset, delta={"content": said})
        self.offset += len(said)
        return [{**self.head, "choices": [part]}]

    def direct(self, event: TokenEvent) -> list[bytes]:
        """`token` (after the opening, the first time) as the generation thread writes it: JSON bodies."""
        return [orjson.dumps(chunk) for chunk in [*self.opening(), *self.token(event)]]


async def chunks(run: Run) -> AsyncIterator[dict[str, Any]]:
    """The stream's chunks: choices interleaved as their tokens come, each ending with its finish reason; then the
    usage when `stream_options.include_usage`. A lone choice's chunks but the last come from the generation thread
    (generation.direct), when its stream has somewhere to write them."""
    head = run.head(chunk=True)
    choices = [ChoiceChunks(run, index, head) for index in range(len(run.plan.prompts))]
    shape = choices[0].direct if len(choices) == 1 else None
    streams = run.adapter.open(run.plan, shape=shape)  # before the first chunk: Overloaded is an HTTP error
    return _chunks(run, streams, choices)


async def _chunks(run: Run, streams: list[TokenStream], choices: list[ChoiceChunks]) -> AsyncIterator[dict[str, Any]]:
    if len(choices) > 1:  # every choice's opening first (a lone choice's comes with its first token)
        for choice in choices:
            for chunk in choice.opening():
                yield chunk
    ends: list[GenerationResult] = []
    async for index, event in merged(streams):
        choice = choices[index]
        parts = [*choice.opening(), *choice.token(event)]
        end = event.result
        if end is not None:
            ends.append(end)
            content, calls, reason = ending(run, end, choice.choice.end())
            delta = {"tool_calls": [{"index": 0, **call} for call in calls]} if calls else {"content": content or ""}
            if calls or content:
                parts.append({**choice.head, "choices": [piece(run, index, content, [], delta=delta)]})
            parts.append({**choice.head, "choices": [piece(run, index, "", [], reason=reason, delta={})]})
        for part in parts:
            yield part
    if (run.body.get("stream_options") or {}).get("include_usage"):
        yield {**run.head(chunk=True), "choices": [], "usage": run.usage(ends)}


async def chat(engine: Engine, request: InvocationRequest) -> InvocationResult:
    return await answer(chat_run(engine, request))


async def chat_stream(engine: Engine, request: InvocationRequest) -> AsyncIterator[dict[str, Any]]:
    return await chunks(chat_run(engine, request))


async def completions(engine: Engine, request: InvocationRequest) -> InvocationResult:
    return await answer(completion_run(engine, request))


async def completions_stream(engine: Engine, request: InvocationRequest) -> AsyncIterator[dict[str, Any]]:
    return await chunks(completion_run(engine, request))


register(Route.CHAT, Handler(invoke=chat, stream=chat_stream, direct=True), TASKS)
register(Route.COMPLETIONS, Handler(invoke=completions, stream=completions_stream, direct=True), TASKS)
