"""SageMaker's DataProcessing for a job's records: the JSONPath subset SageMaker documents (`$`, `.name`, `['name']`,
`['a','b']`, `[0]`, `[0,2]`, `[1:3]`, `[0,5:]`, `[-1]`, `*`) as InputFilter on each record, JoinSource Input (the
record joined with its answer) and OutputFilter on the result, over JSON and CSV records (a CSV row is an array)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from hubserve.errors import BadRequest
from hubserve.jobs.spec import DataProcessing

JSON_LINES_TYPES = frozenset({"application/jsonlines", "application/x-jsonlines", "application/json-lines"})
# Where JoinSource Input puts the answer in a JSON record, and the input when that record is not an object.
OUTPUT_KEY = "SageMakerOutput"
INPUT_KEY = "SageMakerInput"

_NAME = re.compile(r"[\w$-]+")
_SELECTOR = re.compile(r"\s*(?:'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"|(\*)|(-?\d*)\s*(:)\s*(-?\d*)|(-?\d+))\s*")


@dataclass(frozen=True)
class _Step:
    """One step of a path: `names` (one key, or several kept as an object), `items` (indexes and slices of an
    array) or a wildcard (every member)."""

    names: tuple[str, ...] = ()
    items: tuple[int | slice, ...] = ()
    wildcard: bool = False

    @property
    def definite(self) -> bool:
        """Whether it selects one value (else a list of them)."""
        return bool(self.names) or (len(self.items) == 1 and isinstance(self.items[0], int))

    def apply(self, value: Any, strict: bool) -> Iterator[Any]:
        """What it selects in `value`; where it does not apply: an error when `strict` (a definite path so far),
        else nothing (an indefinite path skips members it does not apply to, as JSONPath does)."""
        if self.wildcard and isinstance(value, dict | list):
            yield from value.values() if isinstance(value, dict) else value
        elif self.names and isinstance(value, dict):
            missing = [name for name in self.names if name not in value]
            if missing and strict:
                raise _NotApplicable(f"no key {missing[0]!r}")
            if len(self.names) == 1:
                yield from (value[name] for name in self.names if name in value)
            else:
                yield {name: value[name] for name in self.names if name in value}
        elif self.items and isinstance(value, list):
            for item in self.items:
                if isinstance(item, slice):
                    yield from value[item]
                elif -len(value) <= item < len(value):
                    yield value[item]
                elif strict:
                    raise _NotApplicable(f"index {item} is out of range for {len(value)} items")
        elif strict:
            kind = "an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else "a value"
            raise _NotApplicable(f"it selects {self._wants} in {kind}")

    @property
    def _wants(self) -> str:
        return "members" if self.wildcard else "keys" if self.names else "array items"


class _NotApplicable(Exception):
    """A path that does not apply to a value: the reason."""


class JsonPath:
    """A parsed path; `select(value)` is what it picks: one value for a definite path, else a list."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps = _parse(text)

    @property
    def whole(self) -> bool:
        return not self.steps

    def select(self, value: Any) -> Any:
        nodes, definite = [value], True
        for step in self.steps:
            nodes = [picked for node in nodes for picked in step.apply(node, definite)]
            definite = definite and step.definite
        return nodes[0] if definite else nodes


def _parse(text: str) -> list[_Step]:
    if not text.startswith("$"):
        raise ValueError("it must start with $")
    steps, position = [], 1
    while position < len(text):
        if text.startswith("..", position):
            raise ValueError("recursive descent (..) is not supported")
        if text[position] == ".":
            if text.startswith("*", position + 1):
                steps.append(_Step(wildcard=True))
                position += 2
                continue
            name = _NAME.match(text, position + 1)
            if name is None:
                raise ValueError(f"a name must follow the '.' at position {position}")
            steps.append(_Step(names=(name.group(),)))
            position = name.end()
        elif text[position] == "[":
            step, position = _bracket(text, position + 1)
            steps.append(step)
        else:
            raise ValueError(f"unexpected {text[position]!r} at position {position}")
    return steps


def _bracket(text: str, position: int) -> tuple[_Step, int]:
    """The step of a `[...]` whose contents start at `position`, and the position after its `]`."""
    names: list[str] = []
    items: list[int | slice] = []
    wildcard = False
    while True:
        match = _SELECTOR.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"expected a quoted name, an index, a slice or * at position {position}")
        single, double, star, start, colon, end, index = match.groups()
        if single is not None or double is not None:
            names.append(re.sub(r"\\(.)", r"\1", single if single is not None else double))
        elif star:
            wildcard = True
        elif colon:
            items.append(slice(int(start) if start else None, int(end) if end else None))
        else:
            items.append(int(index))
        position = match.end()
        if text.startswith(",", position):
            position += 1
        elif text.startswith("]", position):
            break
        else:
            raise ValueError(f"expected ',' or ']' at position {position}")
    if sum(map(bool, (names, items, wildcard))) > 1:
        raise ValueError("a bracket takes names, or indexes and slices, or *: not a mix")
    return _Step(tuple(names), tuple(items), wildcard), position + 1


