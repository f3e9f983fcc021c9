"""The load generator: an asyncio client (aiohttp, HTTP/1.1 keep-alive, one connection per concurrent request)
sending a fixed number of requests at a fixed concurrency, timing each request, and each token of a streamed answer.

Throughput is items / wall time from the first request sent to the last answer received; latencies are per request.

Why aiohttp and not httpx: the client shares the machine with the server it measures, so it must be cheap. On the
2-core development machine, against a server that answers at once, httpx.AsyncClient with a 32-connection pool used
4.6 ms of CPU per request at concurrency 32 and topped out at about 210 requests/s, below the figures being measured;
one httpx client per connection used 1.1 ms; aiohttp uses 0.2 ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from benchmarks.processes import Unavailable

T = TypeVar("T")
R = TypeVar("R")
JSON_HEADERS = {"content-type": "application/json"}


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop (uvloop when installed: less client overhead on a busy machine)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `samples`, linearly interpolated."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """Latency percentiles, in seconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        return cls(percentile(samples, 50), percentile(samples, 90), percentile(samples, 99),
                   statistics.fmean(samples), len(samples))

    def as_ms(self) -> dict[str, float]:
        """The percentiles in milliseconds, rounded, for the JSON results."""
        return {"p50_ms": round(self.p50 * 1000, 3), "p90_ms": round(self.p90 * 1000, 3),
                "p99_ms": round(self.p99 * 1000, 3), "mean_ms": round(self.mean * 1000, 3), "count": self.count}


