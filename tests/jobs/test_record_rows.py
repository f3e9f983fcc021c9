"""How a job's records travel through Ray Data, without a cluster: the read task's records (from where the job stands, a
read failure last), the rows back to records, results onto rows, and the runs of rows the runner takes (a
failure's row failing the job after the rows before it); and how much one actor is handed at once."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from hubserve.invocation import RecordResult
from hubserve.jobs.answers import JobFailed, records_per_replica
from hubserve.jobs.ray_data import read_file
from hubserve.jobs.record_rows import answered_of, failure_table, records_of, records_table, results_table
from hubserve.jobs.records import Record
from hubserve.jobs.spec import TransformJobSpec
from hubserve.jobs.store import JobFile


def spec(**fields: object) -> TransformJobSpec:
    return TransformJobSpec.model_validate({"name": "job", "model": "org/model", "input": "/in", "output": "/out",
                                            **fields})


def test_a_read_task_reads_from_where_the_job_stands(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"r0\n\nr1\r\nr2\nr3\n" + b"x" * 20 + b"\nr5")
    file = JobFile(position=3, url=str(source), name="in.jsonl", records_done=1)
    blocks = list(read_file(file, "Line", 10))
    records = [record for block in blocks for record in records_of(block)]
    assert records == [Record(1, 3, b"r1"), Record(2, 4, b"r2"), Record(3, 5, b"r3"), Record(4, 6, b"", 20),
                       Record(5, 7, b"r5")]
    assert {position for block in blocks for position in block["position"].to_pylist()} == {3}


def test_a_file_that_can_not_be_read_ends_its_task_with_the_reason(tmp_path: Path) -> None:
    file = JobFile(position=0, url=str(tmp_path / "gone.jsonl"), name="gone.jsonl")
    (block,) = read_file(file, "Line", 10)
    assert records_of(block) == [None]
    with pytest.raises(JobFailed, match="gone.jsonl"):
        list(answered_of(results_table(block, [None], keep_data=False), {0: file}))


def test_results_come_back_as_runs_of_one_file_and_a_failure_fails_the_job_after_them() -> None:
    files = {0: JobFile(position=0, url="file:///a", name="a"), 1: JobFile(position=1, url="file:///b", name="b")}
    rows = pa.concat_tables([records_table(0, [Record(0, 1, b"a0"), Record(1, 2, b"a1")]),
                             records_table(1, [Record(0, 1, b"b0")]), failure_table(1, "b: the rest can not be read")])
    results = [RecordResult(ok=True, body=b"A0"), RecordResult(ok=False, status=400, message="bad"),
               RecordResult(ok=True, body=b"B0"), None]
    answered = answered_of(results_table(rows, results, keep_data=True), files)
    first, second = next(answered), next(answered)
    assert first.file is files[0] and [r.data for r in first.batch.records] == [b"a0", b"a1"]
    assert first.results == [RecordResult(ok=True, body=b"A0"), RecordResult(ok=False, status=400, message="bad")]
    assert second.file is files[1] and second.batch.records == [Record(0, 1, b"b0")]
    with pytest.raises(JobFailed, match="b: the rest can not be read"):
        next(answered)


def test_records_bytes_go_back_only_when_the_answer_joins_them() -> None:
    rows = records_table(0, [Record(0, 1, b"a0")])
    table = results_table(rows, [RecordResult(ok=True, body=b"A0")], keep_data=False)
    assert table["data"].to_pylist() == [b""] and table["body"].to_pylist() == [b"A0"]


@pytest.mark.parametrize(("fields", "records"), [
    ({}, 256),  # one full MultiRecord mini-batch
    ({"batch_strategy": "SingleRecord"}, 64),  # two of the model's batches of 32
    ({"batch_strategy": "SingleRecord", "max_concurrent_transforms": 3}, 3),
    ({"max_concurrent_transforms": 2}, 512),
])
def test_what_one_actor_is_handed_at_once(fields: dict[str, object], records: int) -> None:
    assert records_per_replica(spec(**fields), None) == records
