"""Turn an endpoint's model source -- Hub id, folder, archive, GGUF file, URL -- into a local folder to load.

Importing this package is cheap: huggingface_hub, fsspec, torch and transformers are imported on first use.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from hubserve.errors import BadRequest
from hubserve.sources import archives, gguf, hub, remote
from hubserve.sources.archives import ArchiveLimits
from hubserve.sources.cache import sha256_file
from hubserve.sources.endpoint_cache import EndpointCache

__all__ = ["ArchiveLimits", "EndpointCache", "ResolvedModel", "resolve_source", "source_location"]

logger = logging.getLogger(__name__)

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a local folder holding the model (config, weights, tokenizer, maybe code/)
    gguf_file: str | None = None  # the .gguf file inside `path` that is the model (see sources.gguf)


def resolve_source(
    source: str, *, revision: str | None, token: str | None, cache_dir: Path, endpoint: str,
    limits: ArchiveLimits | None = None,
) -> ResolvedModel:
    """The local folder for `source`, downloading, unpacking or converting it first if needed.

    What it builds or reuses under `cache_dir` is recorded as used by `endpoint`. Archives unpack within
    `limits` (the defaults when None). Raises BadRequest, with what to fix, when the source cannot be used.
    """
    source = source.strip()
    if not source:
        raise BadRequest("the model source is empty: give a Hub id, a local path or a URL")
    cache = EndpointCache(Path(cache_dir).expanduser().absolute(), endpoint)
    resolved = _resolve(source, revision, token, cache, limits or ArchiveLimits())
    logger.info("endpoint %s: model source %r resolved to %s", endpoint, source, resolved.path)
    return resolved


def _resolve(
    source: str, revision: str | None, token: str | None, cache: EndpointCache, limits: ArchiveLimits
) -> ResolvedModel:
    location = source_location(source)
    if location == "url":
        return _resolve_remote(source, token, cache, limits)
    if location == "hub":
        return ResolvedModel(hub.download(source, revision=revision, token=token))
    match = SCHEME.match(source)
    scheme = match.group(1).lower() if match else None
    if scheme == "file":
        return _resolve_local(_file_url_path(source), cache, limits, source)
    if scheme:
        supported = ", ".join(f"{name}://" for name in ("file", *remote.REMOTE_SCHEMES))
        raise BadRequest(f"unsupported URL scheme '{scheme}://' in model source '{source}'; use {supported}")
    local = Path(source).expanduser()
    if not local.exists():
        raise BadRequest(f"the local path '{source}' does not exist")
    return _resolve_local(local, cache, limits, source)


def source_location(source: str) -> Literal["url", "hub", "local"]:
    """Where `source` is read from, as `resolve_source` reads it: a URL that whoever loads the model downloads
    (s3://, hf://, http(s)://), the Hub (an id that names no local path), or this machine (a path or a file:// URL;
    also a source that resolving refuses, with its reason, wherever it runs)."""
    source = source.strip()
    match = SCHEME.match(source)
    if match:
        return "url" if match.group(1).lower() in remote.REMOTE_SCHEMES else "local"
    if Path(source).expanduser().exists() or not HUB_ID.match(source) or _is_file_name(source):
        return "local"
    return "hub"


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise BadRequest(f"'{url}' names host '{parts.netloc}': a file:// URL must be file:///absolute/path")
    path = Path(unquote(parts.path))
    if not path.exists():
        raise BadRequest(f"the local path '{path}' (from '{url}') does not exist")
    return path


def _resolve_local(path: Path, cache: EndpointCache, limits: ArchiveLimits, source: str) -> ResolvedModel:
    path = path.resolve()
    if path.is_dir():
        return _resolve_folder(path, cache)
    if archives.is_archive(path.name):
        return _resolve_folder(archives.unpack(path, cache, limits, label=source), cache)
    if path.suffix.lower() == ".gguf":
        return ResolvedModel(gguf.place(path, cache), gguf_file=path.name)
    suffixes = ", ".join(archives.ARCHIVE_SUFFIXES)
    raise BadRequest(
        f"'{source}' is a file, but neither a model archive ({suffixes}) nor a .gguf file; "
        "give the folder that holds the model instead"
    )


def _resolve_remote(url: str, token: str | None, cache: EndpointCache, limits: ArchiveLimits) -> ResolvedModel:
    name = Path(unquote(urlsplit(url).path)).name
    if not _is_file_name(name):
        return _resolve_folder(remote.copy_folder(url, token=token, cache=cache), cache)
    with remote.downloaded(url, token=token, into=cache.downloads) as temp:
        if archives.is_archive(name):
            folder = archives.unpack(temp, cache, limits, label=url)
        else:  # a .gguf file: kept under its own name, where the folder rules below find it
            folder = cache.folder("files", sha256_file(temp), lambda work: temp.rename(work / name))
    return _resolve_folder(folder, cache)


def _resolve_folder(folder: Path, cache: EndpointCache) -> ResolvedModel:
    """The folder itself; when it only holds one .gguf file and no config.json, that file is the model."""
    if not any(folder.iterdir()):
        raise BadRequest(f"the model folder '{folder}' is empty")
    gguf_files = sorted(folder.glob("*.gguf"))
    if (folder / "config.json").exists() or not gguf_files:
        return ResolvedModel(folder)
    if len(gguf_files) > 1:
        names = ", ".join(file.name for file in gguf_files)
        raise BadRequest(
            f"the folder '{folder}' holds several .gguf files ({names}) and no config.json: "
            "give the path of the one to serve"
        )
    return ResolvedModel(gguf.place(gguf_files[0], cache), gguf_file=gguf_files[0].name)


def _is_file_name(name: str) -> bool:
    return archives.is_archive(name) or name.lower().endswith(".gguf")
