"""Memory a call maps, found from the process's mappings before and after it, and moved onto huge pages: the address
ranges it alone mapped (an old neighbour or an old mapping's growth left out), trimmed to whole huge pages; and on
this machine, memory mapped in the block really ends on huge pages, as the kernel counts them; a collapse the kernel
refuses for the moment (EAGAIN) is asked again."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

import pytest

from hubserve.worker import huge_pages
from hubserve.worker.huge_pages import (
    HUGE_PAGE,
    NewMemory,
    collapse,
    huge_bytes,
    new_ranges,
    private_mappings,
    unavailable,
)

H = HUGE_PAGE


def test_new_ranges_are_what_no_old_mapping_held_trimmed_to_whole_huge_pages() -> None:
    before = [(0, 2 * H), (10 * H, 11 * H)]
    after = [
        (0, 4 * H + 5),  # an old mapping grown by 2 huge pages and a bit
        (8 * H, 12 * H),  # a new one merged around an old one
        (20 * H + 1, 23 * H),  # a new one, not aligned
        (30 * H, 31 * H - 1),  # under one huge page
    ]
    assert new_ranges(before, after) == [(2 * H, 4 * H), (8 * H, 10 * H), (11 * H, 12 * H), (21 * H, 23 * H)]
    assert new_ranges(after, after) == []


def test_private_mappings_are_the_anonymous_writable_private_ones() -> None:
    maps = [
        "55a4f862e000-55a4f98fe000 rw-p 00000000 00:00 0                          [heap]",
        "7f338adb3000-7f339ae57000 r--s 001b3000 fe:00 5441774                    /models/x.gguf",
        "7f339aefb000-7f339b2fd000 rw-p 00000000 00:00 0",
        "7f339b2fd000-7f339b2fe000 ---p 00000000 00:00 0",
        "7f339c000000-7f339c400000 rw-s 00000000 00:01 12                          /dev/zero (deleted)",
    ]
    assert private_mappings(maps) == [(0x7F339AEFB000, 0x7F339B2FD000)]


def test_huge_bytes_counts_the_mappings_inside_the_ranges() -> None:
    smaps = [
        "7f0000000000-7f0000400000 rw-p 00000000 00:00 0",
        "Size:               4096 kB",
        "AnonHugePages:      4096 kB",
        "7f0000400000-7f0000600000 rw-p 00000000 00:00 0",
        "AnonHugePages:      2048 kB",
        "VmFlags: rd wr mr mw me ac hg",
    ]
    assert huge_bytes([(0x7F0000000000, 0x7F0000400000)], smaps) == 4 << 20
    assert huge_bytes([(0x7F0000000000, 0x7F0000600000)], smaps) == 6 << 20
    assert huge_bytes([(0x7F0000600000, 0x7F0000800000)], smaps) == 0


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_memory_mapped_in_the_block_ends_on_huge_pages_and_older_memory_is_left() -> None:
    older = mmap.mmap(-1, 8 * H, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    older.write(b"\1" * (8 * H))
    view = ctypes.c_char.from_buffer(older)
    older_address = ctypes.addressof(view)
    del view
    with NewMemory() as memory:
        fresh = mmap.mmap(-1, 8 * H, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        fresh.write(b"\2" * (8 * H))
    assert memory.ranges, "the new mapping was not found"
    assert sum(end - start for start, end in memory.ranges) >= 7 * H  # all of it but an unaligned edge
    assert huge_bytes(memory.ranges) == 0  # malloc's (and mmap's) memory gets none by itself
    moved = collapse(memory.ranges)
    assert moved.failure is None
    assert moved.huge == moved.size >= 7 * H
    fresh.seek(0)
    assert fresh.read() == b"\2" * (8 * H)  # the same bytes, on other pages
    assert not any(low <= older_address < high for low, high in memory.ranges)
    fresh.close()
    older.close()


def test_a_block_where_huge_pages_cannot_be_had_finds_nothing() -> None:
    with NewMemory(off="not here") as memory:
        fresh = mmap.mmap(-1, 4 * H, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        fresh.write(b"\3" * (4 * H))
    assert memory.ranges == []
    fresh.close()


def test_a_collapse_the_kernel_refuses_for_now_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """MADV_COLLAPSE's EAGAIN is transient (a huge page it could not have just then): asked again until it takes, or
    the tries run out; any other error is final at once."""
    monkeypatch.setattr(huge_pages, "COLLAPSE_PAUSE_S", 0.001)
    monkeypatch.setattr(huge_pages, "huge_bytes", lambda ranges: 0)
    answers: dict[int, list[int]] = {}

    def advise(start: int, length: int, advice: int) -> int:
        if advice == huge_pages.MADV_HUGEPAGE:
            return 0
        asked = answers[start]
        return asked.pop(0) if len(asked) > 1 else asked[0]

    answers = {0: [errno.EAGAIN, errno.EAGAIN, 0], 4 * H: [errno.EAGAIN]}
    moved = collapse([(0, 2 * H), (4 * H, 6 * H)], advise)
    assert moved.failure == f"MADV_COLLAPSE failed ({os.strerror(errno.EAGAIN)})"  # the second range never took
    assert answers == {0: [0], 4 * H: [errno.EAGAIN]}
    answers = {0: [errno.EAGAIN, 0]}
    assert collapse([(0, 2 * H)], advise).failure is None
    tries = []
    answers = {0: [errno.EINVAL, 0]}
    moved = collapse([(0, 2 * H)], lambda start, length, advice: tries.append(advice) or advise(start, length, advice))
    assert moved.failure == f"MADV_COLLAPSE failed ({os.strerror(errno.EINVAL)})"
    assert tries == [huge_pages.MADV_HUGEPAGE, huge_pages.MADV_COLLAPSE]
