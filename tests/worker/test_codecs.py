"""Request decoding and response encoding, one media type at a time."""

from __future__ import annotations

import base64
import csv
import datetime
import io
import json
import warnings
import wave

import numpy as np
import pytest
from PIL import Image

from hubserve.errors import BadRequest, ModelError, NotAcceptable, UnsupportedMediaType
from hubserve.worker.codecs import (
    cheap_to_decode,
    decode_body,
    encode_result,
    media_type,
    parse_accept,
    preferred_type,
)


def png_bytes(mode: str = "RGBA", size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=(255, 0, 0, 128) if mode == "RGBA" else 200).save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x01" * 160)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("Application/JSON; charset=UTF-8", "application/json"),
        (" text/csv ", "text/csv"),
    ],
)
def test_media_type(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


def test_parse_accept_orders_by_quality_and_drops_refused_types() -> None:
    assert parse_accept("text/csv;q=0.5, application/json, image/png;q=0") == ["application/json", "text/csv"]
    assert parse_accept(None) == ["application/json"]


def test_preferred_type_resolves_wildcards() -> None:
    assert preferred_type("*/*") == "application/json"
    assert preferred_type("text/*, application/x-npy;q=0.2") == "application/x-npy"
    assert preferred_type("Text/CSV; q=0.9, application/xml") == "application/xml"


# ---------------------------------------------------------------------------------------------
# decoding


def test_json_with_charset_parameter() -> None:
    body = json.dumps({"inputs": "héllo", "parameters": {"top_k": 2}}).encode("utf-16")
    assert decode_body(body, "application/json; charset=UTF-16") == {
        "inputs": "héllo",
        "parameters": {"top_k": 2},
    }


@pytest.mark.parametrize("content_type", ["application/json", "text/json", "application/vnd.api+json", None])
def test_json_variants_and_missing_content_type(content_type: str | None) -> None:
    assert decode_body(b'{"inputs": [1, 2]}', content_type) == {"inputs": [1, 2]}


def test_bad_json_names_the_position() -> None:
    with pytest.raises(BadRequest, match="line 1 column 12"):
        decode_body(b'{"inputs": }', "application/json")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000, "depth"),  # the json module overflows its recursion here
        (b'{"inputs": ' + b"1" * 5000 + b"}", "number"),  # and raises a bare ValueError here
        (b'{"inputs": "\\ud800"}', "surrogate"),  # which no encoder would take back
        (b'{"inputs": "\xff"}', "UTF-8"),
        (b'{"inputs": NaN}', "line 1 column 12"),
    ],
)
def test_json_that_would_break_later_is_a_bad_request(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        decode_body(body, "application/json")


def test_json_with_a_byte_order_mark_and_a_large_integer() -> None:
    payload = decode_body(b'\xef\xbb\xbf{"inputs": 123456789012345678901234567890}', "application/json")
    assert payload == {"inputs": 1.2345678901234568e29}


@pytest.mark.parametrize("charset", ["unicode_escape", "utf-7"])
def test_charsets_that_yield_lone_surrogates_are_a_bad_request(charset: str) -> None:
    body = "\ud800".encode(charset, "surrogatepass") if charset == "utf-7" else b"\\ud800"
    for content_type in (f"text/plain; charset={charset}", f"application/json; charset={charset}"):
        with pytest.raises(BadRequest, match="surrogate"):
            decode_body(b'"' + body + b'"' if "json" in content_type else body, content_type)


@pytest.mark.parametrize("charset", ["base64", "zlib", "rot13"])
def test_codecs_that_are_no_text_encoding_are_unsupported(charset: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="charset"):
        decode_body(b"{}", f"application/json; charset={charset}")


def test_json_without_inputs_is_the_inputs_minus_its_parameters() -> None:
    payload = decode_body(b'{"question": "q", "context": "c", "parameters": {"x": 1}}', "application/json")
    assert payload == {"inputs": {"question": "q", "context": "c"}, "parameters": {"x": 1}}


@pytest.mark.parametrize(("body", "inputs"), [(b'"just text"', "just text"), (b"[1, 2]", [1, 2])])
def test_bare_json_value_becomes_inputs(body: bytes, inputs: object) -> None:
    assert decode_body(body, "application/json") == {"inputs": inputs}


def test_parameters_must_be_an_object() -> None:
    with pytest.raises(BadRequest, match="parameters"):
        decode_body(b'{"inputs": "x", "parameters": [1]}', "application/json")
    assert decode_body(b'{"inputs": "x", "parameters": null}', "application/json") == {"inputs": "x"}


def test_csv_with_inputs_column() -> None:
    body = b"inputs,other\nI love it,1\nI hate it,2\n"
    assert decode_body(body, "text/csv; charset=utf-8") == {"inputs": ["I love it", "I hate it"]}


def test_csv_with_question_and_context_columns() -> None:
    body = b"Question,context\nWho?,Anna wrote it.\n"
    assert decode_body(body, "text/csv") == {"inputs": [{"question": "Who?", "context": "Anna wrote it."}]}


def test_csv_without_a_known_header_is_rejected() -> None:
    with pytest.raises(BadRequest, match="question, context, inputs"):
        decode_body(b"text\nhello\n", "text/csv")


@pytest.mark.parametrize("task", ["zero-shot-classification", "table-question-answering"])
def test_csv_is_rejected_for_nested_input_tasks(task: str) -> None:
    with pytest.raises(BadRequest, match=task):
        decode_body(b"inputs\nhello\n", "text/csv", task=task)


def test_npy() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.float32).reshape(2, 3))
    payload = decode_body(buffer.getvalue(), "application/x-npy")
    np.testing.assert_array_equal(payload["inputs"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_npy_with_pickled_objects_is_rejected() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequest, match="npy"):
        decode_body(buffer.getvalue(), "application/x-npy")


def test_npy_whose_header_claims_terabytes_is_a_bad_request() -> None:
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10**12,)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with pytest.raises(BadRequest, match="application/x-npy"):
        decode_body(buffer.getvalue() + b"\0" * 8, "application/x-npy")


