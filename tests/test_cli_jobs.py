"""`hubserve transform` and `hubserve jobs`: their options as a job's spec, and how progress is shown."""

from __future__ import annotations

import io
from typing import Any

import pytest

from hubserve.cli import build_parser, main
from hubserve.cli.jobs import _job_fields
from hubserve.cli.progress import PLAIN_EVERY_S, ProgressDisplay, progress_bar, progress_text
from hubserve.client import job_spec, unique_job_name
from hubserve.jobs.spec import JobProgress, JobState, TransformJob, TransformJobSpec
from hubserve.spec import NAME_PATTERN


def job(state: str = "InProgress", **progress: Any) -> dict[str, Any]:
    """A job as `GET /api/v1/jobs/{name}` answers it."""
    spec = TransformJobSpec(name="embed", model="org/minilm", input="in/", output="out/")
    return TransformJob(spec=spec, state=JobState(state), progress=JobProgress(**progress)).model_dump(mode="json")


def test_every_transform_option_lands_in_the_job_spec() -> None:
    args = build_parser().parse_args([
        "transform", "nightly", "--model", "org/minilm", "--task", "feature-extraction", "--env", "A=1",
        "--device", "cpu", "--timeout", "30", "--instance-count", "2", "--input", "s3://bucket/in/",
        "--output", "s3://bucket/out/", "--content-type", "text/csv", "--split-type", "None",
        "--strategy", "SingleRecord", "--max-payload-mb", "1", "--max-concurrent-transforms", "4",
        "--accept", "text/csv", "--assemble-with", "None", "--input-filter", "$[1:]", "--output-filter", "$[0]",
        "--join-source", "Input", "--on-error", "skip"])
    fields = {"name": args.name, **_job_fields(args)}
    assert fields == {
        "name": "nightly", "model": "org/minilm", "task": "feature-extraction", "env": {"A": "1"}, "device": "cpu",
        "timeout_s": 30.0, "instance_count": 2, "input": "s3://bucket/in/", "output": "s3://bucket/out/",
        "content_type": "text/csv", "split_type": "None", "batch_strategy": "SingleRecord", "max_payload_mb": 1,
        "max_concurrent_transforms": 4, "accept": "text/csv", "assemble_with": "None", "on_error": "skip",
        "data_processing": {"input_filter": "$[1:]", "output_filter": "$[0]", "join_source": "Input"}}
    TransformJobSpec.model_validate(fields)  # the names and values are the shared spec's


def test_options_not_given_keep_the_servers_defaults() -> None:
    args = build_parser().parse_args(["transform", "--endpoint", "minilm", "--input", "in.jsonl", "--output", "out"])
    assert args.name is None and args.attach is None
    assert _job_fields(args) == {"endpoint": "minilm", "input": "in.jsonl", "output": "out"}
    assert TransformJobSpec.model_validate({"name": "x", **_job_fields(args)}).batch_strategy == "MultiRecord"


def test_job_spec_nests_data_processing_only_when_given() -> None:
    assert job_spec({"name": "a", "input_filter": None, "accept": None}) == {"name": "a"}
    assert job_spec({"name": "a", "join_source": "Input"}) == {"name": "a", "data_processing": {"join_source": "Input"}}


def test_generated_job_names_are_valid_and_distinct() -> None:
    long = unique_job_name("b" * 80 + "-")
    assert len(long) <= 63 and NAME_PATTERN.fullmatch(long)
    short = unique_job_name()
    assert short.startswith("transform-20") and NAME_PATTERN.fullmatch(short)
    TransformJobSpec(name=long, endpoint="e", input="i", output="o")


@pytest.mark.parametrize("argv", [["transform", "--attach", "embed", "--input", "more.jsonl"],
                                  ["transform", "--attach", "embed", "other"],
                                  ["transform", "--model", "org/minilm", "--output", "out"]])
def test_transform_refuses_options_that_do_not_fit(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="--attach NAME"):
        main(["--url", "http://127.0.0.1:9", *argv])  # refused before any request


def test_jobs_commands_parse() -> None:
    parser = build_parser()
    assert parser.parse_args(["jobs", "list"]).jobs_command == "list"
    stop = parser.parse_args(["jobs", "stop", "embed"])
    assert (stop.jobs_command, stop.name) == ("stop", "embed")
    logs = parser.parse_args(["jobs", "logs", "embed", "-f", "--tail", "5"])
    assert (logs.follow, logs.tail) == (True, 5)
    with pytest.raises(SystemExit):
        parser.parse_args(["jobs"])


def test_progress_text_while_running() -> None:
    line = progress_text(job(records_done=2500, records_total=10_000, records_per_s=812.5, eta_s=9.2))
    assert line == "embed  InProgress  2,500/10,000 records  25%  812.5 records/s  ETA 9s"
    counting = progress_text(job(records_done=300, records_failed=2, eta_s=3725))
    assert counting == "embed  InProgress  300 records  2 failed  ETA 1h02m"


def test_progress_text_once_ended_has_no_eta() -> None:
    line = progress_text(job("Failed", records_done=10, records_total=20, records_per_s=5.0, eta_s=2.0))
    assert line == "embed  Failed  10/20 records  50%  5.0 records/s"


def test_progress_bar_fills_with_the_records_done_and_fits_the_terminal() -> None:
    half = progress_bar(job(records_done=5, records_total=10), 200)
    assert half.startswith("[" + "#" * 15 + "." * 15 + "] embed  InProgress  5/10 records")
    assert progress_bar(job("Completed", records_done=0, records_total=0), 200).startswith("[" + "#" * 30 + "]")
    assert progress_bar(job(records_done=3), 200).startswith("[" + "." * 30 + "]")  # total not counted yet
    narrow = progress_bar(job(records_done=5, records_total=10), 50)
    assert narrow == "[#####.....] embed  InProgress  5/10 records  50%"  # the bar leaves the text room
    assert progress_bar(job(records_done=5, records_total=10), 30) == "embed  InProgress  5/10 recor"


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True)
    display(job(records_done=1, records_total=4))
    display(job(records_done=4, records_total=4))
    display.end()
    written = out.getvalue()
    assert written.count("\r") == 2 and written.count("\n") == 1 and written.endswith("4/4 records  100%\x1b[K\n")


def test_elsewhere_plain_lines_at_each_state_and_every_few_seconds() -> None:
    out, now = io.StringIO(), [0.0]
    display = ProgressDisplay(out, tty=False, clock=lambda: now[0])
    for seconds, done in ((0, 0), (1, 10), (PLAIN_EVERY_S + 0.5, 20), (PLAIN_EVERY_S + 1, 30)):
        now[0] = seconds
        display(job(records_done=done, records_total=40))
    display(job("Completed", records_done=40, records_total=40))
    display.end()
    assert out.getvalue().splitlines() == ["embed  InProgress  0/40 records  0%",
                                           "embed  InProgress  20/40 records  50%",
                                           "embed  Completed  40/40 records  100%"]
