"""The one internal request and result that every front door translates its wire format into."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import orjson


class Route(StrEnum):
    """Which protocol operation a call is: every front door's route becomes one of these for the replica."""

    DEFAULT = ""  # the task's own answer, as the SageMaker Hugging Face toolkit shapes it (InvokeEndpoint)
    ROOT = "root"  # POST on an Inference Endpoint URL: shaped as huggingface_hub's clients, TGI and TEI expect
    GENERATE = "generate"  # TGI
    GENERATE_STREAM = "generate_stream"  # TGI
    TOKENIZE = "tokenize"  # TGI or TEI, by the model's task
    INFO = "info"  # TGI or TEI, by the model's task
    CHAT = "chat"  # OpenAI chat completions
    COMPLETIONS = "completions"  # OpenAI (legacy) completions
    EMBEDDINGS = "embeddings"  # OpenAI embeddings
    EMBED = "embed"  # TEI
    SIMILARITY = "similarity"  # TEI
    RERANK = "rerank"  # TEI
    PREDICT = "predict"  # TEI
    # SageMaker's InvokeEndpointWithResponseStream: the replica decides what streams (a StreamHead, then chunks)
    RESPONSE_STREAM = "response_stream"
    # A batch transform's mini-batch: several records in one message, each answered as DEFAULT answers it alone
    RECORDS = "records"


@dataclass
class InvocationRequest:
    """A call to an endpoint, as it travels from a front door to a replica."""

    body: bytes
    content_type: str = "application/json"
    accept: str = "application/json"
    # Protocol extras the model code may read (SageMaker custom attributes, inference id, ...).
    attributes: dict[str, str] = field(default_factory=dict)
    # Answer with a stream of events (tokens) instead of one body.
    stream: bool = False
    # The protocol operation (see Route); the default is the task's own answer.
    route: Route = Route.DEFAULT
    # How long to wait for a replica when none is ready (`X-Scale-Up-Timeout`); None: the endpoint's
    # scale_up_hold_s. The router's business only: not sent to the replica.
    scale_up_timeout_s: float | None = None

    def header(self) -> dict[str, object]:
        return {"content_type": self.content_type, "accept": self.accept, "attributes": self.attributes,
                "stream": self.stream, "route": self.route.value}

    @classmethod
    def from_header(cls, header: dict[str, object], body: bytes) -> InvocationRequest:
        attributes = header.get("attributes") or {}
        assert isinstance(attributes, dict)
        return cls(
            body=body,
            content_type=str(header.get("content_type") or "application/json"),
            accept=str(header.get("accept") or "application/json"),
            attributes={str(k): str(v) for k, v in attributes.items()},
            stream=bool(header.get("stream")),
            route=Route(str(header.get("route") or "")),
        )


@dataclass
class InvocationResult:
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True)
class StreamHead:
    """The first event of a RESPONSE_STREAM answer, sent with the first chunk (so that errors before any chunk are
    still HTTP errors): the media type of the raw chunks that follow it."""

    content_type: str

    def encode(self) -> bytes:
        return orjson.dumps({"content_type": self.content_type})

    @classmethod
    def decode(cls, event: bytes) -> StreamHead:
        return cls(str(orjson.loads(event)["content_type"]))


# RECORDS framing: a message body is a run of frames, each a 4-byte big-endian length and that many bytes.
_FRAME_LENGTH = struct.Struct(">I")
# The media type of a RECORDS answer: a frame of JSON (one {"status", "content_type", "message"} per record), then
# one frame per record with its answer's body (empty for an error).
RECORDS_MEDIA_TYPE = "application/x-hubserve-records"


def pack_frames(parts: Sequence[bytes]) -> bytes:
    out = bytearray()
    for part in parts:
        out += _FRAME_LENGTH.pack(len(part))
        out += part
    return bytes(out)


def unpack_frames(body: bytes) -> list[bytes]:
    view, parts, offset = memoryview(body), [], 0
    while offset < len(body):
        (length,) = _FRAME_LENGTH.unpack_from(view, offset)
        offset += _FRAME_LENGTH.size
        if offset + length > len(body):
            raise ValueError("a RECORDS frame runs past the end of its message")
        parts.append(bytes(view[offset:offset + length]))
        offset += length
    return parts


@dataclass(frozen=True)
class RecordResult:
    """One record's outcome in a RECORDS answer: its answer (`ok`, `body` encoded for the Accept type, as the DEFAULT
    route answers that record alone) or its error (`status` and `message`, as the DEFAULT route would fail it)."""

    ok: bool
    body: bytes = b""
    status: int = 200
    message: str = ""
    content_type: str = ""


def records_request(records: Sequence[bytes], content_type: str, accept: str,
                    attributes: dict[str, str] | None = None) -> InvocationRequest:
    """One RECORDS message carrying `records`, each a body of `content_type`."""
    return InvocationRequest(body=pack_frames(records), content_type=content_type, accept=accept,
                             attributes=dict(attributes or {}), route=Route.RECORDS)


def encode_record_results(results: Sequence[RecordResult]) -> InvocationResult:
    meta = orjson.dumps([{"status": r.status, "content_type": r.content_type, "message": r.message}
                         for r in results])
    return InvocationResult(pack_frames([meta, *(r.body for r in results)]), RECORDS_MEDIA_TYPE)


def decode_record_results(body: bytes) -> list[RecordResult]:
    meta, *bodies = unpack_frames(body)
    return [RecordResult(ok=m["status"] < 400, body=answer, status=int(m["status"]), message=str(m["message"]),
                         content_type=str(m["content_type"]))
            for m, answer in zip(orjson.loads(meta), bodies, strict=True)]
