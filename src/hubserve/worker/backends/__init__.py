"""What runs an encoder's forward pass: torch, or a runtime over the model's export (ONNX Runtime, OpenVINO), in
float32 or an opt-in reduced precision. Every one is a `RuntimeSession`: named numpy inputs in, named numpy outputs
out. `open_runtime` chooses once, at load, and says why when torch serves a model another backend was meant for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hubserve.worker.backends.onnx_runtime import load_onnx
from hubserve.worker.backends.openvino_runtime import load_openvino
from hubserve.worker.backends.session import BackendUnavailable, Export, RuntimeSession, failure_reason

if TYPE_CHECKING:
    from hubserve.worker.tasks.base import LoadOptions, TaskAdapter

__all__ = ["BackendUnavailable", "Export", "RuntimeSession", "check_backend", "open_runtime", "wanted_runtime"]

log = logging.getLogger("hubserve.worker")


@dataclass(frozen=True)
class Runtime:
    """A runtime an encoder may run on: its name in messages, and how it loads a session over a model's export."""

    name: str
    load: Callable[[Export], RuntimeSession]


# The runtimes by `engine.backend` name; `auto` picks ONNX Runtime on the CPU (OpenVINO only for bf16).
RUNTIMES = {"onnx": Runtime("ONNX Runtime", load_onnx), "openvino": Runtime("OpenVINO", load_openvino)}
AUTO_RUNTIME = "onnx"
# The opt-in precisions by `engine.precision` name, and the runtime each runs on: int8 is ONNX Runtime's dynamic
# quantisation, bf16 OpenVINO's inference precision. Each is checked at load against torch's float32 outputs.
PRECISIONS = {"int8": "onnx", "bf16": "openvino"}
# The tasks a runtime serves.
ENCODER_TASKS = frozenset({
    "feature-extraction", "sentence-embeddings", "sentence-similarity", "sentence-ranking", "text-classification",
    "token-classification", "fill-mask", "question-answering",
})


def wanted_runtime(options: LoadOptions) -> str | None:
    """The runtime an encoder is to run on (a key of RUNTIMES), or None for torch; a BackendUnavailable for one that
    cannot be asked for (not with this backend, device or dtype)."""
    named = options.backend if options.backend in RUNTIMES else None
    if options.precision in PRECISIONS:
        runtime = PRECISIONS[options.precision]
        if options.backend not in ("auto", runtime):
            raise BackendUnavailable(f"engine.precision {options.precision} runs on {RUNTIMES[runtime].name} "
                                     f"(engine.backend {runtime}, or auto); this endpoint's backend is "
                                     f"{options.backend}")
        named = runtime
    fp32 = options.dtype in ("auto", "float32") and not options.gguf_file
    if named is not None:
        asked = f"engine.precision {options.precision}" if options.precision != "auto" else f"engine.backend {named}"
        if options.device != "cpu":
            raise BackendUnavailable(f"{asked} runs on the CPU; this endpoint's device is {options.device}")
        if not fp32:
            raise BackendUnavailable(f"{asked} runs the float32 model; leave dtype auto (or float32)")
        return named
    # `auto`: a runtime where its export can be cached (a replica's loader always gives the folder).
    auto = options.backend == "auto" and options.device == "cpu" and fp32 and options.exports_dir is not None
    return AUTO_RUNTIME if auto else None


def open_runtime(adapter: TaskAdapter, export: Export, unsupported: str | None = None) -> RuntimeSession | None:
    """The runtime session an encoder adapter runs on, or None when torch serves it. Sets the adapter's `backend`
    and, when torch serves a model `auto` meant for a runtime, its `backend_note` (logged too). `unsupported` says
    why this model cannot run on a runtime at all. With the runtime (or a precision) asked for by name, any failure
    is the load's. A session that cannot give all that was asked (bf16 on a CPU without it) says so in the note."""
    options = adapter.options
    runtime = wanted_runtime(options)
    if runtime is None:
        return None
    try:
        if unsupported is not None:
            raise BackendUnavailable(unsupported)
        session = RUNTIMES[runtime].load(export)
    except Exception as exc:  # an export or a runtime can fail in any way: torch serves, or the load fails
        reason = failure_reason(exc)
        if options.precision != "auto":
            raise BackendUnavailable(f"engine.precision {options.precision} cannot serve this model: "
                                     f"{reason}") from exc
        if options.backend == runtime:
            raise BackendUnavailable(f"engine.backend {runtime} cannot serve this model: {reason}") from exc
        adapter.backend_note = f"{RUNTIMES[runtime].name} could not serve this model, so torch does: {reason}"
        log.warning("%s", adapter.backend_note)
        return None
    adapter.backend, adapter.backend_dtype = session.backend, session.dtype
    adapter.backend_note = getattr(session, "note", None)
    if adapter.backend_note:
        log.warning("%s", adapter.backend_note)
    log.info("%s runs on %s (%s)", adapter.task, session.backend, session.dtype)
    return session


def check_backend(adapter: TaskAdapter) -> None:
    """A BackendUnavailable when the endpoint named a backend (or a precision, or batch invariance) that does not run
    its model: a task with no such engine, say."""
    options = adapter.options
    if options.backend not in ("auto", "torch") and adapter.backend != options.backend:
        where = f"the encoder tasks ({', '.join(sorted(ENCODER_TASKS))})" if options.backend in RUNTIMES else \
            "other tasks"
        raise BackendUnavailable(f"engine.backend {options.backend} serves {where}; this endpoint's task "
                                 f"({adapter.task}) runs on {adapter.backend}")
    if options.precision in PRECISIONS and adapter.backend != PRECISIONS[options.precision]:
        runtime = RUNTIMES[PRECISIONS[options.precision]].name
        raise BackendUnavailable(f"engine.precision {options.precision} applies to the encoder tasks on {runtime}; "
                                 f"this endpoint's task ({adapter.task}) runs on {adapter.backend}")
    if options.batch_invariant and adapter.backend != "llamacpp":
        raise BackendUnavailable(f"engine.batch_invariant applies to text generation on llama.cpp (a GGUF file on the "
                                 f"CPU); this endpoint's task ({adapter.task}) runs on {adapter.backend}")
