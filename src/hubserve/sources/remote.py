"""Read model files from fsspec URLs (s3://, http(s)://, hf://) into hubserve's cache.

fsspec and its backends are imported on first use: they are heavy, and s3fs reads the AWS env when a
filesystem is made, so the resolving process's env is the one that counts.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hubserve.errors import BadRequest
from hubserve.sources.cache import CHUNK_BYTES, inside, sha256_text
from hubserve.sources.endpoint_cache import EndpointCache

REMOTE_SCHEMES = ("s3", "http", "https", "hf")
# Fields, by backend, that change when a remote file's content does: they key the cached copy of a folder.
VERSION_FIELDS = ("ETag", "etag", "blob_id", "oid", "mtime", "LastModified", "last_modified")


def storage_options(url: str, token: str | None) -> dict[str, Any]:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "s3":
        # botocore's own support for these variables depends on its version; passing it on is certain.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    if scheme == "hf" and token:
        return {"token": token}
    return {}


@contextmanager
def remote_errors(url: str) -> Iterator[None]:
    """Turn what fsspec backends raise into a message the endpoint's owner can act on."""
    try:
        yield
    except BadRequest:
        raise
    except FileNotFoundError as error:
        # fsspec's http backend says "not found" for a server it cannot reach, too.
        raise BadRequest(f"'{url}' was not found, or its server could not be reached") from error
    except PermissionError as error:
        raise BadRequest(
            f"access to '{url}' was denied: check the credentials (AWS_* variables for s3://, "
            f"HF_TOKEN for hf://) ({error})"
        ) from error
    except Exception as error:  # each backend (botocore, aiohttp, httpx) raises its own kinds
        raise BadRequest(f"could not read '{url}': {type(error).__name__}: {error}") from error


@contextmanager
def downloaded(url: str, *, token: str | None, into: Path) -> Iterator[Path]:
    """A temp copy of the file at `url`, deleted on exit unless the caller moved it away."""
    import fsspec

    into.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=into, prefix=".download-")
    temp = Path(name)
    try:
        with (
            remote_errors(url),
            os.fdopen(handle, "wb") as out,
            fsspec.open(url, "rb", **storage_options(url, token)) as source,
        ):
            shutil.copyfileobj(source, out, CHUNK_BYTES)
        yield temp
    finally:
        temp.unlink(missing_ok=True)


def copy_folder(url: str, *, token: str | None, cache: EndpointCache) -> Path:
    """A cached copy of the folder at `url`, fetched again only when a file in it changed."""
    from fsspec.core import url_to_fs

    with remote_errors(url):
        fs, root = url_to_fs(url, **storage_options(url, token))
        root = root.rstrip("/")
        if not fs.isdir(root):
            found = fs.exists(root)
            raise BadRequest(
                f"'{url}' is not an archive (.tar.gz, .tgz, .tar, .zip), a .gguf file or a folder"
                if found
                else f"'{url}' was not found"
            )
        listing = fs.find(root, detail=True)
    files = sorted(
        (posixpath.relpath(name, root), str(info.get("size")), _version(info))
        for name, info in listing.items()
    )
    if not files:
        raise BadRequest(f"the folder '{url}' is empty")
    key = sha256_text(url.rstrip("/"), json.dumps(files))
    return cache.folder("remote", key, lambda work: _fetch_files(fs, root, [name for name, _, _ in files], work, url))


def _fetch_files(fs: Any, root: str, names: list[str], work: Path, url: str) -> None:
    targets = [os.path.normpath(work / name) for name in names]
    for name, target in zip(names, targets, strict=True):
        if not inside(work, target):
            raise BadRequest(f"file '{name}' in '{url}' would be written outside the model folder")
        os.makedirs(os.path.dirname(target), exist_ok=True)
    with remote_errors(url):
        fs.get([f"{root}/{name}" for name in names], targets)


def _version(info: dict[str, Any]) -> str:
    return next((str(info[field]) for field in VERSION_FIELDS if info.get(field) is not None), "")
