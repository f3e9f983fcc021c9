"""Tests for hubserve.sources: every kind of model source, resolved to a local folder, offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubserve.errors import BadRequest
from hubserve.sources import ArchiveLimits, EndpointCache, ResolvedModel, resolve_source, source_location
from hubserve.sources import gguf as gguf_sources
from hubserve.sources import hub as hub_sources
from hubserve.sources.cache import build_once, sha256_file
from sources_fixtures import (
    MODEL_FILES,
    build_hub_cache,
    file_member,
    http_server,
    link_member,
    moto_s3_server,
    write_archive,
    write_files,
    write_tar,
    write_tiny_gguf,
    write_tree_listing,
    write_zeros_archive,
)

ARCHIVE_NAMES = ["model.tar.gz", "model.tgz", "model.tar", "model.zip"]
COMMIT_MAIN = "a" * 40
COMMIT_DEV = "b" * 40


def resolve(source: str | Path, cache: Path, revision: str | None = None,
            limits: ArchiveLimits | None = None) -> ResolvedModel:
    return resolve_source(str(source), revision=revision, token=None, cache_dir=cache, endpoint="test",
                          limits=limits)


def assert_model(resolved: ResolvedModel) -> None:
    assert resolved.gguf_file is None
    assert (resolved.path / "config.json").read_bytes() == MODEL_FILES["config.json"]
    assert (resolved.path / "model.safetensors").is_file()


def test_import_stays_light() -> None:
    code = (
        "import sys, hubserve.errors\n"
        "before = set(sys.modules)\n"
        "import hubserve.sources\n"
        "added = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "print(sorted(added & {'torch', 'transformers', 'huggingface_hub', 'fsspec', 's3fs'}))\n"
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "[]"]


# --- local folders ----------------------------------------------------------------------------------


def test_local_folder_is_used_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_files(tmp_path / "models" / "tiny", MODEL_FILES)
    cache = tmp_path / "cache"
    assert resolve(folder, cache) == ResolvedModel(folder, None)
    monkeypatch.chdir(tmp_path)
    assert resolve("models/tiny", cache).path == folder
    assert resolve("./models/tiny/", cache).path == folder
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/models/tiny", cache).path == folder
    assert resolve(f"file://{folder}", cache).path == folder
    assert not cache.exists()  # nothing copied


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("./missing", "the local path './missing' does not exist"),
        ("/no/such/model.tar.gz", "does not exist"),
        ("file:///no/such/folder", "does not exist"),
        ("file://server/share/model", "a file:// URL must be file:///absolute/path"),
        ("ftp://example.com/model.tar.gz", r"unsupported URL scheme 'ftp://'"),
        ("  ", "the model source is empty"),
    ],
)
def test_bad_sources_are_refused(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        resolve(source, tmp_path / "cache")


def test_where_a_source_is_read_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "local-model").mkdir(parents=True)
    located = {source: source_location(source) for source in (
        "s3://bucket/model.tar.gz", "HF://acme/model", "https://example.com/model.gguf", "file:///srv/model",
        "ftp://example.com/model", "/srv/model", "model.tar.gz", "acme/local-model", "acme/model", "gpt2")}
    assert located == {
        "s3://bucket/model.tar.gz": "url", "HF://acme/model": "url", "https://example.com/model.gguf": "url",
        "file:///srv/model": "local", "ftp://example.com/model": "local", "/srv/model": "local",
        "model.tar.gz": "local", "acme/local-model": "local", "acme/model": "hub", "gpt2": "hub"}


def test_folders_that_cannot_be_served(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadRequest, match="is empty"):
        resolve(empty, tmp_path / "cache")
    two = write_files(tmp_path / "two", {"a.gguf": b"x", "b.gguf": b"y"})
    with pytest.raises(BadRequest, match=r"several \.gguf files \(a\.gguf, b\.gguf\)"):
        resolve(two, tmp_path / "cache")
    text = write_files(tmp_path, {"notes.txt": b"hi"}) / "notes.txt"
    with pytest.raises(BadRequest, match="neither a model archive"):
        resolve(text, tmp_path / "cache")


def test_folder_with_config_and_gguf_is_not_converted(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "model", {**MODEL_FILES, "extra.gguf": b"not read"})
    assert resolve(folder, tmp_path / "cache") == ResolvedModel(folder, None)


# --- archives ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHIVE_NAMES)
@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_archive_is_unpacked(tmp_path: Path, name: str, as_url: bool) -> None:
    archive = write_archive(tmp_path / "in" / name, MODEL_FILES)
    cache = tmp_path / "cache"
    resolved = resolve(f"file://{archive}" if as_url else archive, cache)
    assert_model(resolved)
    assert resolved.path.parent == cache / "archives"


@pytest.mark.parametrize("name", ["model.tar.gz", "model.zip"])
def test_archive_single_top_folder_is_the_model(tmp_path: Path, name: str) -> None:
    files = {**MODEL_FILES, "code/inference.py": b"pass"}
    archive = write_archive(tmp_path / name, files, prefix="my-model/")
    resolved = resolve(archive, tmp_path / "cache")
    assert_model(resolved)
    assert resolved.path.name == "my-model"
    assert (resolved.path / "code" / "inference.py").is_file()


def test_archive_with_only_code_keeps_its_root(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "model.tar.gz", {"code/inference.py": b"pass", "__MACOSX/x": b""})
    resolved = resolve(archive, tmp_path / "cache")
    assert (resolved.path / "code" / "inference.py").is_file()


def test_same_archive_content_is_unpacked_once(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a" / "model.tar.gz", MODEL_FILES)
    cache = tmp_path / "cache"
    first = resolve(archive, cache)
    (first.path / "marker").write_text("still here")
    copy = shutil.copy(archive, tmp_path / "renamed.tar.gz")
    second = resolve(copy, cache)
    assert second.path == first.path
    assert (second.path / "marker").read_text() == "still here"
    assert [entry.name for entry in (cache / "archives").iterdir() if not entry.name.startswith(".")] == [
        first.path.name
    ]


def _zip_symlink(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "../outside")
    return path


def _unsafe_archives(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Every unsafe archive, by case id, with the message it must be refused with."""
    data = b"pwned"
    absolute = str(tmp_path / "abs-evil")
    # `b` -> `a/..` looks inside, but `a` -> `.` makes it the folder's parent: only the disk can tell.
    chain: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (link_member("a", "."), None), (link_member("b", "a/.."), None), (file_member("b/evil", data), data)
    ]
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    return {
        "traversal": (
            write_tar(tmp_path / "in" / "t.tar.gz", [(file_member("../evil", data), data)]),
            "archive member '../evil' would be written outside the model folder",
        ),
        "absolute": (
            write_tar(tmp_path / "in" / "a.tar", [(file_member(absolute, data), data)]),
            f"archive member '{absolute}' would be written outside",
        ),
        "symlink-out": (
            write_tar(tmp_path / "in" / "s.tar", [(link_member("config.json", "../../evil"), None)]),
            "archive member 'config.json' links to '../../evil', outside the model folder",
        ),
        "symlink-absolute": (
            write_tar(tmp_path / "in" / "sa.tar", [(link_member("config.json", "/etc/passwd"), None)]),
            "links to '/etc/passwd', outside",
        ),
        "hardlink-out": (
            write_tar(tmp_path / "in" / "h.tar", [(link_member("hard", "../evil", tarfile.LNKTYPE), None)]),
            "archive member 'hard' links to '../evil', outside",
        ),
        "symlink-chain": (write_tar(tmp_path / "in" / "c.tar", chain), "archive member 'b' was refused"),
        "device": (write_tar(tmp_path / "in" / "d.tar", [(device, None)]), "'dev' is a device"),
        "zip-traversal": (
            write_archive(tmp_path / "in" / "z.zip", {"../evil": data}),
            "archive member '../evil' would be written outside",
        ),
        "zip-symlink": (_zip_symlink(tmp_path / "in" / "zs.zip"), "'link' is a symlink"),
    }


