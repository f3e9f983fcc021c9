"""ONNX Runtime sessions over cached exports (float32, or int8 with `engine.precision int8`; from the traced graph
where the architecture has one, else from the plain export): tuned for the replica's cores, and checked at every load
against the outputs torch gave for the probe inputs when the model was exported (so a load needs no torch model),
within the stated tolerance of the session's precision."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from hubserve.worker.backends.accuracy import FLOAT32, INT8, Tolerance, check_reference
from hubserve.worker.backends.onnx_export import MODEL_FILE, on_float32_export
from hubserve.worker.backends.quantize import quantized
from hubserve.worker.backends.row_shares import run_in_shares
from hubserve.worker.backends.session import BackendUnavailable, Export

try:  # optional: without it, `auto` serves encoders on torch, saying why
    import onnxruntime
except ImportError:  # pragma: no cover - installed with hubserve
    onnxruntime = None


class OnnxSession:
    """An `onnxruntime.InferenceSession` for one export: intra-op threads as many as torch's (the replica's share of
    the cores), one inter-op thread, sequential execution, every graph optimisation, no spinning. A batch runs as that
    many concurrent runs over shares of its rows (see row_shares); a single row over all the threads. `dtype` is what
    the export's weights are: "float32", or "int8" (quantised); `note`, why it runs the plain export where a traced
    graph was tried (None: nothing to say)."""

    backend = "onnx"

    def __init__(self, folder: Path, threads: int, dtype: str = "float32") -> None:
        self.dtype = dtype
        self.threads = threads
        self.note: str | None = None
        if onnxruntime is None:
            raise BackendUnavailable("onnxruntime is not installed")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Its threads sleep between runs rather than spin: the replica's cores are shared with its own event loop
        # and tokenizer, the server and other replicas, and spinning threads took them (MiniLM at concurrency 32
        # through a server on 2 cores: 68 sentences/s spinning, 97 not; batch 1 offline: 19 ms, 10 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(folder / MODEL_FILE), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_names = tuple(value.name for value in self.session.get_inputs())
        self.outputs = tuple(value.name for value in self.session.get_outputs())

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.asarray(inputs[name], dtype=np.int64) for name in self.input_names}
        return dict(zip(self.outputs, run_in_shares(self.session, self.outputs, feed, self.threads), strict=True))


def load_onnx(export: Export) -> OnnxSession:
    """A session over the model's float32 export (see `on_float32_export`; exported now unless cached), or over its
    int8 quantisation where that precision is asked for, checked against torch's outputs within its precision's
    tolerance."""
    if onnxruntime is None:
        raise BackendUnavailable("onnxruntime is not installed")
    if export.options.precision == "int8":
        return on_float32_export(export, lambda folder: checked_session(quantized(export, folder), "int8", INT8))
    return on_float32_export(export, lambda folder: checked_session(folder, "float32", FLOAT32))


def checked_session(folder: Path, dtype: str, tolerance: Tolerance) -> OnnxSession:
    """A session over the export in `folder`, its outputs checked against torch's within `tolerance`."""
    session = OnnxSession(folder, torch.get_num_threads(), dtype)
    check_reference(session, folder, tolerance)
    return session
