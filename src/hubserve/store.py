"""Persistence: endpoint specs and states, access tokens and server secrets, in one SQLite file."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from pydantic import BaseModel

from hubserve.spec import Endpoint, EndpointSpec, EndpointStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    endpoints TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class TokenRecord(BaseModel):
    """A stored access token: never the token itself, only its digest."""

    id: str
    name: str
    digest: str
    endpoints: list[str] | None = None  # None: every endpoint
    created_at: float

    def allows(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints


class Store:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # endpoints
    def save_endpoint(self, spec: EndpointSpec, status: EndpointStatus) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO endpoints(name, spec, status) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, status=excluded.status",
                (spec.name, spec.model_dump_json(), status.model_dump_json()),
            )

    def load_endpoints(self) -> list[Endpoint]:
        with self._lock:
            rows = self._db.execute("SELECT spec, status FROM endpoints ORDER BY name").fetchall()
        return [
            Endpoint(spec=EndpointSpec.model_validate_json(s), status=EndpointStatus.model_validate_json(t))
            for s, t in rows
        ]

    def delete_endpoint(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    # tokens
    def add_token(self, record: TokenRecord) -> None:
        endpoints = None if record.endpoints is None else json.dumps(record.endpoints)
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens(id, name, digest, endpoints, created_at) VALUES (?, ?, ?, ?, ?)",
                (record.id, record.name, record.digest, endpoints, record.created_at),
            )

    def load_tokens(self) -> list[TokenRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, digest, endpoints, created_at FROM tokens ORDER BY created_at"
            ).fetchall()
        return [
            TokenRecord(
                id=r[0], name=r[1], digest=r[2], endpoints=None if r[3] is None else json.loads(r[3]),
                created_at=r[4],
            )
            for r in rows
        ]

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