UNSAFE_CASES = [
    "traversal",
    "absolute",
    "symlink-out",
    "symlink-absolute",
    "hardlink-out",
    "symlink-chain",
    "device",
    "zip-traversal",
    "zip-symlink",
]


@pytest.mark.parametrize("case", UNSAFE_CASES)
def test_unsafe_archive_is_refused(tmp_path: Path, case: str) -> None:
    archive, message = _unsafe_archives(tmp_path)[case]
    cache = tmp_path / "cache"
    with pytest.raises(BadRequest, match=re.escape(message)):
        resolve(archive, cache)
    assert not list(tmp_path.rglob("*evil*"))
    # Only the lock file is left: no model folder, no half-unpacked temp folder.
    assert [entry.name for entry in (cache / "archives").iterdir()] == [f".{sha256_file(archive)}.lock"]


def test_not_an_archive(tmp_path: Path) -> None:
    fake = tmp_path / "model.tar.gz"
    fake.write_bytes(b"this is not gzip")
    with pytest.raises(BadRequest, match="is not a tar or zip archive"):
        resolve(fake, tmp_path / "cache")


BOMB_NAMES = ["bomb.tar.gz", "bomb.tgz", "bomb.tar.bz2", "bomb.tar.xz", "bomb.zip"]


def assert_nothing_unpacked(cache: Path) -> None:
    """Only lock files are left of a refused archive: no model folder, no half-unpacked temp folder."""
    assert [entry.suffix for entry in (cache / "archives").iterdir()] == [".lock"]


