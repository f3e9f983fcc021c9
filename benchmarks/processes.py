"""Servers as child processes on free loopback ports: started, waited for until healthy, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

HOST = "127.0.0.1"
# Every process of a run sees the same: no Hub, no tokenizer thread pools fighting the model's threads.
BASE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1"}


class Unavailable(RuntimeError):
    """A configuration could not be measured on this machine; its rows say why instead of failing the run."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file, for error messages."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServerProcess:
    """One server process: `with ServerProcess(...) as server:` starts it and waits until `health` answers 200."""

    def __init__(self, name: str, command: list[str], port: int, log: Path, health: str = "/health",
                 env: dict[str, str] | None = None, start_timeout_s: float = 180.0) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log = log
        self.health = health
        self.env = {**os.environ, **BASE_ENV, **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._launched_at = 0.0

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it (a no-op when it was launched already)."""
        if self.process is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log, "ab") as handle:
                # Its own process group: the workers it starts (LitServe's, hubserve's) are stopped with it.
                self.process = subprocess.Popen(self.command, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                                cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
            self._launched_at = time.monotonic()
        return self

    def start(self) -> ServerProcess:
        """Launch the process if needed and wait until its health route answers 200 (`Unavailable` if it never
        does within `start_timeout_s` of its launch)."""
        self.launch()
        assert self.process is not None
        deadline = self._launched_at + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(f"{self.name} exited with {self.process.returncode}: {log_tail(self.log, 5)}")
            try:
                if httpx.get(self.url + self.health, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise Unavailable(f"{self.name} was not healthy after {self.start_timeout_s:.0f} s: {log_tail(self.log, 5)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the server (SIGKILL if it has not exited after `timeout_s`), then to whatever it left running
        in its process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _stop_group(self.process.pid)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def _stop_group(group: int, grace_s: float = 5.0) -> None:
    """SIGTERM every process left in the process group `group`, SIGKILL those still there after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return  # the group is empty
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def python_module(module: str, *args: str) -> list[str]:
    """The command line running `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]
