"""The console's browser tests: a headless Chromium (Debian's, driven by Playwright) and a server whose model
catalog holds tiny models in a Hugging Face cache."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Server, start_server
from sources_fixtures import build_hub_cache

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Hub ids the console tests find in the catalog, and the task each tiny model is built for.
CATALOG = {"hubserve-tests/tiny-sentiment": "text-classification", "hubserve-tests/tiny-chat": "text-generation"}
VIEWPORT = {"width": 1280, "height": 800}


def hub_cache(root: Path, tiny_model: Callable[[str], Path]) -> Path:
    for repo_id, task in CATALOG.items():
        folder = tiny_model(task)
        files = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        build_hub_cache(root, repo_id, {COMMIT: files}, {"main": COMMIT})
    return root


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Iterator[Server]:
    """A server whose catalog has the tiny models of CATALOG in its Hugging Face cache."""
    cache = hub_cache(tmp_path_factory.mktemp("hf-cache"), tiny_model)
    running = start_server(tmp_path_factory.mktemp("console") / "home", env={"HF_HUB_CACHE": str(cache)})
    yield running
    running.stop()


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("HUBSERVE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (HUBSERVE_REQUIRE_BROWSER=1)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser tab (its own session storage) at 1280x800; JavaScript errors fail the test."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, errors


def sign_in(page: Any, server: Server) -> None:
    page.goto(f"{server.url}/ui/")
    page.get_by_test_id("signin-token").fill(server.token)
    page.get_by_test_id("signin-submit").click()
    page.get_by_test_id("nav-endpoints").wait_for()


def open_endpoint(page: Any, server: Server, name: str) -> Any:
    """Signs in, opens endpoint `name`'s page and returns its playground once the endpoint's task is known."""
    sign_in(page, server)
    page.goto(f"{server.url}/ui/#/endpoints/{name}")
    playground = page.get_by_test_id("playground")
    playground.wait_for()
    return playground
