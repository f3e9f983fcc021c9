"""The SigV4 verifier against botocore's own signer: requests built as botocore's clients build them (odd paths,
queries, header whitespace, bodies), presigned URLs, and every refusal with AWS's code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest, create_request_object, prepare_request_dict
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from hubserve import sigv4
from hubserve.errors import AwsError

KEY_ID = "HSAKTESTTESTTEST0001"
SECRET = "c2VjcmV0/c2VjcmV0+c2VjcmV0c2VjcmV0c2Vj"
ENDPOINT_URL = "http://127.0.0.1:8080"
NOW = datetime(2025, 3, 9, 23, 59, 30, tzinfo=UTC)
INVALID = "InvalidSignatureException"
INCOMPLETE = "IncompleteSignatureException"


def aws_request(path: str = "/endpoints/ep/invocations", query: Any = None, headers: dict[str, str] | None = None,
                body: bytes = b'{"inputs": "hi"}', method: str = "POST") -> AWSRequest:
    """A request as botocore's clients make one: the serializer's path and query joined by prepare_request_dict."""
    request_dict: dict[str, Any] = {"url_path": path, "query_string": query or {}, "method": method,
                                    "headers": dict(headers or {}), "body": body}
    prepare_request_dict(request_dict, ENDPOINT_URL)
    request: AWSRequest = create_request_object(request_dict)
    return request


def sign(request: AWSRequest, monkeypatch: pytest.MonkeyPatch, at: datetime = NOW, secret: str = SECRET,
         service: str = "sagemaker", region: str = "us-east-1", expires: int | None = None) -> AWSPreparedRequest:
    """`request` signed by botocore at time `at` (a header, or a presigned URL living `expires` seconds)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at.replace(tzinfo=None))
    credentials = Credentials(KEY_ID, secret)
    signer = (SigV4Auth(credentials, service, region) if expires is None
              else SigV4QueryAuth(credentials, service, region, expires=expires))
    signer.add_auth(request)
    prepared: AWSPreparedRequest = request.prepare()
    return prepared


def received(prepared: AWSPreparedRequest) -> sigv4.HttpRequest:
    """What the server sees of a prepared request: the URL's raw path and query, the headers and the Host."""
    url = urlsplit(prepared.url)
    headers = [(name.lower(), value) for name, value in prepared.headers.items()]
    return sigv4.HttpRequest(prepared.method, url.path, url.query, [*headers, ("host", url.netloc)])


def body_of(prepared: AWSPreparedRequest) -> bytes:
    body = prepared.body
    return body.encode() if isinstance(body, str) else body or b""


def check(prepared: AWSPreparedRequest, secret: str = SECRET, now: datetime = NOW, body: bytes | None = None,
          request: sigv4.HttpRequest | None = None) -> None:
    """The verifier's whole check of a request, as the server runs it."""
    request = request or received(prepared)
    signature = sigv4.signature_of(request, "sagemaker")
    assert signature is not None
    sigv4.check_clock(signature, now)
    sigv4.verify(signature, secret, request, body_of(prepared) if body is None else body)


