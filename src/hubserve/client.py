"""`hubserve.Client`: the control API and invocations over HTTP, for the CLI, the SDK and users."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from hubserve.settings import default_home

DEFAULT_URL = "http://127.0.0.1:8080"


class HubserveAPIError(Exception):
    """The server answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def default_token() -> str | None:
    """`HUBSERVE_TOKEN`, else the admin token that a local server wrote into its home folder."""
    token = os.environ.get("HUBSERVE_TOKEN")
    if token:
        return token
    home = Path(os.environ.get("HUBSERVE_HOME") or default_home())
    token_file = home / "admin-token"
    try:
        return token_file.read_text().strip() or None
    except OSError:
        return None


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        message = body.get("error") or body.get("message") or body.get("detail") or response.text
    except ValueError:
        message = response.text
    raise HubserveAPIError(response.status_code, str(message))


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 120.0) -> None:
        self.url = (url or os.environ.get("HUBSERVE_URL") or DEFAULT_URL).rstrip("/")
        self.token = token or default_token()
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for_status(response)
        return None if response.status_code == 204 else response.json()

    # endpoints
    def create_endpoint(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/endpoints", json=spec))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/endpoints")["items"])

    def get_endpoint(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/endpoints/{name}"))

    def update_endpoint(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("PUT", f"/api/v1/endpoints/{name}", json=change))

    def delete_endpoint(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/endpoints/{name}")

    def wait(self, name: str, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """Until the endpoint is running with its target replicas; raises when it fails."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.get_endpoint(name)
            status = endpoint["status"]
            if status["state"] == "failed":
                raise HubserveAPIError(424, f"endpoint {name} failed: {status.get('message')}")
            if status["state"] == "running" and status["ready_replicas"] >= status["target_replicas"]:
                return endpoint
            if time.monotonic() > deadline:
                raise TimeoutError(f"endpoint {name} is still {status['state']} after {timeout:g} s")
            time.sleep(poll)

    def logs(self, name: str, tail: int = 200) -> str:
        response = self._http.get(f"/api/v1/endpoints/{name}/logs", params={"tail": tail})
        _raise_for_status(response)
        return response.text

    def follow_logs(self, name: str, tail: int = 200) -> Iterator[str]:
        params: dict[str, Any] = {"tail": tail, "follow": True}
        with self._http.stream("GET", f"/api/v1/endpoints/{name}/logs", params=params, timeout=None) as response:
            _raise_for_status(response)
            yield from response.iter_text()

    # tokens
    def create_token(self, name: str, endpoints: list[str] | None = None, *, aws: bool = False,
                     admin: bool = False) -> dict[str, Any]:
        """A bearer token (`token`), or with `aws` an AWS key pair (`access_key_id`, `secret_access_key`) for
        SigV4 clients; `admin` gives control-plane rights. The secret is in this answer only."""
        return dict(self._call("POST", "/api/v1/tokens",
                               json={"name": name, "endpoints": endpoints, "aws": aws, "admin": admin}))

    def list_tokens(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/tokens"))

    def revoke_token(self, token_id: str) -> None:
        self._call("DELETE", f"/api/v1/tokens/{token_id}")

    # data plane
    def invoke(self, name: str, body: bytes, content_type: str = "application/json",
               accept: str = "application/json") -> tuple[bytes, str]:
        """SageMaker's InvokeEndpoint: the raw body and content type of the answer."""
        response = self._http.post(f"/endpoints/{name}/invocations", content=body,
                                   headers={"content-type": content_type, "accept": accept})
        _raise_for_status(response)
        return response.content, response.headers.get("content-type", "")
