"""A job's records and their results as Arrow tables, as they travel through Ray Data: one row per record, with its
file's position in the job, its index and line there, its bytes; then its result. Where the job can not go on (a file
that can not be read on, a model that did not load) a row carries only why (`failure`), for the runner to fail the
job with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from hubserve.invocation import RecordResult
from hubserve.jobs.answers import Answered, JobFailed
from hubserve.jobs.records import Batch, Record
from hubserve.jobs.store import JobFile

RECORD_FIELDS = [pa.field("position", pa.int32()), pa.field("index", pa.int64()), pa.field("line", pa.int64()),
                 pa.field("data", pa.large_binary()), pa.field("oversize", pa.int64()),
                 pa.field("failure", pa.string())]
RECORDS = pa.schema(RECORD_FIELDS)
RESULTS = pa.schema([*RECORD_FIELDS, pa.field("ok", pa.bool_()), pa.field("status", pa.int32()),
                     pa.field("message", pa.string()), pa.field("body", pa.large_binary())])


def records_table(position: int, records: Sequence[Record]) -> pa.Table:
    return pa.Table.from_pydict({
        "position": [position] * len(records), "index": [r.index for r in records],
        "line": [r.line for r in records], "data": [r.data for r in records],
        "oversize": [r.oversize for r in records], "failure": [None] * len(records)}, schema=RECORDS)


def failure_table(position: int, reason: str) -> pa.Table:
    return pa.Table.from_pydict({"position": [position], "index": [-1], "line": [0], "data": [b""], "oversize": [0],
                                 "failure": [reason]}, schema=RECORDS)


def records_of(table: pa.Table) -> list[Record | None]:
    """Each row's record; None for a failure's row."""
    rows = table.select(["index", "line", "data", "oversize", "failure"]).to_pylist()
    return [None if row["failure"] is not None else
            Record(row["index"], row["line"], row["data"], row["oversize"]) for row in rows]


def results_table(table: pa.Table, results: Sequence[RecordResult | None], keep_data: bool) -> pa.Table:
    """`table`'s rows with their results (None for a failure's row); without the records' bytes unless the
    runner needs them (an output filter that joins each record to its answer)."""
    if not keep_data:
        table = table.set_column(table.schema.get_field_index("data"), RECORDS.field("data"),
                                 pa.array([b""] * table.num_rows, pa.large_binary()))
    columns = {
        "ok": pa.array([r is not None and r.ok for r in results], pa.bool_()),
        "status": pa.array([r.status if r is not None else 0 for r in results], pa.int32()),
        "message": pa.array([r.message if r is not None else "" for r in results], pa.string()),
        "body": pa.array([r.body if r is not None else b"" for r in results], pa.large_binary()),
    }
    for name, column in columns.items():
        table = table.append_column(RESULTS.field(name), column)
    return table


def answered_of(table: pa.Table, files: dict[int, JobFile]) -> Iterator[Answered]:
    """The results of `table` as the runner takes them: a run of rows of one file is one Answered. A failure's row fails
    the job, after the rows before it."""
    rows = table.to_pylist()
    start = 0
    while start < len(rows):
        position = rows[start]["position"]
        end = start
        while end < len(rows) and rows[end]["position"] == position and rows[end]["failure"] is None:
            end += 1
        if end == start:
            raise JobFailed(rows[start]["failure"])
        run = rows[start:end]
        yield Answered(files[position],
                       Batch([Record(r["index"], r["line"], r["data"], r["oversize"]) for r in run]),
                       [RecordResult(ok=r["ok"], body=r["body"], status=r["status"], message=r["message"])
                        for r in run])
        start = end
