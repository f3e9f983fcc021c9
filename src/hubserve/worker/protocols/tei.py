"""TEI's API on embedding, classifier and reranker endpoints (/embed, /similarity, /rerank, /predict, /tokenize,
/info) and OpenAI's /v1/embeddings, answered as text-embeddings-inference and OpenAI answer. Texts reach the adapter as
`Embed` or `Score` work (see tasks/operations) through the dynamic batcher, so concurrent requests share a forward
pass; each answer is shaped on the model thread.

Token ids given as inputs are this model's own (as TEI takes them), read as the text they decode to. OpenAI's
`OpenAIEmbeddings` sends OpenAI's cl100k ids unless built with `check_embedding_ctx_length=False`: ids past this
model's vocabulary are refused, but smaller ones cannot be told apart from its own."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from hubserve import __version__
from hubserve.errors import BadRequest, NotFound
from hubserve.invocation import InvocationRequest, InvocationResult, Route
from hubserve.worker.batching import Work
from hubserve.worker.protocols import Handler, json_object, json_result, register
from hubserve.worker.tasks.operations import Embed, Embedder, Operations, Pair, Pooled, Score, Scorer, Truncation
from hubserve.worker.tasks.parameter_types import (
    BOOLEAN,
    OBJECT,
    POSITIVE_INTEGER,
    STRING,
    STRINGS,
    Expected,
    check_types,
    one_of,
    optional,
)

if TYPE_CHECKING:
    from hubserve.worker.engine import Engine

# OpenAI's most inputs in one embeddings request (TEI's default is 32, which OpenAI clients' batches overrun).
MAX_CLIENT_BATCH_SIZE = 2048
# hubserve refuses no request for being one too many (they queue for the batcher); TEI's default, which clients
# size their pools by.
MAX_CONCURRENT_REQUESTS = 512
ANY = Expected("any JSON value", lambda value: True)
TRUNCATION_FIELDS = {"truncate": optional(BOOLEAN),
                     "truncation_direction": one_of("right", "left", "Right", "Left")}
EMBED_FIELDS = {"inputs": ANY, "normalize": BOOLEAN, "prompt_name": optional(STRING),
                "dimensions": optional(POSITIVE_INTEGER), **TRUNCATION_FIELDS}
SIMILARITY_FIELDS = {"inputs": OBJECT, "parameters": optional(OBJECT)}
SIMILARITY_PARAMETERS = {"prompt_name": optional(STRING), **TRUNCATION_FIELDS}
RERANK_FIELDS = {"query": STRING, "texts": STRINGS, "raw_scores": BOOLEAN, "return_text": BOOLEAN,
                 **TRUNCATION_FIELDS}
PREDICT_FIELDS = {"inputs": ANY, "raw_scores": BOOLEAN, **TRUNCATION_FIELDS}
TOKENIZE_FIELDS = {"inputs": STRING | STRINGS, "add_special_tokens": BOOLEAN, "prompt_name": optional(STRING)}
OPENAI_FIELDS = {"input": ANY, "model": optional(STRING), "encoding_format": optional(one_of("float", "base64")),
                 "dimensions": optional(POSITIVE_INTEGER), "user": optional(STRING)}
Encode = Callable[[Any], InvocationResult]


def checked(body: dict[str, Any], types: dict[str, Expected], *required: str, within: str = "") -> dict[str, Any]:
    """`body` once every field is one `types` names, of its type, and the `required` ones are there."""
    unknown = sorted(set(body) - set(types))
    if unknown:
        raise BadRequest(f"unknown {'parameters' if within else 'fields'}: "
                         + ", ".join(f"`{within}{name}`" for name in unknown))
    missing = [name for name in required if body.get(name) is None]
    if missing:
        raise BadRequest(f"`{within}{missing[0]}` is required")
    check_types(body, types, within)
    return body


def operations(engine: Engine, kind: type[Operations] = Operations) -> Any:
    adapter = engine.model.adapter if engine.model is not None else None
    if not isinstance(adapter, kind):
        what = {Embedder: "an embedding model", Scorer: "a classifier or reranker"}.get(kind, "a TEI model")
        raise NotFound(f"this endpoint's task ({engine.task}) is not {what}")
    return adapter


def texts_of(adapter: Operations, inputs: Any, name: str) -> tuple[str | tuple[int, ...], ...]:
    """A string, this model's token ids, or a non-empty list of either (TEI's and OpenAI's `inputs`)."""
    if isinstance(inputs, str) or is_ids(inputs):
        inputs = [inputs]
    if not (isinstance(inputs, list) and inputs and all(isinstance(item, str) or is_ids(item) for item in inputs)):
        raise BadRequest(f"`{name}` must be a string, a list of token ids, or a non-empty list of either")
    check_count(len(inputs), name)
    vocabulary = len(adapter.tokenizer)
    for item in inputs:
        if not isinstance(item, str) and (bad := next((i for i in item if not 0 <= i < vocabulary), None)) is not None:
            raise BadRequest(f"token id {bad} in `{name}` is not in this model's vocabulary ({vocabulary} tokens): "
                             "token ids must be this model's own (OpenAIEmbeddings sends OpenAI's unless built with "
                             "check_embedding_ctx_length=False)")
    return tuple(item if isinstance(item, str) else tuple(item) for item in inputs)