def test_csv_over_the_field_limit_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="text/csv"):
        decode_body(b"inputs\n" + b"x" * (csv.field_size_limit() + 1) + b"\n", "text/csv")


def test_png_image_is_decoded_to_rgb() -> None:
    image = decode_body(png_bytes(), "image/png")["inputs"]
    assert isinstance(image, Image.Image)
    assert (image.mode, image.size) == ("RGB", (4, 3))


def test_undecodable_image_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="image"):
        decode_body(b"not an image", "image/jpeg")


def test_image_over_the_pixel_limit_is_a_bad_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():  # as in a replica: Pillow only warns between the limit and twice the limit
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(BadRequest, match="over 100 pixels"):
            decode_body(png_bytes(size=(12, 12)), "image/png")


@pytest.mark.parametrize("content_type", ["audio/wav", "audio/x-wav", "Audio/Wave", "audio/x-flac"])
def test_audio_is_passed_as_bytes(content_type: str) -> None:
    body = wav_bytes()
    assert decode_body(body, content_type) == {"inputs": body}


def test_plain_text() -> None:
    assert decode_body("grüße".encode("latin-1"), "text/plain; charset=latin-1") == {"inputs": "grüße"}


def test_text_input_already_decoded_by_user_code() -> None:
    assert decode_body('{"inputs": "é"}', "application/json; charset=latin-1") == {"inputs": "é"}


def test_unsupported_content_type_lists_supported_ones() -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json") as caught:
        decode_body(b"<a/>", "application/xml")
    assert caught.value.status == 415
    assert "text/csv" in caught.value.message


def test_unknown_charset_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType, match="charset"):
        decode_body(b"{}", "application/json; charset=klingon")


# ---------------------------------------------------------------------------------------------
# encoding


