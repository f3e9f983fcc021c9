"""What one server may run at once, all endpoints together: a replica cap and a memory budget against the machine,
so that an oversized create or scale-up is refused up front instead of swapping the machine or starving replicas."""

from __future__ import annotations

import os
from pathlib import Path

from hubserve.errors import ReplicaLimitReached

REPLICAS_PER_CORE = 16
MEMORY_PER_REPLICA = 256 * 2**20  # a worker with torch imported, most of it shared with the zygote
# The share of the machine's (or the cgroup's) memory that replicas may use when --max-memory is not set: the rest
# is for the server, the zygote, the page cache and whatever else runs here.
MEMORY_SHARE = 0.8
GIB = 2**30


def machine_replica_limit() -> int:
    """16 replicas per core this process may run on, and one per 256 MiB of memory, whichever is fewer.

    Idle replicas cost little CPU, so cores bound them loosely; memory is what a crowd of them exhausts.
    """
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(REPLICAS_PER_CORE * cores, memory // MEMORY_PER_REPLICA))


def ensure_room(limit: int, current: int, adding: int) -> None:
    """Refuse `adding` more replicas to the `current` ones when that would pass `limit`."""
    if adding > 0 and current + adding > limit:
        raise ReplicaLimitReached(replica_limit_message(limit, current, adding))


def replica_limit_message(limit: int, current: int, adding: int) -> str:
    return (f"this server runs at most {limit} replicas (max_replicas) and its endpoints have {current}; "
            f"{adding} more would pass that. Scale down or delete an endpoint, or raise HUBSERVE_MAX_REPLICAS.")


def _cgroup_memory_limit() -> int | None:
    """The memory limit of this process's cgroup (v2), if it has one."""
    try:
        value = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return None
    return int(value) if value.isdecimal() else None


def memory_budget(max_memory: int | None) -> int:
    """Bytes all replicas together may use: `max_memory` when set, else 80% of the machine's memory (or of this
    cgroup's limit, when that is lower)."""
    if max_memory is not None:
        return max_memory
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_memory_limit()
    return int(MEMORY_SHARE * (min(machine, limit) if limit else machine))


def process_memory(pid: int) -> int | None:
    """A process's proportional set size in bytes (None once it is gone). Replicas forked from the zygote share
    most of their pages with it and with each other: PSS counts each shared page once across them, where RSS would
    count it in every replica."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def memory_refusal(name: str, used: int, budget: int, estimate: int, adding: int = 1) -> str | None:
    """Why `adding` more replicas of endpoint `name` (about `estimate` bytes each) may not start beside replicas
    using `used` bytes of the `budget`; None when they fit."""
    if adding <= 0 or used + adding * estimate <= budget:
        return None
    more = "another replica" if adding == 1 else f"{adding} more replicas"
    return (f"scale-up refused: replicas use {used / GIB:.2f} GiB of the {budget / GIB:.2f} GiB memory budget "
            f"(--max-memory); {more} of {name} {'needs' if adding == 1 else 'need'} about "
            f"{adding * estimate / GIB:.2f} GiB")
