"""llama.cpp's `llama-server`: built once from the llama-cpp-python sdist's `vendor/llama.cpp` and cached, then run.

The build is keyed by the sdist's version and the CPU (it is a `GGML_NATIVE` build), and kept only while its cmake
flags are these, so a second run finds the binary and does not compile again; `build.json` beside it records how long
the first build took. `python -m benchmarks.peers.llama_server [--cache DIR]` builds it (or finds it) and prints where
it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.models import CACHE
from benchmarks.processes import BASE_ENV, ServerProcess, Unavailable, free_port

VERSION = "0.3.36"  # llama-cpp-python's, whose vendored llama.cpp the engine under test links too
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
VENDOR = f"llama_cpp_python-{VERSION}/vendor/llama.cpp"
BUILD_JOBS = 16
# Native code for this CPU; only the server; nothing fetched from the network while configuring or building (no
# prebuilt web UI, no curl, no OpenSSL); one static binary, so the cache keeps that file and nothing of the build.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


@dataclass(frozen=True)
class LlamaServerBuild:
    """A built `llama-server` and how it came to be."""

    binary: Path
    build_s: float  # wall time of the cmake configure + build when it was built
    cached: bool  # found from an earlier run (this run did not compile)
    info: dict[str, object]

    @property
    def note(self) -> str:
        how = "cached binary" if self.cached else "built in this run"
        return f"llama-server from llama-cpp-python {VERSION}'s vendor/llama.cpp, {how} (build {self.build_s:.0f} s)"


def _cpu_key() -> str:
    """A short hash of the CPU's model and flags: a native build only runs where it was built."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown-cpu"
    wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]


def build_folder(cache: Path) -> Path:
    """Where the build of this version for this CPU lives."""
    return cache / "llama-server" / f"{VERSION}-{_cpu_key()}"


def cached_build(cache: Path) -> LlamaServerBuild | None:
    """The build an earlier run left with these cmake flags, or None."""
    folder = build_folder(cache)
    record = folder / "build.json"
    if not (folder / "bin" / "llama-server").exists() or not record.exists():
        return None
    info = json.loads(record.read_text())
    if info.get("cmake_flags") != list(CMAKE_FLAGS):
        return None  # built otherwise: build_llama_server replaces it
    return LlamaServerBuild(folder / "bin" / "llama-server", float(info["build_s"]), True, info)


def _sdist(folder: Path) -> Path:
    """The llama-cpp-python sdist, fetched with pip (from its cache or index) the first time."""
    path = folder / SDIST
    if not path.exists():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   f"llama-cpp-python=={VERSION}", "-d", str(folder)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not path.exists():
            raise Unavailable(f"pip download llama-cpp-python=={VERSION} failed: {done.stderr.strip()[-500:]}")
    return path


def _extract_vendor(sdist: Path, into: Path) -> Path:
    """Only the sdist's `vendor/llama.cpp` tree, unpacked into `into/llama.cpp`."""
    prefix = VENDOR + "/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        for member in members:
            member.name = member.name[len(prefix):]
        archive.extractall(into / "llama.cpp", members=members, filter="data")
    return into / "llama.cpp"


def _run_logged(command: list[str], log: Path) -> None:
    with open(log, "ab") as handle:
        handle.write(("$ " + " ".join(command) + "\n").encode())
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise Unavailable(f"{command[0]} {command[1]} failed ({done.returncode}), log {log}:\n{tail}")


def build_llama_server(cache: Path, log: Path, jobs: int = BUILD_JOBS) -> LlamaServerBuild:
    """The cached `llama-server` for this version and CPU, building it (cmake, `--parallel jobs`) when there is
    none. Builds in a temporary folder and renames it into place, so an interrupted build leaves no half binary."""
    found = cached_build(cache)
    if found is not None:
        return found
    folder = build_folder(cache)
    folder.parent.mkdir(parents=True, exist_ok=True)
    sdist = _sdist(folder.parent)
    work = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        vendor = _extract_vendor(sdist, work)
        started = time.monotonic()
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        _run_logged(["cmake", "-S", str(vendor), "-B", str(work / "build"), *generator, *CMAKE_FLAGS], log)
        _run_logged(["cmake", "--build", str(work / "build"), "--parallel", str(jobs), "--target", "llama-server"],
                    log)
        build_s = time.monotonic() - started
        (work / "bin").mkdir()
        shutil.copy2(work / "build" / "bin" / "llama-server", work / "bin" / "llama-server")
        shutil.rmtree(work / "build")
        info = {"build_s": round(build_s, 1), "version": VERSION, "cmake_flags": list(CMAKE_FLAGS), "jobs": jobs,
                "cpus": os.cpu_count(), "load_average_after": list(os.getloadavg()),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (work / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(vendor)
        if cached_build(cache) is not None:  # another run built it meanwhile: keep theirs
            shutil.rmtree(work)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # a build with other flags
            work.rename(folder)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    result = cached_build(cache)
    assert result is not None
    return LlamaServerBuild(result.binary, result.build_s, False, result.info)


def llama_server(binary: Path, model: Path, logs: Path, *, slots: int = 16, context_per_slot: int = 512,
                 threads: int | None = None) -> ServerProcess:
    """`llama-server` serving the GGUF `model` on loopback: `slots` parallel sequences with continuous batching,
    `threads` threads (default: every core, as torch uses), `context_per_slot` tokens of context per slot, no prompt
    cache (hubserve has none: every prompt is computed anew on both)."""
    threads = threads or os.cpu_count() or 1
    port = free_port()
    command = [str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--parallel", str(slots), "--cont-batching", "--ctx-size", str(slots * context_per_slot),
               "--threads", str(threads), "--threads-batch", str(threads), "--no-cache-prompt", "--no-webui"]
    return ServerProcess("llama-server", command, port, logs / f"llama-server-{model.stem}.log", health="/health",
                         env=BASE_ENV)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.llama_server", description=__doc__)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--jobs", type=int, default=BUILD_JOBS)
    args = parser.parse_args()
    build = build_llama_server(args.cache, args.cache / "llama-server" / "build.log", args.jobs)
    print(json.dumps({"binary": str(build.binary), "build_s": build.build_s, "cached": build.cached}))


if __name__ == "__main__":
    main()
