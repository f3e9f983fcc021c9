"""Installing a model folder's requirements.txt into a private target folder."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hubserve.worker import requirements
from hubserve.worker.requirements import (
    MARKER_FILE,
    RequirementsInstallError,
    install_requirements,
    requirements_file,
)

PACKAGE = "text_unidecode"  # text-unidecode: tiny, pure Python, and not a dependency of hubserve


def write_requirements(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "requirements.txt"
    path.write_text(text)
    return path


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace pip with a stand-in that writes one module per requirement line; records each run."""
    runs: list[str] = []

    def run_pip(req: Path, staging: Path, timeout_s: float) -> None:
        runs.append(req.read_text())
        time.sleep(0.05)  # long enough for a concurrent caller to reach the lock
        for line in req.read_text().split():
            (staging / f"{line}.py").write_text("")

    monkeypatch.setattr(requirements, "_run_pip", run_pip)
    return runs


def test_no_requirements_file(tmp_path: Path) -> None:
    assert install_requirements(tmp_path, tmp_path / "packages") is None
    # A bare requirements.txt is only the handler's when a handler.py sits beside it.
    write_requirements(tmp_path, "six\n")
    assert requirements_file(tmp_path) is None


def test_requirements_beside_handler_py(tmp_path: Path) -> None:
    req = write_requirements(tmp_path, "six\n")
    (tmp_path / "handler.py").write_text("")
    assert requirements_file(tmp_path) == req
    # code/requirements.txt wins, as code/inference.py wins over handler.py.
    sagemaker = write_requirements(tmp_path / "code", "six\n")
    assert requirements_file(tmp_path) == sagemaker


def test_changed_requirements_replace_the_target(tmp_path: Path, fake_pip: list[str]) -> None:
    target = tmp_path / "packages"
    write_requirements(tmp_path / "code", "alpha\n")
    assert install_requirements(tmp_path, target) == target
    assert install_requirements(tmp_path, target) == target
    write_requirements(tmp_path / "code", "beta\n")
    install_requirements(tmp_path, target)
    assert fake_pip == ["alpha\n", "beta\n"]
    assert sorted(path.name for path in target.iterdir()) == [MARKER_FILE, "beta.py"]
    # No staging or retired folders are left behind, only the lock file.
    assert sorted(path.name for path in tmp_path.iterdir()) == [".packages.lock", "code", "packages"]


def test_concurrent_replicas_install_once(tmp_path: Path, fake_pip: list[str]) -> None:
    write_requirements(tmp_path / "code", "alpha\n")
    threads = [
        threading.Thread(target=install_requirements, args=(tmp_path, tmp_path / "packages"))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake_pip == ["alpha\n"]


def test_a_failing_install_raises_with_pips_output(tmp_path: Path) -> None:
    write_requirements(tmp_path / "code", "this-package-does-not-exist-hubserve==0.0.1\n")
    target = tmp_path / "packages"
    with pytest.raises(RequirementsInstallError) as caught:
        install_requirements(tmp_path, target)
    assert caught.value.status == 400
    assert "this-package-does-not-exist-hubserve" in caught.value.message
    assert "No matching distribution" in caught.value.message
    assert not target.exists()


def test_installs_from_the_index_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert importlib.machinery.PathFinder.find_spec(PACKAGE) is None, f"{PACKAGE} is already installed"
    write_requirements(tmp_path / "code", "text-unidecode==1.3\n")
    target = tmp_path / "packages"
    assert install_requirements(tmp_path, target) == target
    assert importlib.machinery.PathFinder.find_spec(PACKAGE, [str(target)]) is not None
    check = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.unidecode('Grüße'))"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "Grusse"

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran again for unchanged requirements")

    monkeypatch.setattr(requirements.subprocess, "run", no_pip)
    started = time.monotonic()
    assert install_requirements(tmp_path, target) == target
    assert time.monotonic() - started < 1.0
