"""Access tokens and AWS keys: the admin token, scoped or admin tokens hashed at rest, and AWS access keys whose
secrets are derived (never stored); checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hubserve.errors import BadRequest, Forbidden, NotFound, Unauthorized
from hubserve.store import Store, TokenRecord

TOKEN_PREFIX = "hs_"
ADMIN_DIGEST_KEY = "admin_token_digest"
# hubserve's access key ids: `HSAK` and 16 upper-case letters and digits, 20 characters as AWS's are.
AWS_KEY_PREFIX = "HSAK"
AWS_KEY_ALPHABET = string.ascii_uppercase + string.digits
AWS_SECRET_LENGTH = 40
# The bearer token of the server's admin: not in the tokens table, and never revoked.
ROOT = TokenRecord(id="admin", name="admin", digest="", created_at=0.0, admin=True)


def digest(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class TokenRegistry:
    """Holds the token digests in memory and decides who may do what."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tokens = {t.id: t for t in store.load_tokens()}
        self._admin_digest = store.get_secret(ADMIN_DIGEST_KEY)
        # Told after every change of the tokens (on Ray: to publish their digests to the data plane).
        self.on_change: Callable[[], None] = _nothing

    @property
    def admin_digest(self) -> str | None:
        return self._admin_digest

    def mirror(self, records: Iterable[TokenRecord], admin_digest: str | None) -> None:
        """Check tokens against another server's (the owner's, on a data-plane server), in memory only."""
        self._tokens = {t.id: t for t in records}
        self._admin_digest = admin_digest

    def ensure_admin_token(self, given: str | None, token_file: Path) -> str | None:
        """Set up the admin token; return it only when it was created now (to be shown once)."""
        if given:
            self._set_admin(given)
            return None
        if self._admin_digest is not None:
            return None
        token = TOKEN_PREFIX + "admin_" + secrets.token_urlsafe(32)
        self._set_admin(token)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        os.chmod(token_file, 0o600)
        return token

    def _set_admin(self, token: str) -> None:
        self._admin_digest = digest(token)
        self._store.set_secret(ADMIN_DIGEST_KEY, self._admin_digest)
        self.on_change()

    def is_admin(self, token: str) -> bool:
        holder = self._holder(token)
        return holder is not None and holder.admin

    def require_admin(self, authorization: str | None) -> None:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("this route needs the admin token: send 'Authorization: Bearer <token>'")
        if not self.is_admin(token):
            raise Forbidden("the token is not the admin token, nor an admin token")

    def require_endpoint_access(self, authorization: str | None, endpoint: str) -> None:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized(f"endpoint {endpoint} is protected: send 'Authorization: Bearer <token>'")
        holder = self._holder(token)
        if holder is None:
            raise Forbidden("the token is not valid")
        if not holder.allows(endpoint):
            raise Forbidden(f"the token is not valid for endpoint {endpoint}")

    def endpoint_access(self, authorization: str | None) -> Callable[[str], bool]:
        """Which protected endpoints the caller may call (by name): all for the admin token or an admin token, a
        scoped token's own, none without a valid token. Used to list what a caller can see, so an invalid token is
        no error here."""
        token = bearer_token(authorization)
        holder = None if token is None else self._holder(token)
        return holder.allows if holder is not None else _none

    def _holder(self, token: str) -> TokenRecord | None:
        """Whose bearer token this is: ROOT for the admin token, a stored token's record, or None."""
        if self._admin_digest is not None and hmac.compare_digest(digest(token), self._admin_digest):
            return ROOT
        token_id = token.removeprefix(TOKEN_PREFIX).split("_", 1)[0]
        record = self._tokens.get(token_id)
        if record is None or record.kind != "bearer" or not hmac.compare_digest(digest(token), record.digest):
            return None
        return record

    def aws_key(self, access_key_id: str) -> tuple[TokenRecord, str] | None:
        """An AWS access key hubserve issued (and did not revoke): its record and its secret."""
        record = self._tokens.get(access_key_id)
        if record is None or record.kind != "aws":
            return None
        return record, self._aws_secret(access_key_id)

    def _aws_secret(self, access_key_id: str) -> str:
        # 40 base64 characters, as AWS's secrets are: 240 bits of an HMAC only the key file's holder can compute.
        derived = self._store.derive_secret(f"aws-secret-access-key:{access_key_id}")
        return base64.b64encode(derived).decode()[:AWS_SECRET_LENGTH]

    def create(self, name: str, endpoints: list[str] | None, aws: bool = False,
               admin: bool = False) -> tuple[TokenRecord, str]:
        """A new bearer token (returned) or AWS access key (its secret returned, its id the record's id), shown
        once: only a digest of the token is stored, and nothing of the key's secret."""
        if not name:
            raise BadRequest("a token needs a name")
        if admin and endpoints is not None:
            raise BadRequest("an admin token opens every endpoint: give it no endpoints")
        if aws:
            token_id = AWS_KEY_PREFIX + "".join(secrets.choice(AWS_KEY_ALPHABET) for _ in range(16))
            token = self._aws_secret(token_id)
            token_digest = ""
        else:
            token_id = secrets.token_hex(6)
            token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
            token_digest = digest(token)
        record = TokenRecord(id=token_id, name=name, digest=token_digest, endpoints=endpoints, created_at=time.time(),
                             kind="aws" if aws else "bearer", admin=admin)
        self._store.add_token(record)
        self._tokens[token_id] = record
        self.on_change()
        return record, token

    def list(self) -> list[TokenRecord]:
        return list(self._tokens.values())

    def revoke(self, token_id: str) -> None:
        if not self._store.delete_token(token_id):
            raise NotFound(f"no token with id {token_id}")
        self._tokens.pop(token_id, None)
        self.on_change()


def _none(_endpoint: str) -> bool:
    return False


def _nothing() -> None:
    return None
