"""TEI's routes, OpenAI embeddings and the Inference Endpoints root on an in-process engine with tiny models: shapes
as the real servers answer, values equal to the task's own answers, one forward for concurrent requests, and the
caller's errors named."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from conftest import nearly_equal
from hubserve.errors import BadRequest, HubserveError, NotFound
from hubserve.invocation import InvocationRequest, Route
from hubserve.spec import EngineSpec
from hubserve.worker.engine import Engine
from hubserve.worker.handlers import TaskModel
from hubserve.worker.tasks import LoadOptions, adapter_class
from tiny_models import IMAGE_LABELS, SENTIMENT_LABELS, WORDS, tiny_image

torch.set_num_threads(1)

Models = Callable[..., TaskModel]
SENTENCES = ["a good day", "the weather is cold today", "my name is clara"]
LONG_TEXT = " ".join(WORDS)  # over the tiny sentence model's 128 tokens, its start unlike its end


@pytest.fixture(scope="module")
def model(tiny_model: Callable[[str], Path]) -> Models:
    """`model(task, model_task=None)`: the task model for `task` over the tiny model of `model_task`, cached."""
    loaded: dict[tuple[str, str], TaskModel] = {}

    def get(task: str, model_task: str | None = None) -> TaskModel:
        key = (task, model_task or task)
        if key not in loaded:
            loaded[key] = TaskModel(task, adapter_class(task)(tiny_model(key[1]), LoadOptions()))
        return loaded[key]

    return get


def request(route: Route, body: Any, **fields: Any) -> InvocationRequest:
    return InvocationRequest(body=body if isinstance(body, bytes) else orjson.dumps(body), route=route, **fields)


def served(task_model: TaskModel, *requests: InvocationRequest) -> tuple[list[Any], Engine]:
    """Each request's answer (its decoded JSON, or its error), all sent at once to one engine."""
    engine = Engine(task_model, EngineSpec())

    async def main() -> list[Any]:
        engine.start()
        return await asyncio.gather(*(engine.invoke(each) for each in requests), return_exceptions=True)

    answers = asyncio.run(main())
    return [answer if isinstance(answer, BaseException) else orjson.loads(answer.body) for answer in answers], engine


def answer(task_model: TaskModel, route: Route, body: Any, **fields: Any) -> Any:
    found = served(task_model, request(route, body, **fields))[0][0]
    if isinstance(found, BaseException):
        raise found
    return found


def refused(task_model: TaskModel, route: Route, body: Any, kind: type[HubserveError] = BadRequest) -> str:
    with pytest.raises(kind) as caught:
        answer(task_model, route, body)
    return caught.value.message


def unit(vectors: Any) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


# --- /embed -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sentence-embeddings", "sentence-similarity"])
def test_embed_is_nested_and_equals_the_tasks_own_embeddings(model: Models, task: str) -> None:
    """Whichever sentence task the model was deployed as, /embed gives the sentence-embeddings answer's vectors
    (normalised, as this model's Normalize module makes them), always one list per input."""
    sentence_model = model(task, "sentence-embeddings")
    own = model("sentence-embeddings").adapter.predict(SENTENCES, {})["embeddings"]
    assert nearly_equal(answer(sentence_model, Route.EMBED, {"inputs": SENTENCES}), own)
    one = answer(sentence_model, Route.EMBED, {"inputs": SENTENCES[0]})
    assert len(one) == 1 and nearly_equal(one[0], own[0])


def test_embed_normalize_false_gives_the_pooled_vector(model: Models) -> None:
    """TEI pools without the model's Normalize module: `normalize: false` is the raw mean of the token vectors."""
    sentence_model = model("sentence-embeddings")
    raw = np.array(answer(sentence_model, Route.EMBED, {"inputs": SENTENCES[0], "normalize": False})[0])
    adapter: Any = sentence_model.adapter
    tokens = adapter.model.encode(SENTENCES[0], output_value="token_embeddings").numpy()
    assert np.allclose(raw, tokens.mean(axis=0), atol=1e-5)
    assert abs(np.linalg.norm(raw) - 1) > 0.01


