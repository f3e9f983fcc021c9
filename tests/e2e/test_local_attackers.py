"""What another local process can do to a running server: nothing through the worker hub's port (strangers
are cut off before the server buffers a byte of theirs), nothing through the files in its home (private to
its user), and endpoint secrets are not in the database in clear text (sealed), nor in what the control API
shows (masked); only the endpoint's workers see them."""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import stat
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Server, start_server
from custom_models import write_echo_model
from hubserve.channel import Preamble
from hubserve.client import Client

ENV_ECHO = '''
import os


def model_fn(model_dir):
    return None


def predict_fn(data, model):
    return {"HF_TOKEN": os.environ.get("HF_TOKEN"), "VERSION": os.environ.get("VERSION")}
'''


@pytest.fixture(scope="module")
def target(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running endpoint, for attacks on its server to leave standing."""
    client = server.client()
    client.create_endpoint({"name": "attacked", "model": str(write_echo_model(tmp_path_factory.mktemp("echo")))})
    client.wait("attacked", timeout=300)
    yield f"{server.url}/endpoints/attacked"
    client.delete_endpoint("attacked")


def still_serving(url: str) -> bool:
    return bool(httpx.post(url, json={"inputs": "still here"}).json()["echo"] == "still here")


def hub_port(server: Server, endpoint: str) -> int:
    """The worker hub's port, as the endpoint's worker logs it when it connects."""
    found = re.search(r"connected to the server's worker hub at 127\.0\.0\.1:(\d+)", server.client().logs(endpoint))
    assert found, "the worker did not log the hub's address"
    return int(found.group(1))


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def cut_off(sock: socket.socket) -> bool:
    """Whether the server closed this connection (within the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_stranger_announcing_a_huge_frame_is_cut_off_unread(server: Server, target: str) -> None:
    port = hub_port(server, "attacked")
    before = resident_bytes(server.process.pid)
    sent = 0
    chunk = bytes(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(struct.pack("!II", 0xFFFFFFFF, 0xFFFFFFFF))  # a frame of 8 GiB, it says
            while sent < 256 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
        assert cut_off(sock)
    # What the kernel's socket buffers took before the server closed, no more; none of it in the server.
    assert sent < 32 << 20
    assert resident_bytes(server.process.pid) - before < 32 << 20
    assert still_serving(target)


def test_a_wrong_secret_is_refused(server: Server, target: str) -> None:
    port = hub_port(server, "attacked")
    replica_id = server.client().get_endpoint("attacked")["status"]["replicas"][0]["id"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(Preamble(replica_id, secrets.token_hex(16).encode(), pid=1).pack())
        assert cut_off(sock)
    assert still_serving(target)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_home_folder_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    home.chmod(0o755)
    (home / "logs" / "old.log").write_text("from before")
    (home / "logs" / "old.log").chmod(0o644)
    # No admin token given: the server makes one, in its home.
    running = start_server(home, env={"HUBSERVE_ADMIN_TOKEN": ""})
    try:
        files = ["hubserve.db", "hubserve.db-wal", "hubserve.key", "admin-token", "logs/old.log", "logs/zygote.log"]
        assert {name: mode(home / name) for name in files} == dict.fromkeys(files, 0o600)
        assert {name: mode(home / name) for name in ["", "logs", "models"]} == dict.fromkeys(["", "logs", "models"],
                                                                                              0o700)
    finally:
        running.stop()


def test_env_secrets_are_sealed_at_rest_masked_in_the_api_and_real_in_the_worker(server: Server,
                                                                                    tmp_path: Path) -> None:
    client: Client = server.client()
    token = f"hf_{secrets.token_hex(16)}"
    model = tmp_path / "env-echo"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(textwrap.dedent(ENV_ECHO))
    created = client.create_endpoint({"name": "with-secret", "model": str(model),
                                      "env": {"HF_TOKEN": token, "VERSION": "1"}})
    try:
        assert created["spec"]["env"] == {"HF_TOKEN": "***", "VERSION": "1"}
        client.wait("with-secret", timeout=300)
        url = f"{server.url}/endpoints/with-secret"
        assert httpx.post(url, json={"inputs": "x"}).json() == {"HF_TOKEN": token, "VERSION": "1"}
        shown = client.get_endpoint("with-secret")["spec"]["env"]
        listed = next(e for e in client.list_endpoints() if e["spec"]["name"] == "with-secret")["spec"]["env"]
        assert shown == listed == {"HF_TOKEN": "***", "VERSION": "1"}
        # What a client does that reads an endpoint, changes one thing and sends it all back.
        updated = client.update_endpoint("with-secret", {"env": {**shown, "VERSION": "2"}})
        assert updated["spec"]["env"] == {"HF_TOKEN": "***", "VERSION": "2"}
        client.wait("with-secret", timeout=300)
        assert httpx.post(url, json={"inputs": "x"}).json() == {"HF_TOKEN": token, "VERSION": "2"}
        at_rest = [*server.home.glob("hubserve.db*"), *(p for p in (server.home / "logs").rglob("*") if p.is_file())]
        assert [path.name for path in at_rest if token.encode() in path.read_bytes()] == []
    finally:
        client.delete_endpoint("with-secret")