def _record_format(content_type: str) -> str | None:
    """"json" or "csv" for a content type the filters read, else None."""
    # Here, not at the top: the codecs bring numpy and PIL, which the API process otherwise never loads.
    from hubserve.worker import codecs

    media = codecs.media_type(content_type)
    if media == codecs.JSON or media.endswith("+json") or media in JSON_LINES_TYPES:
        return "json"
    return "csv" if media == codecs.CSV else None


class RecordFilter:
    """A job's DataProcessing, checked once (BadRequest naming the field: a 400 at create) and applied to each
    record: `input(record)` is what the model gets, `output(record, answer)` what the job writes. A record or an
    answer it cannot apply to is a BadRequest naming why, that record's error."""

    def __init__(self, processing: DataProcessing, content_type: str, accept: str) -> None:
        self.input_path = _path(processing.input_filter, "InputFilter")
        self.output_path = _path(processing.output_filter, "OutputFilter")
        self.join = processing.join_source == "Input"
        self.input_format = _record_format(content_type)
        self.answer_format = _record_format(accept)
        self.content_type, self.accept = content_type, accept
        if self.input_format is None and (self.join or not self.input_path.whole):
            raise BadRequest(f"InputFilter and JoinSource apply to JSON or CSV records; the content type is "
                             f"{content_type}")
        if (self.input_format if self.join else self.answer_format) is None and not self.output_path.whole:
            raise BadRequest(f"OutputFilter applies to JSON or CSV answers; Accept is {accept}")

    @property
    def passes_through(self) -> bool:
        """Whether it leaves every record and answer as they are (nothing to do per record)."""
        return self.input_path.whole and self.output_path.whole and not self.join

    def input(self, record: bytes) -> bytes:
        if self.input_path.whole:
            return record
        value = _parse_value(record, self.content_type, self.input_format, "record")
        return _serialize(self._select(self.input_path, value, "InputFilter"), self.input_format)

    def output(self, record: bytes, answer: bytes) -> bytes:
        if not self.join and self.output_path.whole:
            return answer
        answer_value = _parse_value(answer, self.accept, self.answer_format, "answer")
        if not self.join:
            return _serialize(self._select(self.output_path, answer_value, "OutputFilter"), self.answer_format)
        joined = _joined(_parse_value(record, self.content_type, self.input_format, "record"), answer_value,
                         self.input_format, self.answer_format)
        return _serialize(self._select(self.output_path, joined, "OutputFilter"), self.input_format)

    @staticmethod
    def _select(path: JsonPath, value: Any, field: str) -> Any:
        try:
            return path.select(value)
        except _NotApplicable as exc:
            raise BadRequest(f"{field} {path.text} does not apply: {exc}") from None


def _path(text: str, field: str) -> JsonPath:
    try:
        return JsonPath(text.strip())
    except ValueError as exc:
        raise BadRequest(f"{field} {text!r} is not a JSONPath hubserve supports: {exc}") from None


def _parse_value(data: bytes, content_type: str, form: str | None, what: str) -> Any:
    """A record as JSON (a CSV row: an array of its cells, several rows: an array of rows) or, for an answer in
    another type, its text."""
    if form == "json":
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the {what} is not valid JSON: {exc}") from None
    from hubserve.worker import codecs

    text = codecs.decode_text(data, content_type)
    if form != "csv":
        return text
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0] if len(rows) == 1 else rows


def _joined(record: Any, answer: Any, record_format: str | None, answer_format: str | None) -> Any:
    """JoinSource Input, as SageMaker documents it: a JSON object gets the answer under SageMakerOutput, any other
    value (an array too) becomes {SageMakerInput, SageMakerOutput}; a CSV row gets the answer's cells appended (a CSV
    answer's, else the answer as one cell)."""
    if record_format == "csv":
        if answer_format != "csv":
            cells = [answer if isinstance(answer, str) else _json_text(answer)]
        else:
            cells = [cell for row in answer for cell in row] if answer and isinstance(answer[0], list) else answer
        return [*record, *cells]
    if isinstance(record, dict):
        return {**record, OUTPUT_KEY: answer}
    return {INPUT_KEY: record, OUTPUT_KEY: answer}


def _serialize(value: Any, form: str | None) -> bytes:
    if form == "json":
        return orjson.dumps(value)
    out = io.StringIO()
    cells = value if isinstance(value, list) else [value]
    csv.writer(out, lineterminator="").writerow([_cell(cell) for cell in cells])
    return out.getvalue().encode()


def _cell(value: Any) -> Any:
    return _json_text(value) if isinstance(value, dict | list) else "" if value is None else value


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()
