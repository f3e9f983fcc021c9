"""Where torch runs in a replica: on one long-lived thread, with loading on a thread that ends.

torch's CPU ops run on OpenMP (libgomp), which keeps a pool of worker threads for each thread that calls a parallel
op, and keeps the thread-count setting per calling thread too. Once two threads of a process have run torch, their
two pools contend for the same cores: MiniLM's single-sentence encode went from 12.4 ms to 17-20 ms on the 2-core
development machine, for calls from either thread. A pool is freed when its thread ends, so a replica loads its model
on a passing thread and then runs every forward on one thread (the model thread, or the generation loop's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def adopt_torch_threads() -> None:
    """Apply torch's thread count (set once per replica) to the calling thread: OpenMP keeps it per thread."""
    import torch

    torch.set_num_threads(torch.get_num_threads())


def on_new_thread(function: Callable[..., T], *args: Any, name: str) -> concurrent.futures.Future[T]:
    """`function(*args)` run on a new thread that ends when it returns (taking any OpenMP pool it made with it): its
    result, or what it raised, once it is done."""
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            outcome.set_result(function(*args))
        except BaseException as exc:  # handed to whoever waits for it
            outcome.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome


async def on_passing_thread(function: Callable[..., T], *args: Any, name: str = "load") -> T:
    """Run `function(*args)` on a new thread that ends when it returns, taking its OpenMP pool with it."""
    return await asyncio.wrap_future(on_new_thread(function, *args, name=name))
