"""SageMaker's DataProcessing on a job's records: the JSONPath subset it documents, InputFilter, JoinSource Input and
OutputFilter over JSON and CSV records; an invalid path is a BadRequest (a 400 at create) naming its field, a record
a filter does not apply to is that record's BadRequest."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from hubserve.errors import BadRequest
from hubserve.jobs.filters import JsonPath, RecordFilter
from hubserve.jobs.spec import DataProcessing

DOCUMENT = {"id": 7, "features": [1, 2, 3, 4], "meta": {"lang": "en", "tags": ["a", "b"]},
            "rows": [{"x": 1}, {"y": 2}, {"x": 3}]}


@pytest.mark.parametrize(("path", "selected"), [
    ("$", DOCUMENT),
    ("$.id", 7),
    ("$.meta.lang", "en"),
    ("$['meta']['lang']", "en"),
    ('$["meta"].tags[0]', "a"),
    ("$.features[-1]", 4),
    ("$.features[1:3]", [2, 3]),
    ("$.features[2:]", [3, 4]),
    ("$.features[:1]", [1]),
    ("$.features[0,2]", [1, 3]),
    ("$.features[0, 2:]", [1, 3, 4]),
    ("$.meta.tags[*]", ["a", "b"]),
    ("$.meta.*", ["en", ["a", "b"]]),
    ("$.rows[*].x", [1, 3]),
    ("$['id','features']", {"id": 7, "features": [1, 2, 3, 4]}),
])
def test_the_jsonpath_subset(path: str, selected: Any) -> None:
    assert JsonPath(path).select(DOCUMENT) == selected


@pytest.mark.parametrize(("path", "why"), [
    ("features", "it must start with $"),
    ("$..id", "recursive descent"),
    ("$.", "a name must follow"),
    ("$[", "expected a quoted name"),
    ("$[id]", "expected a quoted name"),
    ("$[0 1]", "expected ',' or ']'"),
    ("$['a',0]", "not a mix"),
    ("$.a?(@.b)", "unexpected"),
])
def test_an_invalid_path_is_a_bad_request_naming_its_field(path: str, why: str) -> None:
    with pytest.raises(BadRequest, match=f"InputFilter .* is not a JSONPath hubserve supports: .*{re.escape(why)}"):
        RecordFilter(DataProcessing(input_filter=path), "application/json", "application/json")
    with pytest.raises(BadRequest, match="OutputFilter"):
        RecordFilter(DataProcessing(output_filter=path), "application/json", "application/json")


def test_json_records_filtered_joined_and_filtered_again() -> None:
    record = orjson.dumps(DOCUMENT)
    plain = RecordFilter(DataProcessing(), "application/json", "application/json")
    assert plain.passes_through and plain.input(record) is record and plain.output(record, b"[1]") == b"[1]"
    joined = RecordFilter(DataProcessing(input_filter="$.features", output_filter="$['id','SageMakerOutput']",
                                         join_source="Input"), "application/jsonlines", "application/json")
    assert joined.input(record) == b"[1,2,3,4]"
    # The join takes the record as it was, before its InputFilter.
    assert orjson.loads(joined.output(record, b'{"label": "POSITIVE"}')) == {
        "id": 7, "SageMakerOutput": {"label": "POSITIVE"}}
    whole = RecordFilter(DataProcessing(join_source="Input"), "application/json", "application/json")
    assert orjson.loads(whole.output(b"[1, 2]", b"0.5")) == {"SageMakerInput": [1, 2], "SageMakerOutput": 0.5}
    assert orjson.loads(whole.output(b'"text"', b"[0.5]")) == {"SageMakerInput": "text", "SageMakerOutput": [0.5]}
    # An answer in another type joins as its text.
    text = RecordFilter(DataProcessing(join_source="Input"), "application/json", "text/plain")
    assert orjson.loads(text.output(b'{"a": 1}', b"hello")) == {"a": 1, "SageMakerOutput": "hello"}
    answer_only = RecordFilter(DataProcessing(output_filter="$[0].label"), "application/json", "application/json")
    assert answer_only.output(record, b'[{"label": "NEG", "score": 0.9}]') == b'"NEG"'


def test_csv_rows_are_arrays_of_cells() -> None:
    processing = DataProcessing(input_filter="$[1:]", output_filter="$[0,-1]", join_source="Input")
    rows = RecordFilter(processing, "text/csv", "text/csv")
    assert rows.input(b'17,"a, quoted" cell,3.5') == b'"a, quoted cell",3.5'
    assert rows.output(b'17,"a, quoted" cell,3.5', b"0.93\n") == b"17,0.93"
    appended = RecordFilter(DataProcessing(join_source="Input"), "text/csv", "application/json")
    assert appended.output(b"17,text", b'[{"label":"POS"}]') == b'17,text,"[{""label"":""POS""}]"'
    several = RecordFilter(DataProcessing(join_source="Input"), "text/csv", "text/csv")
    assert several.output(b"1,2", b"3,4\n5\n") == b"1,2,3,4,5"
    assert RecordFilter(DataProcessing(input_filter="$[0]"), "text/csv", "text/csv").input(b"a,b") == b"a"


def test_a_record_a_filter_does_not_apply_to_is_that_records_error() -> None:
    by_key = RecordFilter(DataProcessing(input_filter="$.features"), "application/json", "application/json")
    with pytest.raises(BadRequest, match=r"InputFilter \$.features does not apply: no key 'features'"):
        by_key.input(b'{"inputs": "x"}')
    with pytest.raises(BadRequest, match="it selects keys in an array"):
        by_key.input(b"[1, 2]")
    with pytest.raises(BadRequest, match="the record is not valid JSON"):
        by_key.input(b'{"features": ')
    columns = RecordFilter(DataProcessing(output_filter="$[0,5]", join_source="Input"), "text/csv", "text/csv")
    with pytest.raises(BadRequest, match=r"OutputFilter \$\[0,5\] does not apply: index 5 is out of range for 3"):
        columns.output(b"a,b", b"c")


def test_filters_need_json_or_csv() -> None:
    with pytest.raises(BadRequest, match="JSON or CSV records; the content type is text/plain"):
        RecordFilter(DataProcessing(input_filter="$[1:]"), "text/plain", "application/json")
    with pytest.raises(BadRequest, match="JSON or CSV records"):
        RecordFilter(DataProcessing(join_source="Input"), "image/png", "application/json")
    with pytest.raises(BadRequest, match="OutputFilter applies to JSON or CSV answers; Accept is text/plain"):
        RecordFilter(DataProcessing(output_filter="$.a"), "application/json", "text/plain")
    assert RecordFilter(DataProcessing(), "image/png", "image/png").passes_through
