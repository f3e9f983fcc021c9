"""The framed channel: frames round-trip, a frame over the limits closes the channel unread, and the preamble
a worker opens with packs to a fixed size. The threaded channel (a worker's) takes frames from other threads too:
whole and in order, megabytes past a reader that lags, and ChannelClosed once the other side is gone."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from hubserve.channel import (
    PREAMBLE,
    Channel,
    ChannelClosed,
    FrameLimits,
    FrameTooLarge,
    Preamble,
    ThreadedChannel,
)


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


async def threaded_pair() -> tuple[Channel, ThreadedChannel]:
    """A receiving channel, and the threaded channel that sends to it."""
    ours, theirs = socket.socketpair()
    return (Channel(*await asyncio.open_connection(sock=ours)),
            ThreadedChannel(*await asyncio.open_connection(sock=theirs)))


def test_a_threaded_channel_takes_frames_from_threads_whole_and_in_order() -> None:
    per_thread = 300

    def write(sender: ThreadedChannel, name: str) -> None:
        for index in range(per_thread):
            sender.write_now(ThreadedChannel.frame({"from": name, "n": index}, name.encode() * (index % 50)))

    async def main() -> None:
        receiver, sender = await threaded_pair()
        threads = [threading.Thread(target=write, args=(sender, f"t{i}")) for i in range(3)]
        for thread in threads:
            thread.start()
        for index in range(per_thread):  # and the event loop's own frames, meanwhile
            await sender.send({"from": "loop", "n": index}, b"l" * (index % 50))
        seen: dict[str, list[int]] = {}
        for _ in range(4 * per_thread):
            header, body = await asyncio.wait_for(receiver.receive(), 10)
            name = header["from"]
            assert body == (b"l" if name == "loop" else name.encode()) * (header["n"] % 50)
            seen.setdefault(name, []).append(header["n"])
        for thread in threads:
            thread.join()
        assert seen == {name: list(range(per_thread)) for name in ("loop", "t0", "t1", "t2")}
        sender.close()
        with pytest.raises(ChannelClosed):  # the receiver sees the end
            await receiver.receive()
        receiver.close()

    asyncio.run(main())


def test_a_threaded_channel_sends_megabytes_past_a_reader_that_lags() -> None:
    big = bytes(range(256)) * (24 << 12)  # 24 MiB: far over what the socket holds

    async def main() -> None:
        receiver, sender = await threaded_pair()
        sent = asyncio.ensure_future(sender.send({"op": "result"}, big))
        while sender._out.unsent_bytes == 0:  # once the loop wrote what the socket takes, the rest waits
            await asyncio.sleep(0)
        sender.write_now(ThreadedChannel.frame({"op": "after"}))  # behind what waits
        await asyncio.sleep(0.2)  # the reader lags: the rest waits for the flusher
        assert await asyncio.wait_for(receiver.receive(), 30) == ({"op": "result"}, big)
        assert await asyncio.wait_for(receiver.receive(), 10) == ({"op": "after"}, b"")
        await asyncio.wait_for(sent, 10)  # its back-pressure ended once the socket drained
        sender.close()
        receiver.close()

    asyncio.run(main())


def test_a_threaded_channel_whose_reader_is_gone_says_so() -> None:
    async def main() -> None:
        receiver, sender = await threaded_pair()
        receiver.close()
        await asyncio.sleep(0.05)
        with pytest.raises(ChannelClosed):
            for _ in range(100):  # the first writes may land in the socket before it reports the reset
                sender.write_now(ThreadedChannel.frame({"op": "chunk"}, b"x" * 1000))
        with pytest.raises(ChannelClosed):
            await sender.send({"op": "end"})
        sender.close()

    asyncio.run(main())
