"""How much CPU the machine's other processes took while a suite ran: on a shared 2-core machine one busy neighbour
makes torch's OpenMP threads wait at every barrier (PyTorch's MiniLM limit then falls tenfold, ONNX Runtime's about
threefold), so a figure means something only beside this."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    """CPU time of the whole machine, all cores, outside idle and iowait."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def _tree_ticks(root: int) -> int:
    """CPU time of `root` and every process below it, with what their reaped children used (a server stopped
    during the suite counts through its parent)."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    mine, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in mine]
        mine.update(children)
        frontier += children
    return sum(times.get(pid, 0) for pid in mine)


@dataclass(frozen=True)
class Snapshot:
    wall: float
    busy: int
    ours: int

    @classmethod
    def take(cls) -> Snapshot:
        return cls(time.monotonic(), _busy_ticks(), _tree_ticks(os.getpid()))

    def others_since(self, start: Snapshot) -> float:
        """Cores the other processes kept busy on average from `start` to this snapshot."""
        seconds = self.wall - start.wall
        if seconds <= 0:
            return 0.0
        return max(0.0, (self.busy - start.busy) - (self.ours - start.ours)) / TICKS / seconds
