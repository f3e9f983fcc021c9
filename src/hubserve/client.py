"""`hubserve.Client`: the control API and invocations over HTTP, for the CLI, the SDK and users."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from hubserve.jobs.spec import JobState
from hubserve.settings import default_home

DEFAULT_URL = "http://127.0.0.1:8080"
# Lines read per poll when following a job's log: more than a job writes between two polls.
FOLLOW_TAIL = 10_000


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


# The SDK's and the CLI's flat names for the fields of a job's `data_processing`.
DATA_PROCESSING = ("input_filter", "output_filter", "join_source")


def job_spec(fields: dict[str, Any]) -> dict[str, Any]:
    """A job's body for `Client.create_job` from flat options named as `TransformJobSpec`'s fields (plus the three
    of `DATA_PROCESSING`); those left None keep the server's defaults."""
    spec = {key: value for key, value in fields.items() if value is not None and key not in DATA_PROCESSING}
    processing = {key: fields[key] for key in DATA_PROCESSING if fields.get(key) is not None}
    if processing:
        spec["data_processing"] = processing
    return spec


def unique_job_name(base: str = "transform") -> str:
    """`{base}-{UTC time to the millisecond}`, as the sagemaker SDK names a job it was given no name for."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(now)) + f"-{int(now % 1 * 1000):03d}"
    return f"{base[:62 - len(stamp)].rstrip('-')}-{stamp}"


def _after(lines: list[str], last: str | None) -> list[str]:
    """The lines after the last occurrence of `last` (a log line starts with its time, so it is as good as unique);
    all of them when there was no `last` or it has gone past the tail read."""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index] == last:
            return lines[index + 1:]
    return lines


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

    def pause_endpoint(self, name: str) -> dict[str, Any]:
        """Stops the endpoint's replicas and keeps its spec: it answers 503 until resumed (also after a restart)."""
        return dict(self._call("POST", f"/api/v1/endpoints/{name}/pause"))

    def resume_endpoint(self, name: str) -> dict[str, Any]:
        """Deploys a paused endpoint again; a 409 if it is not paused."""
        return dict(self._call("POST", f"/api/v1/endpoints/{name}/resume"))

    def wait(self, name: str, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """Until the endpoint is running with its target replicas, or scaled to zero (its next request wakes it);
        raises when it fails or is paused."""
        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.get_endpoint(name)
            status = endpoint["status"]
            if status["state"] == "failed":
                raise HubserveAPIError(424, f"endpoint {name} failed: {status.get('message')}")
            if status["state"] == "paused":
                raise HubserveAPIError(409, f"endpoint {name} is paused; resume it to serve")
            if status["state"] == "scaledToZero" or (
                    status["state"] == "running" and status["ready_replicas"] >= status["target_replicas"]):
                return endpoint
            if time.monotonic() > deadline:
                raise TimeoutError(f"endpoint {name} is still {status['state']} after {timeout:g} s")
            time.sleep(poll)

    def logs(self, name: str, tail: int = 200) -> str:
        return self._log_text(f"/api/v1/endpoints/{name}/logs", tail)

    def follow_logs(self, name: str, tail: int = 200) -> Iterator[str]:
        params: dict[str, Any] = {"tail": tail, "follow": True}
        with self._http.stream("GET", f"/api/v1/endpoints/{name}/logs", params=params, timeout=None) as response:
            _raise_for_status(response)
            yield from response.iter_text()

    def _log_text(self, path: str, tail: int) -> str:
        response = self._http.get(path, params={"tail": tail})
        _raise_for_status(response)
        return response.text

    def analytics(self, name: str, period: str = "1h") -> dict[str, Any]:
        """The endpoint's traffic over the last `period` ("1h": 60 points of a minute, "1d": 96 of 15 minutes):
        requests, status classes, p50/p90/p99 latency and replicas per point, and their `totals`."""
        return dict(self._call("GET", f"/api/v1/endpoints/{name}/analytics", params={"period": period}))

    def metrics(self) -> str:
        """The server's Prometheus metrics, as text."""
        response = self._http.get("/metrics")
        _raise_for_status(response)
        return response.text

    # catalog
    def list_models(self) -> list[dict[str, Any]]:
        """The models available on the server (its Hub cache, installed model packages, folders under its home):
        each with an `id` to deploy as `model`, its `format`, `source` and `tasks`."""
        return list(self._call("GET", "/api/v1/models")["items"])

    def list_tasks(self) -> list[str]:
        """Every task the server serves."""
        return list(self._call("GET", "/api/v1/tasks")["tasks"])

    # batch transform jobs
    def create_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Starts a job (a `TransformJobSpec`, see `job_spec`); its model's replicas start with it."""
        return dict(self._call("POST", "/api/v1/jobs", json=spec))

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/jobs")["jobs"])

    def get_job(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/jobs/{name}"))

    def stop_job(self, name: str) -> dict[str, Any]:
        """Asks a running job to stop (it is Stopping, then Stopped); a 409 if it has ended."""
        return dict(self._call("POST", f"/api/v1/jobs/{name}/stop"))

    def wait_job(self, name: str, timeout: float | None = None, poll: float = 1.0,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Until the job has ended (Completed, Failed or Stopped), showing each poll's job to `on_progress`; the
        ended job. How it ended is the caller's to judge: a stopped job is not an error to everyone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(name)
            if on_progress is not None:
                on_progress(job)
            if JobState(job["state"]).ended:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {name} is still {job['state']} after {timeout:g} s")
            time.sleep(poll)

    def job_logs(self, name: str, tail: int = 200) -> str:
        """The job log's last lines: started, replicas ready, each file, every skipped or failed record, the end."""
        return self._log_text(f"/api/v1/jobs/{name}/logs", tail)

    def follow_job_logs(self, name: str, tail: int = 200, poll: float = 1.0) -> Iterator[str]:
        """The log's last `tail` lines, then each new line as it comes, until the job has ended. Read by polling
        the log's tail: its lines are few, and the stream ends with the job."""
        lines = self.job_logs(name, tail=max(tail, 1)).splitlines()  # at least the last, to know what is new
        yield from (line + "\n" for line in lines[max(len(lines) - tail, 0):])
        last = lines[-1] if lines else None
        while True:
            ended = JobState(self.get_job(name)["state"]).ended  # before the read: the read has the last lines
            lines = self.job_logs(name, tail=FOLLOW_TAIL).splitlines()
            yield from (line + "\n" for line in _after(lines, last))
            last = lines[-1] if lines else last
            if ended:
                return
            time.sleep(poll)

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
