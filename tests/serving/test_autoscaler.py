"""The scaling rule on a fake clock: up after the load stayed over the target, down one by one once fewer replicas
carry it, to zero after idling, never past the bounds; and the loop applying it to an endpoint."""

from __future__ import annotations

import pytest

from hubserve.serving.autoscaler import Autoscaler, Decision, Sample, ScalingRule
from hubserve.spec import AutoscalingSpec, EndpointSpec

SPEC = AutoscalingSpec(min_replicas=1, max_replicas=4, target=2, scale_up_after_s=10, scale_down_after_s=60,
                       scale_to_zero_after_s=300)


def busy(replicas: int, load: int, ready: int | None = None) -> Sample:
    return Sample(replicas=replicas, ready=replicas if ready is None else ready, load=load, idle_s=0.0)


def test_scales_up_only_after_the_load_stayed_over_the_target() -> None:
    rule = ScalingRule()
    assert rule.decide(SPEC, busy(1, load=5), now=0) is None
    assert rule.decide(SPEC, busy(1, load=5), now=9) is None
    decision = rule.decide(SPEC, busy(1, load=5), now=10)
    assert decision is not None and decision.replicas == 3  # ceil(5 / 2)
    assert "scaling up to 3" in decision.reason


def test_a_dip_under_the_target_restarts_the_wait() -> None:
    rule = ScalingRule()
    rule.decide(SPEC, busy(1, load=5), now=0)
    assert rule.decide(SPEC, busy(1, load=2), now=5) is None  # at the target: not over it
    assert rule.decide(SPEC, busy(1, load=5), now=11) is None
    decision = rule.decide(SPEC, busy(1, load=5), now=21)
    assert decision is not None and decision.replicas == 3


def test_never_above_max_nor_while_no_replica_is_ready() -> None:
    rule = ScalingRule()
    rule.decide(SPEC, busy(2, load=100), now=0)
    decision = rule.decide(SPEC, busy(2, load=100), now=10)
    assert decision is not None and decision.replicas == 4
    assert rule.decide(SPEC, busy(4, load=100), now=100) is None
    starting = ScalingRule()
    starting.decide(SPEC, busy(1, load=9, ready=0), now=0)
    assert starting.decide(SPEC, busy(1, load=9, ready=0), now=50) is None


def test_scales_down_one_at_a_time_never_below_min() -> None:
    rule = ScalingRule()
    assert rule.decide(SPEC, busy(3, load=1), now=0) is None
    decision = rule.decide(SPEC, busy(3, load=1), now=60)
    assert decision is not None and decision.replicas == 2
    assert rule.decide(SPEC, busy(2, load=1), now=61) is None  # the next one waits as long again
    decision = rule.decide(SPEC, busy(2, load=0), now=120)
    assert decision is not None and decision.replicas == 1
    assert rule.decide(SPEC, busy(1, load=0), now=1000) is None  # min_replicas 1: no scale to zero


def test_scales_to_zero_after_idling_when_min_is_zero() -> None:
    spec = SPEC.model_copy(update={"min_replicas": 0})
    rule = ScalingRule()
    idle = Sample(replicas=2, ready=2, load=0, idle_s=299)
    assert rule.decide(spec, idle, now=0) is None
    decision = rule.decide(spec, Sample(replicas=2, ready=2, load=0, idle_s=300), now=1)
    assert decision is not None and decision.replicas == 0
    assert decision.reason == "scaled to zero after 300 s without requests; the next request starts a replica"
    # A request in flight keeps it up, however long since one came.
    assert rule.decide(spec, Sample(replicas=1, ready=1, load=1, idle_s=1000), now=2) is None
    # At zero, nothing is decided until a request comes (on this server, it wakes the endpoint itself).
    assert rule.decide(spec, Sample(replicas=0, ready=0, load=0, idle_s=5000), now=3) is None


def test_load_seen_at_zero_starts_the_minimum_at_once() -> None:
    # Requests held on data-plane servers, which cannot start replicas: the owner's rule starts them.
    spec = SPEC.model_copy(update={"min_replicas": 0})
    decision = ScalingRule().decide(spec, Sample(replicas=0, ready=0, load=3, idle_s=0), now=0)
    assert decision is not None and decision.replicas == 1
    assert decision.reason == "3 request(s) waiting at zero replicas on other servers of the cluster: starting 1 " \
                              "replica(s)"


class FakeEndpoint:
    def __init__(self) -> None:
        self.autoscaling: AutoscalingSpec | None = SPEC.model_copy(update={"scale_up_after_s": 0})
        self.load = 0
        self.decisions: list[Decision] = []

    def sample(self) -> Sample | None:
        return busy(1, load=self.load)

    def scale_to(self, decision: Decision) -> None:
        self.decisions.append(decision)


def test_the_loop_applies_decisions_and_skips_endpoints_without_autoscaling() -> None:
    endpoint = FakeEndpoint()
    autoscaler = Autoscaler(endpoint, clock=lambda: 0.0)
    autoscaler.tick()
    assert endpoint.decisions == []
    endpoint.load = 4
    autoscaler.tick()
    assert [d.replicas for d in endpoint.decisions] == [2]
    endpoint.autoscaling = None
    autoscaler.tick()
    assert len(endpoint.decisions) == 1


@pytest.mark.parametrize(("replicas", "bounds", "initial"), [(1, (0, 3), 1), (5, (1, 3), 3), (1, (2, 4), 2)])
def test_the_initial_count_is_kept_within_the_bounds(replicas: int, bounds: tuple[int, int], initial: int) -> None:
    spec = EndpointSpec(name="e", model="m", replicas=replicas,
                        autoscaling=AutoscalingSpec(min_replicas=bounds[0], max_replicas=bounds[1]))
    assert spec.initial_replicas == initial
