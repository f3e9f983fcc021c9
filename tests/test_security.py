"""Tokens: the admin token, scoped tokens, hashing at rest, 401 versus 403."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hubserve.errors import Forbidden, NotFound, Unauthorized
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
