"""A job's input as records: files listed in a stable order (a file, a folder, a prefix; local, file://, moto's S3,
http), lines read as records with their line numbers in bounded memory, a resume from a record index, and
mini-batches within the payload limit, a record over it alone with its error."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubserve.errors import BadRequest
from hubserve.jobs import records
from hubserve.jobs.records import Record, count_records, list_inputs, mini_batches, read_records
from sources_fixtures import http_server, moto_s3_server


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_each_line_is_a_record_with_its_line_number(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b'{"a": 1}\n\n{"b": 2}\r\n\r\n  \nlast')
    got = list(read_records(str(path)))
    assert got == [Record(0, 1, b'{"a": 1}'), Record(1, 3, b'{"b": 2}'), Record(2, 5, b"  "), Record(3, 6, b"last")]
    assert count_records(str(path)) == 4
    assert list(read_records(str(path), start=2)) == got[2:]
    assert list(read_records(str(path), start=4)) == []


def test_split_none_makes_the_whole_file_one_record(tmp_path: Path) -> None:
    path = write(tmp_path / "image.bin", bytes(range(256)) * 10)
    assert list(read_records(f"file://{path}", "None")) == [Record(0, 1, bytes(range(256)) * 10)]
    assert list(read_records(str(path), "None", start=1)) == []
    assert list(read_records(str(path), "None", limit=100)) == [Record(0, 1, b"", oversize=2560)]
    assert count_records(str(path), "None") == 1


def test_lines_split_across_reads_come_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    data = b"".join(rng.choice([b"\n", b"\r\n", b"x" * rng.randint(0, 30) + b"\n", b"yz"]) for _ in range(2000))
    path = write(tmp_path / "in.txt", data)
    monkeypatch.setattr(records, "CHUNK_BYTES", 7)
    raw = data.split(b"\n")
    expected = [(number, line.removesuffix(b"\r")) for number, line in enumerate(raw, start=1)
                if line.removesuffix(b"\r")]
    assert [(r.line, r.data) for r in read_records(str(path), limit=40)] == expected
    # Over a limit of 20 bytes, the long lines come without their data, only their size (with a \r it had).
    small = list(read_records(str(path), limit=20))
    assert [r.line for r in small] == [number for number, _ in expected]
    assert [(r.line, r.oversize) for r in small if r.oversize] == [
        (number, len(raw[number - 1])) for number, _ in expected if len(raw[number - 1]) > 20]
    assert all(r.data == b"" if r.oversize else r.data == raw[r.line - 1].removesuffix(b"\r") for r in small)


def test_memory_stays_bounded_by_the_chunk_and_the_limit(tmp_path: Path) -> None:
    line = b'{"inputs": "twelve words of text that make one record of a batch transform job"}\n'
    path = write(tmp_path / "big.jsonl", line * 200_000 + b"x" * (24 << 20) + b"\n" + line)  # ~40 MB
    tracemalloc.start()
    try:
        count = 0
        for record in read_records(str(path), limit=1 << 20):
            count += 1
            last = record
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_002 and last == Record(200_001, 200_002, line[:-1])
    assert peak < 8 << 20, peak  # the 24 MB line was counted, never held


def test_a_file_a_folder_and_a_prefix_list_in_a_stable_order(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for name in ("b.jsonl", "a/z.jsonl", "a/b/c.jsonl", "part-2.jsonl", "part-10.jsonl"):
        write(root / name, b"1\n")
    folder = list_inputs(str(root))
    assert [f.name for f in folder] == ["a/b/c.jsonl", "a/z.jsonl", "b.jsonl", "part-10.jsonl", "part-2.jsonl"]
    assert folder[0].url == f"file://{root}/a/b/c.jsonl" and folder[0].size == 2
    assert list_inputs(f"file://{root}/") == folder
    assert [f.name for f in list_inputs(f"{root}/part-")] == ["part-10.jsonl", "part-2.jsonl"]
    assert [f.name for f in list_inputs(f"{root}/a/")] == ["b/c.jsonl", "z.jsonl"]
    single = list_inputs(str(root / "a" / "z.jsonl"))
    assert [(f.url, f.name) for f in single] == [(str(root / "a" / "z.jsonl"), "z.jsonl")]
    for missing in (f"{root}/nothing", str(tmp_path / "none" / "x.jsonl")):
        with pytest.raises(BadRequest, match="no input at"):
            list_inputs(missing)


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 client on moto's S3 server with a bucket `data`, and the env hubserve reads for s3://."""
    import boto3

    with moto_s3_server() as endpoint:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint,
                            "AWS_CONFIG_FILE": str(tmp_path / "none"),
                            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="data")
        yield client
        client.close()