def test_embed_dimensions_truncate_then_renormalise(model: Models) -> None:
    sentence_model = model("sentence-embeddings")
    full = np.array(answer(sentence_model, Route.EMBED, {"inputs": SENTENCES[0]})[0])
    short = np.array(answer(sentence_model, Route.EMBED, {"inputs": SENTENCES[0], "dimensions": 8})[0])
    assert short.shape == (8,) and np.allclose(short, unit(full[:8]), atol=1e-5)
    assert "at most 32" in refused(sentence_model, Route.EMBED, {"inputs": "x", "dimensions": 33})
    assert "`dimensions`" in refused(sentence_model, Route.EMBED, {"inputs": "x", "dimensions": 0})


def test_feature_extraction_embed_is_the_masked_mean_of_its_token_vectors(model: Models) -> None:
    """A plain transformers model pools as TEI's mean pooling: over each text's own tokens, not its padding."""
    features = model("feature-extraction")
    vectors = answer(features, Route.EMBED, {"inputs": SENTENCES})
    for text, vector in zip(SENTENCES, vectors, strict=True):
        tokens = np.array(features.adapter.predict(text, {})[0])  # 1 x tokens x hidden, the task's own answer
        assert np.allclose(vector, unit(tokens.mean(axis=0)), atol=1e-5)


def test_embed_token_ids_are_read_as_their_text(model: Models) -> None:
    sentence_model = model("sentence-embeddings")
    adapter: Any = sentence_model.adapter
    ids = adapter.tokenizer(SENTENCES[0], add_special_tokens=False)["input_ids"]
    by_ids = answer(sentence_model, Route.EMBED, {"inputs": [ids, SENTENCES[1]]})
    assert nearly_equal(by_ids, answer(sentence_model, Route.EMBED, {"inputs": SENTENCES[:2]}))
    message = refused(sentence_model, Route.EMBED, {"inputs": [101, 100_257]})
    assert "100257" in message and "vocabulary" in message


def test_embed_truncation(model: Models) -> None:
    """Long texts are cut to what the model reads (its first tokens, or its last with `truncation_direction`
    left), or refused with `truncate: false`."""
    sentence_model = model("sentence-embeddings")
    adapter: Any = sentence_model.adapter
    tokens = adapter.max_input_length - 2
    ids = adapter.tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"]
    first, last = (adapter.tokenizer.decode(part) for part in (ids[:tokens], ids[-tokens:]))
    cut = answer(sentence_model, Route.EMBED, {"inputs": [LONG_TEXT, first]})
    assert nearly_equal(cut[0], cut[1])
    left = answer(sentence_model, Route.EMBED, {"inputs": [LONG_TEXT, last], "truncation_direction": "Left"})
    assert nearly_equal(left[0], left[1]) and not np.allclose(left[0], cut[0], atol=0.05)
    assert "truncate" in refused(sentence_model, Route.EMBED, {"inputs": LONG_TEXT, "truncate": False})
    assert answer(sentence_model, Route.EMBED, {"inputs": "short", "truncate": False})


def test_embed_refuses_what_it_does_not_know_by_name(model: Models) -> None:
    sentence_model = model("sentence-embeddings")
    assert "`bogus_knob`" in refused(sentence_model, Route.EMBED, {"inputs": "x", "bogus_knob": 1})
    assert "prompt_name" in refused(sentence_model, Route.EMBED, {"inputs": "x", "prompt_name": "nope"})
    assert "inputs" in refused(sentence_model, Route.EMBED, {"inputs": []})
    assert "inputs" in refused(sentence_model, Route.EMBED, {"normalize": True})
    assert "not an embedding model" in refused(model("text-classification"), Route.EMBED, {"inputs": "x"}, NotFound)


def test_concurrent_embed_requests_share_one_forward(model: Models) -> None:
    sentence_model = model("sentence-embeddings")
    answers, engine = served(sentence_model, *(request(Route.EMBED, {"inputs": text}) for text in SENTENCES),
                             request(Route.EMBEDDINGS, {"input": SENTENCES}))
    assert engine.batcher is not None and engine.batcher.stats.sizes == {6: 1}
    assert nearly_equal([vectors[0] for vectors in answers[:3]], [item["embedding"] for item in answers[3]["data"]])