def test_json_converts_numpy_tensors_datetimes_bytes_and_images() -> None:
    class FakeTensor:  # what the encoder relies on from torch.Tensor
        def tolist(self) -> list[int]:
            return [7, 8]

    value = {
        "score": np.float32(0.5),
        "count": np.int64(3),
        "flag": np.bool_(True),
        "embedding": np.array([[1.0, 2.0]]),
        "tensor": FakeTensor(),
        "when": datetime.datetime(2024, 5, 1, 12, 0),
        "raw": b"\x00\x01",
        "label": "ünïcode",
    }
    result = encode_result(value, None)
    assert result.content_type == "application/json"
    assert result.body.decode("utf-8") == (
        '{"score":0.5,"count":3,"flag":true,"embedding":[[1.0,2.0]],"tensor":[7,8],'
        '"when":"2024-05-01 12:00:00","raw":"AAE=","label":"ünïcode"}'
    )
    image = json.loads(encode_result(Image.new("RGB", (2, 2)), "*/*").body)
    assert Image.open(io.BytesIO(base64.b64decode(image))).size == (2, 2)


def test_json_writes_nan_and_infinity_as_null() -> None:
    value = {"a": float("nan"), "b": np.array([1.0, np.inf]), "c": np.float32("-inf"), "d": [1.5]}
    assert encode_result(value, "application/json").body == b'{"a":null,"b":[1.0,null],"c":null,"d":[1.5]}'


def test_json_of_an_unserialisable_value_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="object"):
        encode_result({"x": object()}, "application/json")


def test_csv_of_records() -> None:
    value = [{"label": "POS", "score": np.float32(0.75)}, {"label": "NEG", "score": 0.25, "extra": 1}]
    result = encode_result(value, "text/csv")
    assert result.content_type == "text/csv"
    assert list(csv.reader(io.StringIO(result.body.decode()))) == [
        ["label", "score"],
        ["POS", "0.75"],
        ["NEG", "0.25"],
    ]


def test_csv_of_rows_and_nested_cells() -> None:
    assert encode_result(np.array([[1, 2], [3, 4]]), "text/csv").body == b"1,2\r\n3,4\r\n"
    assert encode_result([[{"a": 1}, "y"], "x"], "text/csv").body == b'"{""a"":1}",y\r\nx\r\n'


def test_csv_of_a_scalar_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable, match="not tabular"):
        encode_result("hello", "text/csv")


def test_npy_round_trip() -> None:
    result = encode_result([[1.5, 2.5]], "application/x-npy")
    assert result.content_type == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(result.body)), np.array([[1.5, 2.5]]))


def test_npy_of_records_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable, match="application/x-npy"):
        encode_result([{"label": "POS"}], "application/x-npy")


def test_image_accept_with_an_image_value() -> None:
    result = encode_result(Image.new("RGBA", (3, 3)), "image/jpeg")
    assert result.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(result.body)).format == "JPEG"


def test_accept_list_with_quality_picks_the_first_supported() -> None:
    value = [{"label": "POS", "score": 1.0}]
    assert encode_result(value, "application/xml, text/csv;q=0.5, application/json;q=0.4").content_type == (
        "text/csv"
    )
    assert encode_result(value, "application/json, text/csv;q=0.5").content_type == "application/json"


def test_accept_falls_back_when_the_preferred_type_cannot_hold_the_value() -> None:
    result = encode_result({"generated_text": "hi"}, "image/png, */*;q=0.1")
    assert (result.content_type, result.body) == ("application/json", b'{"generated_text":"hi"}')


def test_unsupported_accept_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable, match="application/json") as caught:
        encode_result({"a": 1}, "application/xml")
    assert caught.value.status == 406


def test_small_text_bodies_are_cheap_to_decode_and_media_or_large_ones_are_not() -> None:
    assert cheap_to_decode(b'{"inputs": "hi"}', "application/json; charset=utf-8")
    assert cheap_to_decode(b"a,b\n1,2", "text/csv")
    assert not cheap_to_decode(b'{"inputs": "' + b"x" * 20_000 + b'"}', "application/json")
    assert not cheap_to_decode(b"\x89PNG", "image/png")
