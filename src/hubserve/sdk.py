"""`Model(...).deploy()` and `Predictor`, shaped like the SageMaker SDK's HuggingFaceModel."""

from __future__ import annotations

import json
from typing import Any

from hubserve.client import Client


class Predictor:
    """Calls one endpoint: JSON in, JSON out (bytes in, bytes out)."""

    def __init__(self, endpoint_name: str, client: Client | None = None) -> None:
        self.endpoint_name = endpoint_name
        self.client = client or Client()

    def predict(self, data: Any, content_type: str = "application/json", accept: str = "application/json") -> Any:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        raw, returned_type = self.client.invoke(self.endpoint_name, body, content_type, accept)
        return json.loads(raw) if returned_type.startswith("application/json") else raw

    def delete_endpoint(self) -> None:
        self.client.delete_endpoint(self.endpoint_name)


class Model:
    """A model and how to serve it; `deploy` makes it an endpoint."""

    def __init__(self, model: str | None = None, task: str | None = None, env: dict[str, str] | None = None,
                 client: Client | None = None, **settings: Any) -> None:
        self.spec: dict[str, Any] = {"model": model, "task": task, "env": env or {}, **settings}
        self.client = client or Client()

    def deploy(self, name: str, replicas: int = 1, wait: bool = True, timeout: float = 600.0,
               **settings: Any) -> Predictor:
        spec = {k: v for k, v in {**self.spec, **settings, "name": name, "replicas": replicas}.items()
                if v is not None}
        self.client.create_endpoint(spec)
        if wait:
            self.client.wait(name, timeout=timeout)
        return Predictor(name, self.client)
