"""image-classification, automatic-speech-recognition and audio-classification: transformers pipelines fed
with images and audio we decode ourselves (no paths, URLs or ffmpeg)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from hubserve.errors import BadRequest
from hubserve.worker.tasks.media import decode_audio, decode_images
from hubserve.worker.tasks.parameter_types import (
    BOOLEAN,
    FUNCTION_TO_APPLY,
    LIST,
    NUMBER,
    OBJECT,
    POSITIVE_INTEGER,
    one_of,
)
from hubserve.worker.tasks.pipeline import PipelineAdapter

# What the classification pipelines take.
CLASSIFICATION_TYPES = {"top_k": POSITIVE_INTEGER, "function_to_apply": FUNCTION_TO_APPLY}


def _many(inputs: Any) -> bool:
    """A list of several media inputs (not a list of float samples)."""
    return (
        isinstance(inputs, list)
        and bool(inputs)
        and all(isinstance(item, str | bytes | dict) for item in inputs)
    )


class ImageClassificationAdapter(PipelineAdapter):
    """`[{"label", "score"}]` (the `top_k` best, 5 by default) for an image; a list of those for a list."""

    task = "image-classification"
    default_max_batch_size = 16
    parameters = frozenset({"top_k", "function_to_apply"})
    parameter_types = CLASSIFICATION_TYPES
    warmup_inputs = Image.new("RGB", (32, 32))

    def prepare(self, inputs: Any) -> Any:
        return decode_images(inputs)


class AudioAdapter(PipelineAdapter):
    """Audio in (file bytes, base64, samples): decoded to the feature extractor's sampling rate."""

    warmup_inputs = np.zeros(16_000, dtype=np.float32)

    def prepare(self, inputs: Any) -> Any:
        rate = getattr(self.pipe.feature_extractor, "sampling_rate", None)
        if not rate:
            raise BadRequest(f"this model has no audio feature extractor: it cannot serve {self.task}")
        if _many(inputs):
            return [decode_audio(item, rate) for item in inputs]
        return decode_audio(inputs, rate)


class AutomaticSpeechRecognitionAdapter(AudioAdapter):
    """`{"text": str}` (with `"chunks"` when `return_timestamps` is set)."""

    task = "automatic-speech-recognition"
    parameters = frozenset({"return_timestamps", "chunk_length_s", "stride_length_s", "generate_kwargs"})
    parameter_types = {"return_timestamps": BOOLEAN | one_of("word", "char"), "chunk_length_s": NUMBER,
                       "stride_length_s": NUMBER | LIST, "generate_kwargs": OBJECT}


class AudioClassificationAdapter(AudioAdapter):
    """`[{"label", "score"}]` (the `top_k` best, 5 by default)."""

    task = "audio-classification"
    parameters = frozenset({"top_k", "function_to_apply"})
    parameter_types = CLASSIFICATION_TYPES
