"""Exporting an encoder to ONNX once, cached by content. `{exports_dir}/{key}/` holds `model.onnx` (its weights in
`model.onnx.data`), `reference.npz` (probe inputs and torch's outputs for them: a runtime is checked against them at
every load, with no torch model loaded) and `export.json`. The key hashes the model files' contents, what is
exported, and the versions that shape the export; a new model, head or version is a new export."""

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
from typing import Any

import numpy as np
import torch

from hubserve.sources.cache import build_once, sha256_file
from hubserve.worker.backends.session import BackendUnavailable, Export

log = logging.getLogger("hubserve.worker")

# Bump when what an export holds changes (the wrapper, the opset, the probes): older exports are then not reused.
EXPORT_VERSION = 1
OPSET = 18
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


def exported(export: Export) -> Path:
    """The folder of the model's ONNX export, exported now unless it is cached (what each runtime loads)."""
    if export.options.exports_dir is None:
        raise BackendUnavailable("no exports folder to keep the ONNX export in")
    exports_dir = Path(export.options.exports_dir)
    # The float32 export, whatever the precision asked for: a reduced precision is made from it (or at run time).
    key = export_key(export, "onnx", "auto", exports_dir)
    return cached_export(exports_dir, key, lambda building: export_onnx(export, building))


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


def export_onnx(export: Export, folder: Path) -> None:
    """Export `export`'s model (float32, on the CPU) into `folder`, with torch's outputs for the probe inputs.

    The dynamo exporter (torch.export): the TorchScript one traces transformers 5's attention mask construction
    (Python control flow on shapes) into constants, and MiniLM's export then differed from torch by up to 2.3 on
    padded batches; dynamo's agrees to 1e-5. Batch and sequence axes stay dynamic."""
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
    wrapper = NamedOutputs(model, names, export.outputs)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    example = tuple(torch.from_numpy(probes[2][name]) for name in names)  # the padded batch: no axis of size 1
    with warnings.catch_warnings():  # the exporter warns about its own internals; the probe check judges the result
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, example, str(folder / MODEL_FILE), input_names=list(names),
                          output_names=list(export.outputs), opset_version=OPSET, dynamo=True, external_data=True,
                          dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in names),), verbose=False)
    reference: dict[str, Any] = {}
    with torch.inference_mode():
        for index, probe in enumerate(probes):
            outputs = wrapper(*(torch.from_numpy(probe[name]) for name in names))
            reference.update({f"{index}.input.{name}": probe[name] for name in names})
            reference.update({f"{index}.output.{name}": value.float().numpy()
                              for name, value in zip(export.outputs, outputs, strict=True)})
    np.savez(folder / REFERENCE_FILE, **reference)
    meta = {"auto_class": export.auto_class, "inputs": list(names), "outputs": list(export.outputs),
            "probes": len(probes), "versions": versions(), "export_version": EXPORT_VERSION,
            "seconds": round(time.monotonic() - started, 2)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    log.info("exported %s (%s) to ONNX in %.1f s", export.model_dir, export.auto_class, meta["seconds"])


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
