"""What a client call came to, as JSON: its result, or what it raised; shared by the client scripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def attempt(call: Callable[[], Any]) -> Any:
    """The call's result, or what it raised (class and its bases, HTTP status, message), so one failure hides
    no other."""
    try:
        return call()
    except Exception as exc:
        # huggingface_hub raises its TGI error classes (UnknownError...) from the HTTP error that has the status.
        response = getattr(exc, "response", None)
        if response is None:
            response = getattr(exc.__cause__, "response", None)
        return {"raised": type(exc).__name__, "classes": [kind.__name__ for kind in type(exc).__mro__],
                "status": getattr(response, "status_code", None), "message": str(exc)[:800]}
