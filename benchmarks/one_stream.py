"""Where one generation stream's time goes, hubserve's llamacpp backend beside llama-server (issue 10):
`python -m benchmarks.one_stream [--gguf bf16|q4_1] [--rounds N] [--openai]`.

One prompt at a time, 64 greedy tokens, in rounds (the order rotated, `rounds.alternate`): llama-server as the
llamacpp suite runs it, and answering whole; hubserve streaming TGI events (the replica writes them to the client's
connection itself), a second hubserve server streaming them through its API process (`HUBSERVE_STREAM_HANDOFF=false`),
and hubserve answering the same request whole. The whole answers skip every per-token hop after the generation
thread: what streaming costs each server is the difference. For each configuration: tokens/s as the
suite counts them (from the request sent to the last token), TTFT, the mean time between tokens, and the CPU each
process spent per token (on-CPU time from /proc's schedstat; the replicas' event-loop threads apart from their
generation and llama.cpp threads). With `--openai` the streams are OpenAI chat completions instead, on both servers
(`/v1/chat/completions`, greedy, at most 64 tokens: the answer may end sooner, the same way on both). Every request
opens a connection of its own (the suite keeps hubserve's alive
across a sample's prompts): the breakdown is what this measures; the llamacpp suite's ratio is the figure of record.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.gguf_bf16 import bf16_gguf
from benchmarks.hubserve_api import HubserveAdmin, engine
from benchmarks.load import StreamProtocol, client, post, run_async, timed_stream
from benchmarks.models import CACHE, real_models
from benchmarks.peers.llama_server import cached_build, llama_server
from benchmarks.rounds import alternate
from benchmarks.suites.generation import OPENAI, TGI
from benchmarks.suites.llamacpp import LLAMA_SERVER_STREAM, hubserve_body, llama_server_body, prompt_ids
from benchmarks.workload import NEW_TOKENS, PROMPTS, chat

CONFIGS = ("llama-server", "hubserve, streamed", "hubserve, answered whole", "llama-server, answered whole",
           "hubserve, relayed")


@dataclass
class Sample:
    """One request: when its tokens came (TTFT and the gap between tokens only when streamed), and the CPU
    milliseconds each process group spent meanwhile."""

    tokens_per_second: float
    ttft_s: float | None = None
    gap_s: float | None = None
    cpu_ms: dict[str, float] = field(default_factory=dict)


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Each thread's time on a CPU so far (nanoseconds), by thread id; empty if the process is gone."""
    times = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            times[int(tid)] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except OSError:
            continue
    return times


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parent = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return found


class CpuMeter:
    """CPU per process group: the API processes (both servers': the idle one spends next to none), the replicas'
    event loops (their main threads), the rest of the replicas (the generation thread and llama.cpp's),
    llama-server."""

    def __init__(self, apis: tuple[int, ...], peer: int, rest_s: float = 0.0) -> None:
        self.apis, self.peer = apis, peer
        self.rest_s = rest_s

    def read(self) -> dict[str, int]:
        groups = {"api": sum(sum(thread_cpu_ns(api).values()) for api in self.apis),
                  "llama-server": sum(thread_cpu_ns(self.peer).values()), "replica event loops": 0,
                  "replica compute": 0}
        for pid in (pid for api in self.apis for pid in descendants(api)):
            for tid, ns in thread_cpu_ns(pid).items():
                groups["replica event loops" if tid == pid else "replica compute"] += ns
        return groups

    def measure(self, call: Callable[[], Sample]) -> Sample:
        time.sleep(self.rest_s)  # the last sample's server settles first: its idle OpenMP threads spin a while
        before = self.read()
        sample = call()
        after = self.read()
        sample.cpu_ms = {group: (after[group] - before[group]) / 1e6 for group in after}
        return sample


@dataclass(frozen=True)
class Streams:
    """How the streamed configurations ask: each server's path, body and stream protocol."""

    hubserve_path: str
    hubserve_body: Callable[[str], dict[str, Any]]
    peer_path: str
    peer_body: Callable[[str], dict[str, Any]]
    hubserve: StreamProtocol
    peer: StreamProtocol


def tgi_streams(ids: dict[str, list[int]]) -> Streams:
    """TGI events from hubserve, llama-server's own /completion stream on the same token ids (the llamacpp suite's)."""
    peer_body = llama_server_body(ids)
    return Streams("", lambda text: hubserve_body(text, NEW_TOKENS), "/completion",
                   lambda text: peer_body(text, NEW_TOKENS), TGI, LLAMA_SERVER_STREAM)


def openai_streams() -> Streams:
    def body(text: str) -> dict[str, Any]:
        return {"model": "one-stream", "messages": chat(text), "max_tokens": NEW_TOKENS, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}}

    closing = StreamProtocol(OPENAI.name, OPENAI.tokens_in, OPENAI.total_in, LLAMA_SERVER_STREAM.headers)
    return Streams("/v1/chat/completions", body, "/v1/chat/completions", body, OPENAI, closing)


