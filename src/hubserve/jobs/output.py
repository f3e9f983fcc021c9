"""What a transform job writes: its answers staged on the server's disk, each file's published whole to the
job's output once done, and the job's log."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from hubserve.jobs.store import JobFile

ANSWERS = ".out"
ERRORS = ".errors"


def output_url(output: str, name: str, suffix: str) -> str:
    """Where the answers (or errors) of the input file `name` (its path under the input) go."""
    return f"{output.rstrip('/')}/{name}{suffix}"


class Staging:
    """A job's staged files under `folder`: per input file its answers and its errors, appended to and fsync'd
    before the store records their lengths."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, file: JobFile, suffix: str) -> Path:
        return self.folder / f"{file.position}{suffix}"

    def resume(self, file: JobFile) -> None:
        """Cut the file's staged answers and errors back to what its last checkpoint recorded (a crash may have
        left answers written after it, which are run again)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for suffix, length in ((ANSWERS, file.staged_bytes), (ERRORS, file.errors_bytes)):
            with open(self.path(file, suffix), "ab") as handle:
                handle.truncate(length)

    def append(self, file: JobFile, answers: bytes, errors: bytes) -> tuple[int, int]:
        """Append and make durable; the new lengths of the staged answers and errors."""
        lengths = []
        for suffix, data in ((ANSWERS, answers), (ERRORS, errors)):
            with open(self.path(file, suffix), "ab") as handle:
                if data:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                lengths.append(handle.tell())
        return lengths[0], lengths[1]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class JobLog:
    """The job's log, one `<ISO time> <message>` line per event: what `jobs logs` and CloudWatch Logs show."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            for line in message.splitlines() or [""]:
                handle.write(f"{stamp} {line}\n")
