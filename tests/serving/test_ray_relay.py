"""The relay in a replica's Ray actor, over real channels and hubs: the worker's channel carried to the owner's hub
and to a data-plane server's hub, each server with its own request ids, cancels mapped, `stop` obeyed only from the
owner, the worker's state replayed to a server that attaches late, and every link closed when the worker goes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from hubserve.channel import Channel, ChannelClosed, FrameLimits, Preamble
from hubserve.serving.hub import WorkerHub
from hubserve.serving.ray_relay import Relay

OWNER_SECRET = "owner-secret"
DATA_PLANE_SECRET = "data-plane-secret"
WORKER_PID = 4242


@dataclass
class Server:
    """A server's side of a replica: the channel its hub got for it."""

    secret: str
    attached: list[tuple[Channel, int]] = field(default_factory=list)

    def attach(self, channel: Channel, pid: int) -> None:
        self.attached.append((channel, pid))

    async def channel(self) -> Channel:
        while not self.attached:
            await asyncio.sleep(0.01)
        return self.attached[0][0]


@dataclass
class Setup:
    relay: Relay
    worker: Channel
    owner: Server
    data_plane: Server
    data_plane_hub: WorkerHub


async def receive(channel: Channel) -> tuple[dict[str, Any], bytes]:
    return await asyncio.wait_for(channel.receive(), 5)


async def closed(channel: Channel) -> bool:
    try:
        await receive(channel)
    except ChannelClosed:
        return True
    return False


def run_with_relay(test: Callable[[Setup], Awaitable[None]]) -> None:
    """Run `test` with a worker connected to a relay whose owner is a real hub, and a second hub (a data-plane
    server's) that the relay has not dialled yet."""
    async def main() -> None:
        hubs = [WorkerHub(), WorkerHub()]
        for hub in hubs:
            await hub.start()
        owner, data_plane = Server(OWNER_SECRET), Server(DATA_PLANE_SECRET)
        hubs[0].expect("e-1", owner)
        hubs[1].expect("e-1", data_plane)
        relay = Relay("e-1", (hubs[0].host, hubs[0].port, OWNER_SECRET))
        host, port = await relay.listen()
        worker = await Channel.connect(host, port, Preamble("e-1", relay.secret.encode(), WORKER_PID), FrameLimits())
        try:
            await test(Setup(relay, worker, owner, data_plane, hubs[1]))
        finally:
            worker.close()
            await relay.close()
            for server in (owner, data_plane):
                for channel, _ in server.attached:
                    channel.close()
            for hub in hubs:
                await hub.close()

    asyncio.run(main())


async def attach_data_plane(setup: Setup) -> Channel:
    hub = setup.data_plane_hub
    await setup.relay.add_server(hub.host, hub.port, DATA_PLANE_SECRET)
    return await setup.data_plane.channel()


def test_the_worker_reaches_its_owner_with_its_pid_and_its_state() -> None:
    async def test(setup: Setup) -> None:
        owner = await setup.owner.channel()
        assert setup.owner.attached[0][1] == WORKER_PID
        await setup.worker.send({"op": "state", "state": "ready", "task": "echo"})
        assert (await receive(owner))[0] == {"op": "state", "state": "ready", "task": "echo"}

    run_with_relay(test)


def test_a_server_that_attaches_late_learns_the_state_and_each_server_gets_its_own_answers() -> None:
    async def test(setup: Setup) -> None:
        owner = await setup.owner.channel()
        await setup.worker.send({"op": "state", "state": "ready", "task": "echo"})
        await receive(owner)
        data_plane = await attach_data_plane(setup)
        assert (await receive(data_plane))[0]["state"] == "ready"
        body = b"\x00raw bytes\xff" * 1000
        await owner.send({"op": "invoke", "id": 1}, b"from the owner")
        await data_plane.send({"op": "invoke", "id": 1}, body)
        first, first_body = await receive(setup.worker)
        second, second_body = await receive(setup.worker)
        assert first["id"] != second["id"]
        assert (first_body, second_body) == (b"from the owner", body)
        await setup.worker.send({"op": "result", "id": second["id"], "content_type": "x"}, second_body)
        await setup.worker.send({"op": "result", "id": first["id"], "content_type": "x"}, b"to the owner")
        assert await receive(data_plane) == ({"op": "result", "id": 1, "content_type": "x"}, body)
        assert await receive(owner) == ({"op": "result", "id": 1, "content_type": "x"}, b"to the owner")

    run_with_relay(test)


def test_streams_and_cancels_are_mapped_per_server() -> None:
    async def test(setup: Setup) -> None:
        await setup.owner.channel()
        data_plane = await attach_data_plane(setup)
        await data_plane.send({"op": "invoke", "id": 7, "stream": True})
        invoke, _ = await receive(setup.worker)
        for part in (b"one", b"two"):
            await setup.worker.send({"op": "chunk", "id": invoke["id"]}, part)
            assert await receive(data_plane) == ({"op": "chunk", "id": 7}, part)
        await data_plane.send({"op": "cancel", "id": 7})
        assert (await receive(setup.worker))[0] == {"op": "cancel", "id": invoke["id"]}
        # What the worker had sent before it saw the cancel goes nowhere; the next answer is the next one's.
        await setup.worker.send({"op": "chunk", "id": invoke["id"]}, b"late")
        await data_plane.send({"op": "stats", "id": 8})
        stats, _ = await receive(setup.worker)
        await setup.worker.send({"op": "stats", "id": stats["id"], "stats": {"batches": 3}})
        assert (await receive(data_plane))[0] == {"op": "stats", "id": 8, "stats": {"batches": 3}}

    run_with_relay(test)


def test_only_the_owner_stops_the_worker() -> None:
    async def test(setup: Setup) -> None:
        owner = await setup.owner.channel()
        data_plane = await attach_data_plane(setup)
        await data_plane.send({"op": "stop"})
        await data_plane.send({"op": "stats", "id": 1})
        assert (await receive(setup.worker))[0]["op"] == "stats"  # the stop did not pass
        await owner.send({"op": "stop"})
        assert (await receive(setup.worker))[0] == {"op": "stop"}

    run_with_relay(test)


def test_a_data_plane_server_that_leaves_has_its_requests_cancelled_in_the_worker() -> None:
    async def test(setup: Setup) -> None:
        owner = await setup.owner.channel()
        data_plane = await attach_data_plane(setup)
        await data_plane.send({"op": "invoke", "id": 1})
        invoke, _ = await receive(setup.worker)
        data_plane.close()
        assert (await receive(setup.worker))[0] == {"op": "cancel", "id": invoke["id"]}
        await owner.send({"op": "invoke", "id": 1})  # the owner goes on
        assert (await receive(setup.worker))[0]["op"] == "invoke"

    run_with_relay(test)


def test_the_worker_going_closes_every_link_and_refuses_new_ones() -> None:
    async def test(setup: Setup) -> None:
        owner = await setup.owner.channel()
        data_plane = await attach_data_plane(setup)
        setup.worker.close()
        assert await closed(owner)
        assert await closed(data_plane)
        with pytest.raises(ConnectionError, match="worker is gone|not connected"):
            await attach_data_plane(setup)

    run_with_relay(test)


def test_the_owner_going_ends_the_worker() -> None:
    async def test(setup: Setup) -> None:
        owner = await setup.owner.channel()
        owner.close()
        assert await closed(setup.worker)

    run_with_relay(test)
