"""Tokens: the admin token, scoped tokens, hashing at rest, 401 versus 403."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest

from hubserve.errors import BadRequest, Forbidden, NotFound, Unauthorized
from hubserve.security import TokenRegistry
from hubserve.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.sqlite")


def test_admin_token_created_once_and_written_0600(store: Store, tmp_path: Path) -> None:
    registry = TokenRegistry(store)
    token_file = tmp_path / "admin-token"
    token = registry.ensure_admin_token(None, token_file)
    assert token and token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert TokenRegistry(store).ensure_admin_token(None, token_file) is None  # not shown again
    assert TokenRegistry(store).is_admin(token)
    assert token not in (store.get_secret("admin_token_digest") or "")


def test_admin_token_from_env_value(store: Store, tmp_path: Path) -> None:
    registry = TokenRegistry(store)
    assert registry.ensure_admin_token("given-token", tmp_path / "f") is None
    registry.require_admin("Bearer given-token")
    with pytest.raises(Unauthorized):
        registry.require_admin(None)
    with pytest.raises(Forbidden):
        registry.require_admin("Bearer wrong")


def test_scoped_tokens(store: Store, tmp_path: Path) -> None:
    registry = TokenRegistry(store)
    registry.ensure_admin_token("admin", tmp_path / "f")
    record, token = registry.create("ci", ["a"])
    registry.require_endpoint_access(f"Bearer {token}", "a")
    with pytest.raises(Forbidden, match="not valid for endpoint b"):
        registry.require_endpoint_access(f"Bearer {token}", "b")
    with pytest.raises(Unauthorized):
        registry.require_endpoint_access(None, "a")
    with pytest.raises(Forbidden):
        registry.require_endpoint_access(f"Bearer {token}x", "a")
    registry.require_endpoint_access("Bearer admin", "b")
    # stored hashed, reloaded from the store
    assert all(token not in row for row in map(str, store.load_tokens()))
    reloaded = TokenRegistry(store)
    reloaded.require_endpoint_access(f"Bearer {token}", "a")
    reloaded.revoke(record.id)
    with pytest.raises(Forbidden):
        reloaded.require_endpoint_access(f"Bearer {token}", "a")
    with pytest.raises(NotFound):
        reloaded.revoke(record.id)


def test_token_for_all_endpoints(store: Store) -> None:
    _, token = TokenRegistry(store).create("all", None)
    TokenRegistry(store).require_endpoint_access(f"Bearer {token}", "anything")


def test_aws_keys_have_derived_secrets_that_are_never_stored(store: Store, tmp_path: Path) -> None:
    registry = TokenRegistry(store)
    record, secret = registry.create("ci", ["a"], aws=True)
    assert re.fullmatch(r"HSAK[A-Z0-9]{16}", record.id) and record.kind == "aws" and record.digest == ""
    assert len(secret) == 40
    assert registry.aws_key(record.id) == (record, secret)
    # The same secret after a restart (derived from the key file), and nowhere in the database.
    store.close()
    reopened = Store(tmp_path / "db.sqlite")
    assert TokenRegistry(reopened).aws_key(record.id) == (record, secret)
    assert all(secret.encode() not in path.read_bytes() for path in tmp_path.glob("db.sqlite*"))
    # Another key file derives other secrets: the database alone gives none.
    other_home = tmp_path / "other"
    other_home.mkdir()
    for suffix in (".sqlite", ".sqlite-wal"):
        if (tmp_path / f"db{suffix}").exists():
            (other_home / f"db{suffix}").write_bytes((tmp_path / f"db{suffix}").read_bytes())
    copied = TokenRegistry(Store(other_home / "db.sqlite")).aws_key(record.id)
    assert copied is not None and copied[1] != secret


def test_aws_keys_are_no_bearer_tokens_and_revoke_like_tokens(store: Store) -> None:
    registry = TokenRegistry(store)
    record, secret = registry.create("ci", None, aws=True)
    with pytest.raises(Forbidden):
        registry.require_endpoint_access(f"Bearer {secret}", "a")
    with pytest.raises(Forbidden):
        registry.require_endpoint_access(f"Bearer {record.id}", "a")
    _, token = registry.create("bearer", None)
    assert registry.aws_key(token.removeprefix("hs_").split("_")[0]) is None
    registry.revoke(record.id)
    assert registry.aws_key(record.id) is None and TokenRegistry(store).aws_key(record.id) is None


def test_admin_tokens(store: Store, tmp_path: Path) -> None:
    registry = TokenRegistry(store)
    registry.ensure_admin_token("root", tmp_path / "f")
    record, token = registry.create("ops", None, admin=True)
    registry.require_admin(f"Bearer {token}")
    registry.require_endpoint_access(f"Bearer {token}", "any")
    _, scoped = registry.create("ci", ["a"])
    with pytest.raises(Forbidden, match="not the admin token"):
        registry.require_admin(f"Bearer {scoped}")
    assert TokenRegistry(store).list()[0].admin  # kept in the store
    key, _ = registry.create("ops-key", None, aws=True, admin=True)
    assert key.admin and key.allows("any")
    with pytest.raises(BadRequest, match="every endpoint"):
        registry.create("both", ["a"], admin=True)
    registry.revoke(record.id)
    with pytest.raises(Forbidden):
        registry.require_admin(f"Bearer {token}")


def test_a_database_from_before_aws_keys_opens(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL, "
                   "endpoints TEXT, created_at REAL NOT NULL)")
        db.execute("INSERT INTO tokens VALUES ('abc', 'old', 'd', NULL, 1.0)")
    db.close()
    [old] = Store(path).load_tokens()
    assert old.kind == "bearer" and not old.admin


def control_request(registry: TokenRegistry, headers: dict[str, str], body: bytes) -> Any:
    """A `POST /` to the SageMaker control plane as the server receives it, with `registry` as its tokens."""
    from types import SimpleNamespace

    from starlette.requests import Request

    scope = {"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"",
             "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
             "app": SimpleNamespace(state=SimpleNamespace(tokens=registry))}
    return Request(scope)


def signed_control_call(key_id: str, secret: str, body: bytes) -> dict[str, str]:
    """The headers boto3's `sagemaker` client sends for one control-plane call."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("POST", "http://127.0.0.1:8080/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListEndpoints"})
    SigV4Auth(Credentials(key_id, secret), "sagemaker", "us-east-1").add_auth(request)
    return {**dict(request.headers.items()), "Host": "127.0.0.1:8080"}


def test_control_access_takes_admin_tokens_and_admin_keys(store: Store, tmp_path: Path) -> None:
    from hubserve.api.aws_auth import require_control_access
    from hubserve.errors import AwsError

    registry = TokenRegistry(store)
    registry.ensure_admin_token("root", tmp_path / "f")
    body = b"{}"
    require_control_access(control_request(registry, {"authorization": "Bearer root"}, body), body)
    admin, admin_secret = registry.create("ops", None, aws=True, admin=True)
    require_control_access(control_request(registry, signed_control_call(admin.id, admin_secret, body), body), body)
    with pytest.raises(AwsError, match="does not match") as caught:
        require_control_access(control_request(registry, signed_control_call(admin.id, admin_secret, body), body),
                               b'{"NameContains": "x"}')
    assert caught.value.code == "InvalidSignatureException"
    scoped, scoped_secret = registry.create("ci", ["a"], aws=True)
    with pytest.raises(AwsError, match="no control-plane rights") as caught:
        require_control_access(control_request(registry, signed_control_call(scoped.id, scoped_secret, body), body),
                               body)
    assert (caught.value.code, caught.value.status) == ("AccessDeniedException", 403)
    with pytest.raises(Unauthorized):
        require_control_access(control_request(registry, {}, body), body)
