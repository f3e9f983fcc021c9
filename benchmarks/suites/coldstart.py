"""Cold start: with hubserve running, the time from asking for a new endpoint (`POST /api/v1/endpoints`) to the
first successful answer of its new replica, for the embedding model (torch and onnx backends) and the generation
model (torch and llamacpp backends).

One untimed deploy of each model and backend comes first, so the GGUF conversion cache, the ONNX export cache and the
OS file cache are warm: what is timed is starting a replica, not converting, exporting or reading a model for the
first time. That endpoint stays up meanwhile
(idle), since hubserve removes a converted model with the last endpoint that uses it.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from benchmarks.context import Context
from benchmarks.hubserve_api import HubserveAdmin, engine
from benchmarks.processes import Unavailable
from benchmarks.report import Row, Target, guarded, row, say

SUITE = "coldstart"
METRIC = ("new replica: ask -> first answer", "s")
POLL_S = 0.01  # between invocations while the replica starts
STATUS_EVERY_S = 1.0  # how often to check whether the endpoint failed meanwhile
TIMEOUT_S = 300.0
RETRY_STATUSES = (404, 503)  # not routed yet / no ready replica yet


@dataclass(frozen=True)
class Case:
    """One model to cold-start: how to deploy it, what to ask it, and its target."""

    kind: str  # "embedding" or "generation": names the endpoints
    label: str  # the model, for the table
    model: str
    task: str
    request: dict[str, Any]
    target_s: float
    backend: str  # pinned in the spec, and checked on the status of every timed endpoint
    spec: dict[str, Any]
    note: str = "caches warm (one untimed deploy first)"

    @property
    def config(self) -> str:
        return f"{self.label} ({self.task}, {self.backend} backend)"


def time_to_first_answer(admin: HubserveAdmin, name: str, case: Case) -> float:
    """Seconds from the create request to the first 200 answer of the new endpoint."""
    url, body = admin.endpoint_url(name), json.dumps(case.request).encode()
    with httpx.Client(timeout=TIMEOUT_S) as http:
        started = time.perf_counter()
        admin.create(name, case.model, case.task, **case.spec, **engine(case.backend))
        checked = started
        while (now := time.perf_counter()) - started < TIMEOUT_S:
            response = http.post(url, content=body, headers={"content-type": "application/json"})
            if response.status_code == 200:
                return time.perf_counter() - started
            if response.status_code not in RETRY_STATUSES:
                raise Unavailable(f"{name} answered {response.status_code}: {response.text[:300]}")
            if now - checked > STATUS_EVERY_S:
                checked = now
                status = admin.status(name)
                if status["state"] == "failed":
                    raise Unavailable(f"endpoint {name} failed: {status.get('message')}")
            time.sleep(POLL_S)
    raise Unavailable(f"{name} did not answer within {TIMEOUT_S:.0f} s")


def cold_start_rows(context: Context, case: Case) -> list[Row]:
    """One untimed deploy, then `coldstart_repeats` timed ones (each deleted after); the median. The untimed one
    stays up until the timed ones are done: hubserve removes a converted model with the last endpoint using it."""
    admin = context.hubserve
    samples = []
    warm = f"cold-{case.kind}-{case.backend}-0"
    try:
        for attempt in range(context.counts.coldstart_repeats + 1):
            name = f"cold-{case.kind}-{case.backend}-{attempt}"
            try:
                samples.append(time_to_first_answer(admin, name, case))
                admin.wait_running(name, backend=case.backend)  # running already: checks what serves
            finally:
                if attempt:
                    admin.delete(name)
            say(f"cold start {case.config}: {samples[-1]:.2f} s" + ("" if attempt else " (untimed warm-up deploy)"))
    finally:
        admin.delete(warm)
    first, timed = samples[0], samples[1:]
    return [row(SUITE, case.config, METRIC[0], statistics.median(timed), METRIC[1],
                target=Target("value_max", case.target_s), note=case.note,
                details={"samples_s": timed, "untimed_first_deploy_s": first, "model": case.model})]


def run(context: Context) -> list[Row]:
    """All rows of the cold-start suite."""
    models = context.models
    embedding = (models.embedding_label, str(models.embedding), "sentence-embeddings", {"inputs": "A cold start."})
    generation = (models.generation_label, str(models.generation_source), "text-generation",
                  {"inputs": "Hello", "parameters": {"max_new_tokens": 1}})
    cases = [
        Case("embedding", *embedding, 1.0, "torch", {}),
        Case("embedding", *embedding, 0.5, "onnx", {},
             note="export cached (the untimed first deploy exports), caches warm"),
        Case("generation", *generation, 2.0, "torch", {"dtype": models.generation_dtype}),
        Case("generation", *generation, 2.0, "llamacpp", {}),
    ]
    rows = []
    for case in cases:
        rows += guarded(SUITE, case.config, [METRIC], partial(cold_start_rows, context, case))
    return rows
