"""`hubserve` operations: --max-memory and --public-metrics, autoscaling options, pause and resume, scale to zero in
`list`, the model catalog, analytics and metrics, and the SDK's pause and resume, against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server
from custom_models import write_echo_model
from hubserve.cli import build_parser
from hubserve.cli.endpoints import _spec_fields
from hubserve.cli.operations import analytics_text
from hubserve.cli.output import table
from hubserve.cli.serve import parse_size, server_settings
from hubserve.spec import EndpointSpec

GIB = 2**30


def hubserve(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """The `hubserve` command, as a user runs it, against `server` as the admin."""
    env = {**os.environ, "HUBSERVE_URL": server.url, "HUBSERVE_TOKEN": server.token}
    return subprocess.run([sys.executable, "-m", "hubserve", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def until(check: Any, timeout: float = 60.0, what: str = "the condition") -> Any:
    """Polls `check()` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.2)
    return value


@pytest.mark.parametrize(("text", "size"), [
    ("8G", 8 * GIB), ("512M", 512 * 2**20), ("1.5GiB", 3 * GIB // 2), ("1073741824", GIB), ("2GB", 2_000_000_000),
    ("64k", 65_536), ("1t", 2**40), ("100B", 100), (" 4 Gi ", 4 * GIB), (".5K", 512)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["8Q", "G", "-1G", "0", "0.1", "1e9", "8GiBB", ""])
def test_not_sizes(text: str) -> None:
    with pytest.raises(Exception, match="is not a size"):
        parse_size(text)


def test_serve_options_set_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parser = build_parser()
    settings = server_settings(parser.parse_args(["serve", "--home", str(tmp_path), "--max-memory", "1.5GiB",
                                                  "--public-metrics"]))
    assert (settings.max_memory, settings.public_metrics, settings.home) == (3 * GIB // 2, True, tmp_path)
    monkeypatch.setenv("HUBSERVE_MAX_MEMORY", str(GIB))
    monkeypatch.setenv("HUBSERVE_PUBLIC_METRICS", "true")
    from_env = server_settings(parser.parse_args(["serve"]))  # options not given leave the environment's values
    assert (from_env.max_memory, from_env.public_metrics) == (GIB, True)


def test_serve_refuses_a_bad_size() -> None:
    done = subprocess.run([sys.executable, "-m", "hubserve", "serve", "--max-memory", "8Q"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "argument --max-memory: '8Q' is not a size" in done.stderr


def test_deploy_sends_only_the_autoscaling_options_given() -> None:
    args = build_parser().parse_args(["deploy", "e", "--model", "org/m", "--min-replicas", "0", "--max-replicas", "3",
                                      "--scale-to-zero-after", "60", "--scale-up-hold", "30"])
    fields = _spec_fields(args)
    assert fields["autoscaling"] == {"min_replicas": 0, "max_replicas": 3, "scale_to_zero_after_s": 60.0,
                                     "scale_up_hold_s": 30.0}
    spec = EndpointSpec.model_validate({"name": args.name, **fields})  # the names and values are the spec's
    assert spec.autoscaling is not None and spec.autoscaling.target == 4.0
    plain = build_parser().parse_args(["deploy", "e", "--model", "org/m", "--replicas", "2"])
    assert "autoscaling" not in _spec_fields(plain)


def test_analytics_totals_as_text() -> None:
    report = {"name": "minilm", "period": "1h", "step_s": 60, "points": [], "totals": {
        "requests": 1234, "requests_per_min": 20.57, "status": {"2xx": 1200, "5xx": 34},
        "p50_ms": 12.25, "p90_ms": 30.0, "p99_ms": None}}
    assert analytics_text(report).splitlines() == [
        "minilm, last 1h",
        "requests  1,234 (20.6/min)",
        "status    2xx 1,200  4xx 0  5xx 34",
        "latency   p50 12.2 ms  p90 30.0 ms  p99 -"]


def test_table_columns_fit_their_longest_cell() -> None:
    assert table(("ID", "TASKS"), [("a-long-id", "x"), ("b", "y, z")]).splitlines() == [
        "ID         TASKS", "a-long-id  x", "b          y, z"]


@pytest.fixture
def echo(server: Server, tmp_path: Path) -> Any:
    """`echo(name, *options)` deploys an echo model as endpoint `name` with the CLI; each is deleted after the test."""
    model = write_echo_model(tmp_path / "echo")
    names: list[str] = []

    def deploy(name: str, *options: str) -> dict[str, Any]:
        names.append(name)
        return dict(json.loads(ok(hubserve(server, "deploy", name, "--model", str(model), *options))))

    yield deploy
    for name in names:
        hubserve(server, "delete", name)


def invoke(server: Server, name: str, text: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/endpoints/{name}", json={"inputs": text}, headers=headers, timeout=300)


def test_update_merges_the_autoscaling_options_given(server: Server, echo: Any) -> None:
    created = echo("scaling", "--min-replicas", "0", "--max-replicas", "2", "--scale-to-zero-after", "600",
                   "--target", "8")
    assert created["spec"]["autoscaling"]["min_replicas"] == 0
    updated = json.loads(ok(hubserve(server, "update", "scaling", "--max-replicas", "3", "--scale-down-after", "30")))
    assert updated["spec"]["autoscaling"] == {
        "min_replicas": 0, "max_replicas": 3, "target": 8.0, "scale_up_after_s": 10.0, "scale_down_after_s": 30.0,
        "scale_to_zero_after_s": 600.0, "scale_up_hold_s": 120.0}
    listed = [line for line in ok(hubserve(server, "list")).splitlines() if line.startswith("scaling ")]
    assert len(listed) == 1 and "[0-3]" in listed[0]


def test_scaled_to_zero_shows_in_list_and_the_next_invoke_wakes_it(server: Server, echo: Any) -> None:
    echo("sleepy", "--min-replicas", "0", "--scale-to-zero-after", "1", "--wait")
    until(lambda: hubserve(server, "describe", "sleepy").stdout.count('"scaledToZero"'), what="scaling to zero")
    line = next(line for line in ok(hubserve(server, "list")).splitlines() if line.startswith("sleepy "))
    state, replicas, bounds = line.split()[1:4]
    assert (state, replicas.split("/")[0], bounds) == ("scaledToZero", "0", "[0-1]")
    answer = ok(hubserve(server, "invoke", "sleepy", "--body", '{"inputs": "awake"}', "-"))  # held, then answered
    assert json.loads(answer)["echo"] == "awake"


def test_pause_and_resume(server: Server, echo: Any) -> None:
    echo("napping", "--wait")
    assert ok(hubserve(server, "pause", "napping")).strip() == "napping: paused"
    refused = invoke(server, "napping", "hello")
    assert refused.status_code == 503 and "endpoint napping is paused; resume it to serve" in refused.text
    assert "paused" in next(line for line in ok(hubserve(server, "list")).splitlines() if line.startswith("napping "))
    assert ok(hubserve(server, "resume", "napping", "--wait")).strip() == "napping: running"
    assert invoke(server, "napping", "hello").json()["echo"] == "hello"
    again = hubserve(server, "resume", "napping")
    assert again.returncode == 1 and "error 409" in again.stderr


def test_sdk_predictor_pauses_and_resumes(server: Server, tmp_path: Path) -> None:
    from hubserve import Model

    predictor = Model(model=str(write_echo_model(tmp_path / "m")), client=server.client()).deploy("sdk-napping")
    try:
        assert predictor.pause()["status"]["state"] == "paused"
        assert invoke(server, "sdk-napping", "hello").status_code == 503
        assert predictor.resume()["status"]["state"] == "running"
        assert predictor.predict({"inputs": "again"})["echo"] == "again"
    finally:
        predictor.delete_endpoint()


def test_models_lists_the_bundled_minilm(server: Server) -> None:
    models = json.loads(ok(hubserve(server, "models", "--json")))
    minilm = next(model for model in models if "minilm" in model["id"].lower())
    assert minilm["format"] == "sentence-transformers" and minilm["source"] == "package"
    assert {"feature-extraction", "sentence-similarity"} & set(minilm["tasks"])
    lines = ok(hubserve(server, "models")).splitlines()
    assert lines[0].split() == ["ID", "FORMAT", "SOURCE", "TASKS"] and len(lines) == len(models) + 1
    row = next(line for line in lines if line.startswith(minilm["id"] + " "))
    assert row.split()[1:3] == ["sentence-transformers", "package"]


def test_analytics_and_metrics_count_the_requests(server: Server, echo: Any) -> None:
    echo("counted", "--wait")
    for _ in range(3):
        assert invoke(server, "counted", "hi").status_code == 200

    def totals() -> dict[str, Any] | None:
        report = json.loads(ok(hubserve(server, "analytics", "counted", "--json")))
        return dict(report["totals"]) if report["totals"]["requests"] >= 3 else None

    assert until(totals, what="the requests' count")["status"]["2xx"] == 3
    text = ok(hubserve(server, "analytics", "counted")).splitlines()
    assert text[0] == "counted, last 1h" and text[1].startswith("requests  3 (")
    day = json.loads(ok(hubserve(server, "analytics", "counted", "--period", "1d", "--json")))
    assert day["period"] == "1d" and len(day["points"]) == 96

    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(ok(hubserve(server, "metrics"))))
    assert any(sample.labels.get("endpoint") == "counted" for family in families for sample in family.samples)
