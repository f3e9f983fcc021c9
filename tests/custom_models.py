"""Model folders with custom code (SageMaker `code/inference.py`, Inference Endpoints `handler.py`)."""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

ECHO_INFERENCE = '''
import os
import time


def model_fn(model_dir):
    return {"model_dir": model_dir}


def predict_fn(data, model, context):
    inputs = data.get("inputs") if isinstance(data, dict) else data
    command = inputs if isinstance(inputs, str) else None
    if command == "raise":
        raise ValueError("the model refused this input")
    if command == "sleep":
        time.sleep(float(data.get("parameters", {}).get("seconds", 1)))
    if command == "crash":
        os._exit(17)
    if command == "crash-once":  # only the first replica to see this marker dies
        try:
            os.close(os.open(data["parameters"]["marker"], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return {"pid": os.getpid()}
        os._exit(17)
    if command == "env":
        return {"names": sorted(os.environ)}
    if command == "pid":
        return {"pid": os.getpid(), "version": os.environ.get("ECHO_VERSION")}
    headers = context.request_processor[0].get_request_properties()
    return {"echo": inputs, "parameters": data.get("parameters") if isinstance(data, dict) else None,
            "custom_attributes": headers.get("X-Amzn-SageMaker-Custom-Attributes")}
'''


def write_echo_model(path: Path) -> Path:
    """A model whose predict_fn echoes its input, raises, sleeps, crashes or lists its env's names on request."""
    (path / "code").mkdir(parents=True, exist_ok=True)
    (path / "code" / "inference.py").write_text(textwrap.dedent(ECHO_INFERENCE))
    return path


SEGFAULT_ON_LOAD = '''
import ctypes


def model_fn(model_dir):
    ctypes.string_at(0)  # reads address 0: a segfault, as a broken native extension causes


def predict_fn(data, model):
    return data
'''


def write_segfault_model(path: Path) -> Path:
    """A model whose loading kills its process with a segfault: it never gets to report a failure."""
    (path / "code").mkdir(parents=True, exist_ok=True)
    (path / "code" / "inference.py").write_text(textwrap.dedent(SEGFAULT_ON_LOAD))
    return path


def tar_gz(folder: Path, archive: Path) -> Path:
    """Pack a folder's contents as SageMaker expects a model.tar.gz (files at the archive's root)."""
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    return archive


def tar_gz_with_member(archive: Path, member: str, data: bytes = b"x") -> Path:
    """An archive with one member named exactly `member` (for path-traversal tests)."""
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return archive
