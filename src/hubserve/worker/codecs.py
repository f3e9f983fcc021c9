"""Request decoding by Content-Type and response encoding by Accept, as the SageMaker Hugging Face
inference toolkit does it, but tolerant of media type parameters and case."""

from __future__ import annotations

import base64
import codecs as _text_codecs
import csv
import datetime
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import orjson
from PIL import Image

from hubserve.errors import BadRequest, HubserveError, ModelError, NotAcceptable, UnsupportedMediaType
from hubserve.invocation import InvocationResult

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"

Decoder = Callable[[bytes, str], dict[str, Any]]  # (body, charset) -> payload
Encoder = Callable[[Any], bytes]


@dataclass(frozen=True)
class MediaCodec:
    """What hubserve can do with one media type; None means that direction is not supported."""

    decode: Decoder | None = None
    encode: Encoder | None = None
    # Tasks whose inputs this type cannot express (nested objects do not fit in CSV cells).
    refused_tasks: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------------------------
# Header parsing


def media_type(header: str | None) -> str:
    """The lower-cased media type without parameters; botocore sends none when the caller omits it."""
    if not header:
        return JSON
    return header.split(";", 1)[0].strip().lower() or JSON


def media_parameters(header: str | None) -> dict[str, str]:
    """The `; key=value` parameters of a Content-Type or media range, keys lower-cased."""
    parameters: dict[str, str] = {}
    for part in (header or "").split(";")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            parameters[key.strip().lower()] = value.strip().strip('"')
    return parameters


def parse_accept(header: str | None) -> list[str]:
    """The media ranges of an Accept header, most preferred first; a missing header accepts JSON."""
    if not header or not header.strip():
        return [JSON]
    ranges: list[tuple[float, str]] = []
    for part in header.split(","):
        if not part.strip():
            continue
        quality = _quality(media_parameters(part).get("q"))
        if quality > 0:
            ranges.append((quality, media_type(part)))
    # sorted() is stable, so equally preferred ranges keep the client's order.
    return [media for _, media in sorted(ranges, key=lambda item: -item[0])]


def _quality(value: str | None) -> float:
    try:
        return float(value) if value is not None else 1.0
    except ValueError:
        return 1.0  # a malformed q should not make a client's request fail


def preferred_type(accept: str | None) -> str:
    """The one concrete media type a client prefers, for user code that takes a single `accept`."""
    for media in parse_accept(accept):
        if media in _WILDCARDS:
            return _WILDCARDS[media]
        if "*" not in media:
            return media
    return JSON


def _charset_of(content_type: str | None) -> str:
    return media_parameters(content_type).get("charset") or "utf-8"


def decode_text(body: bytes, content_type: str | None) -> str:
    """The body as text in the charset the Content-Type names (UTF-8 by default)."""
    return _text(body, _charset_of(content_type))


def _is_utf8(charset: str) -> bool:
    try:
        return _text_codecs.lookup(charset).name == "utf-8"
    except LookupError as exc:
        raise UnsupportedMediaType(f"unsupported charset {charset!r}") from exc


def _text(body: bytes, charset: str) -> str:
    utf8 = _is_utf8(charset)
    try:
        # utf-8-sig: some Windows tools start UTF-8 files with a BOM, which JSON parsers reject.
        text = body.decode("utf-8-sig" if utf8 else charset)
    except UnicodeError as exc:
        raise BadRequest(f"the request body is not valid {charset} text: {exc}") from exc
    except LookupError as exc:  # a bytes-to-bytes codec (base64, zlib, ...) that is no text encoding
        raise UnsupportedMediaType(f"unsupported charset {charset!r}: {exc}") from exc
    if not utf8:
        # Escape codecs (unicode_escape, utf-7) can yield lone surrogates, which UTF-8 decoding never does.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(f"the request body is not valid {charset} text: {exc}") from exc
    return text


# ---------------------------------------------------------------------------------------------
# Decoders: (body, charset) -> {"inputs": ..., "parameters": {...}}


_UTF8_BOM = _text_codecs.BOM_UTF8


def _decode_json(body: bytes, charset: str) -> dict[str, Any]:
    # orjson, not the json module: it refuses what would break later instead of parsing it (nesting past 1024
    # levels, which overflows the json module's recursion; lone surrogates, which no encoder takes back; NaN),
    # and reads integers past 64 bits as floats rather than failing on ones of over 4300 digits.
    document: bytes | str = body.removeprefix(_UTF8_BOM) if _is_utf8(charset) else _text(body, charset)
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    return _as_payload(data)


def _as_payload(data: Any) -> dict[str, Any]:
    # The toolkits call `inputs = data.pop("inputs", data)` and then pop "parameters" from what is
    # left, so an object without "inputs" is itself the inputs, minus its "parameters".
    if not isinstance(data, dict):
        return {"inputs": data}
    if "inputs" in data:
        payload = data
    else:
        parameters = data.pop("parameters", None)
        payload = {"inputs": data, "parameters": parameters}
    if payload.get("parameters") is None:
        payload.pop("parameters", None)
    elif not isinstance(payload["parameters"], dict):
        raise BadRequest(f'"parameters" must be a JSON object, not {type(payload["parameters"]).__name__}')
    return payload


