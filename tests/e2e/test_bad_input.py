"""No input takes an endpoint down: malformed bodies, invalid Unicode, wrong types and slow or vanishing clients get
a 4xx in each front door's error format (or a closed connection), and leave nothing half-created behind."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import Server, sagemaker_runtime, server_with_echo
from custom_models import write_echo_model

NAME = "echo"
# Short, so that the slow-client tests are quick; every well-behaved request here takes milliseconds.
TIMEOUT_S = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"HUBSERVE_HEADER_TIMEOUT_S": str(TIMEOUT_S), "HUBSERVE_BODY_TIMEOUT_S": str(TIMEOUT_S)}
    with server_with_echo(tmp_path_factory.mktemp("bad-input") / "home", NAME, tmp_path_factory.mktemp("echo"),
                          env) as running:
        yield running


@pytest.fixture(scope="module")
def runtime(server: Server) -> Iterator[object]:
    client = sagemaker_runtime(server.url)
    yield client
    client.close()


def admin(server: Server) -> dict[str, str]:
    return {"authorization": f"Bearer {server.token}"}


def assert_bad_request(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error_type"] == "bad_request"


# ---------------------------------------------------------------------------------------------
# invocation bodies

MALFORMED_JSON = {
    "depth bomb": b"[" * 100_000,
    "streamed depth bomb": b'{"stream": true, "inputs": ' + b"[" * 100_000,
    "huge integer": b'{"inputs": ' + b"1" * 5000 + b"}",
    "streamed huge integer": b'{"stream": true, "inputs": ' + b"1" * 5000 + b"}",
    "lone surrogate": b'{"inputs": "\\ud800"}',
    "invalid UTF-8": b'{"inputs": "\xff"}',
    "NaN": b'{"inputs": NaN}',
}


@pytest.mark.parametrize("body", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_json_is_400_on_the_inference_endpoints_route(server: Server, body: bytes) -> None:
    response = httpx.post(f"{server.url}/endpoints/{NAME}", content=body, headers={"content-type": "application/json"})
    assert_bad_request(response)


@pytest.mark.parametrize("body", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_json_is_400_on_the_sagemaker_route(server: Server, runtime: object, body: bytes) -> None:
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName=NAME, Body=body, ContentType="application/json")  # type: ignore[attr-defined]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert info.value.response["Error"]["Code"] == "ValidationError"


@pytest.mark.parametrize(("charset", "status"), [("unicode_escape", 400), ("base64", 415)])
def test_charsets_that_yield_no_valid_text_are_4xx(server: Server, charset: str, status: int) -> None:
    response = httpx.post(f"{server.url}/endpoints/{NAME}", content=b'"\\ud800"',
                          headers={"content-type": f"application/json; charset={charset}"})
    assert response.status_code == status, response.text


def test_non_ascii_header_handed_to_the_model_is_400(server: Server) -> None:
    response = httpx.post(f"{server.url}/endpoints/{NAME}/invocations", content=b'{"inputs": "x"}',
                          headers={"content-type": "application/json",
                                   "X-Amzn-SageMaker-Custom-Attributes": b"\xff\xfe"})
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "ValidationError"
    assert "X-Amzn-SageMaker-Custom-Attributes" in response.json()["message"]
    response = httpx.post(f"{server.url}/endpoints/{NAME}", content=b'{"inputs": "x"}',
                          headers={"content-type": b"application/json; charset=\xe9"})
    assert_bad_request(response)


# ---------------------------------------------------------------------------------------------
# the control API


@pytest.mark.parametrize("body", [
    b'{"name": "x", "model": ' + b"[" * 100_000,
    b'{"name": "x", "model": "m", "replicas": ' + b"1" * 5000 + b"}",
    b"[]", b"1", b'"spec"', b"null", b"{nope",
])
def test_malformed_control_bodies_are_400(server: Server, body: bytes) -> None:
    for path in ("/api/v1/endpoints", f"/api/v1/endpoints/{NAME}", "/api/v1/tokens"):
        method = "PATCH" if path.endswith(NAME) else "POST"
        response = httpx.request(method, server.url + path, content=body,
                                 headers={**admin(server), "content-type": "application/json"})
        assert_bad_request(response)


@pytest.mark.parametrize("fields", [
    {"replicas": "many"}, {"replicas": 10**30}, {"env": ["A=1"]}, {"env": {"A": 1}}, {"security": 5},
    {"engine": "fast"}, {"engine": {"max_batch_size": "x"}}, {"timeout_s": "soon"}, {"trust_remote_code": "perhaps"},
    {"env": {"HF_TRUST_REMOTE_CODE": 1}}, {"max_payload_bytes": 1 << 40},
])
def test_wrong_types_in_specs_are_400(server: Server, fields: dict[str, object]) -> None:
    created = httpx.post(f"{server.url}/api/v1/endpoints", json={"name": "typed", "model": "m", **fields},
                         headers=admin(server))
    assert_bad_request(created)
    assert_bad_request(httpx.patch(f"{server.url}/api/v1/endpoints/{NAME}", json=fields, headers=admin(server)))


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_in_specs_are_400(server: Server, number: bytes) -> None:
    # Python's json module reads these; infinity would pass `timeout_s > 0` and then break every answer.
    for field in (b'"timeout_s"', b'"engine": {"max_batch_delay_ms"'):
        closing = b"}}" if b"engine" in field else b"}"
        body = b'{"name": "inf", "model": "m", ' + field + b": " + number + closing
        response = httpx.post(f"{server.url}/api/v1/endpoints", content=body,
                              headers={**admin(server), "content-type": "application/json"})
        assert_bad_request(response)


@pytest.mark.parametrize("body", [{"name": 5}, {"name": ""}, {"name": "ci", "endpoints": "echo"},
                                  {"name": "ci", "endpoints": [5]}, {"name": "ci", "extra": 1}])
def test_wrong_types_in_token_requests_are_400(server: Server, body: dict[str, object]) -> None:
    assert_bad_request(httpx.post(f"{server.url}/api/v1/tokens", json=body, headers=admin(server)))


@pytest.mark.parametrize("query", ["tail=-1", "tail=abc", "tail=1000000000", "follow=maybe"])
def test_logs_query_is_validated(server: Server, query: str) -> None:
    assert_bad_request(httpx.get(f"{server.url}/api/v1/endpoints/{NAME}/logs?{query}", headers=admin(server)))


def test_unknown_routes_and_methods_use_our_error_body(server: Server) -> None:
    response = httpx.get(f"{server.url}/nowhere")
    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"
    response = httpx.put(f"{server.url}/api/v1/tokens", headers=admin(server))
    assert response.status_code == 405
    assert response.json()["error_type"] == "method_not_allowed"
    # Allow names every method of the path, not only those of the route Starlette tried first.
    assert response.headers["allow"] == "GET, POST"
    response = httpx.request("OPTIONS", f"{server.url}/api/v1/endpoints/{NAME}", headers=admin(server))
    assert (response.status_code, response.headers["allow"]) == (405, "DELETE, GET, PATCH, PUT")


def test_control_bodies_over_the_limit_are_413(server: Server) -> None:
    body = json.dumps({"name": "big", "model": "x" * (2 << 20)}).encode()
    response = httpx.post(f"{server.url}/api/v1/endpoints", content=body,
                          headers={**admin(server), "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error_type"] == "payload_too_large"


# ---------------------------------------------------------------------------------------------
# invalid Unicode leaves nothing half-created

SURROGATE = "\\ud800"  # as JSON writes it: the parsed string holds a lone surrogate


@pytest.mark.parametrize("spec", [
    f'{{"name": "sur", "model": "{SURROGATE}"}}',
    f'{{"name": "sur", "model": "m", "revision": "{SURROGATE}"}}',
    f'{{"name": "sur", "model": "m", "task": "{SURROGATE}"}}',
    f'{{"name": "sur", "model": "m", "env": {{"{SURROGATE}": "v"}}}}',
    f'{{"name": "sur", "model": "m", "env": {{"K": "{SURROGATE}"}}}}',
    '{"name": "sur", "model": "m", "env": {"K": "nul\\u0000"}}',
    f'{{"name": "sur", "env": {{"HF_MODEL_ID": "{SURROGATE}"}}}}',
    f'{{"name": "sur{SURROGATE}", "model": "m"}}',
    '{"name": "sur\\n", "model": "m"}',
])
def test_invalid_text_in_a_spec_is_400_and_creates_nothing(server: Server, spec: str) -> None:
    response = httpx.post(f"{server.url}/api/v1/endpoints", content=spec.encode(),
                          headers={**admin(server), "content-type": "application/json"})
    assert_bad_request(response)
    listed = httpx.get(f"{server.url}/api/v1/endpoints", headers=admin(server))
    assert listed.status_code == 200
    assert [e["spec"]["name"] for e in listed.json()["items"]] == [NAME]
    assert_bad_request(httpx.patch(f"{server.url}/api/v1/endpoints/{NAME}",
                                   content=spec.replace('"name": "sur", ', "").encode(),
                                   headers={**admin(server), "content-type": "application/json"}))
    assert httpx.get(f"{server.url}/api/v1/endpoints/{NAME}", headers=admin(server)).json()["spec"]["model"] != "m"


@pytest.mark.parametrize("body", [f'{{"name": "{SURROGATE}"}}', f'{{"name": "ci", "endpoints": ["{SURROGATE}"]}}'])
def test_invalid_text_in_a_token_request_is_400_and_creates_nothing(server: Server, body: str) -> None:
    before = httpx.get(f"{server.url}/api/v1/tokens", headers=admin(server)).json()
    response = httpx.post(f"{server.url}/api/v1/tokens", content=body.encode(),
                          headers={**admin(server), "content-type": "application/json"})
    assert_bad_request(response)
    assert httpx.get(f"{server.url}/api/v1/tokens", headers=admin(server)).json() == before


# ---------------------------------------------------------------------------------------------
# access


def test_health_of_a_protected_endpoint_needs_a_token(server: Server, tmp_path: Path) -> None:
    client = server.client()
    client.create_endpoint({"name": "guarded", "model": str(write_echo_model(tmp_path / "echo")),
                            "security": "protected"})
    try:
        client.wait("guarded", timeout=300)
        health = f"{server.url}/endpoints/guarded/health"
        assert httpx.get(health).status_code == 401
        assert httpx.get(health, headers={"authorization": "Bearer nope"}).status_code == 403
        other = client.create_token("other", ["echo"])["token"]
        assert httpx.get(health, headers={"authorization": f"Bearer {other}"}).status_code == 403
        assert httpx.get(health, headers=admin(server)).json() == {"status": "ok", "ready_replicas": 1}
        assert httpx.get(f"{server.url}/endpoints/{NAME}/health").status_code == 200  # public: no token
    finally:
        client.delete_endpoint("guarded")


# ---------------------------------------------------------------------------------------------
# slow and vanishing clients


def connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("sent", [b"", b"POST /endpoints/echo HTTP/1.1\r\nHost: x\r\nContent-Le"])
def test_a_request_head_that_does_not_arrive_in_time_closes_the_connection(server: Server, sent: bytes) -> None:
    started = time.monotonic()  # before connecting: the server's clock starts when it accepts the connection
    with connect(server) as sock:
        sock.sendall(sent)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    # asyncio runs a timer up to its clock's resolution early: a millisecond of slack, no more.
    assert TIMEOUT_S - 0.001 <= time.monotonic() - started < TIMEOUT_S + 3


def test_a_head_sent_a_byte_at_a_time_is_cut_off(server: Server) -> None:
    head = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    with connect(server) as sock:
        started = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        assert time.monotonic() - started < TIMEOUT_S + 3


def test_keep_alive_requests_each_get_their_own_head_deadline(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/ping").status_code == 200
            time.sleep(TIMEOUT_S * 0.6)  # longer than the deadline in total, within uvicorn's keep-alive


@pytest.mark.parametrize(("path", "error_header"), [
    (f"/endpoints/{NAME}", None),
    (f"/endpoints/{NAME}/invocations", "x-amzn-errortype"),
    ("/api/v1/endpoints", None),
])
def test_a_stalled_body_is_408_and_the_connection_closes(server: Server, path: str, error_header: str | None) -> None:
    with connect(server) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                     f"Authorization: Bearer {server.token}\r\n\r\n{{\"inputs\"".encode())
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    if error_header:
        assert error_header.encode() in head.lower()
    else:
        assert json.loads(body)["error_type"] == "request_timeout"


def test_a_client_that_leaves_mid_body_costs_one_log_line(server: Server) -> None:
    before = server.log.read_text()
    for path in (f"/endpoints/{NAME}", "/api/v1/endpoints"):
        with connect(server) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                         f"Authorization: Bearer {server.token}\r\n\r\n{{".encode())
            time.sleep(0.2)
    time.sleep(0.5)
    logged = server.log.read_text()[len(before):]
    assert logged.count("disconnected before sending its whole body") == 2, logged
    assert "Traceback" not in logged
    assert httpx.get(f"{server.url}/ping").status_code == 200
