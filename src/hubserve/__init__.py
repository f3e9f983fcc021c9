"""hubserve: serve Hugging Face models on your own machines. The SDK face: Model, Predictor, Transformer, Client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "Model", "Predictor", "Transformer", "__version__"]

if TYPE_CHECKING:
    from hubserve.client import Client
    from hubserve.sdk import Model, Predictor, Transformer


def __getattr__(name: str) -> Any:
    # Lazy, so `import hubserve` stays light for the server and the worker alike.
    if name == "Client":
        from hubserve.client import Client

        return Client
    if name in ("Model", "Predictor", "Transformer"):
        from hubserve import sdk

        return getattr(sdk, name)
    raise AttributeError(name)
