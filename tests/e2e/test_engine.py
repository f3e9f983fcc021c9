"""The engine through the real server: concurrent requests form batches (the engine's own counters say
so) and every caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import Server


def test_concurrent_requests_are_batched(server: Server, deploy: Callable[..., str],
                                         tiny_model: Callable[[str], Path]) -> None:
    url = deploy("batched", str(tiny_model("sentence-embeddings")), task="sentence-embeddings",
                 engine={"max_batch_size": 8, "max_batch_delay_ms": 20})
    texts = [f"sentence number {i} is a good day" for i in range(32)]
    alone = [httpx.post(url, json={"inputs": t}).json() for t in texts[:4]]

    async def all_at_once() -> list[dict[str, object]]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(*(client.post(url, json={"inputs": t}) for t in texts))
        assert {r.status_code for r in responses} == {200}
        return [r.json() for r in responses]

    together = asyncio.run(all_at_once())
    for single, batched in zip(alone, together[:4], strict=True):
        assert max(abs(a - b) for a, b in zip(single[0], batched[0], strict=True)) < 1e-4  # TEI's [[f]]
    stats = httpx.get(f"{server.url}/api/v1/endpoints/batched/stats",
                      headers={"authorization": f"Bearer {server.token}"}).json()
    batching = stats["replicas"][0]["batching"]
    assert batching["requests"] == 36
    assert 1 < batching["largest_batch"] <= 8
    assert batching["batches"] < 36


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_cpu_replicas_fork_from_the_zygote(server: Server, deploy: Callable[..., str], tmp_path: Path) -> None:
    from custom_models import write_echo_model

    model = str(write_echo_model(tmp_path / "echo"))
    deploy("forked", model)
    deploy("spawned", model, env={"HF_HUB_CACHE": str(tmp_path / "cache")})  # read at import time
    forked = server.client().get_endpoint("forked")["status"]["replicas"][0]["pid"]
    spawned = server.client().get_endpoint("spawned")["status"]["replicas"][0]["pid"]
    assert "hubserve.worker.zygote" in cmdline(parent_of(forked))
    assert parent_of(parent_of(forked)) == server.process.pid
    assert parent_of(spawned) == server.process.pid
    assert httpx.post(f"{server.url}/endpoints/forked", json={"inputs": "pid"}).json()["pid"] == forked