_CSV_COLUMNS = ("question", "context", "inputs")


def _decode_csv(body: bytes, charset: str) -> dict[str, Any]:
    reader = csv.reader(io.StringIO(_text(body, charset)))
    header = [_csv_column(name) for name in next(reader, [])]
    if not set(header) & set(_CSV_COLUMNS):
        raise BadRequest(
            "a text/csv body needs a header line with a column named one of "
            f"{', '.join(_CSV_COLUMNS)}; got {header}"
        )
    rows = [dict(zip(header, row, strict=False)) for row in reader if row]
    if not rows:
        raise BadRequest("the text/csv body has a header line but no rows")
    if "inputs" in header:
        return {"inputs": [row.get("inputs", "") for row in rows]}
    return {"inputs": rows}


def _csv_column(name: str) -> str:
    # The known columns become the exact keys the pipelines read; other names stay as written.
    name = name.strip()
    return name.lower() if name.lower() in _CSV_COLUMNS else name


def _decode_npy(body: bytes, charset: str) -> dict[str, Any]:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequest(f"the request body is not a valid .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise BadRequest("the request body must be a single .npy array, not an .npz archive")
    return {"inputs": array}


def _decode_image(body: bytes, charset: str) -> dict[str, Any]:
    try:
        with Image.open(io.BytesIO(body)) as image:
            # Pillow refuses only past twice MAX_IMAGE_PIXELS and merely warns below that, where a body of a few
            # KB still unpacks to hundreds of MB.
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                raise BadRequest(f"the image ({image.width}x{image.height}) is over {limit} pixels")
            return {"inputs": image.convert("RGB")}
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"the request body is not an image Pillow can read: {exc}") from exc


def _decode_audio(body: bytes, charset: str) -> dict[str, Any]:
    # The audio pipelines decode the bytes themselves (with ffmpeg or soundfile).
    return {"inputs": bytes(body)}


def _decode_plain_text(body: bytes, charset: str) -> dict[str, Any]:
    return {"inputs": _text(body, charset)}


# ---------------------------------------------------------------------------------------------
# Encoders: value -> bytes; they raise NotAcceptable when the value has no form in their type.


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes | bytearray | memoryview):  # before tolist: memoryview has one
        return base64.b64encode(obj).decode("ascii")
    if hasattr(obj, "tolist"):  # numpy arrays, and torch tensors without importing torch
        return obj.tolist()
    if isinstance(obj, datetime.date | datetime.time):
        return str(obj)
    if isinstance(obj, Image.Image):
        return base64.b64encode(_image_bytes(obj, "PNG")).decode("ascii")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# Datetimes pass to _json_default, which writes them as the toolkit does (str, not ISO 8601 with a "T").
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _encode_json(value: Any) -> bytes:
    # orjson writes NaN and infinities as null, as JavaScript's JSON.stringify does: a model that outputs them
    # (fp16 overflow, an empty softmax) has still answered, and strict parsers reject the bare tokens. It takes
    # 22 µs against 283 µs for the json module on a 384-float embedding answer.
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ModelError(f"the prediction cannot be encoded as JSON: {exc}") from exc


def _encode_csv(value: Any) -> bytes:
    rows = _csv_rows(value)
    stream = io.StringIO()
    if rows and isinstance(rows[0], dict):
        # The toolkit's rule: the first record's keys are the columns; extra keys are dropped.
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({key: _csv_cell(item) for key, item in row.items()} for row in rows)
    else:
        csv.writer(stream).writerows([_csv_cell(cell) for cell in row] for row in rows)
    return stream.getvalue().encode("utf-8")


def _csv_rows(value: Any) -> list[Any]:
    if hasattr(value, "tolist") and not isinstance(value, np.generic):
        value = value.tolist()
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list | tuple):
        raise NotAcceptable(
            f"the prediction (a {type(value).__name__}) is not tabular: text/csv needs a list of "
            "records or rows; ask for application/json"
        )
    records = [isinstance(row, dict) for row in value]
    if any(records) and not all(records):
        raise NotAcceptable("the prediction mixes records and other values, so it has no text/csv form")
    return [_csv_row(row) for row in value]


def _csv_row(row: Any) -> dict[str, Any] | list[Any]:
    if isinstance(row, dict | list):
        return row
    return list(row) if isinstance(row, tuple) else [row]  # a scalar is a one-cell row


def _csv_cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float):
        return value
    # Nested values (lists of labels, spans...) stay machine-readable as a JSON cell.
    return _encode_json(value).decode("utf-8")


def _encode_npy(value: Any) -> bytes:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise NotAcceptable(f"the prediction has no application/x-npy form: {exc}") from exc
    if array.dtype.hasobject:
        raise NotAcceptable(
            "the prediction is not a rectangular array of numbers or strings, so it has no "
            "application/x-npy form; ask for application/json"
        )
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _encode_image(image_format: str, value: Any) -> bytes:
    if not isinstance(value, Image.Image):
        raise NotAcceptable(
            f"the prediction (a {type(value).__name__}) is not an image, so it has no "
            f"image/{image_format.lower()} form; ask for application/json"
        )
    return _image_bytes(value, image_format)


