"""A cached virtual environment for client libraries whose pins clash with hubserve's own (LangChain's
Hugging Face integration wants huggingface-hub<2), built once per requirements file, as a user's app would be."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REQUIREMENTS = Path(__file__).parent / "requirements.txt"
COMPLETE = "hubserve-complete"


def venv_folder(requirements: Path = REQUIREMENTS) -> Path:
    """`HUBSERVE_CLIENT_VENV_DIR`, else a cache folder named after the requirements and Python version."""
    if override := os.environ.get("HUBSERVE_CLIENT_VENV_DIR"):
        return Path(override)
    key = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hubserve-tests" / f"clients-{key}"


def client_python(requirements: Path = REQUIREMENTS) -> Path:
    """The python of a venv holding exactly `requirements`; built under a file lock, so parallel test
    processes wait for one build, and reused once its marker says the install finished."""
    folder = venv_folder(requirements)
    folder.parent.mkdir(parents=True, exist_ok=True)
    wanted = requirements.read_text()
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = folder / COMPLETE
        if not (marker.exists() and marker.read_text() == wanted):
            _build(folder, requirements)
            marker.write_text(wanted)
    return folder / "bin" / "python"


def _build(folder: Path, requirements: Path) -> None:
    if folder.exists():
        # A half-built or outdated venv of ours; never wipe a folder that is something else.
        if not (folder / "pyvenv.cfg").exists() and any(folder.iterdir()):
            raise RuntimeError(f"{folder} exists and is not a virtual environment")
        shutil.rmtree(folder)
    venv.EnvBuilder(with_pip=True).create(folder)
    install = subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
         "-r", str(requirements)], capture_output=True, text=True, timeout=1800,
    )
    if install.returncode != 0:
        raise RuntimeError(f"pip install -r {requirements} failed:\n{install.stdout[-3000:]}{install.stderr[-3000:]}")
