"""Install a model folder's `requirements.txt` into a private target folder, once per content,
the way SageMaker installs `code/requirements.txt` before it imports the inference script."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hubserve.errors import BadRequest

logger = logging.getLogger(__name__)

MARKER_FILE = ".hubserve-requirements.sha256"
PIP_OUTPUT_TAIL_LINES = 40
DEFAULT_TIMEOUT_S = 1800.0


class RequirementsInstallError(BadRequest):
    """pip could not install the model's requirements; the message ends with pip's output."""


def requirements_file(model_dir: Path) -> Path | None:
    """`code/requirements.txt`, else a `requirements.txt` beside an Inference Endpoints handler.py."""
    sagemaker = model_dir / "code" / "requirements.txt"
    if sagemaker.is_file():
        return sagemaker
    endpoint = model_dir / "requirements.txt"
    if endpoint.is_file() and (model_dir / "handler.py").is_file():
        return endpoint
    return None


def install_requirements(
    model_dir: Path, target: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Path | None:
    """Make `target` hold the model's requirements and return it (for sys.path); None without any.

    pip reads its own configuration (PIP_INDEX_URL, pip.conf ...) from the environment.
    """
    requirements = requirements_file(model_dir)
    if requirements is None:
        return None
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if _installed_digest(target) == digest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        # Another replica may have finished the same install while this one waited for the lock.
        if _installed_digest(target) != digest:
            _install(requirements, target, digest, timeout_s)
    return target


def _installed_digest(target: Path) -> str | None:
    try:
        return (target / MARKER_FILE).read_text().strip()
    except OSError:
        return None


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(requirements: Path, target: Path, digest: str, timeout_s: float) -> None:
    # Installing next to the target keeps the final rename on one filesystem, so readers see
    # either the old folder or the complete new one, never a half-installed one.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        logger.info("installing %s into %s", requirements, target)
        _run_pip(requirements, staging, timeout_s)
        (staging / MARKER_FILE).write_text(digest + "\n")
        _replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_pip(requirements: Path, staging: Path, timeout_s: float) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
        "--target", str(staging), "-r", str(requirements),
    ]  # fmt: skip
    try:
        # The requirements file's folder is the working directory so relative paths in it resolve.
        completed = subprocess.run(
            command,
            cwd=requirements.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RequirementsInstallError(
            f"pip install -r {requirements} did not finish in {timeout_s:.0f}s:\n{_tail(exc.output)}"
        ) from exc
    if completed.returncode != 0:
        raise RequirementsInstallError(
            f"pip install -r {requirements} failed (exit {completed.returncode}):\n{_tail(completed.stdout)}"
        )


def _tail(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        output = output.decode("utf-8", errors="replace")
    return "\n".join((output or "").rstrip().splitlines()[-PIP_OUTPUT_TAIL_LINES:])


def _replace_dir(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    # Directories cannot be renamed over a non-empty one: move the old aside first.
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    target.rename(retired / "old")
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
