"""Server settings: the home folder and everything in it are private to the server's user, a home made
before included; archive limits come from HUBSERVE_* variables."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubserve.settings import ServerSettings


@pytest.fixture
def umask() -> Iterator[None]:
    """prepare() sets the process's umask: give the test process its own back afterwards."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_home_made_before_is_made_private(tmp_path: Path, umask: None) -> None:
    settings = ServerSettings(home=tmp_path / "home")
    settings.logs_dir.mkdir(parents=True, mode=0o755)
    settings.home.chmod(0o755)
    for file in (settings.db_path, settings.admin_token_file, settings.logs_dir / "e.log"):
        file.write_text("x")
        file.chmod(0o644)
    settings.prepare()
    assert [mode(folder) for folder in (settings.home, settings.logs_dir, settings.models_dir)] == [0o700] * 3
    assert [mode(file) for file in (settings.db_path, settings.admin_token_file, settings.logs_dir / "e.log")] == [
        0o600] * 3
    (settings.logs_dir / "new.log").write_text("written after prepare")
    (settings.models_dir / "unpacked").mkdir()
    assert mode(settings.logs_dir / "new.log") == 0o600
    assert mode(settings.models_dir / "unpacked") == 0o700


def test_archive_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSERVE_MAX_UNPACKED_BYTES", "1000000")
    monkeypatch.setenv("HUBSERVE_MAX_COMPRESSION_RATIO", "20")
    limits = ServerSettings().archive_limits
    assert (limits.max_unpacked_bytes, limits.max_compression_ratio) == (1_000_000, 20)


def test_a_data_plane_server_needs_a_ray_cluster(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give --ray ADDRESS"):
        ServerSettings(home=tmp_path, data_plane=True)
    assert ServerSettings(home=tmp_path, data_plane=True, ray_address="auto").data_plane


def test_serve_says_so_when_data_plane_is_given_without_ray(tmp_path: Path) -> None:
    from hubserve.cli import build_parser
    from hubserve.cli.serve import server_settings

    args = build_parser().parse_args(["serve", "--home", str(tmp_path), "--data-plane"])
    with pytest.raises(SystemExit, match="^hubserve serve: a data-plane server serves the endpoints of an owner"):
        server_settings(args)
