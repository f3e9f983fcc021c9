"""A stream's events between the worker's channel and the client's connection (`generation.direct.Handoff`): the
first event always goes through the channel; the ones after it wait for the server's word, then go to the client as
HTTP chunks (granted) or through the channel (kept), in order either way; before the rest of the stream goes through
the channel, everything written to the client has left and the worker's descriptor of the connection is closed,
without ending the connection, which is the server's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from hubserve.channel import Channel
from hubserve.worker.generation import direct
from hubserve.worker.generation.direct import Handoff
from test_channel import threaded_pair

SSE = (b"data: ", b"\n\n")


def chunk(body: bytes) -> bytes:
    event = SSE[0] + body + SSE[1]
    return b"%x\r\n%b\r\n" % (len(event), event)


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def read_available(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    data = b""
    while True:
        try:
            piece = sock.recv(1 << 16)
        except BlockingIOError:
            return data
        if not piece:
            return data
        data += piece


async def chunks_received(channel: Channel, count: int) -> list[bytes]:
    received = []
    for _ in range(count):
        header, body = await asyncio.wait_for(channel.receive(), 5)
        assert header == {"op": "chunk", "id": 7}
        received.append(body)
    return received


@contextlib.asynccontextmanager
async def stream_handoff() -> AsyncIterator[tuple[Channel, Handoff]]:
    """Request 7's handoff over a worker's channel, and the server's end of that channel."""
    receiver, channel = await threaded_pair()
    try:
        yield receiver, Handoff(channel, 7)
    finally:
        receiver.close()
        channel.close()


@pytest.fixture
def client() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connection: the server's end (whose descriptor the worker gets a duplicate of) and the client's."""
    server_end, client_end = socket.socketpair()
    yield server_end, client_end
    server_end.close()
    client_end.close()


def test_held_events_go_to_the_client_once_granted_and_the_rest_follow(
        client: tuple[socket.socket, socket.socket]) -> None:
    server_end, client_end = client

    async def main() -> None:
        async with stream_handoff() as (receiver, handoff):
            assert handoff.take(b"first") is False  # the server writes it, then answers
            assert handoff.take(b"second") and handoff.take(b"third")  # held meanwhile
            assert read_available(client_end) == b""
            given = os.dup(server_end.fileno())
            handoff.grant(given, *SSE)
            assert handoff.handed
            taken = []
            thread = threading.Thread(target=lambda: taken.append(handoff.take(b"fourth")))  # the generation thread
            thread.start()
            thread.join()
            assert taken == [True]
            await handoff.finish()
            assert read_available(client_end) == chunk(b"second") + chunk(b"third") + chunk(b"fourth")
            assert closed(given) and not handoff.handed
            assert handoff.take(b"last") is False  # through the channel, after all the client got
            server_end.sendall(b"0\r\n\r\n")  # the connection is still the server's to end
            assert read_available(client_end) == b"0\r\n\r\n"

    asyncio.run(main())


def test_kept_events_go_through_the_channel_in_order(client: tuple[socket.socket, socket.socket]) -> None:
    async def main() -> None:
        async with stream_handoff() as (receiver, handoff):
            assert handoff.take(b"first") is False
            assert handoff.take(b"second") and handoff.take(b"third")
            handoff.keep()
            assert await chunks_received(receiver, 2) == [b"second", b"third"]
            assert handoff.take(b"fourth") is False
            await handoff.finish()
            handoff.grant(given := os.dup(client[0].fileno()), *SSE)  # a word that comes late is not taken
            assert closed(given) and read_available(client[1]) == b""

    asyncio.run(main())


def test_finish_waits_for_the_servers_word_while_events_are_held(client: tuple[socket.socket, socket.socket]) -> None:
    async def main() -> None:
        async with stream_handoff() as (receiver, handoff):
            handoff.take(b"first")
            handoff.take(b"second")
            finishing = asyncio.ensure_future(handoff.finish())
            await asyncio.sleep(0.1)
            assert not finishing.done()
            handoff.grant(os.dup(client[0].fileno()), *SSE)
            await asyncio.wait_for(finishing, 5)
            assert read_available(client[1]) == chunk(b"second")

    asyncio.run(main())


def test_without_the_servers_word_held_events_go_through_the_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "HANDOFF_WAIT_S", 0.1)

    async def main() -> None:
        async with stream_handoff() as (receiver, handoff):
            handoff.take(b"first")
            handoff.take(b"second")
            await asyncio.wait_for(handoff.finish(), 5)
            assert await chunks_received(receiver, 1) == [b"second"]

    asyncio.run(main())


def test_a_stream_that_ends_before_holding_anything_does_not_wait(client: tuple[socket.socket, socket.socket]) -> None:
    async def main() -> None:
        async with stream_handoff() as (receiver, handoff):
            handoff.take(b"only")  # a one-event stream: its last event comes next, through the loop
            await asyncio.wait_for(handoff.finish(), 0.05)
            given = os.dup(client[0].fileno())
            handoff.grant(given, *SSE)
            assert closed(given)

    asyncio.run(main())


def test_a_client_that_reads_slowly_gets_every_event_before_the_connection_goes_back(
        client: tuple[socket.socket, socket.socket]) -> None:
    server_end, client_end = client
    for end, option in ((server_end, socket.SO_SNDBUF), (client_end, socket.SO_RCVBUF)):
        end.setsockopt(socket.SOL_SOCKET, option, 4096)
    bodies = [b"%05d" % index + b"x" * 500 for index in range(2000)]  # a megabyte: far over what the sockets hold
    received = bytearray()

    def slow_reader() -> None:
        client_end.setblocking(True)
        while len(received) < sum(len(chunk(body)) for body in bodies):
            received.extend(client_end.recv(2048))

    async def main() -> None:
        async with stream_handoff() as (receiver, handoff):
            handoff.take(b"first")
            handoff.grant(given := os.dup(server_end.fileno()), *SSE)
            writer = threading.Thread(target=lambda: [handoff.take(body) for body in bodies])
            writer.start()
            writer.join()  # the generation thread never waits for the client
            reader = threading.Thread(target=slow_reader)
            reader.start()
            await asyncio.wait_for(handoff.finish(), 60)
            assert closed(given)  # only once the socket took the last byte
            reader.join(30)
            assert bytes(received) == b"".join(chunk(body) for body in bodies)

    asyncio.run(main())


def test_a_cancelled_stream_gives_the_connection_back_at_once(client: tuple[socket.socket, socket.socket]) -> None:
    async def main() -> None:
        async with stream_handoff() as (receiver, handoff):
            handoff.take(b"first")
            handoff.grant(given := os.dup(client[0].fileno()), *SSE)
            handoff.abandon()
            assert closed(given)
            assert handoff.take(b"second") is False  # not to the client (the engine drops a cancelled stream's events)
            client[0].sendall(b"still open")
            assert read_available(client[1]) == b"still open"

    asyncio.run(main())
