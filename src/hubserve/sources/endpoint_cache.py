"""hubserve's model cache as endpoints use it: each records the cache folders it uses, so that deleting an
endpoint removes its own folders and the shared ones no other endpoint still uses.

Workers record (they resolve the sources); the server releases (it deletes endpoints). A record is an empty
file, `in-use/<endpoint>/<kind>/<key>` for the folder `<kind>/<key>`, written before the folder is built or
reused: a release that runs meanwhile sees it and keeps the folder.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubserve.sources.cache import build_once, folder_lock, temp_prefix

IN_USE = "in-use"
# The shared folders, by kind: unpacked archives, converted GGUF files, copies of remote folders and files,
# folders that link to a local GGUF file, and models a server shipped to this Ray node (serving/ray_shipping.py).
SHARED_KINDS = ("archives", "gguf", "remote", "files", "linked", "shipped")
# Each endpoint's own folders: its downloads in progress, and the packages of its requirements.txt.
OWN_KINDS = ("downloads", "packages")


@dataclass(frozen=True)
class EndpointCache:
    """The model cache under `root`, as the endpoint `endpoint` uses it."""

    root: Path
    endpoint: str

    def folder(self, kind: str, key: str, build: Callable[[Path], object]) -> Path:
        """The shared folder `<kind>/<key>`, built by `build(work_folder)` unless it exists; recorded as used."""
        assert kind in SHARED_KINDS, kind
        final = self.root / kind / key
        record = self.root / IN_USE / self.endpoint / kind / key
        record.parent.mkdir(parents=True, exist_ok=True)
        record.touch()
        return build_once(final, build)

    @property
    def downloads(self) -> Path:
        return self.root / "downloads" / self.endpoint

    @property
    def packages(self) -> Path:
        return self.root / "packages" / self.endpoint


def release(root: Path, endpoint: str) -> list[Path]:
    """Remove `endpoint`'s own folders and records, and the shared folders no other endpoint records.

    Call it once the endpoint's workers are gone. Returns the folders removed.
    """
    records = root / IN_USE / endpoint
    used = _recorded(records)
    removed = [folder for folder in (records, *(root / kind / endpoint for kind in OWN_KINDS)) if _discard(folder)]
    for relative in sorted(used):
        folder = root / relative
        if not folder.is_dir():  # its build failed, or another release removed it
            continue
        with folder_lock(folder):
            # Read again under the lock: an endpoint that started meanwhile may have recorded it.
            if any(relative in _recorded(other) for other in (root / IN_USE).iterdir()
                   if not other.name.startswith(".")):
                continue
            trash = _move_aside(folder)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(folder)
    return removed


def _recorded(records: Path) -> set[Path]:
    """The shared folders (`<kind>/<key>`, relative to the cache root) that a records folder names."""
    if not records.is_dir():
        return set()
    return {Path(kind, record.name) for kind in SHARED_KINDS for record in (records / kind).glob("*")
            if record.is_file()}


def _discard(folder: Path) -> bool:
    trash = _move_aside(folder)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return trash is not None


def _move_aside(folder: Path) -> Path | None:
    """Rename `folder` out of the way (one atomic step: no reader sees it half removed); None if absent.

    The new name is one of its temp names, which the next build of that folder sweeps if we die meanwhile.
    """
    if not folder.is_dir():
        return None
    trash = folder.with_name(f"{temp_prefix(folder)}released-{uuid.uuid4().hex}")
    folder.rename(trash)
    return trash
