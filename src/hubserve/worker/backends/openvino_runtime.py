"""OpenVINO sessions over the cached ONNX export: compiled for the CPU with the replica's threads, in float32 or (with
`engine.precision bf16`) bfloat16 where the CPU computes it, and checked at every load against torch's probe outputs
within the precision's stated tolerance."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hubserve.worker.backends.accuracy import BF16, FLOAT32, check_reference
from hubserve.worker.backends.onnx_export import MODEL_FILE, on_float32_export
from hubserve.worker.backends.session import BackendUnavailable, Export

# OpenVINO's names for the precisions asked for, and ours (a session's `dtype`).
DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def openvino_core() -> Any:
    """An `openvino.Core`. Imported when first asked for: `auto` never runs OpenVINO, so replicas need not load it."""
    try:
        import openvino
    except ImportError as exc:  # pragma: no cover - installed with hubserve
        raise BackendUnavailable("openvino is not installed") from exc
    return openvino.Core()


def cpu_capabilities(core: Any) -> list[str]:
    """What OpenVINO's CPU plugin can compute in on this machine ("FP32", "BF16", "INT8", ...)."""
    return sorted(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def computed_dtype(compiled: Any) -> str:
    """What a compiled model computes in: "bfloat16" where any of its kernels runs in bf16 (OpenVINO keeps some in
    f32 by design), else "float32". Read from the kernels themselves, not from the hint asked for."""
    kernels = (op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
               if "runtimePrecision" in op.get_rt_info())
    return "bfloat16" if "bf16" in set(kernels) else "float32"


class OpenVinoSession:
    """A model compiled by OpenVINO for the CPU: as many inference threads as torch's (the replica's share of the
    cores), one stream, the latency hint, threads not pinned to cores (the replica shares them with its event loop,
    the server and other replicas). `precision` is the inference precision asked for: "f32" or "bf16"; `dtype` what
    it computes in as compiled (a CPU without bf16 computes in f32 whatever was asked), and `note` says so."""

    backend = "openvino"

    def __init__(self, folder: Path, threads: int, precision: str) -> None:
        core = openvino_core()
        # The precision is always named: on CPUs with AMX OpenVINO's default is bf16, not the model's float32.
        self.compiled = core.compile_model(core.read_model(str(folder / MODEL_FILE)), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": precision,
        })
        self.dtype = computed_dtype(self.compiled)
        self.note: str | None = None
        if DTYPES[precision] != self.dtype:
            self.note = (f"engine.precision bf16: OpenVINO computes in {self.dtype} on this CPU (its CPU plugin can "
                         f"compute in {', '.join(cpu_capabilities(core))})")
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        # Every name of each output: in a traced graph an output tensor can have more than the one it was exported as.
        self.outputs = tuple(tuple(sorted(port.get_names())) for port in self.compiled.outputs)
        self._requests = threading.local()  # an infer request serves one run at a time: one per calling thread

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request: Any = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        feed = {name: np.asarray(inputs[name], dtype=np.int64) for name in self.input_names}
        results = request.infer(feed)
        return {name: np.asarray(results[port], dtype=np.float32)
                for names, port in zip(self.outputs, self.compiled.outputs, strict=True) for name in names}


def load_openvino(export: Export) -> OpenVinoSession:
    """A session over the model's float32 ONNX export (see `on_float32_export`; exported now unless cached), in
    bf16 where that precision is asked for, checked against torch's outputs within the tolerance of what it computes
    in."""
    precision = "bf16" if export.options.precision == "bf16" else "f32"

    def open_checked(folder: Path) -> OpenVinoSession:
        session = OpenVinoSession(folder, torch.get_num_threads(), precision)
        check_reference(session, folder, BF16 if session.dtype == "bfloat16" else FLOAT32)
        return session

    return on_float32_export(export, open_checked)
