"""A local Ray cluster for the tests of `hubserve serve --ray`: a head that runs nothing and worker nodes, every
node on 127.0.0.1, and a real server placing replicas on it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Server, free_port, start_server

# Ray otherwise takes this machine's network address as every node's, and dials it.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# A cluster `ray start` began asks its clients for the token it wrote to ~/.ray: they must be told to send it.
# The fake provider, which starts the autoscaler's nodes as local processes, runs only under RAY_FAKE_CLUSTER.
AUTOSCALING_ENV = {**LOOPBACK_ONLY, "RAY_AUTH_MODE": "token", "RAY_FAKE_CLUSTER": "1"}
HEAD_TYPE = "ray.head.default"
# The fake provider names the head by this id, and its nodes after it.
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"


@contextmanager
def local_cluster(names: tuple[str, ...], cpus: int = 1) -> Iterator[Any]:
    """A head with no CPU, so that every replica goes to a worker node, and one node of `cpus` per name (each also
    declares a resource of its name)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in LOOPBACK_ONLY.items():
            env.setenv(name, value)
        from ray.cluster_utils import Cluster

        running = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        try:
            for name in names:
                add_node(running, name, cpus)
            yield running
        finally:
            running.shutdown()


@pytest.fixture(scope="module")
def ray_node() -> Iterator[None]:
    """This process connected to a one-node Ray of one CPU started for the module's tests."""
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def add_node(cluster: Any, name: str, cpus: int = 1) -> Any:
    return cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1", resources={name: 1})


def raylet_pid(node: Any) -> int:
    """The pid of a node's raylet, which every process Ray starts on that node finds in RAY_RAYLET_PID."""
    pid: int = node.all_processes["raylet"][0].process.pid
    return pid


@dataclass
class AutoscalingCluster:
    """A head started by `ray start` with Ray's autoscaler, whose nodes its fake provider starts on this machine."""

    address: str
    temp_dir: Path

    def nodes(self) -> int:
        """The nodes running now, head included: one raylet each, under this cluster's own temp dir."""
        return sum(1 for command in self._processes().values() if command and command[0].endswith("/raylet"))

    def _processes(self) -> dict[int, list[str]]:
        """This cluster's processes (their command lines name its temp dir) and all they started."""
        commands: dict[int, list[str]] = {}
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdecimal():
                with contextlib.suppress(OSError):
                    commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                    parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        ours = {pid for pid, command in commands.items() if any(str(self.temp_dir) in part for part in command)}
        while grown := {pid for pid, parent in parents.items() if parent in ours} - ours:
            ours |= grown
        return {pid: commands.get(pid, []) for pid in ours}

    def stop(self) -> None:
        """Every process of this cluster and its nodes, not `ray stop`, which stops every Ray on the machine."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextmanager
def autoscaling_cluster(worker_cpus: int, max_workers: int) -> Iterator[AutoscalingCluster]:
    """A head with no CPU and Ray's autoscaler over up to `max_workers` nodes of `worker_cpus` each, which it starts
    when work waits for room (as on a cloud, through Ray's fake multi-node provider) and stops after 6 s idle.
    `ray start` is tried up to 3 times, each on a fresh port and temp dir (on a loaded machine it once failed in the
    full suite and passed alone); a last failure raises with what it printed."""
    failures = []
    for _ in range(3):
        running, done = _start_head(worker_cpus, max_workers)
        if done.returncode == 0:
            break
        running.stop()
        failures.append(f"exit {done.returncode}: {(done.stderr or done.stdout)[-3000:]}")
        print(f"ray start failed, {failures[-1]}", file=sys.stderr)
    else:
        raise RuntimeError(f"ray start failed 3 times; the last: {failures[-1]}")
    try:
        yield running
    finally:
        running.stop()


def _start_head(worker_cpus: int, max_workers: int) -> tuple[AutoscalingCluster, subprocess.CompletedProcess[str]]:
    port = free_port()
    # Ray's sockets live in its temp dir, under the 107 bytes of a socket's path.
    temp_dir = Path(tempfile.mkdtemp(prefix="hsr-", dir="/tmp"))
    config = {
        "cluster_name": temp_dir.name, "max_workers": max_workers, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1, "head_node_type": HEAD_TYPE,
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_node": {"resources": {"CPU": worker_cpus}, "node_config": {}, "min_workers": 0,
                         "max_workers": max_workers}},
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
        "rsync_filter": [], "file_mounts_sync_continuously": False,
        **{commands: [] for commands in ("initialization_commands", "setup_commands", "head_setup_commands",
                                         "worker_setup_commands", "head_start_ray_commands",
                                         "worker_start_ray_commands")},
    }
    (temp_dir / "autoscaling.json").write_text(json.dumps(config))
    env = {**os.environ, **AUTOSCALING_ENV, "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID, "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID}
    done = subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                           f"--port={port}", "--num-cpus=0", "--include-dashboard=false", "--dashboard-port=0",
                           f"--autoscaling-config={temp_dir / 'autoscaling.json'}", f"--temp-dir={temp_dir}"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    return AutoscalingCluster(f"127.0.0.1:{port}", temp_dir), done


@contextmanager
def ray_server(cluster: Any, home: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    running = start_server(home, env={**LOOPBACK_ONLY, **(env or {})}, args=["--ray", cluster.address])
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def data_plane_server(cluster: Any, home: Path) -> Iterator[Server]:
    """A data-plane server (`--data-plane`) on the cluster, serving what its owner publishes."""
    running = start_server(home, env=LOOPBACK_ONLY, args=["--ray", cluster.address, "--data-plane"])
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def endpoints(server: Server) -> Iterator[Callable[..., str]]:
    """`make(name, model, **spec)`: an endpoint created on `server` and ready, its URL; deleted on the way out."""
    client = server.client()
    created: list[str] = []

    def make(name: str, model: str | Path, **spec: object) -> str:
        client.create_endpoint({"name": name, "model": str(model), **spec})
        created.append(name)
        client.wait(name, timeout=300)
        return f"{server.url}/endpoints/{name}"

    yield make
    for name in created:
        client.delete_endpoint(name)


def replicas(server: Server, name: str) -> list[dict[str, Any]]:
    described: dict[str, Any] = server.client().get_endpoint(name)
    return list(described["status"]["replicas"])
