"""The Inference Endpoints root (`POST /endpoints/{name}`) for every task but text generation (TGI's compat route
answers that one): what huggingface_hub's InferenceClient parses for the deployed model's task, TEI's answers on
embedding models and rerankers, and otherwise the task's own answer, as the SageMaker toolkit shapes it. Answers are
encoded by the caller's Accept, as the task's own are."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import re
from typing import TYPE_CHECKING, Any

from PIL import Image

from hubserve.errors import BadRequest
from hubserve.invocation import InvocationRequest, InvocationResult, Route
from hubserve.worker import codecs
from hubserve.worker.batching import Work
from hubserve.worker.protocols import Handler, register
from hubserve.worker.protocols.tei import (
    EMBED_FIELDS,
    RERANK_FIELDS,
    SIMILARITY_FIELDS,
    Encode,
    answered,
    checked,
    embed_work,
    rerank_work,
    similarity_work,
)
from hubserve.worker.tasks.embeddings import SentenceRankingAdapter
from hubserve.worker.tasks.operations import Embedder
from hubserve.worker.tasks.parameter_types import OBJECT, STRING, optional
from hubserve.worker.tasks.text_classification import TextClassificationAdapter
from hubserve.worker.tasks.zero_shot import ZeroShotClassificationAdapter

if TYPE_CHECKING:
    from hubserve.worker.engine import Engine

# huggingface_hub's feature_extraction sends TEI's /embed fields at the top level, and `encoding_format` with them.
ROOT_EMBED_FIELDS = {**EMBED_FIELDS, "encoding_format": optional(STRING), "parameters": optional(OBJECT)}
HUB_VERSION = re.compile(r"\bhf_hub/(\d+)\.(\d+)")
# The first bytes of audio files the audio pipelines read (wav, flac, ogg, mp3 with tags, webm, mp4/m4a).
AUDIO_SIGNATURES = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\x1aE\xdf\xa3")


def binary_type(body: bytes) -> str | None:
    """The media type of a raw image or audio file (huggingface_hub posts bytes with no Content-Type, which the API
    reads as JSON); None for anything else."""
    if body.lstrip()[:1] in (b"{", b"[", b'"'):
        return None
    try:
        Image.open(io.BytesIO(body)).close()
        return "image/x-image"
    except Image.DecompressionBombError:
        return "image/x-image"  # an image all the same: its decoding refuses it, saying why
    except (OSError, ValueError, SyntaxError):
        pass
    mp3_frame = len(body) > 1 and body[0] == 0xFF and body[1] & 0xE0 == 0xE0
    if body[:4] in AUDIO_SIGNATURES or body[4:8] == b"ftyp" or mp3_frame:
        return "audio/x-audio"
    return None


def with_binary_type(request: InvocationRequest) -> InvocationRequest:
    if codecs.media_type(request.content_type) != codecs.JSON:
        return request
    media = binary_type(request.body)
    return request if media is None else dataclasses.replace(request, content_type=media)


def hub_before_1_2(user_agent: str | None) -> bool:
    """Whether the caller is huggingface_hub older than 1.2, which parses zero-shot answers as the pipeline's
    `{"sequence", "labels", "scores"}` (1.2 and later, and the task's spec, take `[{"label", "score"}]`)."""
    found = HUB_VERSION.search(user_agent or "")
    return found is not None and (int(found[1]), int(found[2])) < (1, 2)


async def payload_of(engine: Engine, request: InvocationRequest) -> dict[str, Any]:
    """The body as `{"inputs": ..., "parameters": ..., ...}`, decoded by its Content-Type (off the event loop when
    that takes a while: images, audio, big JSON)."""
    if codecs.cheap_to_decode(request.body, request.content_type):
        return codecs.decode_body(request.body, request.content_type, task=engine.task)
    return await asyncio.to_thread(codecs.decode_body, request.body, request.content_type, task=engine.task)


def nested_labels(inputs: Any, output: Any) -> Any:
    """text-classification as huggingface_hub parses it: a list of `{"label", "score"}` per text, in a list even
    for one text."""
    if isinstance(inputs, list):
        return [item if isinstance(item, list) else [item] for item in output]
    return [output]


def label_scores(inputs: Any, output: Any) -> Any:
    """zero-shot-classification's `{"sequence", "labels", "scores"}` as the task's spec has it: `[{"label",
    "score"}]`, best first (a list of those for a list of texts)."""
    if isinstance(output, list):
        return [label_scores(None, item) for item in output]
    return [{"label": label, "score": score} for label, score in zip(output["labels"], output["scores"], strict=True)]


def embedding_work(adapter: Embedder, payload: dict[str, Any], encode: Encode) -> Work:
    """TEI's root on any sentence task, as it serves both from one model: `{"inputs": {"source_sentence",
    "sentences"}}` gets similarities, texts get their vectors (with /embed's fields at the top level)."""
    if isinstance(payload.get("inputs"), dict):
        return similarity_work(adapter, checked(payload, SIMILARITY_FIELDS, "inputs"), encode)
    body = checked(payload, ROOT_EMBED_FIELDS, "inputs")
    checked(body.pop("parameters", None) or {}, {}, within="parameters.")
    if body.pop("encoding_format", "float") != "float":
        raise BadRequest("the endpoint URL answers vectors as floats (`encoding_format` float); /v1/embeddings also "
                         "gives base64")
    return embed_work(adapter, body, encode)


def task_work(engine: Engine, adapter: Any, payload: dict[str, Any], request: InvocationRequest) -> Work:
    """The task's own work, its answer shaped as huggingface_hub parses it for text and zero-shot classification."""
    assert engine.model is not None
    unknown = sorted(set(payload) - {"inputs", "parameters", "stream"})
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(f'`{name}`' for name in unknown)} (a task's parameters go in "
                         "`parameters`)")
    work = engine.model.work(payload)
    work.accept = request.accept
    if isinstance(adapter, TextClassificationAdapter):
        shape: Any = nested_labels
    elif isinstance(adapter, ZeroShotClassificationAdapter) and not hub_before_1_2(
            request.attributes.get("user-agent")):
        shape = label_scores
    else:
        return work
    work.finish = lambda output: codecs.encode_result(shape(work.inputs, output), work.accept)
    return work


async def root(engine: Engine, request: InvocationRequest) -> InvocationResult:
    if engine.model is None or engine.batcher is None:
        return await engine.invoke(dataclasses.replace(request, route=Route.DEFAULT))
    adapter = engine.model.adapter
    request = with_binary_type(request)
    payload = await payload_of(engine, request)
    encode = functools.partial(codecs.encode_result, accept=request.accept)
    inputs = payload.get("inputs")
    if isinstance(adapter, Embedder):
        work = embedding_work(adapter, payload, encode)
    elif isinstance(adapter, SentenceRankingAdapter) and isinstance(inputs, dict) and "query" in inputs:
        # TEI's /rerank body (read as the inputs: it has no "inputs" of its own)
        work = rerank_work(adapter, checked(inputs, RERANK_FIELDS, "query", "texts"), encode)
    else:
        work = task_work(engine, adapter, payload, request)
    return await answered(engine, work)


register(Route.ROOT, Handler(invoke=root))
