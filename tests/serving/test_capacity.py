"""The replica cap: derived from the machine, and refusing what would pass it."""

from __future__ import annotations

import pytest

from hubserve.errors import ReplicaLimitReached
from hubserve.serving import capacity
from hubserve.serving.capacity import ensure_room, machine_replica_limit

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
