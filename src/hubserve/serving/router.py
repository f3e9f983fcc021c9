"""Between the front doors and the replicas: the requests held while a replica starts, and a batch's records
split into the messages a replica takes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from hubserve.errors import HubserveError, PayloadTooLarge
from hubserve.invocation import RecordResult
from hubserve.serving.replica import Replica


class HeldRequests:
    """Requests waiting for a ready replica: each looks again on every change of the replicas, up to its hold."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """The replicas changed: every held request looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, pick: Callable[[], Replica | None], check: Callable[[], None], hold: float,
                   timed_out: Callable[[], HubserveError]) -> Replica:
        """The replica `pick` finds once there is one; `check` raises for what no replica will come for (and may
        start one); `timed_out` is the error once `hold` seconds have passed without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold
        self.count += 1
        try:
            while True:
                changed = self._changed
                replica = pick()
                if replica is not None:
                    return replica
                check()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise timed_out()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        finally:
            self.count -= 1


def split_records(records: Sequence[bytes], limit: int) -> tuple[list[RecordResult | None], list[list[int]]]:
    """The records in as few messages as `limit` bytes each allow (the indexes of each message's records), and a
    413 result in place for each record over the limit on its own."""
    results: list[RecordResult | None] = [None] * len(records)
    messages: list[list[int]] = []
    size = 0
    for index, record in enumerate(records):
        if len(record) > limit:
            results[index] = RecordResult(ok=False, status=PayloadTooLarge.status, message=(
                f"the record ({len(record)} bytes) is over this endpoint's limit of {limit} bytes"))
            continue
        if not messages or size + len(record) > limit:
            messages.append([])
            size = 0
        messages[-1].append(index)
        size += len(record)
    return results, messages