def test_s3_files_folders_and_prefixes(s3: Any) -> None:
    for key in ("in/b.jsonl", "in/a/c.jsonl", "in-2.jsonl", "other/x.jsonl"):
        s3.put_object(Bucket="data", Key=key, Body=f'{{"key": "{key}"}}\n\n"second"\n'.encode())
    assert [(f.url, f.name) for f in list_inputs("s3://data/in/")] == [
        ("s3://data/in/a/c.jsonl", "a/c.jsonl"), ("s3://data/in/b.jsonl", "b.jsonl")]
    assert [f.name for f in list_inputs("s3://data/in")] == ["in-2.jsonl", "in/a/c.jsonl", "in/b.jsonl"]
    assert [f.name for f in list_inputs("s3://data/in-2.jsonl")] == ["in-2.jsonl"]
    with pytest.raises(BadRequest, match="no input at"):
        list_inputs("s3://data/nothing/")
    assert list(read_records("s3://data/in/b.jsonl")) == [Record(0, 1, b'{"key": "in/b.jsonl"}'),
                                                           Record(1, 3, b'"second"')]


def test_an_http_url_is_one_file_read_as_a_stream(tmp_path: Path) -> None:
    write(tmp_path / "www" / "in.jsonl", b"1\n2\n\n3\n")
    with http_server(tmp_path / "www") as url:
        files = list_inputs(f"{url}/in.jsonl")
        assert [(f.name, f.size) for f in files] == [("in.jsonl", 7)]
        assert [(r.line, r.data) for r in read_records(files[0])] == [(1, b"1"), (2, b"2"), (4, b"3")]
        with pytest.raises(BadRequest, match="not found"):
            list_inputs(f"{url}/missing.jsonl")


def numbered(sizes: list[int]) -> list[Record]:
    return [Record(i, i + 1, b"x" * size) for i, size in enumerate(sizes)]


def test_mini_batches_fill_the_payload_joined_by_newlines() -> None:
    batches = list(mini_batches(numbered([3, 3, 3, 1, 9, 2]), "MultiRecord", 9))
    # 3+1+3 = 7 fits, +1+3 does not; 3+1+1 = 5; 9 alone; 2.
    assert [[r.index for r in b.records] for b in batches] == [[0, 1], [2, 3], [4], [5]]
    assert all(b.error is None for b in batches)
    capped = list(mini_batches(numbered([1] * 10), "MultiRecord", 100, max_records=4))
    assert [len(b.records) for b in capped] == [4, 4, 2]
    assert [len(b.records) for b in mini_batches(numbered([1] * 3), "SingleRecord", 100)] == [1, 1, 1]


def test_a_record_over_the_payload_limit_comes_alone_with_its_error() -> None:
    mb = 1 << 20
    stream = [*numbered([10, 10]), Record(2, 7, b"", oversize=int(7.5 * mb)), Record(3, 8, b"y")]
    batches = list(mini_batches(stream, "MultiRecord", 6 * mb))
    assert [([r.line for r in b.records], b.error) for b in batches] == [
        ([1, 2], None), ([7], "record at line 7 is 7.5 MB, over MaxPayloadInMB (6.0 MB)"), ([8], None)]
