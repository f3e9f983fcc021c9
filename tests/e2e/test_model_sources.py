"""Deploying from archives (local path, file://, s3:// on a real S3-compatible server), custom code
(inference.py hooks, handler.py, requirements.txt), and a Hub id from an offline HF cache."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from conftest import Server, free_port
from custom_models import tar_gz, tar_gz_with_member, write_echo_model
from hubserve.sources.cache import sha256_file
from sources_fixtures import write_zeros_archive

HOOKS = '''
import json


def model_fn(model_dir{ctx}):
    return lambda text: text[::-1]


def input_fn(input_data, content_type{ctx}):
    assert isinstance(input_data, str), type(input_data)
    return json.loads(input_data)["inputs"].upper()


def predict_fn(data, model{ctx}):
    return {{"reversed": model(data)}}


def output_fn(prediction, accept{ctx}):
    return json.dumps({{**prediction, "accept": accept, "hooks": "all{ctx}"}})
'''

TRANSFORM = '''
import json


def model_fn(model_dir):
    return "prefix"


def transform_fn(model, input_data, content_type, accept{ctx}):
    return json.dumps({{"out": model + ":" + json.loads(input_data)["inputs"], "content_type": content_type}})
'''

HANDLER = '''
from slugify_helper import slug


class EndpointHandler:
    def __init__(self, path=""):
        self.path = path

    def __call__(self, data):
        return [{"slug": slug(data["inputs"]), "parameters": data.get("parameters", {})}]
'''


def code_model(root: Path, inference: str, requirements: str | None = None) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(textwrap.dedent(inference))
    (root / "config.json").write_text("{}")
    if requirements is not None:
        (root / "code" / "requirements.txt").write_text(requirements)
    return root


def handler_model(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "handler.py").write_text(textwrap.dedent(HANDLER))
    # A helper module beside handler.py, using a package installed from requirements.txt.
    (root / "slugify_helper.py").write_text("from text_unidecode import unidecode\n\n"
                                            "def slug(text):\n    return unidecode(text).lower().replace(' ', '-')\n")
    (root / "requirements.txt").write_text("text-unidecode==1.3\n")
    return root


@pytest.mark.parametrize("ctx", ["", ", context"])
def test_all_hooks_from_a_local_archive(deploy: Callable[..., str], tmp_path: Path, ctx: str) -> None:
    archive = tar_gz(code_model(tmp_path / "m", HOOKS.format(ctx=ctx)), tmp_path / "model.tar.gz")
    url = deploy(f"hooks{len(ctx)}", str(archive))
    response = httpx.post(url, json={"inputs": "abc"}, headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"reversed": "CBA", "accept": "application/json", "hooks": f"all{ctx}"}


@pytest.mark.parametrize("ctx", ["", ", context"])
def test_transform_fn_from_a_file_url(deploy: Callable[..., str], tmp_path: Path, ctx: str) -> None:
    archive = tar_gz(code_model(tmp_path / "m", TRANSFORM.format(ctx=ctx)), tmp_path / "model.tar.gz")
    url = deploy(f"transform{len(ctx)}", archive.as_uri())
    response = httpx.post(f"{url}/invocations", content=b'{"inputs": "x"}',
                          headers={"content-type": "application/json"})
    assert response.json() == {"out": "prefix:x", "content_type": "application/json"}


def test_transform_fn_with_other_hooks_fails_at_deploy(tmp_path: Path, deploy_fails: Callable[..., str]) -> None:
    code = TRANSFORM.format(ctx="") + "\n\ndef input_fn(data, content_type):\n    return data\n"
    archive = tar_gz(code_model(tmp_path / "m", code), tmp_path / "model.tar.gz")
    assert "transform_fn" in deploy_fails("mixed-hooks", str(archive))


def test_handler_with_requirements(deploy: Callable[..., str], tmp_path: Path) -> None:
    archive = tar_gz(handler_model(tmp_path / "m"), tmp_path / "model.tar.gz")
    url = deploy("handler", str(archive))
    response = httpx.post(url, json={"inputs": "Crème Brûlée", "parameters": {"k": 1}})
    assert response.status_code == 200
    assert response.json() == [{"slug": "creme-brulee", "parameters": {"k": 1}}]


def test_failing_requirements_fail_the_endpoint_with_pips_message(tmp_path: Path,
                                                                  deploy_fails: Callable[..., str]) -> None:
    model = code_model(tmp_path / "m", HOOKS.format(ctx=""), requirements="hubserve-no-such-package-xyz==0.0.1\n")
    message = deploy_fails("bad-reqs", str(model))
    assert "hubserve-no-such-package-xyz" in message and "No matching distribution" in message


def test_archive_with_a_parent_path_is_refused(tmp_path: Path, deploy_fails: Callable[..., str]) -> None:
    archive = tar_gz_with_member(tmp_path / "evil.tar.gz", "../escaped.txt")
    assert "'../escaped.txt' would be written outside" in deploy_fails("evil", str(archive))
    assert not (tmp_path.parent / "escaped.txt").exists()


@pytest.mark.parametrize("name", ["bomb.tar.gz", "bomb.zip"])
def test_compression_bomb_fails_the_endpoint_and_leaves_nothing(server: Server, tmp_path: Path, name: str,
                                                                 deploy_fails: Callable[..., str]) -> None:
    archive = write_zeros_archive(tmp_path / name, 300 << 20)  # 300 KB that unpack to 300 MB
    message = deploy_fails(f"bomb-{name.rsplit('.', 1)[-1]}", str(archive))
    assert "times its own size" in message and "refusing it as a compression bomb" in message
    digest = sha256_file(archive)
    assert [entry.name for entry in (server.home / "models" / "archives").glob(f"*{digest}*")] == [f".{digest}.lock"]


def test_deleting_endpoints_frees_the_cache_they_alone_used(server: Server, tmp_path: Path) -> None:
    client = server.client()
    archive = tar_gz(write_echo_model(tmp_path / "m"), tmp_path / "model.tar.gz")
    unpacked = server.home / "models" / "archives" / sha256_file(archive)
    for name in ("cache-a", "cache-b"):
        client.create_endpoint({"name": name, "model": str(archive)})
    for name in ("cache-a", "cache-b"):
        client.wait(name, timeout=300)
    assert unpacked.is_dir()
    client.delete_endpoint("cache-a")
    assert unpacked.is_dir()  # cache-b still uses it
    assert not (server.home / "models" / "in-use" / "cache-a").exists()
    client.delete_endpoint("cache-b")
    assert not unpacked.exists()


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    yield f"http://127.0.0.1:{port}"
    moto.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_archive_from_s3(deploy: Callable[..., str], tmp_path: Path, s3_url: str) -> None:
    archive = tar_gz(code_model(tmp_path / "m", HOOKS.format(ctx=", context")), tmp_path / "model.tar.gz")
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(archive), "models", "hooks/model.tar.gz")
    url = deploy("from-s3", "s3://models/hooks/model.tar.gz", env={**S3_ENV, "AWS_ENDPOINT_URL_S3": s3_url})
    assert httpx.post(url, json={"inputs": "s3"}).json()["reversed"] == "3S"


def populate_hub_cache(cache: Path, repo_id: str, source: Path) -> str:
    """Lay out `source`'s files as huggingface_hub's cache holds a downloaded snapshot."""
    import hashlib

    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in source.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            target = snapshot / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            depth = len(file.relative_to(source).parts)
            target.symlink_to(Path(*[".."] * (depth + 1)) / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_hub_id_from_an_offline_cache(deploy: Callable[..., str], tmp_path: Path,
                                      tiny_model: Callable[[str], Path]) -> None:
    cache = tmp_path / "hub"
    populate_hub_cache(cache, "hubserve-tests/tiny-classifier", tiny_model("text-classification"))
    url = deploy("from-hub", "hubserve-tests/tiny-classifier",
                 env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    result = httpx.post(url, json={"inputs": "a good day"}).json()
    assert isinstance(result, list) and {"label", "score"} <= set(result[0][0])  # nested, as InferenceClient reads


def test_sagemaker_env_only(deploy: Callable[..., str], tmp_path: Path, tiny_model: Callable[[str], Path]) -> None:
    cache = tmp_path / "hub"
    populate_hub_cache(cache, "hubserve-tests/fill", tiny_model("fill-mask"))
    url = deploy("env-only", None, env={"HF_MODEL_ID": "hubserve-tests/fill", "HF_TASK": "fill-mask",
                                       "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    result = httpx.post(url, json={"inputs": "the [MASK] is good"}).json()
    assert {"score", "token", "token_str", "sequence"} <= set(result[0])
