"""The control API over real HTTP: auth, validation, create/list/get/update/delete, tokens, logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import Server


def admin(server: Server) -> dict[str, str]:
    return {"authorization": f"Bearer {server.token}"}


def test_control_api_needs_the_admin_token(server: Server) -> None:
    response = httpx.get(f"{server.url}/api/v1/endpoints")
    assert response.status_code == 401
    assert "admin token" in response.json()["error"]
    response = httpx.get(f"{server.url}/api/v1/endpoints", headers={"authorization": "Bearer nope"})
    assert response.status_code == 403


def test_openapi_docs(server: Server) -> None:
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/api/v1/endpoints" in paths and "/endpoints/{name}/invocations" in paths


@pytest.mark.parametrize("body, words", [
    ({"name": "bad_name", "model": "m"}, "name"),
    ({"name": "ok"}, "model"),
    ({"name": "ok", "model": "m", "replicas": 0}, "replicas"),
    ({"name": "ok", "model": "m", "device": "tpu"}, "device"),
    ({"name": "ok", "model": "m", "surprise": 1}, "surprise"),
])
def test_invalid_specs_are_400(server: Server, body: dict[str, object], words: str) -> None:
    response = httpx.post(f"{server.url}/api/v1/endpoints", json=body, headers=admin(server))
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_bad_json_is_400(server: Server) -> None:
    response = httpx.post(f"{server.url}/api/v1/endpoints", content=b"{nope",
                          headers={**admin(server), "content-type": "application/json"})
    assert response.status_code == 400


def test_unknown_endpoint_is_404(server: Server) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = httpx.request(method, f"{server.url}/api/v1/endpoints/missing", headers=admin(server),
                                 json={} if method == "PUT" else None)
        assert response.status_code == 404, method
        assert "missing" in response.json()["error"]


def test_lifecycle(server: Server, tiny_model: Callable[[str], Path]) -> None:
    path = str(tiny_model("text-classification"))
    url = f"{server.url}/api/v1/endpoints"
    created = httpx.post(url, json={"name": "life", "model": path}, headers=admin(server))
    assert created.status_code == 201
    assert created.json()["status"]["state"] in ("pending", "initializing")
    assert httpx.post(url, json={"name": "life", "model": path}, headers=admin(server)).status_code == 409
    client = server.client()
    endpoint = client.wait("life", timeout=300)
    assert endpoint["status"]["task"] == "text-classification"  # inferred from the config
    assert endpoint["url"].endswith("/endpoints/life")
    names = [e["spec"]["name"] for e in httpx.get(url, headers=admin(server)).json()["items"]]
    assert "life" in names
    assert httpx.get(f"{server.url}/endpoints/life/health").status_code == 200
    logs = httpx.get(f"{url}/life/logs", headers=admin(server)).text
    assert "ready" in logs
    assert httpx.delete(f"{url}/life", headers=admin(server)).status_code == 204
    assert httpx.get(f"{url}/life", headers=admin(server)).status_code == 404
    assert httpx.post(f"{server.url}/endpoints/life", json={"inputs": "x"}).status_code == 404


def test_model_that_fails_to_load_fails_the_endpoint(server: Server, tmp_path: Path,
                                                     deploy_fails: Callable[..., str]) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["BertForSequenceClassification"], "model_type": "bert"}')
    message = deploy_fails("broken", str(folder))
    assert "last log lines" in message
    response = httpx.post(f"{server.url}/endpoints/broken", json={"inputs": "x"})
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert httpx.get(f"{server.url}/endpoints/broken/health").status_code == 503


def test_task_that_cannot_be_inferred_names_the_task_field(tmp_path: Path, deploy_fails: Callable[..., str]) -> None:
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0")
    assert "`task`" in deploy_fails("mystery", str(folder))


def test_tokens_api(server: Server) -> None:
    url = f"{server.url}/api/v1/tokens"
    created = httpx.post(url, json={"name": "ci", "endpoints": ["a"]}, headers=admin(server))
    assert created.status_code == 201
    token = created.json()
    assert token["token"].startswith("hs_")
    listed = httpx.get(url, headers=admin(server)).json()
    assert any(t["id"] == token["id"] and "token" not in t and "digest" not in t for t in listed)
    assert httpx.delete(f"{url}/{token['id']}", headers=admin(server)).status_code == 204
    assert httpx.delete(f"{url}/{token['id']}", headers=admin(server)).status_code == 404


def test_api_process_never_loads_torch(server: Server, tiny_model: Callable[[str], Path]) -> None:
    client = server.client()
    client.create_endpoint({"name": "no-torch-here", "model": str(tiny_model("fill-mask"))})
    try:
        client.wait("no-torch-here", timeout=300)
        assert httpx.post(f"{server.url}/endpoints/no-torch-here", json={"inputs": "the [MASK]"}).status_code == 200
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps and "tokenizers" not in maps
    finally:
        client.delete_endpoint("no-torch-here")