def is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(item) is int for item in value)


def check_count(count: int, name: str) -> None:
    if count > MAX_CLIENT_BATCH_SIZE:
        raise BadRequest(f"`{name}` holds {count} inputs; at most {MAX_CLIENT_BATCH_SIZE} go in one request")


def truncation_of(body: dict[str, Any]) -> Truncation:
    return Truncation(body.get("truncate") is not False, str(body.get("truncation_direction", "")).lower() == "left")


def encode_parameters(adapter: Operations, body: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `Embed` or `Score` work: its truncation and prompt (refused when the model has no such)."""
    prompt_name = body.get("prompt_name")
    if prompt_name is not None and prompt_name not in adapter.prompts:
        known = ", ".join(sorted(adapter.prompts)) or "none"
        raise BadRequest(f"unknown `prompt_name` {prompt_name!r}: this model's prompts are {known}")
    return {**truncation_of(body).parameters(), "prompt_name": prompt_name}


class Vectors:
    """What a request asks of its pooled vectors: the first `dimensions` of each (Matryoshka), normalised."""

    def __init__(self, adapter: Embedder, normalize: bool, dimensions: int | None) -> None:
        if dimensions is not None and dimensions > adapter.dimension:
            raise BadRequest(f"`dimensions` must be at most {adapter.dimension}, this model's embedding size")
        self.normalize = normalize
        self.dimensions = dimensions

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        vectors = vectors[:, :self.dimensions]
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def embed_work(adapter: Embedder, body: dict[str, Any], encode: Encode = json_result) -> Work:
    """TEI's /embed body as work: `[[float]]`, a vector per input, made by `encode`."""
    texts = texts_of(adapter, body["inputs"], "inputs")
    shape = Vectors(adapter, body.get("normalize", True), body.get("dimensions"))
    return Work(Embed(texts), encode_parameters(adapter, body), size=len(texts),
                finish=lambda pooled: encode(shape(pooled.vectors)))


def similarity_work(adapter: Embedder, body: dict[str, Any], encode: Encode = json_result) -> Work:
    """TEI's /similarity body as work: the cosine similarity of each sentence to the source sentence."""
    inputs = body["inputs"]
    checked(inputs, {"source_sentence": STRING, "sentences": STRINGS}, "source_sentence", "sentences",
            within="inputs.")
    if not inputs["sentences"]:
        raise BadRequest("`inputs.sentences` must not be empty")
    check_count(len(inputs["sentences"]) + 1, "inputs.sentences")
    parameters = checked(body.get("parameters") or {}, SIMILARITY_PARAMETERS, within="parameters.")
    texts = (inputs["source_sentence"], *inputs["sentences"])
    unit = Vectors(adapter, True, None)

    def similarities(pooled: Pooled) -> InvocationResult:
        vectors = unit(pooled.vectors)
        return encode(vectors[1:] @ vectors[0])

    return Work(Embed(texts), encode_parameters(adapter, parameters), size=len(texts), finish=similarities)


def rerank_work(adapter: Scorer, body: dict[str, Any], encode: Encode = json_result) -> Work:
    """TEI's /rerank body as work: `[{"index", "score", "text"?}]`, most relevant first."""
    if len(adapter.id2label) != 1:
        raise NotFound(f"this endpoint's model is a classifier of {len(adapter.id2label)} labels, not a reranker "
                       "(one score per query and text)")
    query, texts = body["query"], body["texts"]
    if not texts:
        raise BadRequest("`texts` must not be empty")
    check_count(len(texts), "texts")
    raw, with_text = body.get("raw_scores", False), body.get("return_text", False)

    def ranked(logits: np.ndarray) -> InvocationResult:
        scores = logits[:, 0] if raw else sigmoid(logits[:, 0])
        order = np.argsort(-scores, kind="stable")
        return encode([{"index": int(index), "score": float(scores[index]),
                        **({"text": texts[index]} if with_text else {})} for index in order])

    return Work(Score(tuple((query, text) for text in texts)), truncation_of(body).parameters(), size=len(texts),
                finish=ranked)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-values))


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def predict_inputs(inputs: Any) -> tuple[tuple[str | Pair, ...], bool]:
    """TEI's /predict `inputs`: a text, a pair `[text, text]`, or a list of texts and pairs; and whether a list."""
    if isinstance(inputs, str) or is_pair(inputs):
        return (inputs if isinstance(inputs, str) else (inputs[0], inputs[1]),), False
    if not (isinstance(inputs, list) and inputs and all(isinstance(item, str) or is_pair(item) for item in inputs)):
        raise BadRequest("`inputs` must be a text, a pair [text, text], or a non-empty list of texts and pairs")
    check_count(len(inputs), "inputs")
    return tuple(item if isinstance(item, str) else (item[0], item[1]) for item in inputs), True


