"""How `hubserve transform` shows a job's progress: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any, TextIO

# Seconds between a job's progress lines when the output is not a terminal (a log file, CI).
PLAIN_EVERY_S = 10.0
BAR_WIDTH, MIN_BAR_WIDTH = 30, 10


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_text(job: dict[str, Any]) -> str:
    """Where a job stands, in one line: its state, records done of the total (unknown until its inputs are
    counted), records that failed, records/s and the time left."""
    progress, state = job["progress"], job["state"]
    done, total = progress["records_done"], progress["records_total"]
    parts = [job["spec"]["name"], state, f"{done:,}/{total:,} records" if total is not None else f"{done:,} records"]
    if total:
        parts.append(f"{done / total:.0%}")
    if progress["records_failed"]:
        parts.append(f"{progress['records_failed']:,} failed")
    if progress["records_per_s"] is not None:
        parts.append(f"{progress['records_per_s']:,.1f} records/s")
    if progress["eta_s"] is not None and state == "InProgress":
        parts.append(f"ETA {_duration(progress['eta_s'])}")
    return "  ".join(parts)


def progress_bar(job: dict[str, Any], columns: int) -> str:
    """`progress_text` behind a bar of the records done, in a terminal of `columns` characters: the bar shrinks to
    leave the text room, and goes when it would be too short to read."""
    text = progress_text(job)
    width = min(BAR_WIDTH, columns - len(text) - 4)
    if width < MIN_BAR_WIDTH:
        return text[:max(columns - 1, 0)]
    done, total = job["progress"]["records_done"], job["progress"]["records_total"]
    fraction = min(done / total, 1.0) if total else float(job["state"] == "Completed")
    filled = int(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {text}"


class ProgressDisplay:
    """Shows each poll of a job on `stream`: on a terminal, a bar redrawn in place; elsewhere (a log file, CI),
    a plain line when the state changes and at most every `PLAIN_EVERY_S` seconds meanwhile."""

    def __init__(self, stream: TextIO, tty: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.tty = tty
        self.clock = clock
        self.drawn = False
        self.last_state: str | None = None
        self.last_line_at = 0.0

    def __call__(self, job: dict[str, Any]) -> None:
        if self.tty:
            self.stream.write("\r" + progress_bar(job, shutil.get_terminal_size().columns) + "\x1b[K")
            self.drawn = True
        elif job["state"] != self.last_state or self.clock() - self.last_line_at >= PLAIN_EVERY_S:
            self.stream.write(progress_text(job) + "\n")
            self.last_state, self.last_line_at = job["state"], self.clock()
        self.stream.flush()

    def end(self) -> None:
        """Ends the bar's line, so that what follows starts on a line of its own."""
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False
