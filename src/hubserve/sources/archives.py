"""Unpack model archives (.tar.gz, .tgz, .tar, .zip) safely into hubserve's cache, once per content."""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from hubserve.errors import BadRequest
from hubserve.sources.cache import build_once, inside, sha256_file

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")
# Entries archivers add next to the real content; they must not stop us from finding the model's folder.
IGNORED_TOP_LEVEL = {"__MACOSX", ".DS_Store"}
UNREADABLE = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError)


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, cache_dir: Path, *, label: str) -> Path:
    """The model folder inside `archive` once unpacked; the same content always gives the same folder.

    `label` names the archive in error messages (the file may be a temp copy of a download).
    """
    final = cache_dir / "archives" / sha256_file(archive)
    build_once(final, lambda work: _extract(archive, work, label))
    return _model_root(final)


def _extract(archive: Path, work: Path, label: str) -> None:
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, work)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, work)
        else:
            raise BadRequest(f"'{label}' is not a tar or zip archive that hubserve can read")
    except UNREADABLE as error:
        raise BadRequest(f"could not unpack '{label}': {error}") from error
    _check_symlinks(work)


def _extract_tar(archive: Path, work: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_tar_member(work, member)
        try:
            # Our own checks give the clear messages; the "data" filter also follows symlinks already on disk.
            tar.extractall(work, members=members, filter="data")
        except tarfile.FilterError as error:
            name = error.tarinfo.name if error.tarinfo else "?"
            raise BadRequest(f"archive member '{name}' was refused: {error}") from error


def _check_tar_member(root: Path, member: tarfile.TarInfo) -> None:
    _check_inside(root, member.name, member.name, "would be written")
    if member.issym():
        target = posixpath.join(posixpath.dirname(member.name), member.linkname)
        _check_inside(root, member.name, target, f"links to '{member.linkname}',")
    elif member.islnk():
        # A hard link names its target from the archive's root, not from the member's folder.
        _check_inside(root, member.name, member.linkname, f"links to '{member.linkname}',")
    elif not (member.isfile() or member.isdir()):
        raise _special_file(member.name)


def _extract_zip(archive: Path, work: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            _check_zip_member(work, member)
        bundle.extractall(work, members)


def _check_zip_member(root: Path, member: zipfile.ZipInfo) -> None:
    _check_inside(root, member.filename, member.filename, "would be written")
    kind = stat.S_IFMT(member.external_attr >> 16)  # 0 when the archiver stored no Unix file type
    if kind == stat.S_IFLNK:
        # zipfile would write the link's target as the file's text; failing is clearer than a broken model.
        raise BadRequest(
            f"archive member '{member.filename}' is a symlink, which hubserve does not unpack from zip "
            "archives: store the file itself, or use a tar archive"
        )
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _special_file(member.filename)


def _check_inside(root: Path, member: str, relative: str, action: str) -> None:
    target = os.path.normpath(os.path.join(root, relative))
    if os.path.isabs(relative) or not inside(root, target):
        raise BadRequest(
            f"archive member '{member}' {action} outside the model folder; refusing to unpack the archive"
        )


def _special_file(member: str) -> BadRequest:
    return BadRequest(
        f"archive member '{member}' is a device or other special file, which a model archive must not hold"
    )


def _check_symlinks(root: Path) -> None:
    """Reject links that only point outside once resolved on disk (a link through another link)."""
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path) and not inside(real_root, os.path.realpath(path)):
                member = os.path.relpath(path, root)
                raise BadRequest(f"archive member '{member}' links outside the model folder")


def _model_root(folder: Path) -> Path:
    """The archive's single top-level folder when it has one (`tar czf model.tar.gz my-model/`).

    Not `code/`: in SageMaker's layout that holds the scripts beside the model, so the root is the model.
    """
    entries = [entry for entry in folder.iterdir() if entry.name not in IGNORED_TOP_LEVEL]
    if len(entries) != 1 or entries[0].name == "code":
        return folder
    only = entries[0]
    return only if only.is_dir() and not only.is_symlink() else folder
