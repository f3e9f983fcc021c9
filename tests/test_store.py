"""The store: endpoint env secrets are sealed at rest (never in the SQLite file in clear text) and come
back whole; a database from before sealing is read and sealed on the next save."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import stat
from pathlib import Path

import pytest

from hubserve.spec import EndpointSpec, EndpointStatus
from hubserve.store import Store

SECRETS = {"HF_TOKEN": "hf_sEcReT-token-value", "AWS_SECRET_ACCESS_KEY": "aws-sEcReT-key-value",
           "DB_PASSWORD": "pw-sEcReT-value"}


def spec_with_secrets() -> EndpointSpec:
    return EndpointSpec(name="e", model="org/model", env={**SECRETS, "HF_TASK": "fill-mask"})


def raw_bytes(db: Path) -> bytes:
    """Everything SQLite wrote: the database and its write-ahead log."""
    return b"".join(path.read_bytes() for path in db.parent.glob(f"{db.name}*"))


def test_env_secrets_are_sealed_at_rest_and_loaded_whole(tmp_path: Path) -> None:
    db = tmp_path / "hubserve.db"
    store = Store(db)
    store.save_endpoint(spec_with_secrets(), EndpointStatus())
    store.save_endpoint(spec_with_secrets(), EndpointStatus())  # an update rewrites the row
    [loaded] = store.load_endpoints()
    assert loaded.spec == spec_with_secrets()
    store.close()
    raw = raw_bytes(db)
    assert b"fill-mask" in raw  # the rest of the spec is stored as it is
    assert not [value for value in SECRETS.values() if value.encode() in raw]
    assert stat.S_IMODE((tmp_path / "hubserve.key").stat().st_mode) == 0o600
    reopened = Store(db)
    assert reopened.load_endpoints()[0].spec.env == spec_with_secrets().env
    reopened.close()


def test_secrets_saved_before_sealing_are_read_then_sealed(tmp_path: Path) -> None:
    db = tmp_path / "hubserve.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE endpoints (name TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL)")
    old.execute("INSERT INTO endpoints VALUES (?, ?, ?)",
                ("e", spec_with_secrets().model_dump_json(), EndpointStatus().model_dump_json()))
    old.commit()
    old.close()
    store = Store(db)
    [loaded] = store.load_endpoints()
    assert loaded.spec == spec_with_secrets()
    store.save_endpoint(loaded.spec, loaded.status)  # what a restart does when it redeploys the endpoint
    store.close()
    assert not [value for value in SECRETS.values() if value.encode() in raw_bytes(db)]


def test_a_replaced_key_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "hubserve.db")
    store.save_endpoint(spec_with_secrets(), EndpointStatus())
    store.close()
    (tmp_path / "hubserve.key").write_bytes(b"".join([b"A" * 43, b"="]))
    store = Store(tmp_path / "hubserve.db")
    with pytest.raises(RuntimeError, match="cannot be decrypted with .*hubserve.key"):
        store.load_endpoints()
    store.close()


def test_specs_without_secrets_are_stored_in_clear(tmp_path: Path) -> None:
    store = Store(tmp_path / "hubserve.db")
    store.save_endpoint(EndpointSpec(name="e", model="m", env={"HF_TASK": "x"}), EndpointStatus())
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "hubserve.db")) as db:
        spec, sealed = db.execute("SELECT spec, sealed_env FROM endpoints").fetchone()
    assert json.loads(spec)["env"] == {"HF_TASK": "x"} and sealed is None
