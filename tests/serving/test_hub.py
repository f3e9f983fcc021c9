"""The worker hub: only a connection that opens with an expected replica's id and secret gets a channel;
anything else is closed before a frame is read, and a wrong guess does not lock the real replica out. The same holds
for a replica's line, down which the server passes client connections."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from hubserve.channel import PREAMBLE, Channel, FrameLimits, Preamble
from hubserve.serving.hub import WorkerHub

SECRET = "0123456789abcdef0123456789abcdef"


class FakeReplica:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.attached: list[tuple[Channel, int]] = []

    def attach(self, channel: Channel, pid: int) -> None:
        self.attached.append((channel, pid))


async def closed_by_hub(hub: WorkerHub, first_bytes: bytes) -> bool:
    """Whether the hub closes a connection that opens with `first_bytes`, within 5 s."""
    reader, writer = await asyncio.open_connection(hub.host, hub.port)
    writer.write(first_bytes)
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


async def connect_worker(hub: WorkerHub, secret: str) -> Channel:
    return await Channel.connect(hub.host, hub.port, Preamble("e-1", secret.encode(), 77), FrameLimits())


async def attached(replica: FakeReplica) -> tuple[Channel, int]:
    while not replica.attached:
        await asyncio.sleep(0.01)
    return replica.attached[0]


def run_with_hub(test: Callable[[WorkerHub, FakeReplica], Awaitable[None]], handshake_timeout_s: float = 10) -> None:
    """Run `test` against a started hub that expects replica `e-1` with SECRET."""
    async def main() -> None:
        hub = WorkerHub(handshake_timeout_s=handshake_timeout_s)
        await hub.start()
        replica = FakeReplica(SECRET)
        hub.expect("e-1", replica)
        try:
            await test(hub, replica)
        finally:
            for channel, _ in replica.attached:
                channel.close()
            await hub.close()

    asyncio.run(main())


def test_the_expected_replica_is_attached_once() -> None:
    async def test(hub: WorkerHub, replica: FakeReplica) -> None:
        worker = await connect_worker(hub, SECRET)
        await worker.send({"op": "state", "state": "ready"})
        channel, pid = await attached(replica)
        assert pid == 77
        assert await channel.receive() == ({"op": "state", "state": "ready"}, b"")
        # The same preamble again (a replay, or a second process) is nobody the hub waits for any more.
        assert await closed_by_hub(hub, Preamble("e-1", SECRET.encode(), 78).pack())
        assert len(replica.attached) == 1
        worker.close()

    run_with_hub(test)


def test_a_wrong_secret_is_refused_and_the_replica_can_still_connect() -> None:
    async def test(hub: WorkerHub, replica: FakeReplica) -> None:
        assert await closed_by_hub(hub, Preamble("e-1", b"f" * 32, 66).pack())
        assert await closed_by_hub(hub, Preamble("e-1", SECRET[:-1].encode(), 66).pack())
        assert await closed_by_hub(hub, Preamble("other", SECRET.encode(), 66).pack())
        assert not replica.attached
        worker = await connect_worker(hub, SECRET)
        assert (await attached(replica))[1] == 77
        worker.close()

    run_with_hub(test)


@pytest.mark.parametrize("first_bytes", [
    struct.pack("!II", 0xFFFFFFFF, 0xFFFFFFFF) + b"\0" * PREAMBLE.size,  # a frame announcing 8 GiB
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".ljust(PREAMBLE.size, b"\n"),
], ids=["huge-frame", "http"])
def test_anything_else_is_closed_at_once(first_bytes: bytes) -> None:
    async def test(hub: WorkerHub, replica: FakeReplica) -> None:
        assert await closed_by_hub(hub, first_bytes)
        assert not replica.attached

    run_with_hub(test)


def test_a_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    async def test(hub: WorkerHub, replica: FakeReplica) -> None:
        assert await closed_by_hub(hub, b"hubsrv")  # a preamble's start, and then nothing
        assert not replica.attached

    run_with_hub(test, handshake_timeout_s=0.2)


def test_a_replicas_line_is_attached_once_only_with_its_secret() -> None:
    """The line (a Unix socket in the abstract namespace, which any local process can dial) is proven as the
    channel is: a wrong secret, another replica's name or silence are refused, and the real replica still gets it."""
    async def main() -> None:
        hub = WorkerHub(line=True, handshake_timeout_s=0.2)
        await hub.start()
        assert hub.line_address is not None
        lines: list[socket.socket] = []
        hub.expect("e-1", FakeReplica(SECRET), line=lines.append)
        loop = asyncio.get_running_loop()

        async def refused(first_bytes: bytes) -> bool:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as dialer:
                dialer.connect("\0" + str(hub.line_address))
                dialer.setblocking(False)
                if first_bytes:
                    dialer.send(first_bytes)
                return await asyncio.wait_for(loop.sock_recv(dialer, 1), 5) == b""

        try:
            assert await refused(Preamble("e-1", b"f" * 32, 66).pack())
            assert await refused(Preamble("other", SECRET.encode(), 66).pack())
            assert await refused(b"")  # silent past the handshake timeout
            assert not lines
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as dialer:
                dialer.connect("\0" + str(hub.line_address))
                dialer.send(Preamble("e-1", SECRET.encode(), 77).pack())
                while not lines:
                    await asyncio.sleep(0.01)
                ours, theirs = socket.socketpair()
                socket.send_fds(lines[0], [b"stream 1"], [theirs.fileno()])  # what the line is for
                message, fds, _, _ = socket.recv_fds(dialer, 100, 1)
                assert message == b"stream 1" and len(fds) == 1
                with socket.socket(fileno=fds[0]) as received:
                    received.send(b"through the passed socket")
                assert ours.recv(100) == b"through the passed socket"
                ours.close()
                theirs.close()
            assert await refused(Preamble("e-1", SECRET.encode(), 78).pack())  # a replay: nobody waits for it
        finally:
            for line in lines:
                line.close()
            await hub.close()

    asyncio.run(main())
