"""The objects of asynchronous inference, through fsspec (s3:// with the server's AWS_ENDPOINT_URL_S3, file://,
...): a request's input, and its answer or failure, each written whole or not at all, since clients poll for
them and read them as soon as they exist."""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hubserve.errors import BadRequest, PayloadTooLarge
from hubserve.sources.remote import remote_errors, storage_options

# The types S3 gives objects stored without one: they say nothing about the content.
UNSTATED_TYPES = {"binary/octet-stream", "application/octet-stream"}


def filesystem(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(url, **storage_options(url, None))


def read_input(url: str, limit: int) -> tuple[bytes, str | None]:
    """The object at `url` and its content type: as stored with it, else guessed from its name. BadRequest when
    it cannot be read, PayloadTooLarge when it is over `limit` bytes (the endpoint's max_payload_bytes)."""
    with remote_errors(url):
        fs, path = filesystem(url)
        info = fs.info(path)
        if info.get("type") == "directory":
            raise BadRequest(f"'{url}' is a folder, not an object")
    size = info.get("size") or 0
    if size > limit:
        raise PayloadTooLarge(f"the input '{url}' is {size} bytes, over this endpoint's limit of {limit} bytes")
    with remote_errors(url):
        data: bytes = fs.cat_file(path)
    stated = info.get("ContentType")
    content_type = None if stated in UNSTATED_TYPES else stated
    return data, content_type or mimetypes.guess_type(path)[0]


def write_object(url: str, data: bytes | Path, content_type: str) -> None:
    """Write the object at `url` at once: one upload on S3 (which shows an object only once its upload is complete),
    a temporary file renamed into place on disk. `data` is the bytes, or a file streamed (never read whole)."""
    from fsspec.implementations.local import LocalFileSystem

    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        extra = {"ContentType": content_type} if "s3" in fs.protocol else {}
        if isinstance(data, Path):
            fs.put_file(str(data), path, **extra)
        else:
            fs.pipe_file(path, data, **extra)
        return
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            if isinstance(data, Path):
                with open(data, "rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            else:
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def object_exists(url: str) -> bool:
    """Whether the object at `url` exists; errors other than its absence propagate (an unreachable store is not
    an absent object)."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    try:
        fs.info(path)
    except FileNotFoundError:
        return False
    return True
