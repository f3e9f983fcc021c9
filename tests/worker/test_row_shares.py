"""A batch on ONNX Runtime as concurrent runs over shares of its rows: a real session gives the one run's outputs, in
row order; the shares really run at once (one on the caller, the others through `run_async`); a batch of one row runs
whole; a share's failure fails the batch, and a failing run first waits for the shares it started."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

from hubserve.worker.backends.row_shares import run_in_shares

OUTPUTS = ["last_hidden_state"]


def encoder_session(threads: int) -> onnxruntime.InferenceSession:
    """A token-wise embedding and projection with dynamic batch and sequence axes, as an encoder's export has."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
         helper.make_node("Cast", ["attention_mask"], ["attention_mask_float"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["embedded", "attention_mask_float"], ["masked"]),
         helper.make_node("MatMul", ["masked", "weight"], ["hidden"]),
         helper.make_node("Tanh", ["hidden"], ["last_hidden_state"])],
        "encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence", 1])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 16])],
        [helper.make_tensor("table", TensorProto.FLOAT, (50, 8), rng.standard_normal(400).astype(np.float32)),
         helper.make_tensor("weight", TensorProto.FLOAT, (8, 16), rng.standard_normal(128).astype(np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def batch(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    mask = (rng.random((rows, 6, 1)) > 0.3).astype(np.int64)
    return {"input_ids": rng.integers(0, 50, size=(rows, 6), dtype=np.int64), "attention_mask": mask}


@pytest.mark.parametrize("rows", [2, 3, 7, 32])
@pytest.mark.parametrize("shares", [2, 3])
def test_the_outputs_are_one_runs_in_row_order(rows: int, shares: int) -> None:
    session = encoder_session(shares)
    feed = batch(rows)
    whole = session.run(OUTPUTS, feed)[0]
    split = run_in_shares(session, OUTPUTS, feed, shares)[0]
    assert split.shape == whole.shape == (rows, 6, 16)
    assert np.allclose(split, whole, atol=1e-6)


class FakeSession:
    """Records which rows each run got and on which thread; `run_async` runs on a thread of its own, as ONNX Runtime's
    pool does; `hold(feed)` is called inside every run."""

    def __init__(self, hold: Callable[[Mapping[str, np.ndarray]], None] = lambda feed: None) -> None:
        self.hold = hold
        self.runs: list[tuple[str, int, list[int]]] = []

    def run(self, outputs: list[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.runs.append(("run", threading.get_ident(), feed["ids"][:, 0].tolist()))
        self.hold(feed)
        return [feed["ids"] * 2]

    def run_async(self, outputs: list[str], feed: Mapping[str, np.ndarray], callback: Callable[..., None],
                  user_data: Any) -> None:
        def pool_thread() -> None:
            self.runs.append(("run_async", threading.get_ident(), feed["ids"][:, 0].tolist()))
            try:
                self.hold(feed)
                callback([feed["ids"] * 2], user_data, "")
            except Exception as exc:
                callback([], user_data, str(exc))

        threading.Thread(target=pool_thread).start()


def test_shares_run_at_once_the_first_on_the_calling_thread() -> None:
    together = threading.Barrier(3, timeout=10)  # broken (and the batch failing) unless the 3 shares run at once
    session = FakeSession(lambda feed: together.wait())
    ids = np.arange(8).reshape(8, 1)
    assert run_in_shares(session, ["twice"], {"ids": ids}, 3)[0].ravel().tolist() == list(range(0, 16, 2))
    assert ("run", threading.get_ident(), [0, 1, 2]) in session.runs
    assert sorted(rows for kind, _, rows in session.runs if kind == "run_async") == [[3, 4], [5, 6, 7]]
    assert len({thread for _, thread, _ in session.runs}) == 3


def test_one_row_runs_whole() -> None:
    session = FakeSession()
    run_in_shares(session, ["twice"], {"ids": np.zeros((1, 4), dtype=np.int64)}, 2)
    assert session.runs == [("run", threading.get_ident(), [0])]


def test_a_failing_share_fails_the_batch() -> None:
    def hold(feed: Mapping[str, np.ndarray]) -> None:
        if feed["ids"][0, 0] > 0:
            raise ValueError("a share failed")

    with pytest.raises(RuntimeError, match="a share failed"):
        run_in_shares(FakeSession(hold), ["twice"], {"ids": np.arange(4).reshape(4, 1)}, 2)


def test_a_failing_run_waits_for_the_shares_it_started() -> None:
    finished: list[float] = []

    def hold(feed: Mapping[str, np.ndarray]) -> None:
        if feed["ids"][0, 0] == 0:
            raise ValueError("the first share failed")
        time.sleep(0.2)
        finished.append(time.monotonic())

    with pytest.raises(ValueError, match="the first share failed"):
        run_in_shares(FakeSession(hold), ["twice"], {"ids": np.arange(4).reshape(4, 1)}, 2)
    assert finished  # the other share was done before the error came back
