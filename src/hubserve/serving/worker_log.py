"""What a dead worker left in its endpoint's log: the error that ended it, for the endpoint's message."""

from __future__ import annotations

import signal
from pathlib import Path

TRACEBACK = "Traceback (most recent call last):"
FATAL = "Fatal Python error:"  # faulthandler's first line for a segfault or an abort
# A worker's own output at load is small; a log that grew far past this holds other replicas' talk too.
READ_AT_MOST = 1 << 20


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def last_error(path: Path, offset: int = 0) -> str | None:
    """The last error written to `path` from byte `offset` on: an exception's last line (`ValueError: ...`,
    after its traceback) or a fatal error's first."""
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        handle.seek(max(offset, log_size(path) - READ_AT_MOST))
        text = handle.read().decode(errors="replace")
    found = None
    in_traceback = False
    for line in text.splitlines():
        if line.startswith(FATAL):
            found, in_traceback = line.strip(), False
        elif line.startswith(TRACEBACK):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():  # the frames are indented, the exception not
            found, in_traceback = line.strip(), False
    return found


def describe_exit(code: int | None) -> str:
    """How a worker process ended, as a phrase: `exited with code 3`, `was killed by SIGKILL (code -9)`."""
    if code is None:
        return "ended (its exit code is unknown: the zygote that forked it, or the Ray node it ran on, is gone)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"
