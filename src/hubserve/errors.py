"""The errors hubserve raises between its layers; each front door maps them to its wire format."""

from __future__ import annotations


class HubserveError(Exception):
    """Base class: `status` is the HTTP status our own routes answer with."""

    status = 500
    kind = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


class BadRequest(HubserveError):
    status = 400
    kind = "bad_request"


class Unauthorized(HubserveError):
    status = 401
    kind = "unauthorized"


class Forbidden(HubserveError):
    status = 403
    kind = "forbidden"


class NotFound(HubserveError):
    status = 404
    kind = "not_found"


class RequestTimeout(HubserveError):
    """The client stopped sending its request body."""

    status = 408
    kind = "request_timeout"


class Conflict(HubserveError):
    status = 409
    kind = "conflict"


class PayloadTooLarge(HubserveError):
    status = 413
    kind = "payload_too_large"


class UnsupportedMediaType(HubserveError):
    status = 415
    kind = "unsupported_media_type"


class NotAcceptable(HubserveError):
    status = 406
    kind = "not_acceptable"


class ModelError(HubserveError):
    """The model (or the user's code) raised: never a 5xx, so clients do not re-run it."""

    status = 424
    kind = "model_error"


class ReplicaLimitReached(HubserveError):
    """Creating or scaling up would run more replicas than this server's `max_replicas` allows."""

    status = 409
    kind = "replica_limit"


class Overloaded(HubserveError):
    status = 429
    kind = "overloaded"


class DataPlaneOnly(HubserveError):
    """A call that changes state (endpoints, tokens, jobs) to a data-plane server: its owner server takes those. 421
    Misdirected Request: this server will not answer for it, the owner named in the message will."""

    status = 421
    kind = "data_plane_only"


class NoReadyReplica(HubserveError):
    status = 503
    kind = "no_ready_replica"


class ReplicaLost(HubserveError):
    """The replica's process died while it held the request: not the caller's fault, and another replica
    can take it, so a 503 that clients retry (the dead replica no longer takes requests)."""

    status = 503
    kind = "replica_lost"


class InvocationTimeout(HubserveError):
    status = 504
    kind = "timeout"


class AwsError(HubserveError):
    """An error AWS names with a code of its own (SigV4 refusals, control-plane exceptions): the SageMaker front
    doors send `code` as `x-amzn-ErrorType` (JSON 1.1 as `__type`), which botocore makes its ClientError's code."""

    kind = "aws_error"

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


ERRORS_BY_KIND: dict[str, type[HubserveError]] = {
    cls.kind: cls
    for cls in (
        HubserveError,
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        RequestTimeout,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        NotAcceptable,
        ModelError,
        ReplicaLimitReached,
        Overloaded,
        NoReadyReplica,
        ReplicaLost,
        InvocationTimeout,
    )
}


def model_error_body(endpoint: str, original: str) -> dict[str, str | int]:
    """What SageMaker answers when the model's code raised (InvokeEndpoint's 424, an async request's failure
    object): its message says where the model's own error went."""
    message = (f'Received client error (400) from primary with message "{original}". '
               f"See the endpoint's log (hubserve logs {endpoint}) for more information.")
    return {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "Message": message, "OriginalStatusCode": 400,
            "OriginalMessage": original, "LogStreamArn": f"hubserve:logs:{endpoint}"}


def error_from_dict(data: dict[str, str]) -> HubserveError:
    """Rebuild an error that crossed a process boundary."""
    cls = ERRORS_BY_KIND.get(data.get("kind", ""), HubserveError)
    return cls(data.get("message", "unknown error"))
