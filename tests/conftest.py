"""Shared fixtures: tiny models built once per session, and a real hubserve server on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

ADMIN_TOKEN = "hs_admin_test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nearly_equal(a: Any, b: Any) -> bool:
    """`a == b`, floats anywhere inside them within 1e-4 (answers of batched and single forwards)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(nearly_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(nearly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < 1e-4
    return bool(a == b)


@dataclass
class Server:
    url: str
    home: Path
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    _client: Any = None

    def client(self) -> Any:
        """The admin's `hubserve.Client` for this server (one, closed when the server stops)."""
        if self._client is None:
            from hubserve import Client

            self._client = Client(url=self.url, token=self.token)
        return self._client

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(home: Path, env: dict[str, str] | None = None, port: int | None = None,
                 args: list[str] | None = None) -> Server:
    port = port or free_port()
    log = home.parent / f"{home.name}-server-{port}.log"
    full_env = {**os.environ, "HUBSERVE_ADMIN_TOKEN": ADMIN_TOKEN, "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **(env or {})}
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubserve", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--home", str(home), *(args or [])], env=full_env, stdout=handle, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return Server(url=url, home=home, token=ADMIN_TOKEN, process=process, log=log)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


class AwsClients:
    """Every botocore client the tests make in this process, and every response body they got back, closed after
    each test: an unclosed pooled or half-read connection is otherwise a ResourceWarning whenever the garbage
    collector happens to free it, in whichever later test that is."""

    def __init__(self) -> None:
        self.clients: list[Any] = []
        self.bodies: list[Any] = []

    def install(self) -> None:
        import botocore.session

        create_client = botocore.session.Session.create_client

        def tracked(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = create_client(session, *args, **kwargs)
            client.meta.events.register("after-call", self._keep_body)
            self.clients.append(client)
            return client

        botocore.session.Session.create_client = tracked  # type: ignore[method-assign]

    def _keep_body(self, parsed: Any = None, **_: Any) -> None:
        body = parsed.get("Body") if isinstance(parsed, dict) else None
        if hasattr(body, "close"):
            self.bodies.append(body)

    def close(self) -> None:
        """Closes what was made; a client closed here still works (its pools are made again when next used)."""
        while self.bodies:
            self.bodies.pop().close()
        for client in self.clients:  # all kept for the session: a client freed with an open socket warns too
            client.close()


AWS_CLIENTS = AwsClients()


def pytest_configure(config: pytest.Config) -> None:
    AWS_CLIENTS.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    AWS_CLIENTS.close()


@pytest.fixture(autouse=True)
def close_aws_clients() -> Iterator[None]:
    yield
    AWS_CLIENTS.close()


def sagemaker_runtime(url: str, attempts: int = 1) -> Any:
    """boto3's SageMaker runtime client for a hubserve at `url` (`attempts` tries per call, as botocore counts)."""
    import boto3
    from botocore.config import Config

    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": attempts, "mode": "standard"}))


def admin_client(service: str, url: str) -> Any:
    """boto3's `service` client for hubserve at `url`, as the admin: each request carries the admin token in place
    of botocore's signature."""
    import boto3
    from botocore.config import Config

    client = boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="unused",
                          aws_secret_access_key="unused", config=Config(retries={"max_attempts": 1}))

    def admin_token(request: Any, **_: Any) -> None:
        request.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    client.meta.events.register("before-send", admin_token)
    return client


@contextlib.contextmanager
def running_endpoints(server: Server, specs: list[dict[str, Any]]) -> Iterator[None]:
    """The endpoints of `specs`, created together (their replicas start side by side), running until the block
    ends, then deleted."""
    client = server.client()
    try:
        for spec in specs:
            client.create_endpoint(spec)
        for spec in specs:
            client.wait(spec["name"], timeout=600)
        yield
    finally:
        for spec in specs:
            with contextlib.suppress(Exception):
                client.delete_endpoint(spec["name"])


@contextlib.contextmanager
def server_with_echo(home: Path, name: str, model: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A server of its own (with `env`) whose echo endpoint `name` (model folder `model`) is running."""
    from custom_models import write_echo_model

    running = start_server(home, env=env)
    try:
        running.client().create_endpoint({"name": name, "model": str(write_echo_model(model))})
        running.client().wait(name, timeout=300)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("hubserve") / "home")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`tiny_model(task)`: the folder of a tiny random model for that task, built once per session."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(task: str) -> Path:
        from tiny_models import build_tiny_model

        if task not in built:
            built[task] = build_tiny_model(task, root / task)
        return built[task]

    return get


@pytest.fixture(scope="session")
def lm(tiny_model: Callable[[str], Path]) -> tuple[Any, Any]:
    """The tiny causal LM and its tokenizer, loaded in this process (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model("text-generation")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture
def deploy(server: Server) -> Iterator[Callable[..., str]]:
    """`deploy(name, model, **spec)`: create an endpoint, wait until it runs, return its URL; deleted after."""
    client = server.client()
    created: list[str] = []

    def make(name: str, model: str | None, **spec: object) -> str:
        client.create_endpoint({"name": name, "model": model, **spec})
        created.append(name)
        client.wait(name, timeout=600)
        return f"{server.url}/endpoints/{name}"

    yield make
    for name in created:
        with contextlib.suppress(Exception):
            client.delete_endpoint(name)


@pytest.fixture
def deploy_fails(server: Server) -> Iterator[Callable[..., str]]:
    """`deploy_fails(name, model, **spec)`: create an endpoint that must end `failed`; its message."""
    from hubserve.client import HubserveAPIError

    client = server.client()
    created: list[str] = []

    def make(name: str, model: str, **spec: object) -> str:
        client.create_endpoint({"name": name, "model": model, **spec})
        created.append(name)
        with pytest.raises(HubserveAPIError, match="failed"):
            client.wait(name, timeout=300)
        status = client.get_endpoint(name)["status"]
        assert status["state"] == "failed"
        return str(status["message"])

    yield make
    for name in created:
        client.delete_endpoint(name)