@pytest.mark.parametrize("name", BOMB_NAMES)
def test_compression_bomb_is_refused_as_it_unpacks(tmp_path: Path, name: str) -> None:
    archive = write_zeros_archive(tmp_path / "in" / name, 16 << 20)  # kilobytes that unpack to 16 MiB
    cache = tmp_path / "cache"
    limits = ArchiveLimits(ratio_checked_from_bytes=1 << 20)
    with pytest.raises(BadRequest, match=r"unpacks to more than 100 times its own size \(\d+ bytes\), which no "
                                         r"model archive does: refusing it as a compression bomb"):
        resolve(archive, cache, limits=limits)
    assert_nothing_unpacked(cache)


@pytest.mark.parametrize("name", ["model.tar", *BOMB_NAMES])
def test_archive_over_the_unpacked_size_limit_is_refused(tmp_path: Path, name: str) -> None:
    weights = os.urandom(3 << 20)  # weights barely compress: only the size limit can stop these
    archive = write_archive(tmp_path / "in" / name, {**MODEL_FILES, "model.safetensors": weights})
    cache = tmp_path / "cache"
    with pytest.raises(BadRequest, match=r"unpacks to more than 2097152 bytes, the server's limit "
                                         r"\(HUBSERVE_MAX_UNPACKED_BYTES\)"):
        resolve(archive, cache, limits=ArchiveLimits(max_unpacked_bytes=2 << 20))
    assert_nothing_unpacked(cache)
    assert_model(resolve(archive, cache, limits=ArchiveLimits(max_unpacked_bytes=4 << 20)))


@pytest.mark.parametrize("name", ["model.tar.gz", "model.zip"])
def test_small_archives_compress_any_amount(tmp_path: Path, name: str) -> None:
    # A small model of text and zero-filled tensors: far over the ratio, but under the size it applies from.
    files = {**MODEL_FILES, "model.safetensors": bytes(8 << 20), "vocab.txt": b"token\n" * 100_000}
    resolved = resolve(write_archive(tmp_path / name, files), tmp_path / "cache")
    assert (resolved.path / "model.safetensors").stat().st_size == 8 << 20


