"""Token streaming end to end: server-sent events from the engine to the client, the first token before
the end, cancellation when the client goes away, and real clients (huggingface_hub) reading the stream. A local
replica writes a stream's events after the first to the client's connection itself (TGI's, and the OpenAI SDK's chat
stream): the connection then serves the next requests as before, and a client that reads slowly still gets every
event, in order."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, running_endpoints

ConnectionAnswer = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def generator(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[str]:
    with running_endpoints(server, [{"name": "streamer", "model": str(tiny_model("text-generation")),
                                      "task": "text-generation", "dtype": "float32"}]):
        yield f"{server.url}/endpoints/streamer"


def events(response: httpx.Response) -> Iterator[tuple[float, dict[str, Any]]]:
    for line in response.iter_lines():
        if line:
            assert line.startswith("data: {")  # TGI's framing: a space after the colon, no [DONE]
            yield time.monotonic(), json.loads(line.removeprefix("data: "))


def test_stream_sends_one_event_per_token_then_the_text(generator: str) -> None:
    body = {"inputs": "the day is", "parameters": {"max_new_tokens": 12, "do_sample": False}, "stream": True}
    with httpx.stream("POST", generator, json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))
    tokens = [event for _, event in received]
    assert [e["index"] for e in tokens] == list(range(1, len(tokens) + 1))
    assert all(e["generated_text"] is None and e["details"] is None for e in tokens[:-1])
    final = tokens[-1]
    assert final["generated_text"] == "".join(e["token"]["text"] for e in tokens)
    assert final["details"]["finish_reason"] in ("length", "eos_token", "stop_sequence")
    assert final["details"]["generated_tokens"] == len(tokens)
    # the first token left well before the last one
    assert received[0][0] < received[-1][0]


def test_stream_equals_the_non_streamed_answer(generator: str) -> None:
    parameters = {"max_new_tokens": 8, "do_sample": False, "return_full_text": False}
    plain = httpx.post(generator, json={"inputs": "a good", "parameters": parameters}, timeout=120).json()
    with httpx.stream("POST", generator, json={"inputs": "a good", "parameters": parameters, "stream": True},
                      timeout=120) as response:
        final = list(events(response))[-1][1]
    assert final["generated_text"] == plain[0]["generated_text"]


def test_stream_errors_before_the_first_token_are_http_errors(generator: str) -> None:
    # in TGI's words: a bad request to a text generation endpoint is a 422 "validation"
    response = httpx.post(generator, json={"inputs": "x", "parameters": {"bogus": 1}, "stream": True})
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation"
    assert "bogus" in response.json()["error"]


def test_non_generation_tasks_refuse_to_stream(server: Server, deploy: Callable[..., str],
                                               tiny_model: Callable[[str], Path]) -> None:
    url = deploy("no-stream", str(tiny_model("text-classification")))
    response = httpx.post(url, json={"inputs": "x", "stream": True})
    assert response.status_code == 400
    assert "does not stream" in response.json()["error"]


def test_a_client_that_goes_away_frees_its_slot(server: Server, generator: str) -> None:
    # As many tokens as the model's context leaves: far more than the client waits for.
    parameters = {"max_new_tokens": 500, "min_new_tokens": 500, "do_sample": False}
    body = {"inputs": "the day is", "parameters": parameters, "stream": True}
    with httpx.stream("POST", generator, json=body, timeout=120) as response:
        next(events(response))
    stats_url = f"{server.url}/api/v1/endpoints/streamer/stats"
    headers = {"authorization": f"Bearer {server.token}"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replica = httpx.get(stats_url, headers=headers).json()["replicas"][0]
        if replica["in_flight"] == 0 and replica["generation"].get("running", 0) == 0:
            break
        time.sleep(0.2)
    assert replica["in_flight"] == 0
    assert replica["generation"].get("running", 0) == 0
    assert replica["generation"].get("cancelled", 0) >= 1


def test_huggingface_hub_streams(generator: str) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=generator)
    tokens = list(client.text_generation("the day is", max_new_tokens=6, stream=True))
    assert tokens and all(isinstance(token, str) for token in tokens)
    text = client.text_generation("the day is", max_new_tokens=6)
    assert isinstance(text, str)


def handed_off(server: Server) -> int:
    """Streams whose client connection the streamer's replica was handed (its stats)."""
    stats = httpx.get(f"{server.url}/api/v1/endpoints/streamer/stats",
                      headers={"authorization": f"Bearer {server.token}"}).json()
    return int(stats["replicas"][0]["streams_handed_off"])


