"""Scale to zero: for the embedding and the generation model, the time from the first request at zero replicas to its
answer (the request is held while a replica starts) against the cold start of a new fixed endpoint (its create to
its first answer), in alternating rounds. The issue's target: the wake is at most the cold start plus 0.3 s.

Both endpoints have the same spec (`auto` backend) but for the autoscaling of the one that scales to zero:
`{min_replicas: 0, max_replicas: 1, scale_to_zero_after_s: 1}`. That endpoint stays for the whole case, so the
caches it made on its first deploy (a GGUF conversion, an ONNX export) stay warm for both; the untimed warm-up
round makes them. Before every sample the idle endpoint is back at zero, so that no replica stops meanwhile.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from benchmarks.context import QUICK, Context
from benchmarks.hubserve_api import HubserveAdmin
from benchmarks.processes import Unavailable
from benchmarks.report import Row, Target, guarded, row, say
from benchmarks.rounds import EXTRA_ROUNDS, Sample, alternate
from benchmarks.suites.coldstart import TIMEOUT_S, time_to_first_answer
from benchmarks.suites.coldstart import Case as ColdCase

SUITE = "scale_to_zero"
COLD = ("cold start: create -> first answer", "s")
WAKE = ("wake from zero: first request -> answer", "s")
MAX_EXTRA_S = 0.3  # the target: wake <= cold start + 0.3 s
ZERO_TIMEOUT_S = 120.0  # for the idle endpoint to scale to zero (1 s idle, then the autoscaler's next look)
FIRST_DEPLOY_TIMEOUT_S = 600.0  # its first replica may convert or export the model first
NOTE = "caches warm (an untimed round first), alternating rounds"
AUTOSCALING = {"min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": 1.0, "scale_up_hold_s": TIMEOUT_S}


@dataclass(frozen=True)
class Case:
    """One model: what to deploy, what to ask it."""

    kind: str  # "embedding" or "generation": names the endpoints
    label: str
    model: str
    task: str
    request: dict[str, Any]

    @property
    def config(self) -> str:
        return f"{self.label} ({self.task})"

    def cold(self) -> ColdCase:
        """The cold start suite's case for the same model: its timing of a create to the first answer."""
        return ColdCase(self.kind, self.label, self.model, self.task, self.request, 0.0, "auto", {})


def wait_at_zero(admin: HubserveAdmin, name: str, timeout_s: float = ZERO_TIMEOUT_S) -> None:
    """Until the endpoint has scaled to zero; `Unavailable` if it does not (a hubserve without scale to zero)."""
    deadline = time.monotonic() + timeout_s
    while (status := admin.status(name))["state"] != "scaledToZero" or status["ready_replicas"]:
        if status["state"] == "failed":
            raise Unavailable(f"endpoint {name} failed: {status.get('message')}")
        if time.monotonic() > deadline:
            raise Unavailable(f"endpoint {name} is still {status['state']} with {status['ready_replicas']} ready "
                              f"replicas after {timeout_s:.0f} s: it does not scale to zero")
        time.sleep(0.1)


def wake(admin: HubserveAdmin, name: str, case: Case, http: httpx.Client, backends: set[str | None]) -> float:
    """Seconds from the first request at zero replicas to its answer (the server holds it meanwhile)."""
    wait_at_zero(admin, name)
    started = time.perf_counter()
    response = http.post(admin.endpoint_url(name), content=json.dumps(case.request).encode(),
                         headers={"content-type": "application/json"})
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise Unavailable(f"{name} answered its first request at zero {response.status_code}: {response.text[:300]}")
    backends.add(admin.status(name).get("backend"))
    return seconds


def cold_start(admin: HubserveAdmin, idle: str, case: Case, name: str, backends: set[str | None]) -> float:
    """Seconds from creating the new fixed endpoint `name` to its first answer; it is deleted after."""
    wait_at_zero(admin, idle)
    try:
        seconds = time_to_first_answer(admin, name, case.cold())
        backends.add(admin.status(name).get("backend"))
        return seconds
    finally:
        admin.delete(name)


def case_rows(context: Context, case: Case, rounds: int) -> list[Row]:
    """Cold starts and wakes of one model in alternating rounds (after an untimed one of each); the medians, the
    wake's against the cold start's."""
    admin = context.hubserve
    idle = f"s2z-zero-{case.kind}"
    admin.create(idle, case.model, case.task, autoscaling=AUTOSCALING)
    numbers = itertools.count()
    backends: dict[str, set[str | None]] = {COLD[0]: set(), WAKE[0]: set()}
    try:
        # Its first replica idles from the start: it goes as soon as it is ready, too soon to be seen running.
        wait_at_zero(admin, idle, FIRST_DEPLOY_TIMEOUT_S)
        with httpx.Client(timeout=TIMEOUT_S) as http:
            configs: dict[str, Sample] = {
                COLD[0]: lambda _warm: cold_start(admin, idle, case, f"s2z-cold-{case.kind}-{next(numbers)}",
                                                  backends[COLD[0]]),
                WAKE[0]: lambda _warm: wake(admin, idle, case, http, backends[WAKE[0]])}
            results = alternate(configs, rounds)
    finally:
        admin.delete(idle)
    cold, woken = results[COLD[0]], results[WAKE[0]]
    if isinstance(cold, Unavailable):
        raise cold
    if isinstance(woken, Unavailable):
        raise woken
    if backends[COLD[0]] != backends[WAKE[0]]:  # the two would not measure the same thing
        raise Unavailable(f"the cold starts ran on {backends[COLD[0]]}, the wakes on {backends[WAKE[0]]}")
    say(f"{case.config}: cold start p50 {statistics.median(cold):.2f} s, wake p50 {statistics.median(woken):.2f} s")
    details = {"model": case.model, "backend": ", ".join(sorted(str(b) for b in backends[COLD[0]]))}
    cold_row = row(SUITE, case.config, COLD[0], statistics.median(cold), COLD[1], note=NOTE,
                   details={**details, "samples_s": _rounded(cold)})
    wake_row = row(SUITE, case.config, WAKE[0], statistics.median(woken), WAKE[1], baseline=cold_row,
                   compare="delta", target=Target("delta_max", MAX_EXTRA_S), note=NOTE,
                   details={**details, "samples_s": _rounded(woken), "autoscaling": AUTOSCALING,
                            "differences_by_round_s": [round(w - c, 3) for w, c in zip(woken, cold, strict=False)]})
    return [cold_row, wake_row]


def _rounded(samples: list[float]) -> list[float]:
    return [round(sample, 3) for sample in samples]


def run(context: Context) -> list[Row]:
    """All rows of the scale-to-zero suite."""
    models = context.models
    cases = [
        Case("embedding", models.embedding_label, str(models.embedding), "feature-extraction",
             {"inputs": "A wake from zero."}),
        Case("generation", models.generation_label, str(models.generation_source), "text-generation",
             {"inputs": "Hello", "parameters": {"max_new_tokens": 1}}),
    ]
    rounds = context.counts.coldstart_repeats + (0 if context.counts == QUICK else EXTRA_ROUNDS)
    rows = []
    for case in cases:
        rows += guarded(SUITE, case.config, [COLD, WAKE], partial(case_rows, context, case, rounds))
    return rows
