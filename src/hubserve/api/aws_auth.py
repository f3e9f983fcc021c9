"""Who may call: the token registry of a request, and AWS Signature V4 by the access keys hubserve issued (the
SageMaker front doors' way in, beside bearer tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from hubserve import sigv4
from hubserve.errors import AwsError
from hubserve.security import TokenRegistry
from hubserve.store import TokenRecord

# The service botocore signs both SageMaker clients (runtime and control plane) for.
SIGNING_SERVICE = "sagemaker"
UNKNOWN_KEY = "The security token included in the request is invalid."


def tokens_of(request: Request) -> TokenRegistry:
    tokens: TokenRegistry = request.app.state.tokens
    return tokens


@dataclass(frozen=True)
class SignedCaller:
    """The holder of a key hubserve issued, as a signed request claims: its headers checked, the signature itself
    still to verify over the body."""

    key: TokenRecord
    secret: str
    signature: sigv4.Signature
    request: sigv4.HttpRequest

    def verify(self, body: bytes) -> None:
        sigv4.verify(self.signature, self.secret, self.request, body)

    def require_endpoint(self, endpoint: str, body: bytes) -> None:
        """Refuse unless the key signed this very request (with `body`) and its scope has `endpoint`."""
        self.verify(body)
        if not self.key.allows(endpoint):
            raise AwsError("AccessDeniedException", f"The access key {self.key.id} ({self.key.name}) is not "
                                                    f"allowed to invoke endpoint {endpoint}.", 403)

    def require_admin(self, body: bytes) -> None:
        self.verify(body)
        if not self.key.admin:
            raise AwsError("AccessDeniedException", f"The access key {self.key.id} ({self.key.name}) has no "
                                                    "control-plane rights: create one with --admin.", 403)


def http_request(request: Request) -> sigv4.HttpRequest:
    """The request as it came over the wire, which is what a signature covers."""
    scope = request.scope
    return sigv4.HttpRequest(
        method=request.method, path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
        query=scope["query_string"].decode("latin-1"),
        headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]])


def signed_caller(request: Request, service: str = SIGNING_SERVICE) -> SignedCaller | None:
    """The caller of a request signed the AWS way (for `service`), or None for one that is not. What the headers
    alone tell is refused here, before any body is read: a malformed signature, another service's scope, a key
    hubserve did not issue (or revoked), a signing time off by more than 15 minutes."""
    if not (sigv4.signed_header(request.headers.get("authorization"))
            or sigv4.presigned_query(request.scope["query_string"].decode("latin-1"))):
        return None
    http = http_request(request)
    signature = sigv4.signature_of(http, service)
    if signature is None:
        return None
    key = tokens_of(request).aws_key(signature.access_key_id)
    if key is None:
        raise AwsError("UnrecognizedClientException", UNKNOWN_KEY)
    sigv4.check_clock(signature, datetime.now(UTC))
    record, secret = key
    return SignedCaller(record, secret, signature, http)


def require_control_access(request: Request, body: bytes, service: str = SIGNING_SERVICE) -> None:
    """The JSON services at `POST /` (`X-Amz-Target`: SageMaker's control plane, CloudWatch Logs): the admin token,
    or an admin AWS key's signature over `body`, scoped to `service`. Raises Unauthorized/Forbidden, or AwsError
    with AWS's code for a SigV4 refusal."""
    caller = signed_caller(request, service)
    if caller is None:
        tokens_of(request).require_admin(request.headers.get("authorization"))
    else:
        caller.require_admin(body)
