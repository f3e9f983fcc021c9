"""Loading runs on a passing thread: its result or exception comes back, and the thread is gone afterwards (with
it, its OpenMP pool, which would otherwise slow the model thread's forwards)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hubserve.worker.torch_threads import on_passing_thread


def test_the_result_comes_back_and_the_thread_ends() -> None:
    seen: list[threading.Thread] = []

    def load(value: int) -> int:
        seen.append(threading.current_thread())
        return value * 2

    assert asyncio.run(on_passing_thread(load, 21)) == 42
    assert seen[0] is not threading.main_thread()
    seen[0].join(timeout=5)
    assert not seen[0].is_alive()


def test_an_exception_comes_back() -> None:
    def load() -> None:
        raise ValueError("no weights here")

    with pytest.raises(ValueError, match="no weights here"):
        asyncio.run(on_passing_thread(load))