def _image_bytes(image: Image.Image, image_format: str) -> bytes:
    if image_format == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")  # JPEG has no alpha channel or palette
    with io.BytesIO() as out:
        image.save(out, format=image_format)
        return out.getvalue()


# ---------------------------------------------------------------------------------------------
# The registry: adding a media type is one function above and one row here.


def _image_codec(image_format: str | None) -> MediaCodec:
    """Any image Pillow reads decodes the same way; encoding needs the format Pillow writes."""
    return MediaCodec(_decode_image, partial(_encode_image, image_format) if image_format else None)


_AUDIO = MediaCodec(decode=_decode_audio)

CODECS: dict[str, MediaCodec] = {
    JSON: MediaCodec(decode=_decode_json, encode=_encode_json),
    "text/json": MediaCodec(decode=_decode_json, encode=_encode_json),
    CSV: MediaCodec(
        decode=_decode_csv,
        encode=_encode_csv,
        refused_tasks=frozenset({"zero-shot-classification", "table-question-answering"}),
    ),
    NPY: MediaCodec(decode=_decode_npy, encode=_encode_npy),
    "text/plain": MediaCodec(decode=_decode_plain_text),
    "image/png": _image_codec("PNG"),
    "image/jpeg": _image_codec("JPEG"),
    "image/tiff": _image_codec("TIFF"),
    "image/bmp": _image_codec("BMP"),
    "image/gif": _image_codec("GIF"),
    "image/webp": _image_codec("WEBP"),
    "image/x-image": _image_codec(None),
    "audio/x-flac": _AUDIO,
    "audio/flac": _AUDIO,
    "audio/mpeg": _AUDIO,
    "audio/wav": _AUDIO,
    "audio/wave": _AUDIO,
    "audio/x-wav": _AUDIO,
    "audio/ogg": _AUDIO,
    "audio/x-audio": _AUDIO,
    "audio/webm": _AUDIO,
}

# What a wildcard Accept range is answered with.
_WILDCARDS = {"*/*": JSON, "application/*": JSON, "image/*": "image/png"}

DECODABLE_TYPES = tuple(media for media, codec in CODECS.items() if codec.decode) + ("application/*+json",)
ENCODABLE_TYPES = tuple(media for media, codec in CODECS.items() if codec.encode)


def _lookup(media: str) -> tuple[str, MediaCodec | None]:
    """The registry row for a concrete media type; structured `+json` suffixes read as JSON."""
    media = _WILDCARDS.get(media, media)
    if media not in CODECS and media.startswith("application/") and media.endswith("+json"):
        media = JSON
    return media, CODECS.get(media)


_SMALL_BODY_BYTES = 16 * 1024


def cheap_to_decode(body: bytes, content_type: str | None) -> bool:
    """Whether decoding takes microseconds (a small JSON, CSV or text body): less than a hop to another thread."""
    return len(body) <= _SMALL_BODY_BYTES and _lookup(media_type(content_type))[0] in (JSON, CSV, "text/plain")


def decode_body(body: bytes | str, content_type: str | None, *, task: str | None = None) -> dict[str, Any]:
    """The payload `{"inputs": ..., "parameters": {...}}` of a request body of the given type."""
    media, codec = _lookup(media_type(content_type))
    if codec is None or codec.decode is None:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported; use one of: {', '.join(DECODABLE_TYPES)}"
        )
    if task in codec.refused_tasks:
        raise BadRequest(f"Content-Type {media} cannot carry the inputs of task {task}; use application/json")
    try:
        if isinstance(body, str):  # user input_fn code may hand back the text it was given
            return codec.decode(body.encode("utf-8"), "utf-8")
        return codec.decode(body, _charset_of(content_type))
    except HubserveError:
        raise
    except Exception as exc:
        # A decoder reads nothing but the client's bytes, so whatever breaks in it (csv's field limit, an .npy
        # header claiming terabytes, whatever a corrupt image makes Pillow raise) is the body's fault, not the model's.
        raise BadRequest(f"the request body cannot be read as {media}: {type(exc).__name__}: {exc}") from exc


def encode_result(value: Any, accept: str | None) -> InvocationResult:
    """The prediction encoded in the first type of the Accept header that can represent it."""
    refusal: NotAcceptable | None = None
    for requested in parse_accept(accept):
        media, codec = _lookup(requested)
        if codec is None or codec.encode is None:
            continue
        try:
            return InvocationResult(body=codec.encode(value), content_type=media)
        except NotAcceptable as exc:
            # A later, less preferred range may still fit this value (e.g. "image/png, */*").
            refusal = refusal or exc
    raise refusal or NotAcceptable(
        f"Accept {accept!r} names no type hubserve can produce; use one of: {', '.join(ENCODABLE_TYPES)}"
    )
