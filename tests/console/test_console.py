"""The web console in a real headless Chromium against a real server: sign-in, deploy from the catalog, the
playground, analytics, pause, resume and delete.

`HUBSERVE_SCREENSHOTS=docs/console pytest tests/console -k screenshots` also saves the README's screenshots of the
main pages (1280x800 PNGs) into that folder; without the variable that test is skipped."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_browser import browser, console_server, page, sign_in
from playwright.sync_api import expect

from conftest import Server
from hubserve.demo import bundled_minilm

__all__ = ["browser", "console_server", "page"]  # the fixtures

RUNNING_MS = 120_000  # a cold start on a loaded machine


def test_console_is_served(console_server: Server) -> None:
    page = httpx.get(f"{console_server.url}/ui/")
    assert page.status_code == 200 and "js/main.js" in page.text
    script = httpx.get(f"{console_server.url}/ui/js/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{console_server.url}/ui", follow_redirects=False).headers["location"] == "/ui/"
    assert httpx.get(f"{console_server.url}/ui/../api/console.py").status_code == 404
    assert httpx.get(f"{console_server.url}/ui/%2e%2e/api/console.py").status_code == 404


def test_sign_in_refuses_a_wrong_token(console_server: Server, page: Any) -> None:
    page.goto(f"{console_server.url}/ui/#/endpoints")
    page.get_by_test_id("signin-token").fill("hs_wrong")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).not_to_be_empty()
    page.get_by_test_id("signin-token").fill(console_server.token)
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("endpoint-list")).to_be_visible()
    # A token the server refuses later (a 401 on any call) brings the sign-in back.
    page.evaluate("sessionStorage.setItem('hubserve.token', 'hs_revoked')")
    page.get_by_test_id("nav-tokens").click()
    expect(page.get_by_test_id("signin")).to_be_visible()


def test_create_form_shows_the_api_error(console_server: Server, page: Any) -> None:
    sign_in(page, console_server)
    page.get_by_test_id("new-endpoint").click()
    page.get_by_test_id("create-model").fill("hubserve-tests/tiny-sentiment")
    expect(page.get_by_test_id("create-name")).to_have_value("tiny-sentiment")
    expect(page.get_by_test_id("create-task").locator("option[value=text-classification]")).to_have_count(1)
    page.get_by_test_id("create-autoscaling").check()
    page.get_by_test_id("create-min").fill("3")
    page.get_by_test_id("create-max").fill("2")
    page.get_by_test_id("create-submit").click()
    expect(page.get_by_test_id("create-error")).to_contain_text("min_replicas")


def test_tokens_page_creates_shows_once_and_revokes(console_server: Server, page: Any) -> None:
    sign_in(page, console_server)
    page.get_by_test_id("nav-tokens").click()
    page.get_by_test_id("token-name").fill("console-app")
    page.get_by_test_id("token-create").click()
    secret = page.get_by_test_id("token-secret").text_content()
    assert secret and secret.startswith("hs_")
    auth = {"Authorization": f"Bearer {console_server.token}"}

    def names() -> list[str]:
        return [token["name"] for token in httpx.get(f"{console_server.url}/api/v1/tokens", headers=auth).json()]

    assert "console-app" in names()
    row = page.locator("[data-testid=token-row][data-name=console-app]")
    row.get_by_test_id("token-revoke").click()
    page.get_by_test_id("confirm-ok").click()
    expect(row).to_have_count(0)
    assert "console-app" not in names()


def test_deploy_from_the_catalog_then_use_pause_resume_and_delete(console_server: Server, page: Any) -> None:
    sign_in(page, console_server)
    page.get_by_test_id("nav-catalog").click()
    row = page.locator("[data-testid=catalog-row][data-id='hubserve-tests/tiny-sentiment']")
    expect(row.get_by_test_id("catalog-task")).to_have_value("text-classification")
    row.get_by_test_id("catalog-deploy").click()

    expect(page.get_by_test_id("endpoint-name")).to_have_text("tiny-sentiment")
    status = page.get_by_test_id("endpoint-status")
    expect(status.get_by_test_id("state")).to_have_text("running", timeout=RUNNING_MS)
    expect(page.get_by_test_id("snippet-code")).to_contain_text("/endpoints/tiny-sentiment")

    playground = page.get_by_test_id("playground")
    playground.get_by_test_id("pg-text").fill("I love this movie!")
    playground.get_by_test_id("pg-run").click()
    expect(playground.get_by_test_id("pg-status")).to_have_text("200")
    expect(playground.get_by_test_id("pg-time")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(playground.get_by_test_id("label-bar")).to_have_count(2)  # the tiny model's two labels

    # The analytics chart counts the request (it refreshes every few seconds).
    expect(page.get_by_test_id("analytics-total")).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=15_000)
    expect(page.get_by_test_id("chart-requests").locator("rect")).not_to_have_count(0)

    page.get_by_test_id("pause").click()
    page.get_by_test_id("confirm-ok").click()
    expect(status.get_by_test_id("state")).to_have_text("paused", timeout=30_000)
    page.get_by_test_id("resume").click()
    page.get_by_test_id("confirm-ok").click()
    expect(status.get_by_test_id("state")).not_to_have_text("paused", timeout=30_000)

    page.get_by_test_id("delete").click()
    page.get_by_test_id("confirm-cancel").click()
    expect(page.get_by_test_id("endpoint-name")).to_be_visible()
    page.get_by_test_id("delete").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("endpoint-list")).to_be_visible()
    expect(page.locator("[data-testid=endpoint-row][data-name=tiny-sentiment]")).to_have_count(0)
    assert httpx.get(f"{console_server.url}/api/v1/endpoints/tiny-sentiment",
                     headers={"Authorization": f"Bearer {console_server.token}"}).status_code == 404


def test_chat_playground_streams(console_server: Server, page: Any) -> None:
    client = console_server.client()
    client.create_endpoint({"name": "tiny-chat", "model": "hubserve-tests/tiny-chat"})
    try:
        client.wait("tiny-chat", timeout=120)
        sign_in(page, console_server)
        page.goto(f"{console_server.url}/ui/#/endpoints/tiny-chat")
        playground = page.get_by_test_id("playground")
        expect(playground).to_have_attribute("data-task", "text-generation")
        playground.get_by_test_id("chat-max-tokens").fill("8")
        playground.get_by_test_id("pg-run").click()
        expect(playground.get_by_test_id("pg-status")).to_have_text("200")
        reply = playground.locator("[data-testid=chat-message][data-role=assistant]")
        expect(reply).not_to_be_empty()
        expect(page.get_by_test_id("logs")).not_to_be_empty()
    finally:
        client.delete_endpoint("tiny-chat")


def test_screenshots(console_server: Server, page: Any) -> None:
    folder = os.environ.get("HUBSERVE_SCREENSHOTS")
    if not folder:
        pytest.skip("set HUBSERVE_SCREENSHOTS=DIR to save the console's screenshots")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    client = console_server.client()
    auth = {"Authorization": f"Bearer {console_server.token}"}
    models = httpx.get(f"{console_server.url}/api/v1/models", headers=auth)
    smollm = next(item["id"] for item in models.json()["items"] if item["format"] == "gguf")
    client.create_endpoint({"name": "minilm", "model": str(bundled_minilm()), "task": "sentence-similarity",
                            "autoscaling": {"min_replicas": 0, "max_replicas": 2, "target": 4}})
    client.create_endpoint({"name": "smollm", "model": smollm, "security": "protected"})
    try:
        client.wait("minilm", timeout=300)
        client.wait("smollm", timeout=300)
        sign_in(page, console_server)
        page.goto(f"{console_server.url}/ui/#/endpoints/minilm")
        playground = page.get_by_test_id("playground")
        for _ in range(12):
            playground.get_by_test_id("pg-run").click()
            expect(playground.get_by_test_id("pg-status")).to_have_text("200")
            page.wait_for_timeout(150)
        expect(page.get_by_test_id("analytics-total")).to_have_text("12", timeout=15_000)
        page.get_by_test_id("snippet-InferenceClient").click()
        page.screenshot(path=out / "endpoint.png", full_page=True)

        page.goto(f"{console_server.url}/ui/#/endpoints/smollm")
        chat = page.get_by_test_id("playground")
        chat.get_by_test_id("chat-input").fill("What is the capital of France?")
        chat.get_by_test_id("chat-max-tokens").fill("24")
        chat.get_by_test_id("pg-run").click()
        expect(chat.get_by_test_id("pg-status")).to_have_text("200")
        expect(chat.locator("[data-testid=chat-message][data-role=assistant]")).not_to_be_empty()
        page.wait_for_timeout(2000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=out / "chat.png")

        page.goto(f"{console_server.url}/ui/#/endpoints")
        expect(page.get_by_test_id("endpoint-row")).to_have_count(2)
        page.wait_for_timeout(500)
        page.screenshot(path=out / "endpoints.png")
        page.goto(f"{console_server.url}/ui/#/catalog")
        expect(page.get_by_test_id("catalog-row").first).to_be_visible()
        page.screenshot(path=out / "catalog.png")
        page.locator("[data-testid=catalog-row]").first.get_by_test_id("catalog-customize").click()
        page.get_by_test_id("create-autoscaling").check()
        page.get_by_test_id("create-min").fill("0")
        page.get_by_test_id("env-add").click()
        page.get_by_test_id("env-key").fill("HF_TOKEN")
        page.get_by_test_id("env-value").fill("hf_...")
        page.screenshot(path=out / "create.png")
    finally:
        for name in ("minilm", "smollm"):
            client.delete_endpoint(name)
