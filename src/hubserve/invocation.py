"""The one internal request and result that every front door translates its wire format into."""

from __future__ import annotations

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
