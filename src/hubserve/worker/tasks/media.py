"""Decoding request inputs into images and audio: PIL images, raw file bytes, base64 strings, data URLs.

Strings are never handed to transformers as they are: its pipelines would read them as paths or URLs.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
import soundfile
from PIL import Image, UnidentifiedImageError

from hubserve.errors import BadRequest


def decode_base64(data: str, what: str) -> bytes:
    """The bytes of a base64 string or a `data:...;base64,` URL."""
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.endswith(";base64"):
            raise BadRequest(f"expected {what} as a base64 data URL (data:<type>;base64,...)")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"expected {what} as raw bytes or a base64-encoded string") from None


def decode_image(inputs: Any) -> Image.Image:
    """A PIL RGB image from a PIL image, image file bytes, or their base64 encoding."""
    if isinstance(inputs, Image.Image):
        return inputs if inputs.mode == "RGB" else inputs.convert("RGB")
    if isinstance(inputs, str):
        inputs = decode_base64(inputs, "an image")
    if not isinstance(inputs, bytes | bytearray):
        raise BadRequest("inputs must be an image: its file bytes or a base64-encoded string")
    try:
        image = Image.open(io.BytesIO(inputs))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadRequest(f"could not decode the image: {exc}") from None
    return image.convert("RGB")


def decode_images(inputs: Any) -> Image.Image | list[Image.Image]:
    """`decode_image` of one image or of each in a non-empty list."""
    if isinstance(inputs, list) and inputs:
        return [decode_image(item) for item in inputs]
    return decode_image(inputs)


def decode_audio(inputs: Any, sampling_rate: int) -> dict[str, Any]:
    """`{"raw": float32 mono samples, "sampling_rate": sampling_rate}` from audio file bytes (wav, flac, ogg),
    their base64 encoding, `{"array"|"raw": samples, "sampling_rate": rate}`, or samples at `sampling_rate`."""
    samples: Any = inputs
    rate: Any = sampling_rate
    if isinstance(inputs, str):
        inputs = decode_base64(inputs, "an audio file")
    if isinstance(inputs, bytes | bytearray):
        samples, rate = _read_audio_file(bytes(inputs))
    elif isinstance(inputs, dict):
        samples, rate = inputs.get("array", inputs.get("raw")), inputs.get("sampling_rate")
        if samples is None or not isinstance(rate, int) or rate <= 0:
            raise BadRequest('audio as a dict needs "array" (samples) and an integer "sampling_rate"')
    try:
        array = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest("inputs must be audio: file bytes, base64 or a list of float samples") from None
    if array.ndim != 1 or array.size == 0:
        raise BadRequest("audio samples must be a non-empty one-dimensional list of floats (mono)")
    return {"raw": resample(array, rate, sampling_rate), "sampling_rate": sampling_rate}


def _read_audio_file(data: bytes) -> tuple[np.ndarray, int]:
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise BadRequest(f"could not decode the audio (wav, flac or ogg expected): {exc}") from None
    return samples.mean(axis=1), int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear-interpolation resampling: enough for speech models fed at a different rate."""
    if rate == target:
        return samples
    length = max(1, round(len(samples) * target / rate))
    positions = np.arange(length, dtype=np.float64) * rate / target
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
