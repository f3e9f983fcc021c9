"""Unpack model archives (.tar.gz, .tgz, .tar, .tar.bz2, .tar.xz, .zip) safely into hubserve's cache, once per
content, within limits on how much they unpack to."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from hubserve.errors import BadRequest
from hubserve.sources.cache import CHUNK_BYTES, inside, sha256_file
from hubserve.sources.endpoint_cache import EndpointCache

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")
# Entries archivers add next to the real content; they must not stop us from finding the model's folder.
IGNORED_TOP_LEVEL = {"__MACOSX", ".DS_Store"}
UNREADABLE = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError)
# Compressed tar streams by their first bytes (what tarfile's "r:*" tries), each opened over the raw file.
DECOMPRESSORS: tuple[tuple[bytes, Callable[[IO[bytes]], io.BufferedIOBase]], ...] = (
    (b"\x1f\x8b", gzip.open),
    (b"BZh", bz2.open),
    (b"\xfd7zXZ\x00", lzma.open),
)


class ArchiveLimits(BaseModel):
    """How far an archive may unpack: in all, and as a multiple of its own size (a compression bomb)."""

    model_config = ConfigDict(frozen=True)

    max_unpacked_bytes: int = Field(default=256 << 30, ge=1)
    # Weights barely compress (about 1.1x); text files (vocabularies, configs) compress 5-10x.
    max_compression_ratio: float = Field(default=100.0, gt=1)
    # The ratio is only checked past this many bytes: a small model of mostly text, or of zero-filled
    # tensors, compresses far better than weights and is harmless at any ratio.
    ratio_checked_from_bytes: int = Field(default=64 << 20, ge=0)


class _Meter:
    """Counts the bytes an archive unpacks to, as they come out, and stops at the first one over a limit."""

    def __init__(self, archive: Path, limits: ArchiveLimits, label: str) -> None:
        self._total = 0
        self._packed = archive.stat().st_size
        self._limits = limits
        self._label = label

    def add(self, count: int) -> None:
        self._total += count
        limits = self._limits
        if self._total > limits.max_unpacked_bytes:
            raise BadRequest(
                f"'{self._label}' unpacks to more than {limits.max_unpacked_bytes} bytes, the server's limit "
                "(HUBSERVE_MAX_UNPACKED_BYTES); refusing to unpack it"
            )
        if self._total > max(limits.ratio_checked_from_bytes, limits.max_compression_ratio * self._packed):
            raise BadRequest(
                f"'{self._label}' unpacks to more than {limits.max_compression_ratio:g} times its own size "
                f"({self._packed} bytes), which no model archive does: refusing it as a compression bomb "
                "(the server's limit is HUBSERVE_MAX_COMPRESSION_RATIO)"
            )


class _MeteredStream:
    """A decompressed tar stream that meters every byte the first time it is decompressed.

    A seek forward (tarfile skipping a member's data) is read through chunk by chunk, so that a member
    that declares terabytes is stopped at the limit rather than decompressed to its end first.
    """

    def __init__(self, inner: io.BufferedIOBase, meter: _Meter) -> None:
        self._inner = inner
        self._meter = meter
        self._position = 0
        self._reached = 0

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        chunks = []
        while size != 0:
            chunk = self._inner.read(CHUNK_BYTES if size < 0 else min(size, CHUNK_BYTES))
            if not chunk:
                break
            self._position += len(chunk)
            if self._position > self._reached:
                self._meter.add(self._position - self._reached)
                self._reached = self._position
            chunks.append(chunk)
            size = size - len(chunk) if size > 0 else size
        return b"".join(chunks)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence not in (os.SEEK_SET, os.SEEK_CUR):
            raise OSError(f"unsupported seek in an archive stream (whence {whence})")
        target = self._position + offset if whence == os.SEEK_CUR else offset
        if target <= self._reached:  # ground already metered: the decompressor may rewind to it
            self._position = self._inner.seek(target)
            return self._position
        self._position = self._inner.seek(self._reached)
        while self._position < target and self.read(min(CHUNK_BYTES, target - self._position)):
            pass
        return self._position


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, cache: EndpointCache, limits: ArchiveLimits, *, label: str) -> Path:
    """The model folder inside `archive` once unpacked; the same content always gives the same folder.

    `label` names the archive in error messages (the file may be a temp copy of a download). An archive over
    `limits` is refused as soon as it crosses one, and leaves nothing behind.
    """
    final = cache.folder("archives", sha256_file(archive), lambda work: _extract(archive, work, limits, label))
    return _model_root(final)


def _extract(archive: Path, work: Path, limits: ArchiveLimits, label: str) -> None:
    meter = _Meter(archive, limits, label)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, work, meter)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, work, meter)
        else:
            raise BadRequest(f"'{label}' is not a tar or zip archive that hubserve can read")
    except UNREADABLE as error:
        raise BadRequest(f"could not unpack '{label}': {error}") from error
    _check_symlinks(work)


@contextmanager
def _tar_stream(archive: Path, meter: _Meter) -> Iterator[IO[bytes] | _MeteredStream]:
    with open(archive, "rb") as raw:
        magic = raw.read(8)
        raw.seek(0)
        opener = next((open_ for prefix, open_ in DECOMPRESSORS if magic.startswith(prefix)), None)
        if opener is None:
            # A plain tar unpacks to no more than its own size (sparse members are refused): meter that at once.
            meter.add(archive.stat().st_size)
            yield raw
            return
        with opener(raw) as decompressed:
            yield _MeteredStream(decompressed, meter)


def _extract_tar(archive: Path, work: Path, meter: _Meter) -> None:
    # A duck-typed stream: it reads and seeks, which is all that tarfile does with it.
    with _tar_stream(archive, meter) as stream, tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
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
    elif member.issparse():
        # Its holes would unpack to a size no byte in the archive accounts for; model files are never sparse.
        raise BadRequest(f"archive member '{member.name}' is a sparse file, which a model archive must not hold")
    elif not (member.isfile() or member.isdir()):
        raise _special_file(member.name)


def _extract_zip(archive: Path, work: Path, meter: _Meter) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            _check_zip_member(work, member)
        for member in members:
            target = Path(os.path.normpath(work / member.filename))
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # Copied by hand to meter the bytes as they come out: sizes in the zip's headers are only claims.
            with bundle.open(member) as source, open(target, "wb") as out:
                while chunk := source.read(CHUNK_BYTES):
                    meter.add(len(chunk))
                    out.write(chunk)


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
