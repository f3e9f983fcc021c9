"""AWS Signature Version 4 (AWS4-HMAC-SHA256), verified the way botocore signs: from the `Authorization` header or
a presigned URL's query, over the canonical request, with the signing key chain of the caller's secret.

Refusals are AwsErrors with the codes and messages AWS's JSON services answer, which botocore turns into its
ClientError and does not retry.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from hubserve.errors import AwsError

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
# The issue refuses a request "more than 15 minutes old"; AWS's SageMaker allows 5 minutes of skew and S3 15. 15
# either way, so a machine whose clock drifts a few minutes keeps working.
MAX_SKEW = timedelta(minutes=15)
# The longest a presigned URL may live (AWS's bound).
MAX_EXPIRES_S = 7 * 24 * 3600
UNRESERVED = "-_.~"
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.")
QUERY_PARAMS = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")


def invalid(message: str) -> AwsError:
    return AwsError("InvalidSignatureException", message)


def incomplete(message: str) -> AwsError:
    return AwsError("IncompleteSignatureException", message)


@dataclass(frozen=True)
class HttpRequest:
    """What a signature covers, as received: `path` and `query` still percent-encoded, header names lowercase
    (repeated headers once each)."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def header(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None


@dataclass(frozen=True)
class Signature:
    """What a signed request claims: the key, the time and scope it was signed for, the headers it covers."""

    access_key_id: str
    amz_date: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    expires_s: int | None = None  # a presigned URL's lifetime; None for a signed header

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/{TERMINATOR}"

    @property
    def signed_at(self) -> datetime:
        return datetime.strptime(self.amz_date, AMZ_DATE).replace(tzinfo=UTC)


def signed_header(authorization: str | None) -> bool:
    """Whether an Authorization header is AWS's (any of its schemes: those we do not verify are refused, not taken
    for a missing token)."""
    return authorization is not None and authorization[:3].upper() == "AWS"


def presigned_query(query: str) -> bool:
    return "X-Amz-Algorithm=" in query


def signature_of(request: HttpRequest, service: str) -> Signature | None:
    """The request's SigV4 claims (None when it claims none), once they are well formed and scoped to `service`."""
    authorization = request.header("authorization") or ""
    if signed_header(authorization):
        signature = _from_header(authorization, request)
    elif presigned_query(request.query):
        signature = _from_query(request.query)
    else:
        return None
    _check_scope(signature, service)
    return signature


def _from_header(authorization: str, request: HttpRequest) -> Signature:
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != ALGORITHM:
        raise incomplete(f"Unsupported AWS 'algorithm': '{algorithm}'. hubserve verifies {ALGORITHM} (Signature "
                         "Version 4) only.")
    fields = {key.strip(): value.strip() for key, _, value in (part.partition("=") for part in rest.split(","))}
    missing = [f"Authorization header requires '{name}' parameter." for name in ("Credential", "SignedHeaders",
                                                                                   "Signature") if not fields.get(name)]
    if missing:
        raise incomplete(" ".join(missing) + f" Authorization={authorization}")
    return _signature(fields["Credential"], _amz_date(request), fields["SignedHeaders"], fields["Signature"])


def _amz_date(request: HttpRequest) -> str:
    """The signing time: `X-Amz-Date`, or `Date` (which botocore signs with instead when a caller sets one)."""
    amz_date = request.header("x-amz-date")
    if amz_date is not None:
        return amz_date
    date = request.header("date")
    if date is None:
        raise incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    try:
        return parsedate_to_datetime(date).astimezone(UTC).strftime(AMZ_DATE)
    except (TypeError, ValueError):
        raise incomplete(f"Date must be in RFC 1123 format. Got '{date}'.") from None


def _from_query(query: str) -> Signature:
    params = dict(_decoded_pairs(query))
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise incomplete(f"Unsupported AWS 'algorithm': '{params.get('X-Amz-Algorithm')}'. hubserve verifies "
                         f"{ALGORITHM} (Signature Version 4) only.")
    missing = [name for name in (*QUERY_PARAMS, "X-Amz-Expires") if not params.get(name)]
    if missing:
        raise incomplete("AWS query-string parameters must include " + ", ".join(f"'{m}'" for m in missing) + ".")
    expires = params["X-Amz-Expires"]
    if not expires.isdecimal() or not 0 < int(expires) <= MAX_EXPIRES_S:
        raise incomplete(f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES_S}, not '{expires}'.")
    return _signature(params["X-Amz-Credential"], params["X-Amz-Date"], params["X-Amz-SignedHeaders"],
                      params["X-Amz-Signature"], int(expires))


