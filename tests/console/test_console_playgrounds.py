"""The console's playgrounds for the tasks beyond text classification and chat (entities, vectors, an image and
a sound uploaded), an API error shown as the API said it, the update dialog, and the endpoint list's refresh; in a
real headless Chromium against a real server."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_browser import browser, console_server, open_endpoint, page, sign_in
from playwright.sync_api import expect

from conftest import Server, running_endpoints
from tiny_models import AUDIO_LABELS, IMAGE_LABELS, sine_wave, tiny_image, wav_bytes

__all__ = ["browser", "console_server", "page"]  # the fixtures

TIME = re.compile(r"^\d+ ms$")
NONZERO = re.compile(r"^(?!0$)\d+(\.\d+)?$")
# The endpoints of this module: name -> spec. `vectors` is protected: the console calls it with its token.
SPECS = {
    "entities": {"task": "token-classification"},
    "vectors": {"task": "feature-extraction", "security": "protected",
                "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
    "images": {"task": "image-classification"},
    "sounds": {"task": "audio-classification"},
}


@pytest.fixture(scope="module")
def endpoints(console_server: Server, tiny_model: Callable[[str], Path]) -> Iterator[Server]:
    specs = [{"name": name, "model": str(tiny_model(str(spec["task"]))), **spec} for name, spec in SPECS.items()]
    with running_endpoints(console_server, specs):
        yield console_server


def invoke(server: Server, name: str, body: dict[str, Any]) -> Any:
    """The answer the API itself gives, to compare the page's drawing with."""
    response = httpx.post(f"{server.url}/endpoints/{name}", json=body,
                          headers={"Authorization": f"Bearer {server.token}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def spec_of(server: Server, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = server.client().get_endpoint(name)["spec"]
    return spec


def png() -> bytes:
    buffer = io.BytesIO()
    tiny_image().save(buffer, "PNG")
    return buffer.getvalue()


def expect_answered(playground: Any, status: str = "200") -> None:
    expect(playground.get_by_test_id("pg-status")).to_have_text(status)
    expect(playground.get_by_test_id("pg-time")).to_have_text(TIME)


def test_token_classification_highlights_the_entities(endpoints: Server, page: Any) -> None:
    text = "My name is Clara and I live in Berlin."
    playground = open_endpoint(page, endpoints, "entities")
    playground.get_by_test_id("pg-text").fill(text)
    playground.get_by_test_id("pg-run").click()
    expect_answered(playground)
    found = invoke(endpoints, "entities", {"inputs": text, "parameters": {"aggregation_strategy": "simple"}})
    assert found, "the tiny model finds entities in this text"
    marks = playground.get_by_test_id("entity")
    expect(marks).to_have_count(len(found))
    for mark, entity in zip(marks.all(), found, strict=True):
        expect(mark).to_have_attribute("data-group", entity["entity_group"])
        expect(mark).to_contain_text(text[entity["start"]:entity["end"]])
    # The whole text is there, marks in place: without the group labels it reads as sent.
    sent = playground.get_by_test_id("entities").evaluate(
        "node => { const copy = node.cloneNode(true); copy.querySelectorAll('small').forEach((s) => s.remove());"
        " return copy.textContent; }")
    assert sent == text


def test_feature_extraction_previews_the_vector(endpoints: Server, page: Any) -> None:
    playground = open_endpoint(page, endpoints, "vectors")
    playground.get_by_test_id("pg-text").fill("a good day")
    playground.get_by_test_id("pg-run").click()
    expect_answered(playground)
    vector = invoke(endpoints, "vectors", {"inputs": "a good day"})
    expect(playground.get_by_test_id("vector-shape")).to_have_text(f"[{len(vector)}, {len(vector[0])}]")
    first = ", ".join(f"{value:.4f}" for value in vector[0][:8])
    expect(playground.get_by_test_id("vector-values")).to_have_text(f"[{first}, …]")


@pytest.mark.parametrize(("name", "file", "labels"), [
    ("images", {"name": "cat.png", "mimeType": "image/png", "buffer": png()}, IMAGE_LABELS),
    ("sounds", {"name": "speech.wav", "mimeType": "audio/wav", "buffer": wav_bytes(sine_wave(0.5))}, AUDIO_LABELS),
])
def test_an_uploaded_file_is_classified(endpoints: Server, page: Any, name: str, file: dict[str, Any],
                                        labels: tuple[str, ...]) -> None:
    playground = open_endpoint(page, endpoints, name)
    playground.get_by_test_id("pg-file").set_input_files(file)
    playground.get_by_test_id("pg-run").click()
    expect_answered(playground)
    bars = playground.get_by_test_id("label-bar")
    expect(bars).to_have_count(len(labels))
    assert sorted(bar.locator(".bar-label").inner_text() for bar in bars.all()) == sorted(labels)


def test_a_bad_input_shows_the_api_error_and_status(endpoints: Server, page: Any) -> None:
    playground = open_endpoint(page, endpoints, "images")
    playground.get_by_test_id("pg-run").click()
    expect(playground.get_by_test_id("pg-result")).to_have_text("Choose a file first.")
    playground.get_by_test_id("pg-file").set_input_files(
        {"name": "broken.png", "mimeType": "image/png", "buffer": b"not an image"})
    playground.get_by_test_id("pg-run").click()
    expect_answered(playground, "400")
    expect(playground.get_by_test_id("pg-status")).to_have_class(re.compile(r"\bbad\b"))
    expect(playground.get_by_test_id("pg-result")).to_contain_text("the request body is not an image Pillow can read")


def test_the_list_refreshes_requests_per_minute_and_state(endpoints: Server, page: Any) -> None:
    sign_in(page, endpoints)
    row = page.locator("[data-testid=endpoint-row][data-name=sounds]")
    rate = row.get_by_test_id("requests-per-min")
    expect(row.get_by_test_id("state")).to_have_text("running")
    expect(rate).to_have_text(re.compile(r"^(—|[\d.]+)$"))
    before = rate.inner_text()
    for _ in range(5):
        endpoints.client().invoke("sounds", wav_bytes(sine_wave(0.2)), "audio/wav")
    expect(rate).not_to_have_text(before, timeout=10_000)  # within the list's refresh period, page untouched
    expect(rate).to_have_text(NONZERO)
    assert float(rate.inner_text()) > float(before.replace("—", "0"))

    endpoints.client().pause_endpoint("sounds")
    expect(row.get_by_test_id("state")).to_have_text("paused", timeout=10_000)
    endpoints.client().resume_endpoint("sounds")
    expect(row.get_by_test_id("state")).not_to_have_text("paused", timeout=10_000)


def test_the_update_dialog_changes_the_spec_once_confirmed(endpoints: Server, page: Any) -> None:
    open_endpoint(page, endpoints, "vectors")
    replicas = page.get_by_test_id("endpoint-replicas")
    expect(replicas).to_contain_text("autoscaling 1–1")

    page.get_by_test_id("update").click()
    page.get_by_test_id("update-max").fill("3")
    page.get_by_test_id("update-cancel").click()
    page.get_by_test_id("update").click()
    page.get_by_test_id("update-max").fill("3")
    page.get_by_test_id("update-submit").click()
    page.get_by_test_id("confirm-cancel").click()
    assert spec_of(endpoints, "vectors")["autoscaling"]["max_replicas"] == 1  # neither changed it

    page.get_by_test_id("update").click()
    page.get_by_test_id("update-min").fill("0")
    page.get_by_test_id("update-max").fill("3")
    page.get_by_test_id("update-submit").click()
    page.get_by_test_id("confirm-ok").click()
    expect(replicas).to_contain_text("autoscaling 0–3")
    scaling = spec_of(endpoints, "vectors")["autoscaling"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (0, 3)

    page.get_by_test_id("update").click()
    page.get_by_test_id("update-min").fill("4")  # more than max: the API refuses it, the page says why
    page.get_by_test_id("update-submit").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("action-error")).to_contain_text("min_replicas")
    assert spec_of(endpoints, "vectors")["autoscaling"]["min_replicas"] == 0

    page.goto(f"{endpoints.url}/ui/#/endpoints/images")
    expect(page.get_by_test_id("endpoint-name")).to_have_text("images")
    expect(replicas).to_contain_text("1/1 ready (fixed)")
    page.get_by_test_id("update").click()
    page.get_by_test_id("update-replicas").fill("2")
    page.get_by_test_id("update-submit").click()
    page.get_by_test_id("confirm-ok").click()
    expect(replicas).to_contain_text("/2 ready (fixed)")
    assert spec_of(endpoints, "images")["replicas"] == 2
