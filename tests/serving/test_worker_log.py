"""Reading why a worker died from its endpoint's log."""

from __future__ import annotations

from pathlib import Path

from hubserve.serving.worker_log import describe_exit, last_error

CHAINED = """\
2024-01-01 12:00:00 [hubserve] replica e-1 started (pid 10)
Traceback (most recent call last):
  File "inference.py", line 3, in model_fn
    open(path)
FileNotFoundError: [Errno 2] No such file or directory: 'weights.bin'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "inference.py", line 5, in model_fn
    raise RuntimeError("no weights")
RuntimeError: no weights
some later chatter
"""


def test_the_last_exception_line_wins(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text(CHAINED)
    assert last_error(log) == "RuntimeError: no weights"


def test_a_fatal_error_counts(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text("loading\nFatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n")
    assert last_error(log) == "Fatal Python error: Segmentation fault"


def test_only_what_was_written_after_the_offset_counts(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text(CHAINED)
    offset = log.stat().st_size
    with open(log, "a") as handle:
        handle.write("replica e-2 exits quietly\n")
    assert last_error(log, offset) is None
    assert last_error(tmp_path / "missing.log") is None


def test_exits_are_described() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "was killed by SIGKILL (code -9)"
    assert "unknown" in describe_exit(None)
