"""The replica cap: derived from the machine, and refusing what would pass it."""

from __future__ import annotations

import os

import pytest

from hubserve.errors import ReplicaLimitReached
from hubserve.serving import capacity
from hubserve.serving.capacity import ensure_room, machine_replica_limit, memory_budget, memory_refusal, process_memory

GIB = 2**30


def machine(monkeypatch: pytest.MonkeyPatch, cores: int, memory: int) -> None:
    monkeypatch.setattr(capacity.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(capacity.os, "sysconf", {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": memory // 4096}.__getitem__)


def test_cores_bound_a_machine_with_plenty_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, cores=2, memory=64 * GIB)
    assert machine_replica_limit() == 32


def test_memory_bounds_a_machine_with_many_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, cores=64, memory=4 * GIB)
    assert machine_replica_limit() == 16


def test_a_tiny_machine_still_runs_one(monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, cores=1, memory=GIB // 8)
    assert machine_replica_limit() == 1


def test_room_is_refused_past_the_limit_naming_it_and_the_count() -> None:
    ensure_room(limit=4, current=3, adding=1)
    ensure_room(limit=4, current=6, adding=-1)  # scaling down an endpoint restored over the limit
    with pytest.raises(ReplicaLimitReached, match="at most 4 replicas .* have 3; 2 more"):
        ensure_room(limit=4, current=3, adding=2)


def test_the_memory_budget_is_the_setting_else_a_share_of_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory_budget(3 * GIB) == 3 * GIB
    machine(monkeypatch, cores=4, memory=10 * GIB)
    monkeypatch.setattr(capacity, "_cgroup_memory_limit", lambda: None)
    assert memory_budget(None) == 8 * GIB
    monkeypatch.setattr(capacity, "_cgroup_memory_limit", lambda: 5 * GIB)
    assert memory_budget(None) == 4 * GIB


def test_process_memory_is_the_proportional_share() -> None:
    own = process_memory(os.getpid())
    assert own is not None and 0 < own < 64 * GIB
    assert process_memory(2**22 + 1) is None  # no such process


def test_memory_refusal_names_the_budget_and_the_estimate() -> None:
    assert memory_refusal("e", used=GIB, budget=2 * GIB, estimate=GIB) is None
    refusal = memory_refusal("e", used=GIB, budget=2 * GIB, estimate=GIB // 2, adding=3)
    assert refusal == ("scale-up refused: replicas use 1.00 GiB of the 2.00 GiB memory budget (--max-memory); "
                       "3 more replicas of e need about 1.50 GiB")
    assert "another replica of e needs about 1.50 GiB" in str(memory_refusal("e", GIB, GIB, 3 * GIB // 2))