# --- /similarity --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sentence-embeddings", "sentence-similarity", "feature-extraction"])
def test_similarity_is_a_list_of_cosines(model: Models, task: str) -> None:
    embedder = model(task, "feature-extraction" if task == "feature-extraction" else "sentence-embeddings")
    body = {"inputs": {"source_sentence": SENTENCES[0], "sentences": SENTENCES}, "parameters": {"truncate": True}}
    similarities = answer(embedder, Route.SIMILARITY, body)
    vectors = unit(answer(embedder, Route.EMBED, {"inputs": SENTENCES}))
    assert nearly_equal(similarities, (vectors @ vectors[0]).tolist())
    if task == "sentence-similarity":
        own = embedder.adapter.predict(body["inputs"], {})["similarities"]
        assert nearly_equal(similarities, own)


def test_similarity_refuses_bad_inputs(model: Models) -> None:
    sentence_model = model("sentence-similarity", "sentence-embeddings")
    assert "sentences" in refused(sentence_model, Route.SIMILARITY, {"inputs": {"source_sentence": "a"}})
    assert "`parameters.normalize`" in refused(sentence_model, Route.SIMILARITY, {
        "inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"normalize": True}})


# --- OpenAI /v1/embeddings ----------------------------------------------------------------------------------


def test_openai_embeddings_equal_embed_as_floats_and_base64(model: Models) -> None:
    sentence_model = model("sentence-similarity", "sentence-embeddings")
    adapter: Any = sentence_model.adapter
    embed = answer(sentence_model, Route.EMBED, {"inputs": SENTENCES})
    floats = answer(sentence_model, Route.EMBEDDINGS, {"input": SENTENCES, "model": "mine", "user": "u"})
    assert floats["object"] == "list" and floats["model"] == "mine"
    assert [item["index"] for item in floats["data"]] == [0, 1, 2]
    assert all(item["object"] == "embedding" for item in floats["data"])
    assert nearly_equal([item["embedding"] for item in floats["data"]], embed)
    read = sum(len(adapter.tokenizer(text)["input_ids"]) for text in SENTENCES)
    assert floats["usage"] == {"prompt_tokens": read, "total_tokens": read}
    packed = answer(sentence_model, Route.EMBEDDINGS, {"input": SENTENCES[0], "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert nearly_equal(decoded.tolist(), embed[0])


def test_openai_embeddings_token_ids_and_dimensions(model: Models) -> None:
    sentence_model = model("sentence-embeddings")
    adapter: Any = sentence_model.adapter
    ids = adapter.tokenizer(SENTENCES[0], add_special_tokens=False)["input_ids"]
    by_ids = answer(sentence_model, Route.EMBEDDINGS, {"input": ids, "dimensions": 4})
    by_text = answer(sentence_model, Route.EMBEDDINGS, {"input": [SENTENCES[0]], "dimensions": 4})
    assert len(by_ids["data"][0]["embedding"]) == 4 and nearly_equal(by_ids["data"], by_text["data"])
    assert "check_embedding_ctx_length" in refused(sentence_model, Route.EMBEDDINGS, {"input": [[100_257, 9]]})
    assert "encoding_format" in refused(sentence_model, Route.EMBEDDINGS, {"input": "x", "encoding_format": "hex"})
    assert "`extra`" in refused(sentence_model, Route.EMBEDDINGS, {"input": "x", "extra": 1})


# --- /rerank and /predict -----------------------------------------------------------------------------------


def test_rerank_on_a_cross_encoder_sorts_by_its_own_scores(model: Models) -> None:
    ranking = model("sentence-ranking")
    texts = ["the weather is cold", "a good day", "paris is the capital of france"]
    own = ranking.adapter.predict({"query": "is it cold", "texts": texts}, {})["scores"]  # sigmoid of the logits
    ranked = answer(ranking, Route.RERANK, {"query": "is it cold", "texts": texts, "return_text": True})
    assert [item["index"] for item in ranked] == sorted(range(3), key=lambda index: -own[index])
    assert all(nearly_equal(item["score"], own[item["index"]]) and item["text"] == texts[item["index"]]
               for item in ranked)
    raw = answer(ranking, Route.RERANK, {"query": "is it cold", "texts": texts, "raw_scores": True})
    assert all(nearly_equal(1 / (1 + np.exp(-item["score"])), own[item["index"]]) for item in raw)
    assert "text" not in raw[0]


def test_rerank_needs_a_one_label_model(model: Models) -> None:
    message = refused(model("text-classification"), Route.RERANK, {"query": "q", "texts": ["a"]}, NotFound)
    assert "not a reranker" in message
    assert "`texts`" in refused(model("sentence-ranking"), Route.RERANK, {"query": "q", "texts": []})


def test_predict_shapes_and_scores(model: Models) -> None:
    """TEI's /predict: every label, best first, softmax unless `raw_scores`; a list of such per input for a list,
    and `[text, text]` is one pair."""
    classifier = model("text-classification")
    own = classifier.adapter.predict(SENTENCES[0], {"top_k": None})
    one = answer(classifier, Route.PREDICT, {"inputs": SENTENCES[0]})
    assert nearly_equal(one, [{"score": item["score"], "label": item["label"]} for item in own])
    raw = answer(classifier, Route.PREDICT, {"inputs": SENTENCES[0], "raw_scores": True})
    logits = classifier.adapter.predict(SENTENCES[0], {"top_k": None, "function_to_apply": "none"})
    assert nearly_equal(raw, [{"score": item["score"], "label": item["label"]} for item in logits])
    pair = answer(classifier, Route.PREDICT, {"inputs": ["a good day", "a bad day"]})
    pair_own = classifier.adapter.predict({"text": "a good day", "text_pair": "a bad day"}, {"top_k": None})
    assert nearly_equal(pair, [{"score": item["score"], "label": item["label"]} for item in pair_own])
    many = answer(classifier, Route.PREDICT, {"inputs": [SENTENCES[0], ["a good day", "a bad day"], "x"]})
    assert len(many) == 3 and nearly_equal(many[0], one) and nearly_equal(many[1], pair)
    assert {item["label"] for item in many[2]} == set(SENTIMENT_LABELS)


def test_predict_on_a_cross_encoder_is_its_score(model: Models) -> None:
    ranking = model("sentence-ranking")
    own = ranking.adapter.predict([["is it cold", "the weather is cold"]], {})["scores"][0]
    assert nearly_equal(answer(ranking, Route.PREDICT, {"inputs": ["is it cold", "the weather is cold"]}),
                        [{"score": own, "label": "LABEL_0"}])


# --- /tokenize and /info ------------------------------------------------------------------------------------


def test_tokenize_is_nested_with_spans_and_special_tokens(model: Models) -> None:
    tokens = answer(model("sentence-embeddings"), Route.TOKENIZE, {"inputs": ["a good day", "hello"]})
    assert len(tokens) == 2
    first = tokens[0]
    assert first[0] == {"id": 2, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert [(token["text"], token["start"], token["stop"]) for token in first[1:-1]] == [
        ("a", 0, 1), ("good", 2, 6), ("day", 7, 10)]
    plain = answer(model("text-classification"), Route.TOKENIZE, {"inputs": "a good day", "add_special_tokens": False})
    assert [token["text"] for token in plain[0]] == ["a", "good", "day"]


def test_info_says_what_kind_of_model(model: Models) -> None:
    embedding = answer(model("sentence-similarity", "sentence-embeddings"), Route.INFO, b"")
    assert embedding["model_type"] == {"embedding": {"pooling": "mean"}}
    assert embedding["max_input_length"] == 128 and embedding["model_dtype"] == "float32"
    assert embedding["auto_truncate"] is True and embedding["max_client_batch_size"] >= 32
    classifier = answer(model("text-classification"), Route.INFO, b"")["model_type"]
    assert classifier == {"classifier": {"id2label": {"0": "NEGATIVE", "1": "POSITIVE"},
                                         "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}}
    assert list(answer(model("sentence-ranking"), Route.INFO, b"")["model_type"]) == ["reranker"]
    assert "not a TEI model" in refused(model("fill-mask"), Route.INFO, b"", NotFound)


# --- the endpoint root --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sentence-embeddings", "sentence-similarity"])
def test_root_of_a_sentence_model_embeds_texts_and_compares_sentences(model: Models, task: str) -> None:
    sentence_model = model(task, "sentence-embeddings")
    embed = answer(sentence_model, Route.EMBED, {"inputs": SENTENCES[0], "dimensions": 8})
    assert nearly_equal(answer(sentence_model, Route.ROOT, {"inputs": SENTENCES[0], "dimensions": 8}), embed)
    compare = {"inputs": {"source_sentence": SENTENCES[0], "sentences": SENTENCES[1:]}, "parameters": {}}
    assert nearly_equal(answer(sentence_model, Route.ROOT, compare), answer(sentence_model, Route.SIMILARITY, compare))
    assert "encoding_format" in refused(sentence_model, Route.ROOT, {"inputs": "x", "encoding_format": "base64"})
    assert "`parameters.top_k`" in refused(sentence_model, Route.ROOT, {"inputs": "x", "parameters": {"top_k": 1}})


def test_root_of_feature_extraction_is_pooled(model: Models) -> None:
    features = model("feature-extraction")
    assert nearly_equal(answer(features, Route.ROOT, {"inputs": SENTENCES[:2]}),
                        answer(features, Route.EMBED, {"inputs": SENTENCES[:2]}))


def test_root_of_text_classification_nests_each_texts_labels(model: Models) -> None:
    classifier = model("text-classification")
    own = classifier.adapter.predict(SENTENCES[0], {"top_k": 2})
    assert nearly_equal(answer(classifier, Route.ROOT, {"inputs": SENTENCES[0], "parameters": {"top_k": 2}}), [own])
    listed = answer(classifier, Route.ROOT, {"inputs": SENTENCES[:2]})
    assert [len(labels) for labels in listed] == [1, 1]
    assert "`top_k`" in refused(classifier, Route.ROOT, {"inputs": "x", "top_k": 2})


@pytest.mark.parametrize(("user_agent", "old"), [
    (None, False), ("unknown/None; hf_hub/2.4.0; python/3.11.7", False), ("hf_hub/1.2.0", False),
    ("unknown/None; hf_hub/0.36.2; python/3.11.7", True), ("hf_hub/1.1.9", True), ("python-httpx/0.28.1", False)])
def test_root_of_zero_shot_answers_as_the_callers_huggingface_hub_parses(model: Models, user_agent: str | None,
                                                                          old: bool) -> None:
    zero_shot = model("zero-shot-classification")
    body = {"inputs": "the game was won", "parameters": {"candidate_labels": ["sports", "politics"],
                                                         "multi_label": False}}
    own = zero_shot.adapter.predict(body["inputs"], body["parameters"])
    attributes = {} if user_agent is None else {"user-agent": user_agent}
    found = answer(zero_shot, Route.ROOT, body, attributes=attributes)
    expected = own if old else [{"label": label, "score": score}
                                for label, score in zip(own["labels"], own["scores"], strict=True)]
    assert nearly_equal(found, expected)


def test_root_of_a_cross_encoder_reranks(model: Models) -> None:
    ranking = model("sentence-ranking")
    body = {"query": "is it cold", "texts": ["the weather is cold", "a good day"]}
    assert nearly_equal(answer(ranking, Route.ROOT, body), answer(ranking, Route.RERANK, body))
    assert "scores" in answer(ranking, Route.ROOT, {"inputs": [["is it cold", "a good day"]]})


def test_root_takes_raw_images_without_a_content_type(model: Models) -> None:
    """huggingface_hub posts an image's bytes with no Content-Type (which the API reads as JSON)."""
    buffer = io.BytesIO()
    tiny_image().save(buffer, "PNG")
    labels = answer(model("image-classification"), Route.ROOT, buffer.getvalue())
    assert {item["label"] for item in labels} <= set(IMAGE_LABELS)
    assert "not valid JSON" in refused(model("image-classification"), Route.ROOT, b"not an image")


def test_root_of_other_tasks_is_the_tasks_own_answer(model: Models) -> None:
    fill_mask = model("fill-mask")
    own = fill_mask.adapter.predict("the [MASK] is good", {})
    assert nearly_equal(answer(fill_mask, Route.ROOT, {"inputs": "the [MASK] is good"}), own)
