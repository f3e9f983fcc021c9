"""Sampling configurations in rounds: one sample of each per round, the order rotated by one every round, so that a
figure and its baseline share the same stretches of a machine whose speed drifts by a third within minutes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks.processes import Unavailable
from benchmarks.report import Row, attempt, say

EXTRA_ROUNDS = 2  # rounds beyond the run's `repeats`: these ratios are read to a few percent
Sample = Callable[[bool], Any]  # takes one sample (untimed and short when warming up)


def alternate(configs: dict[str, Sample], rounds: int) -> dict[str, list[Any] | Unavailable]:
    """An untimed warm-up of every configuration, then `rounds` rounds of one sample each, the order rotated by one
    every round; a configuration that fails once is unavailable from then on."""
    results: dict[str, list[Any] | Unavailable] = {}
    for name, sample in configs.items():
        warm = attempt(name, partial(sample, True))
        results[name] = warm if isinstance(warm, Unavailable) else []
    names = list(configs)
    for index in range(rounds):
        say(f"round {index + 1} of {rounds}")
        for name in names[index % len(names):] + names[: index % len(names)]:
            samples = results[name]
            if isinstance(samples, list):
                outcome = attempt(name, partial(configs[name], False))
                results[name] = outcome if isinstance(outcome, Unavailable) else [*samples, outcome]
    return results


def by_round(samples: list[float], baseline: Row | None) -> dict[str, Any]:
    """Each round's sample over its baseline's of the same round: the drift cancels in these pairs (the row's ratio
    is of the medians, as in the other suites)."""
    paired = baseline.details.get("samples", []) if baseline else []
    return {"ratios_by_round": [round(a / b, 3) for a, b in zip(samples, paired, strict=False) if b]}
