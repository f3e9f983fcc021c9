"""The KubeRay manifest and image in deploy/kuberay stay true to the code: the server command parses with the CLI
as it is, every HUBSERVE_ variable is a setting, and the Ray version matches the one hubserve depends on (a head
and workers of another Ray version cannot form a cluster with the server's driver)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import ray
import yaml

from hubserve.cli import build_parser
from hubserve.cli.serve import server_settings
from hubserve.settings import ServerSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kuberay"


def cluster() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((DEPLOY / "raycluster.yaml").read_text()))
    found: dict[str, Any] = next(d for d in documents if d["kind"] == "RayCluster")
    return found


def head_container() -> dict[str, Any]:
    container: dict[str, Any] = cluster()["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return container


def worker_groups() -> dict[str, dict[str, Any]]:
    return {group["groupName"]: group for group in cluster()["spec"]["workerGroupSpecs"]}


def api_container() -> dict[str, Any]:
    container: dict[str, Any] = worker_groups()["api"]["template"]["spec"]["containers"][0]
    return container


def server_command(container: dict[str, Any] | None = None) -> list[str]:
    script = " ".join((container or head_container())["args"])
    return shlex.split(script.split("exec ", 1)[1])


def test_the_ray_version_is_the_one_hubserve_runs_with() -> None:
    assert cluster()["spec"]["rayVersion"] == ray.__version__
    base = re.search(r"^FROM rayproject/ray:(\S+?)-", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert base is not None and base.group(1) == ray.__version__


def test_the_head_runs_ray_then_the_server_on_the_cluster() -> None:
    script = " ".join(head_container()["args"])
    # KubeRay's generated command blocks; the server could never start after it.
    assert "${KUBERAY_GEN_RAY_START_CMD/--block/}" in script
    assert cluster()["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    command = server_command()
    assert command[:2] == ["hubserve", "serve"]
    settings = server_settings(build_parser().parse_args(command[1:]))
    assert settings.ray_address == "auto"
    assert settings.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in head_container()["ports"]}
    assert ports["hubserve"] == settings.port


def test_the_api_group_runs_data_plane_servers_that_take_no_replica() -> None:
    settings = server_settings(build_parser().parse_args(server_command(api_container())[1:]))
    assert settings.data_plane and settings.ray_address == "auto" and settings.host == "0.0.0.0"
    assert worker_groups()["api"]["rayStartParams"]["num-cpus"] == "0"
    service = next(d for d in yaml.safe_load_all((DEPLOY / "raycluster.yaml").read_text())
                   if d["kind"] == "Service" and d["metadata"]["name"] == "hubserve-api")
    assert service["spec"]["selector"]["ray.io/group"] == "api"
    assert service["spec"]["ports"][0]["targetPort"] == settings.port


def test_every_hubserve_variable_is_a_setting() -> None:
    names = [e["name"] for e in head_container()["env"] if e["name"].startswith("HUBSERVE_")]
    assert names
    for name in names:
        assert name.removeprefix("HUBSERVE_").lower() in ServerSettings.model_fields, name


def test_workers_run_the_same_image_so_replicas_find_hubserve() -> None:
    head_image = head_container()["image"]
    for group in worker_groups().values():
        assert group["template"]["spec"]["containers"][0]["image"] == head_image
    assert cluster()["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_the_head_script_starts_ray_in_the_background_then_execs_the_server(tmp_path: Path) -> None:
    # The head container's own shell line, run with `ray` and `hubserve` standing in as programs that record how
    # they were called: KubeRay's generated command, as KubeRay 1.x writes it, must lose its --block.
    for program in ("ray", "hubserve"):
        stand_in = tmp_path / program
        stand_in.write_text(f'#!/bin/sh\necho "{program} $*" >> {tmp_path}/calls\n')
        stand_in.chmod(0o755)
    container = head_container()
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin",
           "KUBERAY_GEN_RAY_START_CMD": "ray start --head --dashboard-host=0.0.0.0 --num-cpus=0 --block "
                                        "--metrics-export-port=8080"}
    # (-c, not the manifest's -l: a login shell here would reset PATH past the stand-ins)
    subprocess.run([container["command"][0], "-c", *container["args"]], env=env, check=True, timeout=30)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0].startswith("ray start --head") and "--block" not in calls[0]
    assert calls[1] == "hubserve " + " ".join(server_command()[1:])
