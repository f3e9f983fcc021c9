"""Exporting an encoder to ONNX once, cached by content. `{exports_dir}/{key}/` holds `model.onnx` (its weights in
`model.onnx.data`, or inside it), `reference.npz` (probe inputs and torch's outputs for them: a runtime is checked
against them at every load, with no torch model loaded) and `export.json`. The key hashes the model files' contents,
what is exported, and the versions that shape the export; a new model, head or version is a new export.

Two graphs: the plain export (torch's dynamo exporter), and for the BERT family a traced one, which ONNX Runtime runs
faster (see `export_traced`)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from hubserve.sources.cache import build_once, sha256_file
from hubserve.worker.backends.session import BackendUnavailable, Export, failure_reason

log = logging.getLogger("hubserve.worker")

# Bump when what an export holds changes (the wrapper, the opset, the probes, the fusion): older exports are then
# not reused.
EXPORT_VERSION = 2
OPSET = 18
TRACED_OPSET = 17
# The architectures (`config.model_type`) exported as a traced graph: each checked equal to torch's within 1e-6 on
# random models, padded on the right and on the left, at shapes other than the trace's.
TRACED_MODEL_TYPES = frozenset({"bert", "camembert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta"})
MODEL_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"
META_FILE = "export.json"
# Weights transformers may find in a folder: only those it loads (safetensors where there are any) are hashed.
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".h5", ".msgpack", ".ot", ".pt", ".pth", ".onnx", ".gguf"})
VERSIONED = ("torch", "transformers", "onnx", "onnxscript")
# The exporter's libraries note each rewrite at INFO: hundreds of lines in the endpoint's log per export.
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")
# Probes are short: they are run at every load (where they also warm the session up).
PROBE_TOKENS = 24
PROBE_TEXTS = (
    "hello",
    "Paris is the capital of France.",
    "A longer probe, so that padding and the attention mask matter: the quick brown fox jumps over the lazy dog.",
)


def exported(export: Export, traced: bool = False) -> Path:
    """The folder of the model's ONNX export (the plain graph, or the traced one), exported now unless it is cached.
    A traced graph that could not be made is cached too, as the reason: a BackendUnavailable at every load, at once."""
    if export.options.exports_dir is None:
        raise BackendUnavailable("no exports folder to keep the ONNX export in")
    exports_dir = Path(export.options.exports_dir)
    # The float32 export, whatever the precision asked for: a reduced precision is made from it (or at run time).
    key = export_key(export, "onnx", "auto", exports_dir, graph="traced" if traced else "plain")
    folder = cached_export(exports_dir, key, lambda building: export_onnx(export, building, traced))
    failed = json.loads((folder / META_FILE).read_text()).get("failed")
    if failed:
        raise BackendUnavailable(failed)
    return folder


def traceable(export: Export) -> bool:
    """Whether the model is of an architecture exported as a traced graph."""
    return getattr(export.config, "model_type", None) in TRACED_MODEL_TYPES


class Noted(Protocol):
    note: str | None  # what a session says of itself in the endpoint's state (None: nothing)


NotedSession = TypeVar("NotedSession", bound=Noted)


def on_float32_export(export: Export, open_checked: Callable[[Path], NotedSession]) -> NotedSession:
    """`open_checked(folder)` (a session over the float32 export in `folder`, or one made from it, checked against
    torch's outputs) over the traced graph where the architecture has one, else over the plain export; where the
    traced graph cannot be made or its session is off torch's, over the plain export, saying why in its `note`."""
    if not traceable(export):
        return open_checked(exported(export))
    try:
        return open_checked(exported(export, traced=True))
    except Exception as exc:  # an export or a runtime can fail in any way: the plain export is next
        traced = failure_reason(exc)
    try:
        session = open_checked(exported(export))
    except Exception as exc:
        raise BackendUnavailable(f"{failure_reason(exc)} (its traced graph: {traced})") from exc
    session.note = "; ".join(filter(None, [session.note, f"the plain export serves, as the traced graph cannot: "
                                                         f"{traced}"]))
    return session


def export_key(export: Export, backend: str, precision: str, exports_dir: Path, **more: object) -> str:
    """The cache key of an export: the sha256 of the model files' contents and of what shapes the export (and of
    `more`, what shapes a variant of it, say a quantisation)."""
    identity = {
        "files": file_digests(export.model_dir, exports_dir / ".digests"),
        "auto_class": export.auto_class, "outputs": list(export.outputs), "backend": backend,
        "precision": precision, "export_version": EXPORT_VERSION, "opset": OPSET, "versions": versions(),
        **more,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def versions(names: tuple[str, ...] = VERSIONED) -> dict[str, str]:
    """The installed versions of these packages (those not installed left out)."""
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def model_files(model_dir: Path) -> list[Path]:
    """The files of a model folder an export depends on: configs, tokenizer files, code, and the weights."""
    files = sorted(path for path in model_dir.iterdir()
                   if path.is_file() and not path.name.startswith(".") and path.name != "README.md")
    weights = [path for path in files if path.suffix in WEIGHT_SUFFIXES]
    loaded = [path for path in weights if path.suffix == ".safetensors"] or [
        path for path in weights if path.suffix == ".bin"]
    return [path for path in files if path.suffix not in WEIGHT_SUFFIXES] + loaded


def file_digests(model_dir: Path, memo_dir: Path) -> dict[str, str]:
    """The sha256 of each of `model_files`. Each is remembered by the file's size, modification time and inode (in
    `memo_dir`), so a folder's gigabytes are read once, not at every load."""
    folder = model_dir.resolve()
    memo_path = memo_dir / (hashlib.sha256(str(folder).encode()).hexdigest()[:32] + ".json")
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    digests, fresh = {}, {}
    for path in model_files(folder):
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        known = memo.get(path.name)
        digest = known[1] if isinstance(known, list) and known[0] == stamp else sha256_file(path)
        digests[path.name] = digest
        fresh[path.name] = [stamp, digest]
    if fresh != memo:
        memo_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(memo_path, json.dumps(fresh).encode())
    return digests


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def cached_export(exports_dir: Path, key: str, build: Callable[[Path], None]) -> Path:
    """`exports_dir/key`, built by `build(folder)` unless it exists: the models folder's `build_once` (replicas that
    need the same export wait for the one that builds it; a folder under its key is always whole)."""
    return build_once(exports_dir / key, build)


def export_onnx(export: Export, folder: Path, traced: bool = False) -> None:
    """Export `export`'s model (float32, on the CPU) into `folder`, with torch's outputs for the probe inputs: the
    plain graph (`export_plain`) or the traced one (`export_traced`; where that fails, `folder` holds the reason)."""
    import transformers

    from hubserve.worker.tasks.loading import load_model

    started = time.monotonic()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    cpu = dataclasses.replace(export.options, device="cpu", dtype="float32", gguf_file=None)
    model = load_model(getattr(transformers, export.auto_class), export.model_dir, cpu)
    accepted = inspect.signature(model.forward).parameters
    names = tuple(name for name in export.tokenizer.model_input_names if name in accepted)
    probes = probe_inputs(export.tokenizer, names)
    wrapper = NamedOutputs(model, names, export.outputs).eval()
    reference = torch_reference(wrapper, probes)  # the model as torch serves it, before any export touches it
    example = tuple(torch.from_numpy(probes[2][name]) for name in names)  # the padded batch: no axis of size 1
    meta: dict[str, Any] = {"auto_class": export.auto_class, "graph": "traced" if traced else "plain"}
    with warnings.catch_warnings():  # the exporter warns about its own internals; the probe check judges the result
        warnings.simplefilter("ignore")
        if not traced:
            export_plain(wrapper, example, folder)
        else:
            try:
                model.set_attn_implementation("eager")
                export_traced(wrapper, example, folder)
            except Exception as exc:  # any failure: the plain graph serves, and this one is not tried again
                meta["failed"] = f"it could not be made: {failure_reason(exc)}"
                (folder / META_FILE).write_text(json.dumps(meta, indent=2))
                log.warning("%s: %s", export.model_dir, meta["failed"])
                return
    np.savez(folder / REFERENCE_FILE, **reference)
    meta.update(inputs=list(names), outputs=list(export.outputs), probes=len(probes), versions=versions(),
                export_version=EXPORT_VERSION, seconds=round(time.monotonic() - started, 2))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    log.info("exported %s (%s) to ONNX, %s graph, in %.1f s", export.model_dir, export.auto_class, meta["graph"],
             meta["seconds"])


def torch_reference(wrapper: NamedOutputs, probes: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The probe inputs and torch's outputs for them, as `reference.npz` holds them."""
    reference: dict[str, Any] = {}
    with torch.inference_mode():
        for index, probe in enumerate(probes):
            outputs = wrapper(*(torch.from_numpy(probe[name]) for name in wrapper.inputs))
            reference.update({f"{index}.input.{name}": probe[name] for name in wrapper.inputs})
            reference.update({f"{index}.output.{name}": value.float().numpy()
                              for name, value in zip(wrapper.outputs, outputs, strict=True)})
    return reference


def export_plain(wrapper: NamedOutputs, example: tuple[torch.Tensor, ...], folder: Path) -> None:
    """The dynamo exporter (torch.export), batch and sequence axes dynamic. It exports what the model runs (its sdpa
    attention, transformers 5's mask construction) op for op: MiniLM agrees with torch to 1e-5."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(wrapper, example, str(folder / MODEL_FILE), input_names=list(wrapper.inputs),
                      output_names=list(wrapper.outputs), opset_version=OPSET, dynamo=True, external_data=True,
                      dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in wrapper.inputs),), verbose=False)


def export_traced(wrapper: NamedOutputs, example: tuple[torch.Tensor, ...], folder: Path) -> None:
    """The TorchScript exporter's trace of the model with eager attention (the wrapper's model runs it), batch and
    sequence axes dynamic. ONNX Runtime's own graph optimisations make of it a graph that runs faster than the plain
    export: MiniLM, batch 32 of 12-word sentences on 2 threads, 10-13% less CPU time (15% at 48 words), batch 1
    6-10%; the plain export with eager attention gains 1-5%, and onnxruntime.transformers' BERT fusions (Attention,
    EmbedLayerNormalization) of this trace only 4-8% at batch 32.

    The trace is of the padded probe batch, so that the attention mask's construction (Python code on its values
    in transformers) is in the graph; the probes at other shapes check that nothing shape-bound was traced in."""
    torch.onnx.export(wrapper, example, str(folder / MODEL_FILE), input_names=list(wrapper.inputs),
                      output_names=list(wrapper.outputs), opset_version=TRACED_OPSET, dynamo=False,
                      dynamic_axes={name: {0: "batch", 1: "sequence"} for name in wrapper.inputs})


def probe_inputs(tokenizer: Any, names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """Token ids to check an export with: a short and a long text alone, the three padded in a batch, and pairs."""
    short, medium, long = PROBE_TEXTS

    def encode(texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
        encoding = tokenizer(texts, pairs, padding=True, truncation=True, max_length=PROBE_TOKENS,
                             return_tensors="np")
        return {name: np.asarray(encoding[name], dtype=np.int64) for name in names}

    return [encode([short]), encode([long]), encode([short, medium, long]), encode([short, medium], [medium, long])]


class NamedOutputs(torch.nn.Module):
    """The model taking its inputs in a fixed order, giving the named fields of its output: what is exported."""

    def __init__(self, model: torch.nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs
        self.outputs = outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(**dict(zip(self.inputs, tensors, strict=True)))
        return tuple(output[name] for name in self.outputs)