def exchange(connection: socket.socket, url: str, body: dict[str, Any], pause_s: float = 0.0) -> ConnectionAnswer:
    """One HTTP/1.1 request on an open connection, read as sent: the status, the headers, the body (chunked or
    not); the connection stays open. `pause_s`: wait that long before reading, then read a little at a time."""
    path = url.split("/", 3)[3]
    raw = json.dumps(body).encode()
    connection.sendall(b"POST /%b HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                       b"content-length: %d\r\n\r\n%b" % (path.encode(), len(raw), raw))
    time.sleep(pause_s)
    buffer = bytearray()

    def until(marker: bytes) -> bytes:
        while marker not in buffer:
            piece = connection.recv(512 if pause_s else 65536)
            assert piece, "the server closed the connection"
            buffer.extend(piece)
        at = buffer.index(marker)
        taken = bytes(buffer[:at])
        del buffer[:at + len(marker)]
        return taken

    def exactly(size: int) -> bytes:
        while len(buffer) < size:
            piece = connection.recv(512 if pause_s else 65536)
            assert piece, "the server closed the connection"
            buffer.extend(piece)
        taken = bytes(buffer[:size])
        del buffer[:size]
        return taken

    status_line, *header_lines = until(b"\r\n\r\n").decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
    if headers.get("transfer-encoding") == "chunked":
        content = b""
        while size := int(until(b"\r\n"), 16):
            content += exactly(size)
            assert exactly(2) == b"\r\n"
        assert exactly(2) == b"\r\n"
    else:
        content = exactly(int(headers["content-length"]))
    assert not buffer  # nothing after the answer
    return int(status_line.split()[1]), headers, content


def sse_events(content: bytes) -> list[dict[str, Any]]:
    parts = content.split(b"\n\n")
    assert parts[-1] == b""
    assert all(part.startswith(b"data: ") for part in parts[:-1])
    return [json.loads(part.removeprefix(b"data: ")) for part in parts[:-1]]


def test_a_local_replica_writes_the_stream_to_the_client_and_the_connection_serves_on(
        server: Server, generator: str) -> None:
    parameters = {"max_new_tokens": 24, "min_new_tokens": 24, "do_sample": False, "return_full_text": False}
    before = handed_off(server)
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=60) as connection:
        answers = [exchange(connection, generator, {"inputs": "the day is", "parameters": parameters, **stream})
                   for stream in ({"stream": True}, {"stream": True}, {})]
    assert handed_off(server) == before + 2
    (status, headers, content), again, plain = answers
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    tokens = sse_events(content)
    assert [event["index"] for event in tokens] == list(range(1, 25))
    assert tokens[-1]["generated_text"] == "".join(event["token"]["text"] for event in tokens)
    assert again[0] == 200 and sse_events(again[2]) == tokens  # greedy: the same events on the same connection
    assert plain[0] == 200 and json.loads(plain[2])[0]["generated_text"] == tokens[-1]["generated_text"]


def test_a_client_that_reads_slowly_gets_every_event_of_a_handed_off_stream(server: Server, generator: str) -> None:
    parameters = {"max_new_tokens": 300, "min_new_tokens": 300, "do_sample": False, "details": True}
    before = handed_off(server)
    with socket.socket() as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the replica's writes outrun it
        connection.settimeout(60)
        connection.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        status, _, content = exchange(connection, generator, {"inputs": "the day is", "parameters": parameters,
                                                              "stream": True}, pause_s=1.0)
        assert status == 200
        tokens = sse_events(content)
        assert [event["index"] for event in tokens] == list(range(1, 301))
        assert tokens[-1]["generated_text"] == "".join(event["token"]["text"] for event in tokens)
        assert tokens[-1]["details"]["generated_tokens"] == 300
        assert exchange(connection, generator, {"inputs": "x", "parameters": {"max_new_tokens": 2}})[0] == 200
    assert handed_off(server) == before + 1


def test_the_openai_sdks_chat_stream_is_handed_off_too(server: Server, generator: str) -> None:
    import openai

    with openai.OpenAI(base_url=f"{generator}/v1", api_key="unused", max_retries=0) as client:
        for tokens in range(12, 24):  # a length that does not cut a character short (a stream holds those back)
            asked = {"model": "streamer", "messages": [{"role": "user", "content": "the day is"}],
                     "max_tokens": tokens, "temperature": 0}
            whole = client.chat.completions.create(**asked)
            if not (whole.choices[0].message.content or "").endswith("\ufffd"):
                break
        before = handed_off(server)
        chunks = list(client.chat.completions.create(**asked, stream=True))
    assert handed_off(server) == before + 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
