"""The NextToken of AWS's List* and Describe* actions: where the next page starts in the listing, opaque to clients."""

from __future__ import annotations

import base64
import binascii


def page_token(start: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{start}".encode()).decode()


def page_start(token: str | None) -> int | None:
    """Where the page of `token` starts (0 for none); None for a token this server did not give."""
    if token is None:
        return 0
    try:
        kind, _, start = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(start) if kind == "offset" and start.isdecimal() else None
