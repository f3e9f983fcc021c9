"""How long to wait before restarting a process that died: longer each time it dies soon after starting,
back to the first step once one has stayed up for a healthy while."""

from __future__ import annotations

from collections.abc import Sequence

# A process that stayed up this long was healthy: its death starts the backoff over.
HEALTHY_AFTER_S = 60.0


class RestartBackoff:
    def __init__(self, steps: Sequence[float], healthy_after_s: float = HEALTHY_AFTER_S) -> None:
        self._steps = tuple(steps)
        self._healthy_after_s = healthy_after_s
        self._streak = 0  # deaths in a row, each soon after its start

    def next_delay(self, lived_s: float) -> float:
        """The wait before restarting something that died after `lived_s` seconds up."""
        if lived_s >= self._healthy_after_s:
            self._streak = 0
        delay = self._steps[min(self._streak, len(self._steps) - 1)]
        self._streak += 1
        return delay