def samplers(url: str, relayed_url: str, peer_url: str, ids: dict[str, list[int]], meter: CpuMeter,
             asked: Streams) -> dict[str, Callable[[bool], Sample]]:
    turn = {config: iter(range(1 << 30)) for config in CONFIGS}
    peer_body = llama_server_body(ids)

    def prompt(config: str) -> str:
        return PROMPTS[next(turn[config]) % len(PROMPTS)]

    def streamed(target: str, body: dict[str, Any], protocol: Any) -> Sample:
        async def one() -> Sample:
            async with client(1) as http:
                timing = await timed_stream(http, target, json.dumps(body).encode(), protocol)
            return Sample(timing.tokens / (timing.last_token - timing.sent), timing.ttft,
                          (timing.last_token - timing.first_token) / max(timing.tokens - 1, 1))

        return meter.measure(lambda: run_async(one()))

    def whole(target: str, body: dict[str, Any]) -> Sample:
        async def one() -> Sample:
            async with client(1) as http:
                return Sample(NEW_TOKENS / await post(http, target, json.dumps(body).encode()))

        return meter.measure(lambda: run_async(one()))

    def whole_body(text: str) -> dict[str, Any]:
        return {key: value for key, value in hubserve_body(text, NEW_TOKENS).items() if key != "stream"}

    def peer_whole_body(text: str) -> dict[str, Any]:
        return {**peer_body(text, NEW_TOKENS), "stream": False}

    peer, streaming, answered, peer_answered, relayed = CONFIGS
    return {
        peer: lambda _warmup: streamed(peer_url + asked.peer_path, asked.peer_body(prompt(peer)), asked.peer),
        streaming: lambda _warmup: streamed(url + asked.hubserve_path, asked.hubserve_body(prompt(streaming)),
                                            asked.hubserve),
        answered: lambda _warmup: whole(url, whole_body(prompt(answered))),
        peer_answered: lambda _warmup: whole(peer_url + "/completion", peer_whole_body(prompt(peer_answered))),
        relayed: lambda _warmup: streamed(relayed_url + asked.hubserve_path, asked.hubserve_body(prompt(relayed)),
                                          asked.hubserve),
    }


def report(results: dict[str, Any]) -> None:
    baseline = results["llama-server"]
    print(f"\n{'':28} {'tokens/s':>9} {'ratio':>6} {'TTFT ms':>8} {'gap ms':>7}   CPU ms per token")
    for config in CONFIGS:
        samples = results[config]
        if not isinstance(samples, list):
            print(f"{config:28} unavailable: {samples}")
            continue
        ratio = statistics.median(a.tokens_per_second / b.tokens_per_second for a, b in zip(samples, baseline,
                                                                                              strict=False))
        ttfts = [s.ttft_s for s in samples if s.ttft_s is not None]
        gaps = [s.gap_s for s in samples if s.gap_s is not None]
        cpu = {group: statistics.median(s.cpu_ms[group] for s in samples) / NEW_TOKENS for group in samples[0].cpu_ms}
        print(f"{config:28} {statistics.median(s.tokens_per_second for s in samples):9.2f} {ratio:6.3f} "
              f"{1000 * statistics.median(ttfts) if ttfts else float('nan'):8.1f} "
              f"{1000 * statistics.median(gaps) if gaps else float('nan'):7.3f}   "
              + ", ".join(f"{group} {ms:.3f}" for group, ms in cpu.items() if ms >= 0.005))
    print("ratio: each round's tokens/s over llama-server's in the same round, the median of the rounds")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.one_stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", choices=("bf16", "q4_1"), default="bf16")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--openai", action="store_true", help="stream OpenAI chat completions on both servers")
    parser.add_argument("--rest", type=float, default=0.3, metavar="SECONDS",
                        help="pause before each sample, so that neither server's spinning threads run into the "
                             "other's turn (default 0.3)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for hubserve's server and replicas (not llama-server's)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    models = real_models(CACHE)
    gguf = bf16_gguf(models.generation_source, models.cache) if args.gguf == "bf16" else models.generation_source
    build = cached_build(CACHE)
    if build is None:
        raise SystemExit("no llama-server build cached: run `python -m benchmarks.peers.llama_server` once")
    ids = prompt_ids(models.generation_folder)
    work = Path(tempfile.mkdtemp(prefix="hubserve-one-stream-"))
    token = "hs_admin_bench-" + secrets.token_hex(8)
    relayed_env = {**env, "HUBSERVE_STREAM_HANDOFF": "false"}
    with peers.hubserve(work / "home", token, work / "logs", env=env) as server, \
            peers.hubserve(work / "home-relayed", token, work / "logs-relayed", env=relayed_env) as relaying, \
            llama_server(build.binary, gguf, work / "logs") as peer:
        admins = [HubserveAdmin(server.url, token), HubserveAdmin(relaying.url, token)]
        try:
            for admin in admins:
                admin.create("one-stream", str(gguf), "text-generation", **engine("llamacpp"))
            for admin in admins:
                admin.wait_running("one-stream", backend="llamacpp")
            assert server.process is not None and relaying.process is not None and peer.process is not None
            meter = CpuMeter((server.process.pid, relaying.process.pid), peer.process.pid, args.rest)
            urls = [admin.endpoint_url("one-stream") for admin in admins]
            asked = openai_streams() if args.openai else tgi_streams(ids)
            results = alternate(samplers(*urls, peer.url, ids, meter, asked), args.rounds)
        finally:
            for admin in admins:
                admin.delete("one-stream")
                admin.close()
    streams = "OpenAI chat" if args.openai else "TGI"
    print(f"{gguf.name}, {streams} streams, {args.rounds} rounds, load average now {os.getloadavg()[0]:.2f}")
    report(results)


if __name__ == "__main__":
    main()
