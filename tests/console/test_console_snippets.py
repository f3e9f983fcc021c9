"""The console's snippets are honest: each one, read off an endpoint's page, runs as shown against the live server
(Python ones with this test's python, curl with the real curl) and prints a sane answer; a protected endpoint's
snippets read the token from the environment they name. LangChain's only compile: its package is not installed
here (tests/clients holds it in a venv of its own)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_browser import browser, console_server, open_endpoint, page
from playwright.sync_api import expect

from conftest import Server, running_endpoints
from tiny_models import IMAGE_LABELS, SENTIMENT_LABELS, tiny_image

__all__ = ["browser", "console_server", "page"]  # the fixtures

FLOAT = r"-?\d+\.\d+"
# name -> (spec, the snippets shown, what every snippet's output must match)
ENDPOINTS: dict[str, tuple[dict[str, Any], list[str], str]] = {
    "sentiment": ({"task": "text-classification"}, ["curl", "boto3", "InferenceClient"],
                  "|".join(SENTIMENT_LABELS)),
    "vectors": ({"task": "feature-extraction", "security": "protected"},
                ["curl", "boto3", "InferenceClient", "openai", "LangChain"], FLOAT),
    "pictures": ({"task": "image-classification"}, ["curl", "boto3", "InferenceClient"], "|".join(IMAGE_LABELS)),
    "chat": ({"task": "text-generation", "security": "protected"},
             ["curl", "boto3", "InferenceClient", "openai", "LangChain"], "generated_text|assistant"),
}
# Prints only the reply's text, which a tiny random model may leave empty: its exit status is the check.
QUIET = {("chat", "openai")}
PROTECTED = [name for name, (spec, _, _) in ENDPOINTS.items() if spec.get("security") == "protected"]


@pytest.fixture(scope="module")
def endpoints(console_server: Server, tiny_model: Callable[[str], Path]) -> Iterator[Server]:
    specs = [{"name": name, "model": str(tiny_model(spec["task"])), **spec} for name, (spec, _, _) in ENDPOINTS.items()]
    with running_endpoints(console_server, specs):
        yield console_server


@pytest.fixture(scope="module")
def secrets(endpoints: Server) -> dict[str, str]:
    """What a user of the protected endpoints puts in the environment: a bearer token and an AWS key pair."""
    client = endpoints.client()
    key = client.create_token("snippets-aws", PROTECTED, aws=True)
    return {"HUBSERVE_TOKEN": client.create_token("snippets", PROTECTED)["token"],
            "AWS_ACCESS_KEY_ID": key["access_key_id"], "AWS_SECRET_ACCESS_KEY": key["secret_access_key"]}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder holding the files the snippets name (cat.jpg), and an empty home: no saved logins or AWS config."""
    tiny_image().save(tmp_path / "cat.jpg", "JPEG")
    (tmp_path / "home").mkdir()
    return tmp_path


def shown_snippets(page: Any, server: Server, name: str) -> dict[str, str]:
    """Each snippet tab's code, as the page shows it."""
    open_endpoint(page, server, name)
    code = page.get_by_test_id("snippet-code")
    snippets = {}
    for tab in page.get_by_test_id("snippet-tabs").locator("button").all():
        tab.click()
        expect(tab).to_have_class(re.compile(r"\bactive\b"))
        snippets[tab.inner_text()] = code.inner_text()
    return snippets


def run(kind: str, code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = ["bash", "-c", code] if kind == "curl" else [sys.executable, "-c", code]
    home = {"PATH": "/usr/bin:/bin", "HOME": str(cwd / "home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run(command, cwd=cwd, env={**home, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_each_snippet_runs_as_shown(endpoints: Server, secrets: dict[str, str], page: Any, workdir: Path,
                                    name: str) -> None:
    spec, kinds, sane = ENDPOINTS[name]
    snippets = shown_snippets(page, endpoints, name)
    assert list(snippets) == kinds
    protected = name in PROTECTED
    env = secrets if protected else {}
    for kind, code in snippets.items():
        assert f"{endpoints.url}" in code
        if kind != "curl":
            compile(code, f"<{kind} snippet>", "exec")
        if protected:  # says where the token comes from, and never inlines one
            assert ("AWS" if kind == "boto3" else "HUBSERVE_TOKEN") in code
            assert "hs_" not in code
        if kind == "LangChain" or (kind == "curl" and shutil.which("curl") is None):
            continue
        done = run(kind, code, workdir, env)
        assert done.returncode == 0, f"{kind} snippet failed:\n{code}\n{done.stdout}{done.stderr}"
        assert "error" not in done.stdout.lower(), done.stdout
        if (name, kind) not in QUIET:
            assert re.search(sane, done.stdout), f"{kind} snippet printed {done.stdout!r}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_protected_snippet_without_its_token_is_refused(endpoints: Server, page: Any, workdir: Path) -> None:
    curl = shown_snippets(page, endpoints, "vectors")["curl"]
    done = run("curl", curl, workdir, {})
    assert done.returncode == 0 and "endpoint vectors is protected" in done.stdout