def refused(code: str, match: str, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(AwsError, match=match) as caught:
        check(*args, **kwargs)
    assert caught.value.code == code and caught.value.status == 400


# --- requests botocore signs are verified -------------------------------------------------------------------------

ODD_PATHS = ["/endpoints/ep/invocations", "/", "/a/./b/../c", "//double//slashes//", "/x/../../y", "/trailing/",
             "/with%20space/and%2Fslash", "/%E2%9C%93/unicode", "/~tilde/%7Etilde", "/a+b/c=d;e,f", "/%25/%2525",
             "/endpoints/ep/invocations-response-stream", "/."]
ODD_QUERIES: list[Any] = [{}, {"a": "1", "b": ""}, {"z": "last", "a": "first"}, {"k": ["2", "1", "10"]},
                          {"space": "a b", "reserved": "!*'();:@&=+$,/?#[]", "unicode": "✓ é"},
                          [("dup", "b"), ("dup", "a")], {"tilde~": "~.-_"}]


@pytest.mark.parametrize("path", ODD_PATHS)
@pytest.mark.parametrize("query", ODD_QUERIES)
def test_botocore_signed_paths_and_queries_verify(path: str, query: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    check(sign(aws_request(path, query), monkeypatch))


@pytest.mark.parametrize("raw", ["b=2&a=1", "d=a+b&e&c=%7e", "x=%2f%2F&x=%41", "flag", "a=1&&b=2", "=v&k="])
def test_a_query_already_in_the_url_verifies_as_botocore_signs_it(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore signs a query found in the URL as written (only sorted), not re-encoded.
    check(sign(aws_request(f"/endpoints/ep/invocations?{raw}", {"more": "x y"}), monkeypatch))


def test_header_whitespace_and_repeated_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    request = aws_request(headers={"X-Amzn-SageMaker-Custom-Attributes": "  a   b\t\tc  ", "Accept": "x/y ,  z/w",
                                   "Content-Type": "application/json"})
    request.headers["X-Amzn-SageMaker-Custom-Attributes"] = " second  value"  # a repeated header: signed as one
    prepared = sign(request, monkeypatch)
    assert "x-amzn-sagemaker-custom-attributes" in prepared.headers["Authorization"]
    seen = received(prepared)
    repeated = request.headers.get_all("X-Amzn-SageMaker-Custom-Attributes")
    headers = [*[h for h in seen.headers if h[0] != "x-amzn-sagemaker-custom-attributes"],
               *[("x-amzn-sagemaker-custom-attributes", value) for value in repeated]]
    check(prepared, request=sigv4.HttpRequest(seen.method, seen.path, seen.query, headers))
    # HTTP servers hand a header on without its outer whitespace, and proxies may fold runs of it: still the same.
    folded = [(name, " ".join(value.split())) for name, value in headers]
    check(prepared, request=sigv4.HttpRequest(seen.method, seen.path, seen.query, folded))
    refused(INVALID, "does not match", prepared, request=sigv4.HttpRequest(seen.method, seen.path, seen.query,
                                                                           headers[:-1]))


@pytest.mark.parametrize("method", ["POST", "GET", "PUT", "DELETE"])
@pytest.mark.parametrize("body", [b"", b"\x00\xff binary \r\n", b"x" * 100_000])
def test_methods_and_bodies(method: str, body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    check(sign(aws_request(body=body, method=method), monkeypatch))


def test_a_session_token_is_signed_along(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = aws_request()
    SigV4Auth(Credentials(KEY_ID, SECRET, token="session"), "sagemaker", "eu-west-3").add_auth(request)
    prepared = request.prepare()
    assert "x-amz-security-token" in prepared.headers["Authorization"]
    check(prepared)


def test_x_amz_content_sha256_is_signed_and_must_match_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    body = b'{"inputs": "hi"}'
    prepared = sign(aws_request(headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}), monkeypatch)
    check(prepared)
    # A body swapped under a payload hash that was not signed over the body is still refused.
    refused(INVALID, "x-amz-content-sha256", prepared, body=b'{"inputs": "other"}')
    refused(INVALID, "x-amz-content-sha256", sign(aws_request(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}),
                                                  monkeypatch))


def test_a_date_header_instead_of_x_amz_date(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request(headers={"Date": "whatever: botocore sets it"}), monkeypatch)
    assert "X-Amz-Date" not in prepared.headers
    check(prepared)


segment = st.one_of(st.sampled_from(["", ".", ".."]), st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]),
                                                              max_size=8))
header_value = st.text(st.sampled_from("ab;=,:/ \t-\"'"), max_size=24).filter(lambda v: v.strip())


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(segments=st.lists(segment, max_size=6), safe=st.sampled_from(["", "/", "~!$&'()*+,;=:@"]),
       query=st.lists(st.tuples(st.text(max_size=6), st.text(max_size=8)), max_size=5),
       headers=st.dictionaries(st.sampled_from(["Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes",
                                                "X-Amzn-SageMaker-Inference-Id", "X-Amzn-SageMaker-Target-Variant"]),
                               header_value, max_size=4),
       body=st.binary(max_size=64), method=st.sampled_from(["POST", "PUT", "GET"]),
       region=st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "local"]))
def test_any_request_botocore_signs_verifies(segments: list[str], safe: str, query: list[tuple[str, str]],
                                             headers: dict[str, str], body: bytes, method: str, region: str) -> None:
    path = "/" + "/".join(quote(s, safe=safe) for s in segments)
    with pytest.MonkeyPatch.context() as monkeypatch:
        prepared = sign(aws_request(path, query, headers, body, method), monkeypatch, region=region)
    check(prepared)
    refused(INVALID, "does not match", prepared, body=body + b"!")
    refused(INVALID, "does not match", prepared, secret=SECRET[:-1] + "X")


# --- presigned URLs (X-Amz-Algorithm in the query) ---------------------------------------------------------------

def test_presigned_url_verifies_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request("/endpoints/ep/async-invocations", {"x": "1 2"}, body=b""), monkeypatch, expires=600)
    assert "X-Amz-Signature=" in prepared.url and "Authorization" not in prepared.headers
    check(prepared, now=NOW + timedelta(seconds=599))
    refused(INVALID, "Signature expired", prepared, now=NOW + timedelta(seconds=601))
    refused(INVALID, "Signature not yet current", prepared, now=NOW - timedelta(minutes=16))
    tampered = received(prepared)
    query = tampered.query.replace("x=1%202", "x=3")
    refused(INVALID, "does not match", prepared, request=sigv4.HttpRequest("POST", tampered.path, query,
                                                                           tampered.headers))


def test_presigned_url_lifetime_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request(body=b""), monkeypatch, expires=sigv4.MAX_EXPIRES_S + 1)
    refused(INCOMPLETE, "X-Amz-Expires", prepared)


# --- refusals ----------------------------------------------------------------------------------------------------

