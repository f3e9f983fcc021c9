"""How near torch a runtime must be: every session is run at load on the probe inputs stored with the export and its
outputs compared with torch's float32 ones, within the stated tolerance of the precision it computes in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubserve.worker.backends.onnx_export import META_FILE, REFERENCE_FILE
from hubserve.worker.backends.session import BackendUnavailable, RuntimeSession

# Outputs that are vectors (one per token): held to a cosine bound in a reduced precision; every other output is
# scores (a sequence's class logits, a token's class or vocabulary logits, a span's start and end logits).
VECTOR_OUTPUTS = frozenset({"last_hidden_state"})


@dataclass(frozen=True)
class Tolerance:
    """How far a runtime's outputs may be from torch's float32 ones on the probe inputs, over the real (unpadded)
    tokens.

    `relative`: max |runtime - torch| over the output's scale (its largest magnitude, at least 1), for scores (and
    for vectors when `cosine` is None). `cosine`: the least cosine similarity between a token's vector and torch's.
    `same_class`: every sequence's top class (an output with a row per sequence: a classifier's or cross-encoder's
    logits) is torch's. Per-token scores are held to `relative` alone: where torch's top two are nearer than that
    bound (a random model's vocabulary logits, say), either may come first."""

    precision: str
    relative: float
    cosine: float | None = None
    same_class: bool = False


# float32 runtimes (ONNX Runtime, OpenVINO f32) compute what torch does, up to the order of float sums.
FLOAT32 = Tolerance("float32", relative=1e-4)
# int8 weights and activations (ONNX Runtime dynamic quantisation). Measured on the probes: MiniLM's least token
# cosine 0.975 (its mean-pooled sentences' 0.981), its relative error 0.067; the tiny models' scores within 0.01.
INT8 = Tolerance("int8", relative=0.1, cosine=0.95, same_class=True)
# bfloat16 compute (OpenVINO on a CPU with bf16). Measured on the probes: MiniLM's least token cosine 0.99996, its
# relative error 0.0025; the tiny models' scores within 0.0035.
BF16 = Tolerance("bf16", relative=0.02, cosine=0.99, same_class=True)


@dataclass(frozen=True)
class Agreement:
    """How near one output of a runtime is to torch's on one probe input."""

    relative: float  # max |found - expected| over the scale of `expected`
    cosine: float  # the least cosine between a row of `found` and of `expected` (a token's vector, say)
    same_class: float | None  # the share of sequences whose top class is torch's (None: no row per sequence)


def agreement(found: np.ndarray, expected: np.ndarray, mask: np.ndarray | None) -> Agreement:
    """How near `found` is to `expected`, over the real tokens where an output has a token axis (`mask`'s shape)."""
    if found.shape != expected.shape:
        return Agreement(float("inf"), -1.0, 0.0)
    per_token = mask is not None and expected.shape[:2] == mask.shape
    if per_token:
        assert mask is not None
        found, expected = found[mask.astype(bool)], expected[mask.astype(bool)]
    found, expected = found.astype(np.float64), expected.astype(np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    relative = float(np.abs(found - expected).max(initial=0.0)) / scale
    rows_found, rows_expected = np.atleast_2d(found), np.atleast_2d(expected)
    norms = np.linalg.norm(rows_found, axis=-1) * np.linalg.norm(rows_expected, axis=-1)
    cosines = (rows_found * rows_expected).sum(axis=-1) / np.maximum(norms, 1e-12)
    same_class = None
    if not per_token and expected.ndim == 2:
        same_class = float((found.argmax(axis=1) == expected.argmax(axis=1)).mean())
    return Agreement(relative, float(cosines.min(initial=1.0)), same_class)


def check_reference(session: RuntimeSession, folder: Path, tolerance: Tolerance = FLOAT32) -> None:
    """A BackendUnavailable saying by how much, when the session's outputs for the probe inputs stored in `folder`
    are farther from torch's than `tolerance`."""
    for index, name, found in probe_agreements(session, folder):
        where = f"on probe input {index}; {tolerance.precision}'s tolerance is"
        if tolerance.cosine is not None and name in VECTOR_OUTPUTS:
            if found.cosine < tolerance.cosine:
                raise BackendUnavailable(f"its output {name} has a cosine similarity of {found.cosine:.4f} to "
                                         f"torch's {where} {tolerance.cosine:g}")
            continue
        if found.relative > tolerance.relative:
            raise BackendUnavailable(f"its output {name} is off torch's by {found.relative:.2g} (relative to its "
                                     f"scale) {where} {tolerance.relative:g}")
        if tolerance.same_class and found.same_class is not None and found.same_class < 1.0:
            raise BackendUnavailable(f"its output {name} gives torch's top class to {found.same_class:.0%} of the "
                                     f"sequences {where} all of them")


def probe_agreements(session: RuntimeSession, folder: Path) -> list[tuple[int, str, Agreement]]:
    """(probe index, output name, agreement) for each probe input stored in `folder` and each output."""
    meta = json.loads((folder / META_FILE).read_text())
    found: list[tuple[int, str, Agreement]] = []
    with np.load(folder / REFERENCE_FILE) as reference:
        for index in range(meta["probes"]):
            names = [name.removeprefix(f"{index}.input.") for name in reference.files
                     if name.startswith(f"{index}.input.")]
            inputs = {name: reference[f"{index}.input.{name}"] for name in names}
            outputs = session.run(inputs)
            found.extend((index, name, agreement(outputs[name], reference[f"{index}.output.{name}"],
                                                 inputs.get("attention_mask")))
                         for name in meta["outputs"])
    return found
