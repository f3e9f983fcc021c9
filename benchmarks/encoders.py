"""The embedding model offline, in this process, on each runtime: PyTorch (sentence-transformers' `encode`), and
ONNX Runtime and OpenVINO (f32) on one ONNX export of the same model, with the same tokenization, the same batching
by length, and mean pooling and normalisation in numpy, as hubserve's ONNX path does.

The export is the benchmark's own (`torch.onnx.export`, cached under the benchmarks' cache by the model's content),
independent of hubserve's but made the way hubserve makes its fastest one (the TorchScript exporter's trace of the
model with eager attention): these rows are the runtimes' limits, which hubserve's serving is judged against.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.processes import Unavailable

EXPORT_VERSION = "2"  # of the export below: a change makes a new cache entry
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PYTORCH, ONNX_RUNTIME, OPENVINO = "PyTorch", "ONNX Runtime", "OpenVINO f32"

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]  # tokenized batch -> last hidden state


class Encoder:
    """One runtime's `encode(texts, batch_size)`: texts sorted by length, batched, each batch padded to its longest
    (as sentence-transformers does), then mean-pooled over the attention mask and normalised."""

    def __init__(self, runtime: str, model: Any, forward: Forward | None) -> None:
        self.runtime = runtime
        self._model = model  # the SentenceTransformer: its tokenizer and max_seq_length serve every runtime
        self._forward = forward  # None: PyTorch, through sentence-transformers' own encode

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        if self._forward is None:
            return np.asarray(self._model.encode(list(texts), batch_size=batch_size, show_progress_bar=False))
        order = np.argsort([-len(text) for text in texts], kind="stable")
        out = np.empty((len(texts), self._model.get_embedding_dimension()), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chosen = order[start:start + batch_size]
            batch = self._model.tokenizer([texts[i] for i in chosen], padding=True, truncation="longest_first",
                                          max_length=self._model.max_seq_length, return_tensors="np",
                                          return_token_type_ids=True)
            feeds = {name: batch[name].astype(np.int64) for name in INPUTS}
            hidden = self._forward(feeds)
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            out[chosen] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out

    def sentences_per_second(self, texts: Sequence[str], batch_size: int) -> float:
        started = time.perf_counter()
        self.encode(texts, batch_size)
        return len(texts) / (time.perf_counter() - started)

    def call_seconds(self, text: str) -> float:
        """Seconds one `encode([text])` takes: the direct in-process call."""
        started = time.perf_counter()
        self.encode([text], 1)
        return time.perf_counter() - started


def _model_digest(folder: Path) -> str:
    """The sha256 of every file in the model folder (names and contents) and of what shapes the export."""
    digest = hashlib.sha256(EXPORT_VERSION.encode())
    for name in ("torch", "transformers", "onnxscript"):
        digest.update(f"{name}={importlib.metadata.version(name)};".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def onnx_export(model: Any, folder: Path, cache: Path) -> Path:
    """The transformer of the SentenceTransformer `model` (loaded from `folder`) as ONNX with dynamic batch and
    sequence axes, its last hidden state the output; exported the first time only. A trace (of a padded batch, so the
    attention mask's construction is in it) of eager attention: ONNX Runtime runs it faster than the dynamo
    exporter's graph of sdpa (MiniLM at batch 32: 10-15% less CPU time)."""
    out = cache / "onnx" / _model_digest(folder) / "model.onnx"
    if out.exists():
        return out
    import torch

    transformer = copy.deepcopy(model[0].auto_model).eval()  # a copy: PyTorch's rows run the model as it loaded
    transformer.set_attn_implementation("eager")

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state

    example = model.tokenizer(["an example sentence to trace", "another"], padding=True, return_tensors="pt",
                              return_token_type_ids=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"model.{os.getpid()}.onnx")
    with torch.no_grad():
        torch.onnx.export(LastHiddenState().eval(), tuple(example[name] for name in INPUTS), str(partial),
                          dynamo=False, opset_version=17, input_names=list(INPUTS),
                          output_names=["last_hidden_state"],
                          dynamic_axes={name: {0: "batch", 1: "sequence"} for name in INPUTS})
    partial.rename(out)
    return out


def onnx_runtime_forward(path: Path) -> Forward:
    """An ONNX Runtime session over the export: CPU, every core, all graph optimisations, its threads sleeping
    between runs instead of spinning (PyTorch and OpenVINO run in this process between its samples: spinning threads
    would take their cores)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise Unavailable(f"onnxruntime is not installed: {error}") from error
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {node.name for node in session.get_inputs()}

    def forward(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0])

    return forward


def openvino_forward(path: Path) -> Forward:
    """OpenVINO's CPU plugin over the same export, its inference precision pinned to f32 (it would pick bf16 on a
    CPU with native bf16)."""
    try:
        import openvino
    except ImportError as error:
        raise Unavailable(f"openvino is not installed: {error}") from error
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {openvino.properties.hint.inference_precision: openvino.Type.f32,
                                   openvino.properties.hint.enable_cpu_pinning: False})
    request = compiled.create_infer_request()
    wanted = {name for port in compiled.inputs for name in port.get_names()}

    def forward(feeds: dict[str, np.ndarray]) -> np.ndarray:
        request.infer({k: v for k, v in feeds.items() if k in wanted})
        return np.array(request.get_output_tensor(0).data)  # a copy: the request reuses its buffer

    return forward


def load_encoders(folder: Path, cache: Path) -> dict[str, Encoder | Unavailable]:
    """PyTorch's encoder, and ONNX Runtime's and OpenVINO's over the cached export (or why each is unavailable)."""
    from sentence_transformers import SentenceTransformer

    from benchmarks.report import attempt

    model = SentenceTransformer(str(folder), device="cpu")
    encoders: dict[str, Encoder | Unavailable] = {PYTORCH: Encoder(PYTORCH, model, None)}
    exported = attempt("ONNX export", lambda: onnx_export(model, folder, cache))
    for runtime, make in ((ONNX_RUNTIME, onnx_runtime_forward), (OPENVINO, openvino_forward)):
        if isinstance(exported, Unavailable):
            encoders[runtime] = Unavailable(f"the ONNX export failed: {exported}")
            continue
        forward = attempt(runtime, partial(make, exported))
        encoders[runtime] = forward if isinstance(forward, Unavailable) else Encoder(runtime, model, forward)
    return encoders


def max_difference(encoder: Encoder, reference: Encoder, texts: Sequence[str]) -> float:
    """The largest absolute difference between two encoders' embeddings of `texts` (batch 32)."""
    return float(np.abs(encoder.encode(texts, 32) - reference.encode(texts, 32)).max())
