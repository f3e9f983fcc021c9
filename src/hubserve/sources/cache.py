"""Build a folder in hubserve's cache exactly once, even with several replicas resolving the same source."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK_BYTES = 1024 * 1024


def build_once(final: Path, build: Callable[[Path], object]) -> Path:
    """`final`, built by `build(work_folder)` if it does not exist yet.

    Readers never see a half-built folder: it is built in a sibling temp folder that is renamed into
    place, and a file lock keeps a second process from building it at the same time.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(final):
        if final.is_dir():  # built by whoever held the lock before us
            return final
        _remove_leftovers(final)
        work = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final)))
        try:
            build(work)
            work.chmod(0o755)  # mkdtemp makes it private; replicas may run as other users
            work.rename(final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return final


def temp_prefix(final: Path) -> str:
    """The names of `final`'s temp siblings: the next build of `final` sweeps them away."""
    return f".{final.name}.tmp-"


@contextmanager
def folder_lock(final: Path) -> Iterator[None]:
    """Held while `final` is built or removed; other processes wait."""
    with open(final.parent / f".{final.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(final: Path) -> None:
    """Drop temp folders of builds that crashed: we hold the lock, so no build is running."""
    for leftover in final.parent.glob(f"{temp_prefix(final)}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def inside(root: Path | str, target: Path | str) -> bool:
    """Whether `target` (already normalised or resolved) is `root` or below it."""
    root, target = os.fspath(root), os.fspath(target)
    return os.path.commonpath([root, target]) == root
