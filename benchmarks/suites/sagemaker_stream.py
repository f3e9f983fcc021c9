"""SageMaker response streaming at speed: InvokeEndpointWithResponseStream through boto3 against `POST
/endpoints/{name}` with `"stream": true` through httpx, 16 concurrent streams each on one SmolLM2 endpoint, sampled
in alternating rounds (as the clients suite does); and where in each stream its first token arrives.

Both clients are what users run, both synchronous: each stream has its own thread, as a boto3 program streaming 16
answers at once does. The boto3 streams are read as the AWS guides read them: PayloadPart bytes cut into lines, each
`data:` line one TGI event.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks.context import Context
from benchmarks.load import StreamLoad, StreamTiming
from benchmarks.processes import Unavailable
from benchmarks.report import Row, Target, attempt, row, say, unavailable
from benchmarks.rounds import EXTRA_ROUNDS, Sample, alternate, by_round
from benchmarks.suites.generation import TGI, WARMUP_TOKENS, _greedy
from benchmarks.workload import NEW_TOKENS, PROMPTS, chat

SUITE = "sagemaker_stream"
ENDPOINT = "sagemaker-stream-smollm2"
STREAMS = len(PROMPTS)
THROUGHPUT = "aggregate throughput"
TOKENS = "tokens/s"
FIRST_TOKEN_SHARE = "TTFT / time to last token, p50"
POST_STREAM = f'POST /endpoints/{{name}} "stream": true (httpx), {STREAMS} streams'
RESPONSE_STREAM = f"InvokeEndpointWithResponseStream (boto3), {STREAMS} streams"
JSON_HEADERS = {"content-type": "application/json"}

# One stream: its request body in, its timing out (in the thread that reads it).
Reader = Callable[[bytes], StreamTiming]


def body(prompt: str, tokens: int) -> bytes:
    """The same request on both routes: greedy, exactly `tokens` tokens (`stream` is what POST needs to stream)."""
    return json.dumps({"inputs": chat(prompt), "parameters": _greedy(tokens), "stream": True}).encode()


def timed(sent: float, events: Iterable[dict[str, Any]]) -> StreamTiming:
    """A stream's TGI events, timed as they arrive; the token count is the server's own total."""
    first = last = 0.0
    counted, reported = 0, None
    for event in events:
        if "error" in event:
            raise Unavailable(f"the stream ended with an error: {event['error']}")
        tokens = TGI.tokens_in(event)
        reported = TGI.total_in(event) or reported
        if tokens:
            last = time.perf_counter()
            first = first or last
            counted += tokens
    if not counted:
        raise Unavailable("the stream had no tokens")
    return StreamTiming(sent, first, last, reported or counted)


def data_events(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON of each server-sent `data:` line."""
    for line in lines:
        if line.startswith(b"data:"):
            yield json.loads(line[5:])


def lines_of(parts: Iterable[bytes]) -> Iterator[bytes]:
    """The AWS guides' LineIterator: lines out of byte parts, however the parts cut them."""
    pending = b""
    for part in parts:
        pending += part
        *lines, pending = pending.split(b"\n")
        yield from lines


def post_reader(http: httpx.Client, url: str) -> Reader:
    """`POST /endpoints/{name}` with `"stream": true`: TGI's server-sent events over plain HTTP."""
    def read(request: bytes) -> StreamTiming:
        sent = time.perf_counter()
        with http.stream("POST", url, content=request, headers=JSON_HEADERS) as response:
            if response.status_code != 200:
                raise Unavailable(f"{url} answered {response.status_code}: {response.read()[:300]!r}")
            return timed(sent, data_events(line.encode() for line in response.iter_lines()))

    return read


def response_stream_reader(url: str) -> Reader:
    """InvokeEndpointWithResponseStream through one boto3 client (thread-safe, a keep-alive connection per
    stream)."""
    import boto3
    from botocore.config import Config

    runtime = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                           aws_secret_access_key="bench",
                           config=Config(max_pool_connections=STREAMS, read_timeout=600, retries={"max_attempts": 1}))

    def read(request: bytes) -> StreamTiming:
        sent = time.perf_counter()
        response = runtime.invoke_endpoint_with_response_stream(EndpointName=ENDPOINT,
                                                                ContentType="application/json", Body=request)
        if response["ContentType"] != "text/event-stream":
            raise Unavailable(f"the stream is {response['ContentType']}, not TGI's server-sent events")
        parts = (event["PayloadPart"]["Bytes"] for event in response["Body"])
        return timed(sent, data_events(lines_of(parts)))

    return read