def test_member_that_claims_more_than_the_stream_holds_is_refused(tmp_path: Path) -> None:
    # A member that declares a terabyte: skipping it reads through the stream, which ends long before.
    liar = file_member("model.safetensors", b"")
    liar.size = 1 << 40
    archive = write_tar(tmp_path / "liar.tar.gz", [(file_member("config.json", b"{}"), b"{}"), (liar, None)])
    cache = tmp_path / "cache"
    with pytest.raises(BadRequest, match=r"could not unpack '.*liar\.tar\.gz'"):
        resolve(archive, cache, limits=ArchiveLimits(max_unpacked_bytes=1 << 20))
    assert_nothing_unpacked(cache)


def test_sparse_member_is_refused(tmp_path: Path) -> None:
    sparse = file_member("model.safetensors", b"")
    sparse.type = tarfile.GNUTYPE_SPARSE
    archive = write_tar(tmp_path / "sparse.tar", [(sparse, None)])
    with pytest.raises(BadRequest, match="'model.safetensors' is a sparse file"):
        resolve(archive, tmp_path / "cache")


def test_concurrent_builds_run_once(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(work: Path) -> None:
        builds.append(work)
        time.sleep(0.2)  # long enough for the other threads to reach the lock
        (work / "done").write_text("ok")

    final = tmp_path / "cache" / "thing"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(build_once(final, build))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert results == [final] * 4
    assert (final / "done").read_text() == "ok"


# --- remote URLs ------------------------------------------------------------------------------------


def test_http_archive(tmp_path: Path) -> None:
    write_archive(tmp_path / "www" / "model.tar.gz", MODEL_FILES)
    cache = tmp_path / "cache"
    with http_server(tmp_path / "www") as url:
        resolved = resolve(f"{url}/model.tar.gz", cache)
        with pytest.raises(BadRequest, match="was not found"):
            resolve(f"{url}/missing.tar.gz", cache)
    assert_model(resolved)
    assert not [entry for entry in (cache / "downloads" / "test").iterdir()]  # the downloaded archive is gone


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client on the moto server, with bucket `models`, and the env hubserve reads for s3://."""
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="models")
    yield client
    for item in client.list_objects_v2(Bucket="models").get("Contents", []):
        client.delete_object(Bucket="models", Key=item["Key"])
    client.delete_bucket(Bucket="models")
    client.close()


def test_s3_archive(tmp_path: Path, s3: Any) -> None:
    archive = write_archive(tmp_path / "model.tar.gz", MODEL_FILES, prefix="model/")
    s3.upload_file(str(archive), "models", "v1/model.tar.gz")
    cache = tmp_path / "cache"
    resolved = resolve("s3://models/v1/model.tar.gz", cache)
    assert_model(resolved)
    assert resolve("s3://models/v1/model.tar.gz", cache) == resolved
    with pytest.raises(BadRequest, match="'s3://models/v1/missing.tar.gz' was not found"):
        resolve("s3://models/v1/missing.tar.gz", cache)


def test_s3_folder_is_copied(tmp_path: Path, s3: Any) -> None:
    for name, data in {**MODEL_FILES, "code/inference.py": b"pass"}.items():
        s3.put_object(Bucket="models", Key=f"folder/{name}", Body=data)
    cache = tmp_path / "cache"
    resolved = resolve("s3://models/folder/", cache)
    assert_model(resolved)
    assert (resolved.path / "code" / "inference.py").read_bytes() == b"pass"
    (resolved.path / "marker").write_text("still here")
    assert resolve("s3://models/folder", cache) == resolved  # unchanged files: not fetched again
    assert (resolved.path / "marker").is_file()
    s3.put_object(Bucket="models", Key="folder/config.json", Body=b'{"model_type": "v2"}')
    changed = resolve("s3://models/folder/", cache)
    assert changed.path != resolved.path
    assert (changed.path / "config.json").read_bytes() == b'{"model_type": "v2"}'
    with pytest.raises(BadRequest, match="was not found"):
        resolve("s3://models/nothing-here/", cache)


# --- Hub ids ----------------------------------------------------------------------------------------

