"""Autoscaling: the rule that turns an endpoint's load over time into a replica count, and the loop that samples the
endpoint and applies what the rule decides."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hubserve.spec import AutoscalingSpec

# How often the load is sampled: often enough that a 0.5 s `scale_up_after_s` is honoured, rarely enough to cost
# nothing beside the requests.
TICK_S = 0.25


@dataclass(frozen=True)
class Sample:
    """An endpoint's load at one moment."""

    replicas: int  # the replicas it runs or is starting (its current target)
    ready: int
    load: int  # requests in flight on ready replicas, plus the requests held for a replica
    idle_s: float  # since the last request came or went


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str  # for the endpoint's log and, at zero, its status


class ScalingRule:
    """Decides from successive samples: up when the load per ready replica stays over the target for
    `scale_up_after_s` (to as many replicas as the load asks, within max), down by one each `scale_down_after_s`
    that fewer replicas would carry the load (never below max(min, 1)), to zero (with `min_replicas` 0) after
    `scale_to_zero_after_s` without a request, and up from zero at once when load is seen there."""

    def __init__(self) -> None:
        self._high_since: float | None = None
        self._low_since: float | None = None

    def decide(self, spec: AutoscalingSpec, sample: Sample, now: float) -> Decision | None:
        current = sample.replicas
        if current == 0:
            # A request here wakes the endpoint itself; load seen at zero waits on another server (data-plane
            # servers on Ray), which cannot start replicas.
            self._high_since = self._low_since = None
            if not sample.load:
                return None
            count = max(spec.min_replicas, 1)
            return Decision(count, f"{sample.load} request(s) waiting at zero replicas on other servers of the "
                                   f"cluster: starting {count} replica(s)")
        if spec.min_replicas == 0 and sample.load == 0 and sample.idle_s >= spec.scale_to_zero_after_s:
            self._high_since = self._low_since = None
            return Decision(0, f"scaled to zero after {spec.scale_to_zero_after_s:g} s without requests; "
                               "the next request starts a replica")
        needed = math.ceil(sample.load / spec.target)
        if sample.ready and needed > current and current < spec.max_replicas:
            self._low_since = None
            self._high_since = self._high_since if self._high_since is not None else now
            if now - self._high_since < spec.scale_up_after_s:
                return None
            self._high_since = None
            count = min(needed, spec.max_replicas)
            return Decision(count, f"{sample.load} request(s) on {sample.ready} ready replica(s) stayed over the "
                                   f"target of {spec.target:g} per replica for {spec.scale_up_after_s:g} s: "
                                   f"scaling up to {count} replica(s)")
        self._high_since = None
        if needed < current and current > max(spec.min_replicas, 1):
            self._low_since = self._low_since if self._low_since is not None else now
            if now - self._low_since < spec.scale_down_after_s:
                return None
            self._low_since = now  # the next replica goes after as long again
            return Decision(current - 1, f"{sample.load} request(s) in flight fit on fewer replicas for "
                                         f"{spec.scale_down_after_s:g} s: scaling down to {current - 1} replica(s)")
        self._low_since = None
        return None


class Scalable(Protocol):
    """What the autoscaler needs of an endpoint."""

    @property
    def autoscaling(self) -> AutoscalingSpec | None: ...

    def sample(self) -> Sample | None:
        """The load now; None while the endpoint is changing (updating, failed, a scaling under way)."""

    def scale_to(self, decision: Decision) -> None: ...


class Autoscaler:
    """One endpoint's sampling loop on the event loop."""

    def __init__(self, endpoint: Scalable, clock: Callable[[], float] = time.monotonic) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self._rule = ScalingRule()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> None:
        spec = self._endpoint.autoscaling
        sample = self._endpoint.sample()
        if spec is None or sample is None:
            return
        decision = self._rule.decide(spec, sample, self._clock())
        if decision is not None:
            self._endpoint.scale_to(decision)