def sampler(read: Reader) -> Sample:
    """16 streams at once, a thread each: NEW_TOKENS tokens (WARMUP_TOKENS when warming up)."""
    def sample(warmup: bool) -> StreamLoad:
        tokens = WARMUP_TOKENS if warmup else NEW_TOKENS
        with ThreadPoolExecutor(STREAMS) as pool:
            return StreamLoad(list(pool.map(read, [body(prompt, tokens) for prompt in PROMPTS])))

    return sample


def first_token_share(loads: list[StreamLoad]) -> float:
    """In percent, the median over every stream of its time to first token over its time to last token: near 0 when
    tokens stream as they are made, 100 when the answer comes whole."""
    return statistics.median(100 * s.ttft / (s.last_token - s.sent) for load in loads for s in load.streams)


def stream_rows(config: str, loads: list[StreamLoad] | Unavailable, baseline: Row | None,
                target: Target | None = None, **details: Any) -> list[Row]:
    """Median aggregate tokens/s of one route (against `baseline`'s), its TTFT and first-token share."""
    metrics = [(THROUGHPUT, TOKENS), ("TTFT p50", "ms"), (FIRST_TOKEN_SHARE, "%")]
    if isinstance(loads, Unavailable):
        return unavailable(SUITE, config, metrics, str(loads))
    counts = sorted({s.tokens for load in loads for s in load.streams})
    note = "" if counts == [NEW_TOKENS] else (f"some streams ended before {NEW_TOKENS} tokens ({counts[0]} the "
                                              "shortest): tokens/s counts the tokens sent")
    samples = [round(load.tokens_per_second, 2) for load in loads]
    ttft = statistics.median(load.ttft.p50 for load in loads) * 1000
    ends = [s.last_token - s.sent for load in loads for s in load.streams]
    say(f"{config}: {statistics.median(samples):.0f} tok/s, TTFT p50 {ttft:.0f} ms, "
        f"last token p50 {statistics.median(ends) * 1000:.0f} ms")
    return [
        row(SUITE, config, THROUGHPUT, statistics.median(samples), TOKENS, baseline=baseline, target=target,
            note=note, details={"samples": samples, **by_round(samples, baseline),
                                "ttft_p50_ms": [round(load.ttft.p50 * 1000, 1) for load in loads],
                                "tokens_per_stream": counts, **details}),
        row(SUITE, config, "TTFT p50", ttft, "ms",
            details={"time_to_last_token_p50_ms": round(statistics.median(ends) * 1000, 1)}),
        row(SUITE, config, FIRST_TOKEN_SHARE, first_token_share(loads), "%", target=Target("value_max", 50),
            note="the first token arrives before generation ends"),
    ]


def run(context: Context) -> list[Row]:
    """All rows of the sagemaker_stream suite: both routes on one endpoint, alternating rounds."""
    admin, models = context.hubserve, context.models
    deployed = attempt(ENDPOINT, lambda: admin.deploy(ENDPOINT, str(models.generation_source), "text-generation",
                                                      dtype=models.generation_dtype))
    if isinstance(deployed, Unavailable):
        return [*stream_rows(POST_STREAM, deployed, None), *stream_rows(RESPONSE_STREAM, deployed, None)]
    # Like boto3's, a keep-alive connection per stream, shared by the threads.
    http = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS))
    try:
        configs = {POST_STREAM: sampler(post_reader(http, deployed)),
                   RESPONSE_STREAM: sampler(response_stream_reader(admin.url))}
        results = alternate(configs, context.counts.repeats + EXTRA_ROUNDS)
        stats = admin.stats(ENDPOINT)
    finally:
        http.close()
        admin.delete(ENDPOINT)
    post = stream_rows(POST_STREAM, results[POST_STREAM], None, **stats)
    return [*post, *stream_rows(RESPONSE_STREAM, results[RESPONSE_STREAM], post[0], Target("ratio_min", 0.9))]

