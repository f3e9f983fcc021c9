"""Server settings, read from `HUBSERVE_*` environment variables and the command line."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def admin_token_file(self) -> Path:
        return self.home / "admin-token"

    def prepare(self) -> None:
        for folder in (self.home, self.logs_dir, self.models_dir, self.run_dir):
            folder.mkdir(parents=True, exist_ok=True)