RESOLVE_IN_SUBPROCESS = """
import json, sys
from pathlib import Path
from hubserve.errors import BadRequest
from hubserve.sources import resolve_source

cache = Path(sys.argv[2])
results = []
for source, revision in json.loads(sys.argv[1]):
    try:
        resolved = resolve_source(source, revision=revision, token=None, cache_dir=cache, endpoint="e")
        results.append({"path": str(resolved.path)})
    except BadRequest as error:
        results.append({"error": error.message})
print(json.dumps(results))
"""


def resolve_offline(tmp_path: Path, hub_cache: Path, requests: list[tuple[str, str | None]]) -> list[dict]:
    """Resolve in a fresh process, as a worker does: huggingface_hub reads HF_HUB_* once, at import."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE_IN_SUBPROCESS, json.dumps(requests), str(tmp_path / "cache")],
        env=env,
        cwd=tmp_path,  # so that `org/name` is not mistaken for a local folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_hub_id_offline_from_cache(tmp_path: Path) -> None:
    hub_cache = tmp_path / "hub"
    main_files = {**MODEL_FILES, "pytorch_model.bin": b"legacy"}
    dev_files = {**MODEL_FILES, "config.json": b'{"model_type": "dev"}'}
    commits = {COMMIT_MAIN: main_files, COMMIT_DEV: dev_files}
    repo = build_hub_cache(hub_cache, "org/tiny", commits, {"main": COMMIT_MAIN, "dev": COMMIT_DEV})
    build_hub_cache(hub_cache, "solo", {COMMIT_MAIN: MODEL_FILES}, {"main": COMMIT_MAIN})
    main, dev, pinned, solo, missing, bad_revision = resolve_offline(
        tmp_path,
        hub_cache,
        [
            ("org/tiny", None),
            ("org/tiny", "dev"),
            ("org/tiny", COMMIT_DEV),
            ("solo", None),
            ("org/absent", None),
            ("org/tiny", "v9"),
        ],
    )
    assert main == {"path": str(repo / "snapshots" / COMMIT_MAIN)}
    assert dev == pinned == {"path": str(repo / "snapshots" / COMMIT_DEV)}
    assert solo["path"].endswith(f"models--solo/snapshots/{COMMIT_MAIN}")
    assert "model 'org/absent' at revision 'main' is not in the local Hugging Face cache" in missing["error"]
    assert "HF_HUB_OFFLINE" in missing["error"] and "hf download org/absent" in missing["error"]
    assert "model 'org/tiny' at revision 'v9' is not in the local Hugging Face cache" in bad_revision["error"]


def test_hub_snapshot_downloaded_without_legacy_weights_resolves_offline(tmp_path: Path) -> None:
    """A snapshot that skipped pytorch_model.bin is complete for us, though its saved listing names it."""
    hub_cache = tmp_path / "hub"
    repo = build_hub_cache(hub_cache, "org/tiny", {COMMIT_MAIN: MODEL_FILES}, {"main": COMMIT_MAIN})
    write_tree_listing(repo, COMMIT_MAIN, [*MODEL_FILES, "pytorch_model.bin", "tf_model.h5"])
    [result] = resolve_offline(tmp_path, hub_cache, [("org/tiny", None)])
    assert result == {"path": str(repo / "snapshots" / COMMIT_MAIN)}


@pytest.mark.parametrize(
    ("files", "ignored"),
    [
        (["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"], hub_sources.OTHER_WEIGHTS),
        (["config.json", "pytorch_model.bin"], None),
    ],
)
def test_hub_download_skips_other_weights_when_safetensors_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: list[str], ignored: list[str] | None
) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(tmp_path)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, revision=None: files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    resolved = resolve_source("org/tiny", revision="v1", token="hf_x", cache_dir=tmp_path, endpoint="e")
    assert resolved.path == tmp_path
    assert calls == [{"repo_id": "org/tiny", "revision": "v1", "token": "hf_x", "ignore_patterns": ignored}]
    if ignored is not None:
        assert {"*.bin", "*.pt", "*.h5", "*.msgpack", "*.ckpt", "*.onnx"} <= set(ignored)


# --- GGUF -------------------------------------------------------------------------------------------


@pytest.fixture
def count_conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    converted: list[Path] = []
    real_convert = gguf_sources._convert

    def counting(gguf_file: Path, out: Path) -> None:
        converted.append(gguf_file)
        real_convert(gguf_file, out)

    monkeypatch.setattr(gguf_sources, "_convert", counting)
    return converted


def test_a_gguf_file_is_served_as_it_is(tmp_path: Path, count_conversions: list[Path]) -> None:
    """The file, or a folder holding only it, resolves to a folder that holds just a link to it: nothing converted
    (llama.cpp serves its own quantised weights); a changed file is placed again."""
    gguf_file = write_tiny_gguf(tmp_path / "llm" / "tiny.gguf")
    (tmp_path / "llm" / "requirements.txt").write_text("not-for-the-model\n")  # beside it, not part of it
    cache = tmp_path / "cache"
    resolved = resolve(gguf_file, cache)
    assert resolved.gguf_file == "tiny.gguf"
    assert resolved.path.parent == cache / "linked"
    assert [p.name for p in resolved.path.iterdir()] == ["tiny.gguf"]
    assert (resolved.path / "tiny.gguf").read_bytes() == gguf_file.read_bytes()
    assert resolve(gguf_file, cache) == resolved
    assert resolve(gguf_file.parent.parent / "llm" / "tiny.gguf", cache) == resolved
    assert count_conversions == []

    os.utime(gguf_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert resolve(gguf_file, cache).path != resolved.path


def test_gguf_is_converted_once_for_torch(tmp_path: Path, count_conversions: list[Path]) -> None:
    """Where torch serves a GGUF, the replica converts it once into a safetensors folder. Uses transformers on a
    tiny GGUF written here: about 5 s, most of it importing torch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = write_tiny_gguf(tmp_path / "llm" / "tiny.gguf")
    cache = EndpointCache(tmp_path / "cache", "test")
    converted = gguf_sources.convert(gguf_file, cache)
    assert converted.parent == tmp_path / "cache" / "gguf"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in converted.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForCausalLM.from_pretrained(converted)
    logits = model(**tokenizer("hi there", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tokenizer)
    assert gguf_sources.convert(gguf_file, cache) == converted
    assert count_conversions == [gguf_file]
    os.utime(gguf_file, ns=(time.time_ns(), time.time_ns() + 10**9))  # a changed file is converted again
    assert gguf_sources.convert(gguf_file, cache) != converted
    assert len(count_conversions) == 2


def test_gguf_over_http(tmp_path: Path, count_conversions: list[Path]) -> None:
    write_tiny_gguf(tmp_path / "www" / "tiny.gguf")
    cache = tmp_path / "cache"
    with http_server(tmp_path / "www") as url:
        first = resolve(f"{url}/tiny.gguf", cache)
        second = resolve(f"{url}/tiny.gguf", cache)
    assert first == second and first.gguf_file == "tiny.gguf"
    assert (first.path / "tiny.gguf").read_bytes() == (tmp_path / "www" / "tiny.gguf").read_bytes()
    assert count_conversions == []


def test_unreadable_gguf_is_a_bad_request(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really")
    with pytest.raises(BadRequest, match="could not read the GGUF file 'broken.gguf'"):
        resolve(broken, tmp_path / "cache")
    assert not (tmp_path / "cache" / "linked").exists() or \
        not [p for p in (tmp_path / "cache" / "linked").iterdir() if not p.name.endswith(".lock")]
    with pytest.raises(BadRequest, match="could not convert the GGUF file"):
        gguf_sources.convert(broken, EndpointCache(tmp_path / "cache", "test"))
    assert not [p for p in (tmp_path / "cache" / "gguf").iterdir() if not p.name.endswith(".lock")]
