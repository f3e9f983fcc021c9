"""The peers hubserve is measured against, each a server process on a free loopback port.

`onebyone` and `litserve_embed` are small servers of our own (run as `python -m benchmarks.peers.NAME`);
`transformers serve --continuous-batching` is transformers' own command. All embedding peers answer
`POST /predict` with `{"inputs": str}` -> `{"embeddings": [float]}`, as hubserve's sentence-embeddings task does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.processes import ServerProcess, Unavailable, free_port, python_module

EMBEDDING_ROUTE = "/predict"


def hubserve(home: Path, admin_token: str, logs: Path, ray_address: str | None = None,
             env: dict[str, str] | None = None) -> ServerProcess:
    """`hubserve serve` with its own home and admin token; with `ray_address`, placing replicas on that Ray cluster
    (`--ray`)."""
    port = free_port()
    command = python_module("hubserve", "serve", "--host", "127.0.0.1", "--port", str(port), "--home", str(home))
    name = "hubserve"
    if ray_address is not None:
        command += ["--ray", ray_address]
        name = "hubserve-ray"
    return ServerProcess(name, command, port, logs / f"{name}.log", health="/ping",
                         env={"HUBSERVE_ADMIN_TOKEN": admin_token, **(env or {})})


def embedding_peer(module: str, model: Path, logs: Path) -> ServerProcess:
    """One of our embedding peers (`onebyone` or `litserve_embed`) serving the sentence-transformers `model`."""
    port = free_port()
    command = python_module(f"benchmarks.peers.{module}", "--model", str(model), "--port", str(port))
    return ServerProcess(module, command, port, logs / f"{module}.log")


def transformers_serve(model_id: str, dtype: str, logs: Path) -> ServerProcess:
    """`transformers serve --continuous-batching` pinned to `model_id` (a local folder; requests must name the model
    exactly so), answering on its OpenAI-compatible API."""
    executable = Path(sys.executable).with_name("transformers")
    if not executable.exists():
        raise Unavailable(f"no `transformers` command beside {sys.executable}")
    port = free_port()
    command = [str(executable), "serve", model_id, "--continuous-batching", "--device", "cpu", "--dtype", dtype,
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return ServerProcess("transformers serve", command, port, logs / "transformers-serve.log")