def client(concurrency: int, timeout_s: float = 600.0) -> aiohttp.ClientSession:
    """An HTTP/1.1 client with one keep-alive connection per concurrent request."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


async def closed_loop(call: Callable[[T], Awaitable[R]], items: Sequence[T], concurrency: int) -> tuple[float, list[R]]:
    """`call` every item, `concurrency` at a time (each worker sends its next one when its last one is answered);
    the wall time from the first send to the last answer, and the results in item order."""
    results: list[Any] = [None] * len(items)
    next_index = iter(range(len(items)))

    async def worker() -> None:
        for index in next_index:
            results[index] = await call(items[index])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))
    return time.perf_counter() - started, results


async def post(http: aiohttp.ClientSession, url: str, body: bytes) -> float:
    """POST a JSON body and read the whole answer; the latency in seconds. Anything but 200 raises.

    A connection idle for longer than the server's keep-alive timeout (uvicorn's: 5 s, passed while the latency
    blocks of slow direct calls run) is closed by the server; a request racing that close fails before the server
    reads it, and is sent once more, timed anew, on a fresh connection."""
    try:
        return await _timed_post(http, url, body)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return await _timed_post(http, url, body)


async def _timed_post(http: aiohttp.ClientSession, url: str, body: bytes) -> float:
    started = time.perf_counter()
    async with http.post(url, data=body, headers=JSON_HEADERS) as response:
        answer = await response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise Unavailable(f"{url} answered {response.status}: {answer[:300].decode(errors='replace')}")
    return elapsed


@dataclass(frozen=True)
class RequestLoad:
    """What `request_load` measured: wall time, per-request latencies, and the CPU time this client used meanwhile
    (it shares the machine with the server it measures)."""

    wall_s: float
    latencies: list[float]
    client_cpu_s: float

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.wall_s


async def request_load(url: str, bodies: Sequence[bytes], concurrency: int,
                       warmup: Sequence[bytes] = ()) -> RequestLoad:
    """Send `warmup` (untimed, at the same concurrency), then `bodies`, `concurrency` at a time."""
    async with client(concurrency) as http:
        async def send(body: bytes) -> float:
            return await post(http, url, body)

        if warmup:
            await closed_loop(send, warmup, concurrency)
        cpu = time.process_time()
        wall_s, latencies = await closed_loop(send, bodies, concurrency)
    return RequestLoad(wall_s, latencies, time.process_time() - cpu)


async def alternating_latency(url: str, bodies: Sequence[bytes], direct: Mapping[str, Callable[[int], float]],
                              block: int, warmup: Sequence[bytes] = ()) -> tuple[list[float], dict[str, list[float]]]:
    """Latencies of `bodies` sent one at a time, and of each `direct[name](i)` (an in-process call for the same item,
    timing itself), alternating in blocks of `block`: all sample the same stretches of time on a machine whose speed
    drifts by a third within minutes. Returns (served, {name: direct calls' seconds})."""
    served: list[float] = []
    direct_calls: dict[str, list[float]] = {name: [] for name in direct}
    async with client(1) as http:
        for body in warmup:
            await post(http, url, body)
        for start in range(0, len(bodies), block):
            items = range(start, min(start + block, len(bodies)))
            for name, call in direct.items():
                direct_calls[name] += [call(index) for index in items]
            served += [await post(http, url, bodies[index]) for index in items]
    return served, direct_calls


async def sse_events(http: aiohttp.ClientSession, url: str, body: bytes,
                     headers: Mapping[str, str] = JSON_HEADERS) -> AsyncIterator[dict[str, Any]]:
    """The JSON `data:` events of a server-sent-events answer; `Unavailable` if the answer is not a stream."""
    async with http.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise Unavailable(f"{url} answered {response.status}: {(await response.text())[:300]}")
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            raise Unavailable(f"{url} answered {kind or 'no content type'}, not server-sent events "
                              f"(streaming not available): {(await response.text())[:200]}")
        async for raw in response.content:  # one line at a time
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if isinstance(event, dict) and "error" in event:
                raise Unavailable(f"{url} streamed an error: {event['error']}")
            yield event


@dataclass(frozen=True)
class StreamProtocol:
    """How to read tokens from one server's stream events."""

    name: str
    tokens_in: Callable[[dict[str, Any]], int]  # tokens this event carries
    total_in: Callable[[dict[str, Any]], int | None]  # the total the server reports in this event, if any
    # llama-server closes every streamed connection after its answer, so its streams ask for `Connection: close`:
    # the client then never sends a request down a connection the server is closing.
    headers: Mapping[str, str] = field(default_factory=lambda: JSON_HEADERS)


@dataclass(frozen=True)
class StreamTiming:
    """One streamed answer: when it was sent, when its first and last tokens arrived (perf_counter seconds)."""

    sent: float
    first_token: float
    last_token: float
    tokens: int

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent


async def timed_stream(http: aiohttp.ClientSession, url: str, body: bytes, protocol: StreamProtocol) -> StreamTiming:
    """Stream one answer, timing its tokens; the token count is the server's own total when it reports one."""
    sent = time.perf_counter()
    first = last = 0.0
    counted, reported = 0, None
    async for event in sse_events(http, url, body, protocol.headers):
        tokens = protocol.tokens_in(event)
        reported = protocol.total_in(event) or reported
        if tokens:
            last = time.perf_counter()
            first = first or last
            counted += tokens
    if not counted:
        raise Unavailable(f"{url} streamed no tokens")
    return StreamTiming(sent, first, last, reported or counted)


@dataclass(frozen=True)
class StreamLoad:
    """What `stream_load` measured over concurrent streams."""

    streams: list[StreamTiming]

    @property
    def tokens(self) -> int:
        return sum(stream.tokens for stream in self.streams)

    @property
    def wall_s(self) -> float:
        """From the first request sent to the last token received."""
        return max(s.last_token for s in self.streams) - min(s.sent for s in self.streams)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_s

    @property
    def ttft(self) -> Latency:
        return Latency.of([stream.ttft for stream in self.streams])


async def stream_load(url: str, bodies: Sequence[bytes], protocol: StreamProtocol, warmup: Sequence[bytes] = (),
                      concurrency: int | None = None) -> StreamLoad:
    """Send `warmup` then `bodies` as streams, `concurrency` at a time (default: all of each set at once); the
    measured set's timings."""
    async with client(max(len(bodies), len(warmup))) as http:
        async def send(body: bytes) -> StreamTiming:
            return await timed_stream(http, url, body, protocol)

        if warmup:
            await closed_loop(send, warmup, concurrency or len(warmup))
        _, streams = await closed_loop(send, bodies, concurrency or len(bodies))
    return StreamLoad(streams)