def _signature(credential: str, amz_date: str, signed_headers: str, signature: str,
               expires_s: int | None = None) -> Signature:
    parts = credential.split("/")
    if len(parts) != 5:
        raise incomplete(f"Credential must have the form <key id>/<yyyymmdd>/<region>/<service>/{TERMINATOR}, "
                         f"not '{credential}'.")
    access_key_id, scope_date, region, service, terminator = parts
    if terminator != TERMINATOR:
        raise invalid(f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'.")
    try:
        datetime.strptime(amz_date, AMZ_DATE)
        well_formed = len(amz_date) == len("yyyymmddTHHMMSSZ")
    except ValueError:
        well_formed = False
    if not well_formed:
        raise incomplete(f"Date must be in ISO-8601 'basic format' (yyyymmddTHHMMSSZ). Got '{amz_date}'.") from None
    return Signature(access_key_id, amz_date, scope_date, region, service,
                     tuple(signed_headers.split(";")), signature, expires_s)


def _check_scope(signature: Signature, service: str) -> None:
    if signature.service != service:
        raise invalid(f"Credential should be scoped to correct service: '{service}'. ")
    if signature.scope_date != signature.amz_date[:8]:
        raise invalid(f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                      f"'{signature.scope_date}' != '{signature.amz_date[:8]}', from '{signature.amz_date}'.")
    if "host" not in signature.signed_headers:
        # Unsigned, the Host would let a signature made for one server be replayed at another.
        raise invalid("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")


def check_clock(signature: Signature, now: datetime) -> None:
    """Refuse a signature made more than MAX_SKEW before or after `now` (for a presigned URL: past its expiry)."""
    signed_at = signature.signed_at
    stamp = now.strftime(AMZ_DATE)
    if signed_at > now + MAX_SKEW:
        raise invalid(f"Signature not yet current: {signature.amz_date} is still later than "
                      f"{(now + MAX_SKEW).strftime(AMZ_DATE)} ({stamp} + 15 min.)")
    if signature.expires_s is not None:
        expiry = signed_at + timedelta(seconds=signature.expires_s)
        if now > expiry:
            raise invalid(f"Signature expired: {expiry.strftime(AMZ_DATE)} is now earlier than {stamp} "
                          f"({signature.amz_date} + {signature.expires_s} s.)")
    elif signed_at < now - MAX_SKEW:
        raise invalid(f"Signature expired: {signature.amz_date} is now earlier than "
                      f"{(now - MAX_SKEW).strftime(AMZ_DATE)} ({stamp} - 15 min.)")


def verify(signature: Signature, secret: str, request: HttpRequest, body: bytes) -> None:
    """Refuse unless `secret` signed this request with this body: its method, path, query, signed headers and
    payload all count, so a changed byte anywhere is an InvalidSignatureException."""
    key = signing_key(secret, signature)
    given = signature.signature.encode("utf-8", "backslashreplace")
    for query in canonical_queries(request.query, presigned=signature.expires_s is not None):
        canonical = canonical_request(request, query, signature.signed_headers, payload_hash(request, body))
        expected = hmac.new(key, string_to_sign(signature, canonical).encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode(), given):
            return
    raise invalid(MISMATCH)


def signing_key(secret: str, signature: Signature) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (signature.scope_date, signature.region, signature.service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def string_to_sign(signature: Signature, canonical: str) -> str:
    return "\n".join((ALGORITHM, signature.amz_date, signature.scope,
                      hashlib.sha256(canonical.encode()).hexdigest()))


def canonical_request(request: HttpRequest, query: str, signed_headers: Sequence[str], payload: str) -> str:
    headers = "".join(f"{name}:{canonical_header(request.values(name))}\n" for name in signed_headers)
    return "\n".join((request.method.upper(), canonical_uri(request.path), query, headers,
                      ";".join(signed_headers), payload))


def canonical_uri(raw_path: str) -> str:
    """Every service but S3: the path as sent, dot segments and empty segments removed, then percent-encoded
    again (`%20` is signed as `%2520`)."""
    return quote(remove_dot_segments(raw_path) or "/", safe="/~")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, and repeated slashes made one, as AWS (and botocore) do."""
    if not path:
        return ""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and kept else ""
    return first + "/".join(kept) + last


def canonical_queries(query: str, presigned: bool) -> list[str]:
    """The canonical query string: every pair URI-decoded, encoded again with only unreserved characters left
    bare, sorted. botocore signs a query it finds already in a URL as sent, only sorted, so that form counts too
    where it differs (it covers the same parameters). A presigned URL's own signature is not signed."""
    pairs = [pair for pair in query.split("&") if not (presigned and pair.startswith("X-Amz-Signature="))]
    encoded = sorted((_encode(key), _encode(value)) for key, value in _split_pairs(pair for pair in pairs if pair))
    raw = sorted(_split_pairs(pairs)) if query else []
    forms = ["&".join(f"{key}={value}" for key, value in form) for form in (encoded, raw)]
    return forms[:1] if forms[0] == forms[1] else forms


def _split_pairs(pairs: Iterable[str]) -> list[tuple[str, str]]:
    """`key=value` pairs split at their first `=` (none: an empty value)."""
    return [(key, value) for key, _, value in (pair.partition("=") for pair in pairs)]


def _encode(text: str) -> str:
    return quote(unquote_to_bytes(text), safe=UNRESERVED)


def _decoded_pairs(query: str) -> list[tuple[str, str]]:
    return [(_decode(key), _decode(value)) for key, value in _split_pairs(pair for pair in query.split("&") if pair)]


def _decode(text: str) -> str:
    return unquote_to_bytes(text).decode("utf-8", "replace")


def canonical_header(values: Sequence[str]) -> str:
    """A header's values with their whitespace runs made one space and trimmed, repeated headers joined by `,`."""
    return ",".join(" ".join(value.split()) for value in values)


def payload_hash(request: HttpRequest, body: bytes) -> str:
    """The hex SHA-256 of the body. A client that sends `X-Amz-Content-SHA256` signs that value instead, so the
    body must match it: the signature always covers the body."""
    actual = hashlib.sha256(body).hexdigest()
    claimed = request.header("x-amz-content-sha256")
    if claimed is not None and claimed != actual:
        raise invalid("The provided 'x-amz-content-sha256' header does not match what was computed.")
    return actual
