"""How many replicas one server runs at once, all endpoints together: a cap against the machine, so
an oversized create is refused up front instead of swapping the machine or starving every replica."""

from __future__ import annotations

import os

from hubserve.errors import ReplicaLimitReached

REPLICAS_PER_CORE = 16
MEMORY_PER_REPLICA = 256 * 2**20  # a worker with torch imported, most of it shared with the zygote


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
        raise ReplicaLimitReached(
            f"this server runs at most {limit} replicas (max_replicas) and its endpoints have {current}; "
            f"{adding} more would pass that. Scale down or delete an endpoint, or raise HUBSERVE_MAX_REPLICAS."
        )