def test_wrong_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    refused(INVALID, "The request signature we calculated does not match the signature you provided",
            sign(aws_request(), monkeypatch, secret="not-the-secret"))


@pytest.mark.parametrize("change", ["body", "path", "query", "method", "signed header", "host"])
def test_any_signed_part_changed(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request(query={"a": "1"}, headers={"Content-Type": "application/json"}), monkeypatch)
    seen = received(prepared)
    method, path, query, headers = seen.method, seen.path, seen.query, list(seen.headers)
    body = None
    if change == "body":
        body = b'{"inputs": "changed"}'
    elif change == "path":
        path = "/endpoints/other/invocations"
    elif change == "query":
        query = "a=2"
    elif change == "method":
        method = "PUT"
    else:
        name = "content-type" if change == "signed header" else "host"
        headers = [(n, "changed" if n == name else v) for n, v in headers]
    refused(INVALID, "does not match", prepared, body=body, request=sigv4.HttpRequest(method, path, query, headers))


def test_unsigned_headers_may_change(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request(headers={"User-Agent": "boto3"}), monkeypatch)
    seen = received(prepared)
    headers = [(n, "another agent" if n == "user-agent" else v) for n, v in seen.headers]
    check(prepared, request=sigv4.HttpRequest(seen.method, seen.path, seen.query, [*headers, ("x-extra", "1")]))


@pytest.mark.parametrize("minutes", [14, -14])
def test_within_15_minutes_of_the_clock(minutes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    check(sign(aws_request(), monkeypatch, at=NOW - timedelta(minutes=minutes)))


def test_a_request_over_15_minutes_old(monkeypatch: pytest.MonkeyPatch) -> None:
    refused(INVALID, r"Signature expired: 20250309T234330Z is now earlier than 20250309T234430Z "
                     r"\(20250309T235930Z - 15 min\.\)",
            sign(aws_request(), monkeypatch, at=NOW - timedelta(minutes=16)))


def test_a_request_signed_over_15_minutes_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    refused(INVALID, r"Signature not yet current: 20250310T001530Z is still later than 20250310T001430Z "
                     r"\(20250309T235930Z \+ 15 min\.\)",
            sign(aws_request(), monkeypatch, at=NOW + timedelta(minutes=16)))


def test_wrong_service(monkeypatch: pytest.MonkeyPatch) -> None:
    refused(INVALID, "Credential should be scoped to correct service: 'sagemaker'.",
            sign(aws_request(), monkeypatch, service="s3"))


def test_scope_date_must_be_the_signing_date(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request(), monkeypatch)
    prepared.headers["Authorization"] = prepared.headers["Authorization"].replace("/20250309/", "/20250308/")
    refused(INVALID, "Date in Credential scope does not match", prepared)


def test_host_must_be_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request(), monkeypatch)
    prepared.headers["Authorization"] = prepared.headers["Authorization"].replace("SignedHeaders=host;",
                                                                                  "SignedHeaders=")
    refused(INVALID, "'Host' or ':authority' must be a 'SignedHeader'", prepared)


@pytest.mark.parametrize(("authorization", "match"), [
    ("AWS4-HMAC-SHA256 Credential=HSAK/20250309/us-east-1/sagemaker/aws4_request", "requires 'SignedHeaders'"),
    ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00", "requires 'Credential'"),
    ("AWS4-HMAC-SHA256 Credential=HSAK/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=00",
     "Credential must have the form"),
    ("AWS4-ECDSA-P256-SHA256 Credential=HSAK/20250309/sagemaker/aws4_request, SignedHeaders=host, Signature=00",
     "Unsupported AWS 'algorithm'"),
    ("AWS HSAK:c2lnbmF0dXJl", "Unsupported AWS 'algorithm'"),
])
def test_malformed_authorization(authorization: str, match: str) -> None:
    request = sigv4.HttpRequest("POST", "/", "", [("authorization", authorization), ("x-amz-date", "20250309T235930Z"),
                                                  ("host", "h")])
    with pytest.raises(AwsError, match=match) as caught:
        sigv4.signature_of(request, "sagemaker")
    assert caught.value.code == INCOMPLETE


def test_a_wrong_terminator_and_a_bad_date(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = sign(aws_request(), monkeypatch)
    prepared.headers["Authorization"] = prepared.headers["Authorization"].replace("aws4_request", "aws5_request")
    refused(INVALID, "valid terminator", prepared)
    prepared = sign(aws_request(), monkeypatch)
    prepared.headers["X-Amz-Date"] = "2025-03-09T23:59:30Z"
    refused(INCOMPLETE, "ISO-8601 'basic format'", prepared)
    del prepared.headers["X-Amz-Date"]
    refused(INCOMPLETE, "requires existence of either a 'X-Amz-Date' or a 'Date' header", prepared)


def test_requests_not_signed_the_aws_way_claim_nothing() -> None:
    for headers in ([], [("authorization", "Bearer hs_abc")], [("authorization", "Basic eDp5")]):
        assert sigv4.signature_of(sigv4.HttpRequest("POST", "/", "a=1", headers), "sagemaker") is None
