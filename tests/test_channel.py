"""The framed channel: frames round-trip, a frame over the limits closes the channel unread, and the preamble
a worker opens with packs to a fixed size."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from hubserve.channel import PREAMBLE, Channel, ChannelClosed, FrameLimits, FrameTooLarge, Preamble


async def channel_pair(limits: FrameLimits) -> tuple[Channel, Channel]:
    """A receiving channel with `limits`, and the channel that sends to it."""
    ours, theirs = socket.socketpair()
    return (Channel(*await asyncio.open_connection(sock=ours), limits),
            Channel(*await asyncio.open_connection(sock=theirs)))


def test_frames_round_trip() -> None:
    async def main() -> None:
        receiver, sender = await channel_pair(FrameLimits())
        await sender.send({"op": "invoke", "id": 1}, b"body")
        await sender.send({"op": "stats"})
        assert await receiver.receive() == ({"op": "invoke", "id": 1}, b"body")
        assert await receiver.receive() == ({"op": "stats"}, b"")
        sender.close()
        with pytest.raises(ChannelClosed):
            await receiver.receive()
        receiver.close()

    asyncio.run(main())


@pytest.mark.parametrize(("text", "body"), [("x" * 60, b""), ("", b"y" * 101)], ids=["header", "body"])
def test_a_frame_over_the_limits_closes_the_channel(text: str, body: bytes) -> None:
    async def main() -> None:
        receiver, sender = await channel_pair(FrameLimits(header=64, body=100))
        await sender.send({"fits": True}, b"z" * 100)
        assert await receiver.receive() == ({"fits": True}, b"z" * 100)
        await sender.send({"op": text}, body)  # a header of 9 bytes plus the text
        with pytest.raises(FrameTooLarge, match="over the channel's limits"):
            await receiver.receive()
        with pytest.raises(ChannelClosed):  # the sender sees it closed too
            await sender.receive()
        sender.close()

    asyncio.run(main())


def test_huge_announced_lengths_are_refused_before_any_read() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        receiver = Channel(*await asyncio.open_connection(sock=ours))
        reader, writer = await asyncio.open_connection(sock=theirs)
        writer.write(struct.pack("!II", 0xFFFFFFFF, 0xFFFFFFFF))  # and never the 8 GiB it announces
        with pytest.raises(FrameTooLarge):
            await asyncio.wait_for(receiver.receive(), 5)
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # closed on its side
        writer.close()

    asyncio.run(main())


def test_preamble_has_a_fixed_size_and_round_trips() -> None:
    preamble = Preamble(replica_id="endpoint-1a2b3c4d", secret=b"0123456789abcdef" * 2, pid=4242)
    raw = preamble.pack()
    assert len(raw) == PREAMBLE.size
    assert Preamble.parse(raw) == preamble
    assert Preamble.parse(b"\0" * PREAMBLE.size) is None  # no magic: not a worker
    with pytest.raises(ValueError, match="preamble field"):
        Preamble(replica_id="r" * 97, secret=b"s", pid=1).pack()
