"""The task names hubserve serves, and which tasks a model's config names: torch-free tables that the API process
(the model catalog) and the worker (task inference) share."""

from __future__ import annotations

# The tasks with an adapter of their own (worker/tasks), in the order the console offers them.
ADAPTER_TASKS: tuple[str, ...] = (
    "text-classification",
    "token-classification",
    "question-answering",
    "fill-mask",
    "summarization",
    "translation",
    "text2text-generation",
    "text-generation",
    "feature-extraction",
    "sentence-embeddings",
    "sentence-similarity",
    "sentence-ranking",
    "zero-shot-classification",
    "image-classification",
    "automatic-speech-recognition",
    "audio-classification",
)
# The other transformers pipeline tasks, served through the pass-through adapter (tests keep this list equal to
# transformers' own, which the API process cannot import).
PIPELINE_TASKS: tuple[str, ...] = (
    "any-to-any",
    "decision",
    "depth-estimation",
    "document-question-answering",
    "image-feature-extraction",
    "image-segmentation",
    "image-text-to-text",
    "keypoint-matching",
    "mask-generation",
    "object-detection",
    "table-question-answering",
    "text-to-audio",
    "video-classification",
    "zero-shot-audio-classification",
    "zero-shot-image-classification",
    "zero-shot-object-detection",
)
SERVED_TASKS: tuple[str, ...] = ADAPTER_TASKS + PIPELINE_TASKS

# Architecture suffix -> task, first match wins (the SageMaker toolkit's table, then our extensions).
ARCHITECTURE_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("TapasForQuestionAnswering", "table-question-answering"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForTokenClassification", "token-classification"),
    ("ForSequenceClassification", "text-classification"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("MTModel", "text2text-generation"),
    ("EncoderDecoderModel", "text2text-generation"),
    ("GPT2LMHeadModel", "text-generation"),
    ("T5WithLMHeadModel", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForAudioClassification", "audio-classification"),
)
# GGUF `general.architecture` values that are not causal LMs.
GGUF_ARCHITECTURES: dict[str, str] = {"t5": "text2text-generation", "t5encoder": "text2text-generation"}


def architecture_task(architecture: str) -> str | None:
    """The task an architecture name's suffix says, or None."""
    return next((task for suffix, task in ARCHITECTURE_SUFFIXES if architecture.endswith(suffix)), None)
