"""Persistence: endpoint specs and states, access tokens and server secrets, in one SQLite file.

Secrets in an endpoint's env are kept apart from its spec, encrypted with a key that lives in a file beside the
database (`hubserve.key` for `hubserve.db`, mode 0600): a copy of the database alone does not reveal them. The
secrets of the AWS keys hubserve issues are derived from that key too, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel

from hubserve.env_secrets import is_secret
from hubserve.spec import Endpoint, EndpointSpec, EndpointStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    sealed_env TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    endpoints TEXT,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'bearer',
    admin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS secrets (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


TokenKind = Literal["bearer", "aws"]
# The token table's columns added since its first version, and their definitions.
TOKEN_COLUMNS = {"kind": "TEXT NOT NULL DEFAULT 'bearer'", "admin": "INTEGER NOT NULL DEFAULT 0"}


class TokenRecord(BaseModel):
    """A stored credential: a bearer token (only its digest is kept) or an AWS access key (its id is `id`; its
    secret is derived from the key file, so `digest` is empty)."""

    id: str
    name: str
    digest: str
    endpoints: list[str] | None = None  # None: every endpoint
    created_at: float
    kind: TokenKind = "bearer"
    admin: bool = False  # the control plane, and so every endpoint

    def allows(self, endpoint: str) -> bool:
        return self.admin or self.endpoints is None or endpoint in self.endpoints


class Store:
    def __init__(self, path: Path) -> None:
        self._key_file = path.with_suffix(".key")
        self._key = _key(self._key_file)
        self._fernet = Fernet(self._key)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Deleted and overwritten rows are zeroed, not left readable in free pages (a spec saved in clear text
        # before its secrets were sealed, a revoked token's digest).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(endpoints)")}
        if "sealed_env" not in columns:  # a database from before secrets were sealed
            self._db.execute("ALTER TABLE endpoints ADD COLUMN sealed_env TEXT")
        token_columns = {row[1] for row in self._db.execute("PRAGMA table_info(tokens)")}
        for column, definition in TOKEN_COLUMNS.items():  # a database from before AWS keys and admin tokens
            if column not in token_columns:
                self._db.execute(f"ALTER TABLE tokens ADD COLUMN {column} {definition}")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # tables of other modules (the SageMaker control plane's records, the async queue)
    def ensure_schema(self, script: str) -> None:
        """Create the tables `script` declares (with IF NOT EXISTS), once per process that uses them."""
        with self._lock:
            self._db.executescript(script)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement under the store's lock; its rows (none for a write)."""
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run writes all or none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, tuple(params))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # endpoints
    def save_endpoint(self, spec: EndpointSpec, status: EndpointStatus) -> None:
        secrets = {name: value for name, value in spec.env.items() if is_secret(name)}
        public = spec.model_copy(update={"env": {n: v for n, v in spec.env.items() if n not in secrets}})
        sealed = self._fernet.encrypt(json.dumps(secrets).encode()).decode() if secrets else None
        with self._lock:
            self._db.execute(
                "INSERT INTO endpoints(name, spec, status, sealed_env) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, status=excluded.status, "
                "sealed_env=excluded.sealed_env",
                (spec.name, public.model_dump_json(), status.model_dump_json(), sealed),
            )

    def load_endpoints(self) -> list[Endpoint]:
        with self._lock:
            rows = self._db.execute("SELECT spec, status, sealed_env FROM endpoints ORDER BY name").fetchall()
        return [
            Endpoint(spec=self._unseal(EndpointSpec.model_validate_json(s), sealed),
                     status=EndpointStatus.model_validate_json(t))
            for s, t, sealed in rows
        ]

    def _unseal(self, spec: EndpointSpec, sealed: str | None) -> EndpointSpec:
        if sealed is None:
            return spec
        try:
            secrets: dict[str, str] = json.loads(self._fernet.decrypt(sealed))
        except InvalidToken:
            raise RuntimeError(
                f"the env secrets of endpoint {spec.name} cannot be decrypted with {self._key_file}: that file "
                "is not the key they were sealed with (restore it, or delete the endpoint)"
            ) from None
        return spec.model_copy(update={"env": {**spec.env, **secrets}})

    def delete_endpoint(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    # tokens
    def add_token(self, record: TokenRecord) -> None:
        endpoints = None if record.endpoints is None else json.dumps(record.endpoints)
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens(id, name, digest, endpoints, created_at, kind, admin) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.name, record.digest, endpoints, record.created_at, record.kind, record.admin),
            )

    def load_tokens(self) -> list[TokenRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, digest, endpoints, created_at, kind, admin FROM tokens ORDER BY created_at"
            ).fetchall()
        return [
            TokenRecord(
                id=r[0], name=r[1], digest=r[2], endpoints=None if r[3] is None else json.loads(r[3]),
                created_at=r[4], kind=r[5], admin=bool(r[6]),
            )
            for r in rows
        ]

    def seal(self, text: str) -> str:
        """`text` encrypted with the store's key, for secrets kept in a table (here or in another module's)."""
        return self._fernet.encrypt(text.encode()).decode()

    def unseal(self, sealed: str) -> str:
        """What `seal` encrypted; a clear error when the key file is not the one it was sealed with."""
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise RuntimeError(
                f"a secret in the database cannot be decrypted with {self._key_file}: that file is not the key it "
                "was sealed with (restore it)") from None

    def derive_secret(self, purpose: str) -> bytes:
        """HMAC-SHA256 of `purpose` under the key file's key: a secret that needs no storage, gone with the key."""
        return hmac.new(self._key, b"hubserve derived secret\0" + purpose.encode(), hashlib.sha256).digest()

    def delete_token(self, token_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        return cursor.rowcount > 0

    # secrets
    def get_secret(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM secrets WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_secret(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO secrets(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )


def _key(path: Path) -> bytes:
    """The key in `path`, made on first use (readable by this user only)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