def is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(text, str) for text in value)


def predictions(adapter: Scorer, logits: np.ndarray, raw: bool) -> list[list[dict[str, Any]]]:
    """Each input's labels with their scores, best first: softmax (sigmoid for one label) unless `raw`."""
    scores = logits if raw else softmax(logits) if logits.shape[1] > 1 else sigmoid(logits)
    labels = adapter.id2label
    return [[{"score": float(row[index]), "label": labels[int(index)]} for index in np.argsort(-row, kind="stable")]
            for row in scores]


async def answered(engine: Engine, work: Work) -> InvocationResult:
    """`work` through the dynamic batcher: the answer its `finish` made on the model thread."""
    result: InvocationResult = await engine.submit(work)
    return result


async def embed(engine: Engine, request: InvocationRequest) -> InvocationResult:
    adapter = operations(engine, Embedder)
    return await answered(engine, embed_work(adapter, checked(json_object(request), EMBED_FIELDS, "inputs")))


async def similarity(engine: Engine, request: InvocationRequest) -> InvocationResult:
    adapter = operations(engine, Embedder)
    return await answered(engine, similarity_work(adapter, checked(json_object(request), SIMILARITY_FIELDS, "inputs")))


async def rerank(engine: Engine, request: InvocationRequest) -> InvocationResult:
    adapter = operations(engine, Scorer)
    return await answered(engine, rerank_work(adapter, checked(json_object(request), RERANK_FIELDS, "query", "texts")))


async def predict(engine: Engine, request: InvocationRequest) -> InvocationResult:
    adapter = operations(engine, Scorer)
    body = checked(json_object(request), PREDICT_FIELDS, "inputs")
    inputs, listed = predict_inputs(body["inputs"])
    raw = body.get("raw_scores", False)

    def answer(logits: np.ndarray) -> InvocationResult:
        found = predictions(adapter, logits, raw)
        return json_result(found if listed else found[0])

    return await answered(engine, Work(Score(inputs), truncation_of(body).parameters(), size=len(inputs),
                                       finish=answer))


