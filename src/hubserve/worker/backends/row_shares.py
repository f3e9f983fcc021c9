"""A batch on ONNX Runtime as concurrent runs over shares of its rows, one on the calling thread and the others on the
session's own intra-op threads (`run_async`). A run on a pool thread parallelises its operators only over the pool's
other threads, which are busy with shares of their own (and the calling thread's run finds them busy too), so each
share keeps one core busy with whole operators. A single run over every core instead splits each operator across
threads that wait for one another at its end; on cores that the server, its clients and the replica's event loop
also use, a thread preempted mid-operator holds up the rest. A batch of one row still runs over every thread."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class _Share:
    """A share running on the session's pool: its outputs, or its error, once done."""

    def __init__(self, session: Any, outputs: Sequence[str], feed: Mapping[str, np.ndarray]) -> None:
        self.done = threading.Event()
        self._results: list[np.ndarray] = []
        self._error = ""
        session.run_async(list(outputs), dict(feed), self._finished, None)

    def _finished(self, results: list[np.ndarray], _user_data: Any, error: str) -> None:
        self._results, self._error = results, error
        self.done.set()

    def results(self) -> list[np.ndarray]:
        self.done.wait()
        if self._error:
            raise RuntimeError(self._error)
        return self._results


def run_in_shares(session: Any, outputs: Sequence[str], feed: Mapping[str, np.ndarray],
                  shares: int) -> list[np.ndarray]:
    """`session.run(outputs, feed)` (an `onnxruntime.InferenceSession` with at least `shares - 1` intra-op pool
    threads) as up to `shares` runs over shares of the batch's rows at once; every input and output has the batch as
    its first axis (token ids and masks of a batch padded as a whole, so every share is as wide as it)."""
    rows = min((len(value) for value in feed.values()), default=0)
    shares = min(shares, rows)
    if shares < 2:
        return list(session.run(list(outputs), dict(feed)))
    bounds = np.linspace(0, rows, shares + 1).round().astype(int).tolist()
    pieces = [{name: value[start:end] for name, value in feed.items()}
              for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    pending: list[_Share] = []
    try:
        for piece in pieces[1:]:
            pending.append(_Share(session, outputs, piece))
        first = session.run(list(outputs), pieces[0])
    except BaseException:
        for share in pending:  # their inputs stay alive until they are done
            share.done.wait()
        raise
    return [np.concatenate(parts) for parts in zip(first, *(share.results() for share in pending), strict=True)]
