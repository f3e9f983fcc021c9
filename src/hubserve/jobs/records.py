"""A job's input as records: the files of an input (a file, a folder or a prefix of files; a local path, file://,
s3://, http(s):// or any fsspec URL) in a stable order, each read as a stream of records, packed into mini-batches.

Reading never holds more than a chunk and one record: a file of any size runs in bounded memory, and a record over
the job's payload limit is not even kept, only its size (it is that record's error)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from hubserve.errors import BadRequest
from hubserve.serving.async_objects import filesystem
from hubserve.sources.remote import remote_errors
from hubserve.spec import MAX_PAYLOAD_BYTES

# How much of a file one read takes.
CHUNK_BYTES = 1 << 20
# The most records one MultiRecord mini-batch holds, however small: enough to fill a replica's batches (a few batches
# of 32 each), few enough that a job's progress and its staged answers move on every fraction of a second.
MAX_BATCH_RECORDS = 256

SplitType = Literal["Line", "None"]
BatchStrategy = Literal["SingleRecord", "MultiRecord"]


@dataclass(frozen=True)
class InputFile:
    """One file of a job's input: `url` opens it; `name` is its path relative to the input's folder or prefix (the
    file's own name for a single file), which its answers keep under the output: `{output}/{name}.out`."""

    url: str
    name: str
    size: int | None = None


@dataclass(frozen=True)
class Record:
    """One record: `index` counts records within its file from 0 (what a job resumes from), `line` is the 1-based
    number of its first line. A record over the reading limit has empty `data` and its size in `oversize`."""

    index: int
    line: int
    data: bytes
    oversize: int = 0

    @property
    def size(self) -> int:
        return self.oversize or len(self.data)


@dataclass(frozen=True)
class Batch:
    """Records that go to the model together (one RECORDS message); `error` is set for a lone record over the
    payload limit, which must not be sent: its error is the message."""

    records: list[Record] = field(default_factory=list)
    error: str | None = None


def list_inputs(url: str) -> list[InputFile]:
    """The files of an input, sorted by path: the file at `url`; else every file under the folder `url`; else every
    file whose path starts with `url` (SageMaker's S3Prefix: `s3://b/data/part-` takes `part-0.jsonl`, `part-1/x`,
    ...), named from the prefix's folder on. An http(s) URL is one file. BadRequest when there is nothing to read."""
    with remote_errors(url):
        fs, path = filesystem(url)
        fs.invalidate_cache()  # a listing fsspec cached for an earlier job may be stale
        if "http" in fs.protocol:
            return [InputFile(url, posixpath.basename(path.split("?", 1)[0]) or "input", fs.info(path).get("size"))]
        if fs.isfile(path):
            return [InputFile(url, posixpath.basename(path), fs.info(path).get("size"))]
        # A folder: on disk, a directory; in an object store, a URL ending in "/" (else a prefix, as S3Prefix is).
        if url.endswith("/") or ("file" in fs.protocol and fs.isdir(path)):
            base, found = path.rstrip("/"), fs.find(path, detail=True)
        else:
            base = posixpath.dirname(path)
            found = {p: info for p, info in fs.find(base, detail=True).items() if p.startswith(path)}
    files = sorted((p, info) for p, info in found.items() if info.get("type") == "file" and not p.endswith("/"))
    if not files:
        raise BadRequest(f"no input at '{url}': no file, no folder with files, and no files with that prefix")
    return [InputFile(fs.unstrip_protocol(p), posixpath.relpath(p, base) if base else p, info.get("size"))
            for p, info in files]


def read_records(file: InputFile | str, split_type: SplitType = "Line", *, start: int = 0,
                 limit: int = MAX_PAYLOAD_BYTES) -> Iterator[Record]:
    """The records of a file from index `start` on, streamed. `Line`: each line without its line end (`\\n` or
    `\\r\\n`), empty lines skipped but counted; `None`: the whole file, one record. A record over `limit` bytes
    comes without its data (see Record.oversize)."""
    url = file.url if isinstance(file, InputFile) else file
    with remote_errors(url):
        fs, path = filesystem(url)
        # http(s): a plain stream (block_size 0), which needs no range requests from the server.
        with fs.open(path, "rb", block_size=0 if "http" in fs.protocol else CHUNK_BYTES) as handle:
            if split_type == "None":
                if start == 0:
                    yield _whole(handle, limit)
                return
            index = 0
            for number, (data, size) in enumerate(_lines(handle, limit), start=1):
                if size <= limit and not data:
                    continue
                if index >= start:
                    yield Record(index, number, data, 0 if size <= limit else size)
                index += 1


def count_records(file: InputFile | str, split_type: SplitType = "Line") -> int:
    """How many records a file holds (one streamed pass that keeps no record: only an empty line's `\\r`)."""
    return sum(1 for _ in read_records(file, split_type, limit=1))


def mini_batches(records: Iterable[Record], batch_strategy: BatchStrategy, max_payload_bytes: int,
                 max_records: int = MAX_BATCH_RECORDS) -> Iterator[Batch]:
    """Records in input order, grouped for the model: SingleRecord one each; MultiRecord as many as fit in
    `max_payload_bytes` joined by newlines (at most `max_records`). A record over the limit comes alone, with its
    error."""
    most = 1 if batch_strategy == "SingleRecord" else max_records
    batch: list[Record] = []
    size = 0
    for record in records:
        if record.oversize or record.size > max_payload_bytes:
            if batch:
                yield Batch(batch)
                batch, size = [], 0
            yield Batch([record], oversize_message(record, max_payload_bytes))
            continue
        if batch and (len(batch) >= most or size + 1 + record.size > max_payload_bytes):
            yield Batch(batch)
            batch, size = [], 0
        size += record.size + (1 if batch else 0)
        batch.append(record)
    if batch:
        yield Batch(batch)


def oversize_message(record: Record, max_payload_bytes: int) -> str:
    return (f"record at line {record.line} is {_megabytes(record.size)} MB, over MaxPayloadInMB "
            f"({_megabytes(max_payload_bytes)} MB)")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f}"


def _whole(handle: BinaryIO, limit: int) -> Record:
    """A whole file as one record; past `limit` only its size is kept (read through, for a stream of unknown size)."""
    data = handle.read(limit + 1)
    if len(data) <= limit:
        return Record(0, 1, data)
    size = len(data)
    while chunk := handle.read(CHUNK_BYTES):
        size += len(chunk)
    return Record(0, 1, b"", size)


def _lines(handle: Any, limit: int) -> Iterator[tuple[bytes, int]]:
    """Each line of a stream without its line end, with its size; a line over `limit` bytes comes as b"" (only its
    size is counted, never its bytes held)."""
    head: list[bytes] = []  # the line so far, unless it is already over the limit
    held = dropped = 0
    while chunk := handle.read(CHUNK_BYTES):
        parts = chunk.split(b"\n")
        for part in parts[:-1]:
            size = held + dropped + len(part)
            if dropped or size > limit:
                yield b"", size
            else:
                line = b"".join(head) + part if head else part
                yield (line[:-1] if line.endswith(b"\r") else line), size
            head, held, dropped = [], 0, 0
        rest = parts[-1]
        if dropped or held + len(rest) > limit:
            dropped += held + len(rest)
            head, held = [], 0
        elif rest:
            head.append(rest)
            held += len(rest)
    if head or dropped:
        line = b"".join(head)
        yield (b"", dropped) if dropped else ((line[:-1] if line.endswith(b"\r") else line), held)
