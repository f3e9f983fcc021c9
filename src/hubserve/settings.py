"""Server settings, read from `HUBSERVE_*` environment variables and the command line."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hubserve.sources import ArchiveLimits


def default_home() -> Path:
    return Path.home() / ".hubserve"


class ServerSettings(BaseSettings):
    """Everything the `hubserve serve` process needs to know before it starts."""

    model_config = SettingsConfigDict(env_prefix="HUBSERVE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None
    # How long a stopping replica may finish its in-flight requests.
    drain_timeout_s: float = 30.0
    # Fork CPU replicas from a process that has imported torch and transformers already (fast cold starts).
    zygote: bool = True
    # A connection that has not sent a whole request head by then is closed (slowloris).
    header_timeout_s: float = Field(default=10.0, gt=0)
    # The longest wait for the next piece of a request body before answering 408.
    body_timeout_s: float = Field(default=30.0, gt=0)
    # Replicas of all endpoints together; unset: what the machine holds (serving/capacity.py states the rule).
    max_replicas: int | None = Field(default=None, ge=1)
    # Bytes all replicas together may use (`--max-memory`); unset: a share of the machine's memory
    # (serving/capacity.py states the rule). A scale-up that would pass it is refused with a message.
    max_memory: int | None = Field(default=None, ge=1)
    # A local replica writes a streamed answer's events (TGI's, OpenAI's) to the client's connection itself, once
    # the server has sent the head and the first event: no hop through this process per token. Off: every event
    # goes through the server.
    stream_handoff: bool = True
    # Serve GET /metrics without the admin token (for a Prometheus that scrapes without credentials).
    public_metrics: bool = False
    # How far a model archive may unpack: in all, and as a multiple of its own size (compression bombs).
    max_unpacked_bytes: int = Field(default=ArchiveLimits().max_unpacked_bytes, ge=1)
    max_compression_ratio: float = Field(default=ArchiveLimits().max_compression_ratio, gt=1)
    # Place replicas on this Ray cluster (`--ray`; `auto`: the cluster this machine is part of) instead of running
    # them as local processes.
    ray_address: str | None = None
    # Where replica processes connect back to: the worker hub listens on `hub_host` (unset: loopback, or on Ray the
    # address Ray knows this machine by) and `hub_port` (0: any free one); replicas dial `hub_advertised_host`
    # (unset: the listening address, or on Ray, when that is a wildcard, the address Ray knows this machine by).
    hub_host: str | None = None
    hub_port: int = Field(default=0, ge=0, le=65535)
    hub_advertised_host: str | None = None
    # Serve only the data plane (`--data-plane`) of the endpoints that the owner server on the same Ray cluster
    # publishes: invocations on every front door, with the owner's tokens; no endpoint, token or job of its own.
    data_plane: bool = False

    @model_validator(mode="after")
    def _data_plane_on_ray(self) -> ServerSettings:
        if self.data_plane and not self.ray_address:
            raise ValueError("a data-plane server serves the endpoints of an owner server on a Ray cluster: give "
                             "--ray ADDRESS (or HUBSERVE_RAY_ADDRESS) with --data-plane")
        return self

    @property
    def db_path(self) -> Path:
        return self.home / "hubserve.db"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def models_dir(self) -> Path:
        """Unpacked archives, converted GGUF folders and per-endpoint packages."""
        return self.home / "models"

    @property
    def jobs_dir(self) -> Path:
        """Batch transform jobs' staged answers, each file's until it is published whole to the job's output."""
        return self.home / "jobs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def admin_token_file(self) -> Path:
        return self.home / "admin-token"

    @property
    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_unpacked_bytes=self.max_unpacked_bytes,
                             max_compression_ratio=self.max_compression_ratio)

    def prepare(self) -> None:
        """Make the home folder, private to this user, as is everything in it.

        The umask makes what this process and its workers write from now on private (database, logs, model
        files); the modes are set again here for a home made before, or by another program.
        """
        os.umask(0o077)
        folders = (self.home, self.logs_dir, self.models_dir, self.jobs_dir, self.run_dir)
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        # The database and its journal files, the admin token, the secrets key, the logs.
        for file in (*self.home.iterdir(), *self.logs_dir.iterdir()):
            if file.is_file() and not file.is_symlink():
                file.chmod(0o600)
