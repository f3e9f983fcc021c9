"""The worker hub: only a connection that opens with an expected replica's id and secret gets a channel;
anything else is closed before a frame is read, and a wrong guess does not lock the real replica out."""

from __future__ import annotations

import asyncio
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
