"""Restart backoff: longer while deaths follow starts closely, back to the first step after a healthy run."""

from __future__ import annotations

from hubserve.serving.backoff import RestartBackoff


def test_the_delay_grows_while_deaths_come_soon_after_starts() -> None:
    backoff = RestartBackoff((0.0, 1.0, 5.0), healthy_after_s=60)
    assert [backoff.next_delay(lived_s=2) for _ in range(5)] == [0.0, 1.0, 5.0, 5.0, 5.0]


def test_a_healthy_run_starts_the_backoff_over() -> None:
    backoff = RestartBackoff((0.0, 1.0, 5.0), healthy_after_s=60)
    for _ in range(3):
        backoff.next_delay(lived_s=2)
    assert backoff.next_delay(lived_s=61) == 0.0
    assert backoff.next_delay(lived_s=2) == 1.0
