"""Which endpoints use which cache folders, and what deleting an endpoint removes: its own folders, and the
shared ones no other endpoint still uses; never a model folder outside the cache."""

from __future__ import annotations

from pathlib import Path

from hubserve.sources import EndpointCache, resolve_source
from hubserve.sources.endpoint_cache import release
from sources_fixtures import MODEL_FILES, write_archive, write_files


def resolve_for(endpoint: str, source: Path, cache: Path) -> Path:
    return resolve_source(str(source), revision=None, token=None, cache_dir=cache, endpoint=endpoint).path


def test_a_shared_folder_stays_until_its_last_endpoint_is_deleted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    archive = write_archive(tmp_path / "model.tar.gz", MODEL_FILES)
    folder = resolve_for("a", archive, cache)
    assert resolve_for("b", archive, cache) == folder
    own = [EndpointCache(cache, "a").packages, EndpointCache(cache, "a").downloads]
    for path in own:
        write_files(path, {"leftover": b"x"})

    removed = release(cache, "a")
    assert folder.is_dir()  # b still uses it
    assert not any(path.exists() for path in own)
    assert set(removed) == {cache / "in-use" / "a", *own}

    assert release(cache, "b") == [cache / "in-use" / "b", folder]
    assert not folder.exists()
    assert not [entry for entry in (cache / "archives").iterdir() if entry.is_dir()]
    assert resolve_for("c", archive, cache).is_dir()  # unpacked again when needed


def test_a_folder_recorded_by_a_starting_endpoint_is_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = resolve_for("a", write_archive(tmp_path / "model.zip", MODEL_FILES), cache)
    record = cache / "in-use" / "b" / folder.relative_to(cache)  # what b writes before it looks for the folder
    record.parent.mkdir(parents=True)
    record.touch()
    release(cache, "a")
    assert folder.is_dir()


def test_local_folders_are_never_removed(tmp_path: Path) -> None:
    model = write_files(tmp_path / "model", MODEL_FILES)
    assert resolve_for("a", model, tmp_path / "cache") == model
    assert release(tmp_path / "cache", "a") == []
    assert release(tmp_path / "cache", "never-deployed") == []
    assert (model / "config.json").is_file()
