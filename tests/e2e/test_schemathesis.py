"""The OpenAPI document is the contract: schemathesis sends generated requests, valid and not, to every route of the
real server, and each answer must be documented (status code, content type, headers, body schema) and never a
server error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, server_with_echo

ECHO = "contract-echo"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,ignored_auth,missing_required_header,unsupported_method")
# Per route, phase and generation mode: enough to reach each error path, few enough for seconds in all.
MAX_EXAMPLES = 15

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

# Invocations, health and reads go to the deployed endpoint: a generated name only ever finds none. Changes and
# deletes keep generated names: schemathesis would otherwise fill them with names (and token ids) it read in earlier
# answers, and change the endpoint under test (a timeout of 5e-324 s: every later invocation a 504) or delete it, or
# revoke the run's own token. The stateful phase, which chains calls (create, read, change, delete) and may so
# change or delete the endpoint, runs on the control API alone, after the other phases. Following the logs never
# ends, so the logs route is read once.
CONFIG = f"""
[phases.examples.extra-data-sources]
responses = false

[phases.coverage.extra-data-sources]
responses = false

[phases.fuzzing.extra-data-sources]
responses = false

[[operations]]
include-path-regex = "^/endpoints/"
parameters = {{ "path.name" = "{ECHO}" }}
phases.stateful.enabled = false

[[operations]]
include-name = ["GET /api/v1/endpoints/{{name}}", "GET /api/v1/endpoints/{{name}}/stats"]
parameters = {{ "path.name" = "{ECHO}" }}

[[operations]]
include-name = "GET /api/v1/endpoints/{{name}}/logs"
parameters = {{ "path.name" = "{ECHO}", "query.follow" = false }}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Generated specs are created too: the replica cap keeps them from filling the machine.
    with server_with_echo(tmp_path_factory.mktemp("contract") / "home", ECHO, tmp_path_factory.mktemp("echo"),
                          {"HUBSERVE_MAX_REPLICAS": "2"}) as running:
        yield running


def test_every_route_keeps_its_contract(server: Server, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
         f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {server.token}", "--checks", CHECKS,
         "--max-examples", str(MAX_EXAMPLES), "--seed", "1", "--workers", "1", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    operations = operation_count(httpx.get(f"{server.url}/openapi.json").json())
    assert operations >= 35
    assert f"{operations} selected / {operations} total" in run.stdout  # every route, the invocations' included


def operation_count(document: dict[str, Any]) -> int:
    """The operations (path and method) an OpenAPI document has: what schemathesis counts."""
    return sum(len(HTTP_METHODS & item.keys()) for item in document["paths"].values())
