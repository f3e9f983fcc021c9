"""Which variables of an endpoint's env hold secrets (tokens, keys, passwords): the store keeps them
encrypted and the control API shows them masked; only the endpoint's workers see the real values."""

from __future__ import annotations

MASK = "***"
# HF_TOKEN, HF_API_TOKEN, HUGGING_FACE_HUB_TOKEN, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, DB_PASSWORD, ...
SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD")


def is_secret(name: str) -> bool:
    return name.upper().rsplit("_", 1)[-1] in SECRET_WORDS


def masked(env: dict[str, str]) -> dict[str, str]:
    """`env` as the API shows it: each secret's value replaced by the mask."""
    return {name: MASK if is_secret(name) else value for name, value in env.items()}


def unmasked(env: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """`env` sent back by a client with masked secrets in it: those keep their `stored` values.

    A client that read an endpoint and sends its env back unchanged must not overwrite its token with the mask.
    """
    return {name: stored[name] if value == MASK and is_secret(name) and name in stored else value
            for name, value in env.items()}
