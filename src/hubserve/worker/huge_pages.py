"""Memory a native library allocates, moved onto 2 MiB pages (Linux transparent huge pages).

A forward of a small model reads every weight once per token: SmolLM2-135M in bf16 streams 270 MB through the TLB
each step, and on 4 KiB pages that is 66,000 pages' translations a token. On 2 MiB pages it is 135. Measured on this
project's 2-core machine (llama.cpp, SmolLM2 bf16): a lone one-token forward took 5-15% less time with the weights on
huge pages than mapped from the file (three processes each way), and one stream answered whole made 3-5% more
tokens/s against llama-server's in the same rounds.

Libraries allocate with plain malloc, which asks for no huge pages (the kernel's default policy here is `madvise`:
only memory advised so gets them). So the memory a call maps is found afterwards, by comparing the process's
mappings before and after it (`new_ranges`), and each new range is advised (MADV_HUGEPAGE, for the pages it faults
in later) and collapsed at once (MADV_COLLAPSE, Linux 6.1: the pages it holds are copied onto huge ones). Only
address space the call mapped is touched; a kernel or platform without either leaves the memory as it was.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
THP_POLICY = Path("/sys/kernel/mm/transparent_hugepage/enabled")

Range = tuple[int, int]


def unavailable() -> str | None:
    """Why memory cannot be moved onto huge pages here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "transparent huge pages are Linux's"
    try:
        policy = THP_POLICY.read_text()
    except OSError:
        return "this kernel has no transparent huge pages"
    if "[never]" in policy:
        return "transparent huge pages are turned off on this machine (policy 'never')"
    return None


def private_mappings(maps: Iterable[str] | None = None) -> list[Range]:
    """The process's writable private anonymous mappings (start, end), from /proc/self/maps' lines."""
    ranges = []
    lines = maps if maps is not None else Path("/proc/self/maps").read_text().splitlines()
    for line in lines:
        fields = line.split()
        if len(fields) == 5 and fields[1] == "rw-p":  # no path: anonymous (a [heap] or [stack] has one)
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def new_ranges(before: Iterable[Range], after: Iterable[Range]) -> list[Range]:
    """The address space mapped in `after` but in no range of `before` (a new mapping may have merged with an old
    neighbour, or an old one grown), each piece trimmed to whole huge pages; pieces under one huge page left out."""
    old = sorted(before)
    starts = [start for start, _ in old]
    found = []
    for start, end in after:
        if end - start < HUGE_PAGE:
            continue
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        low = start
        while low < end:
            while i < len(old) and old[i][1] <= low:
                i += 1
            if i < len(old) and old[i][0] <= low:  # inside an old range: past it
                low = old[i][1]
                continue
            high = min(end, old[i][0]) if i < len(old) else end
            first, last = -(-low // HUGE_PAGE) * HUGE_PAGE, high // HUGE_PAGE * HUGE_PAGE
            if last > first:
                found.append((first, last))
            low = high
    return found


@dataclass
class Collapsed:
    """What `collapse` did: the bytes it was given, those now on huge pages, and what failed (None: nothing)."""

    size: int = 0
    huge: int = 0
    failure: str | None = None


# MADV_COLLAPSE's EAGAIN is transient ("unable to allocate a huge page due to transient memory conditions", or a page
# it could not isolate just then): it is asked again, after a pause, up to this many times in all.
COLLAPSE_TRIES = 5
COLLAPSE_PAUSE_S = 0.05
Advise = Callable[[int, int, int], int]  # madvise(start, length, advice): 0, or the errno


def madvise() -> Advise:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

    def advise(start: int, length: int, advice: int) -> int:
        return 0 if libc.madvise(start, length, advice) == 0 else ctypes.get_errno()

    return advise


def collapse(ranges: Sequence[Range], advise: Advise | None = None) -> Collapsed:
    """Advise and collapse `ranges` onto huge pages; the bytes of them on huge pages after, as the kernel counts them
    (smaps' AnonHugePages)."""
    advise = advise or madvise()
    result = Collapsed(size=sum(end - start for start, end in ranges))
    for start, end in ranges:
        error = advise(start, end - start, MADV_HUGEPAGE)
        if error:
            result.failure = f"MADV_HUGEPAGE failed ({os.strerror(error)})"
            continue
        for attempt in range(COLLAPSE_TRIES):  # each try collapses what the last left
            if attempt:
                time.sleep(COLLAPSE_PAUSE_S * attempt)
            error = advise(start, end - start, MADV_COLLAPSE)
            if error != errno.EAGAIN:
                break
        if error:
            result.failure = f"MADV_COLLAPSE failed ({os.strerror(error)})"
    result.huge = huge_bytes(ranges)
    return result


def huge_bytes(ranges: Sequence[Range], smaps: Iterable[str] | None = None) -> int:
    """The bytes on huge pages of the mappings that lie inside `ranges` (from /proc/self/smaps' lines)."""
    inside = False
    total = 0
    lines = smaps if smaps is not None else Path("/proc/self/smaps").read_text().splitlines()
    for line in lines:
        head = line.split(maxsplit=1)[0] if line else ""
        if "-" in head and not head.endswith(":"):  # a mapping's first line: "start-end perms ..."
            start, end = (int(bound, 16) for bound in head.split("-"))
            inside = any(low <= start and end <= high for low, high in ranges)
        elif inside and head == "AnonHugePages:":
            total += int(line.split()[1]) * 1024
    return total


class NewMemory:
    """The private memory mapped while in this block (`ranges`, after it), where huge pages can be had and are not
    turned off (`off`: why not); nothing otherwise."""

    def __init__(self, off: str | None = None) -> None:
        self.unavailable = off or unavailable()
        self.ranges: list[Range] = []

    def __enter__(self) -> NewMemory:
        self._before = private_mappings() if self.unavailable is None else []
        return self

    def __exit__(self, *exc: object) -> None:
        if self.unavailable is None:
            self.ranges = new_ranges(self._before, private_mappings())
