"""hubserve's control API, as a black box over HTTP: create, wait for, scale and delete endpoints."""

from __future__ import annotations

import time
from typing import Any

import httpx

from benchmarks.processes import Unavailable


def engine(backend: str) -> dict[str, Any]:
    """The spec fields that pin an endpoint to `backend` ("torch", "onnx", "llamacpp", ...)."""
    return {"engine": {"backend": backend}}


def backend_of(spec: dict[str, Any]) -> str | None:
    """The backend a spec pins, or None for `auto` or none given."""
    backend = (spec.get("engine") or {}).get("backend", "auto")
    return None if backend == "auto" else str(backend)


class HubserveAdmin:
    """The admin's view of one hubserve server at `url`."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token  # for hubserve's own Client (the transform suite's jobs)
        self._http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=60)

    def endpoint_url(self, name: str) -> str:
        """Where the endpoint `name` is invoked (the Inference Endpoints route)."""
        return f"{self.url}/endpoints/{name}"

    def create(self, name: str, model: str, task: str, **spec: Any) -> None:
        """Ask for a new endpoint (returns at once; its replica starts in the background)."""
        body = {"name": name, "model": model, "task": task, "replicas": 1, **spec}
        self._check(self._http.post("/api/v1/endpoints", json=body), f"creating endpoint {name}")

    def status(self, name: str) -> dict[str, Any]:
        """The endpoint's `status` object (state, ready_replicas, message, ...)."""
        response = self._http.get(f"/api/v1/endpoints/{name}")
        self._check(response, f"reading endpoint {name}")
        return dict(response.json()["status"])

    def wait_running(self, name: str, timeout_s: float = 600.0, backend: str | None = None) -> dict[str, Any]:
        """Poll until the endpoint runs with a ready replica; `Unavailable` if it fails or takes too long, or if
        `backend` is given and another one serves (rows named after a backend must measure that backend)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(name)
            if status["state"] == "running" and status["ready_replicas"] >= 1:
                if backend is not None and status.get("backend") != backend:
                    raise Unavailable(f"endpoint {name} asked for the {backend} backend but is served by "
                                      f"{status.get('backend') or 'an unreported one'}: {status.get('message')}")
                return status
            if status["state"] == "failed":
                raise Unavailable(f"endpoint {name} failed: {status.get('message')}")
            time.sleep(0.25)
        raise Unavailable(f"endpoint {name} was not running after {timeout_s:.0f} s")

    def deploy(self, name: str, model: str, task: str, **spec: Any) -> str:
        """Create the endpoint and wait until it runs (on the backend its spec names, if any); its invocation URL."""
        self.create(name, model, task, **spec)
        self.wait_running(name, backend=backend_of(spec))
        return self.endpoint_url(name)

    def scale(self, name: str, replicas: int, timeout_s: float = 600.0) -> list[dict[str, Any]]:
        """Ask for `replicas` replicas and wait until exactly that many run, all ready (a replica scaled away may
        finish its requests first); their descriptions (`id`, `state`, `pid`, `node`, ...)."""
        self._check(self._http.patch(f"/api/v1/endpoints/{name}", json={"replicas": replicas}),
                    f"scaling endpoint {name}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(name)
            running = list(status["replicas"])
            if len(running) == replicas and all(r["state"] == "ready" for r in running):
                return running
            if status["state"] == "failed":
                raise Unavailable(f"endpoint {name} failed: {status.get('message')}")
            time.sleep(0.25)
        raise Unavailable(f"endpoint {name} did not have {replicas} ready replicas after {timeout_s:.0f} s")

    def stats(self, name: str) -> dict[str, Any]:
        """`{"engine_stats": {...}}`: the endpoint's engine counters, where this hubserve has them (else `{}`)."""
        response = self._http.get(f"/api/v1/endpoints/{name}/stats")
        return {"engine_stats": response.json()} if response.status_code == 200 else {}

    def delete(self, name: str) -> None:
        """Delete the endpoint (a missing one is fine)."""
        response = self._http.delete(f"/api/v1/endpoints/{name}")
        if response.status_code != 404:
            self._check(response, f"deleting endpoint {name}")

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def _check(response: httpx.Response, doing: str) -> None:
        if response.status_code >= 400:
            raise Unavailable(f"{doing}: hubserve answered {response.status_code} {response.text[:300]}")
