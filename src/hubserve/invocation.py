"""The one internal request and result that every front door translates its wire format into."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def header(self) -> dict[str, object]:
        return {"content_type": self.content_type, "accept": self.accept, "attributes": self.attributes,
                "stream": self.stream}

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
        )


@dataclass
class InvocationResult:
    body: bytes
    content_type: str = "application/json"