async def embeddings(engine: Engine, request: InvocationRequest) -> InvocationResult:
    """OpenAI's /v1/embeddings: vectors normalised as /embed's are by default, as floats or base64 (little-endian
    float32); `usage` counts the tokens the model read."""
    adapter = operations(engine, Embedder)
    body = checked(json_object(request), OPENAI_FIELDS, "input")
    texts = texts_of(adapter, body["input"], "input")
    shape = Vectors(adapter, True, body.get("dimensions"))
    as_base64 = body.get("encoding_format") == "base64"
    model = body.get("model") or engine.name

    def answer(pooled: Pooled) -> InvocationResult:
        data = [{"object": "embedding", "index": index,
                 "embedding": base64.b64encode(vector.astype("<f4").tobytes()).decode() if as_base64 else vector}
                for index, vector in enumerate(shape(pooled.vectors))]
        tokens = sum(pooled.tokens)
        return json_result({"object": "list", "data": data, "model": model,
                            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return await answered(engine, Work(Embed(texts), encode_parameters(adapter, {}), size=len(texts), finish=answer))


def tokens_of(adapter: Operations, texts: list[str], special: bool, prompt: str) -> list[list[dict[str, Any]]]:
    """TEI's /tokenize answer: every token of each text (after the prompt) with its id, text and character span;
    special tokens have their own text and no span."""
    found = []
    for text in texts:
        text = prompt + text
        encoding = adapter.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True,
                                     return_special_tokens_mask=True)
        found.append([
            {"id": id_, "text": token, "special": True, "start": None, "stop": None} if is_special else
            {"id": id_, "text": text[start:stop], "special": False, "start": start, "stop": stop}
            for id_, token, (start, stop), is_special in zip(
                encoding["input_ids"], encoding.tokens(), encoding["offset_mapping"],
                encoding["special_tokens_mask"], strict=True)])
    return found


async def tokenize(engine: Engine, request: InvocationRequest) -> InvocationResult:
    adapter = operations(engine)
    body = checked(json_object(request), TOKENIZE_FIELDS, "inputs")
    inputs = body["inputs"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not texts:
        raise BadRequest("`inputs` must not be empty")
    check_count(len(texts), "inputs")
    prompt_name = encode_parameters(adapter, body)["prompt_name"] or adapter.default_prompt_name
    prompt = adapter.prompts.get(prompt_name, "") if prompt_name else ""
    # Off the event loop (a long text takes a while), and off the model's thread: the tokenizer needs no model.
    return json_result(await asyncio.to_thread(tokens_of, adapter, texts, body.get("add_special_tokens", True),
                                               prompt))


def model_type(adapter: Operations) -> dict[str, Any]:
    if isinstance(adapter, Embedder):
        return {"embedding": {"pooling": adapter.pooling}}
    labels = adapter.id2label if isinstance(adapter, Scorer) else {}
    kind = "reranker" if len(labels) == 1 else "classifier"
    return {kind: {"id2label": {str(index): label for index, label in labels.items()},
                   "label2id": {label: index for index, label in labels.items()}}}


async def info(engine: Engine, request: InvocationRequest) -> InvocationResult:
    adapter = operations(engine)
    batch = engine.batcher.max_batch_size if engine.batcher is not None else 1
    dtype = adapter.model_dtype
    return json_result({
        "model_id": engine.model_id, "model_sha": None, "model_dtype": dtype, "model_type": model_type(adapter),
        "max_concurrent_requests": MAX_CONCURRENT_REQUESTS, "max_input_length": adapter.max_input_length,
        "max_batch_tokens": batch * adapter.max_input_length, "max_batch_requests": batch,
        "max_client_batch_size": MAX_CLIENT_BATCH_SIZE, "auto_truncate": True, "tokenization_workers": 1,
        "version": __version__, "served_model_name": None, "sha": None, "docker_label": None,
    })


register(Route.EMBED, Handler(invoke=embed))
register(Route.SIMILARITY, Handler(invoke=similarity))
register(Route.EMBEDDINGS, Handler(invoke=embeddings))
register(Route.RERANK, Handler(invoke=rerank))
register(Route.PREDICT, Handler(invoke=predict))
register(Route.TOKENIZE, Handler(invoke=tokenize))
register(Route.INFO, Handler(invoke=info))
