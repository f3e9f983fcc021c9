"""SigV4 over real HTTP: keys from the real `hubserve token create --aws`, real boto3 `sagemaker-runtime` clients and
the AWS CLI v1 against protected and public endpoints; every refusal as botocore's ClientError, not retried; bearer
tokens as before; no secret at rest or in the log."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import Server
from custom_models import write_echo_model

PROTECTED = "sig-protected"
PUBLIC = "sig-public"
BODY = json.dumps({"inputs": "signed"})
MISMATCH = "The request signature we calculated does not match the signature you provided."


def hubserve_cli(server: Server, *args: str) -> str:
    env = {**os.environ, "HUBSERVE_URL": server.url, "HUBSERVE_TOKEN": server.token}
    result = subprocess.run([sys.executable, "-m", "hubserve", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def create_key(server: Server, name: str, *options: str) -> dict[str, str]:
    """A key pair as a user gets it: the CLI's two `NAME=value` lines, read as `export $(...)` would."""
    lines = hubserve_cli(server, "token", "create", name, "--aws", *options).splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    return dict(line.split("=", 1) for line in lines)


def runtime_client(server: Server, key: dict[str, str], **config: Any) -> Any:
    """boto3's SageMaker runtime with `key`, retrying as by default (so a refusal that were retried would show)."""
    return boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="eu-west-1",
                        aws_access_key_id=key["AWS_ACCESS_KEY_ID"], aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 4, "mode": "standard"}, **config))


@pytest.fixture(scope="module")
def endpoints(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    client = server.client()
    model = str(write_echo_model(tmp_path_factory.mktemp("echo")))
    client.create_endpoint({"name": PROTECTED, "model": model, "security": "protected"})
    client.create_endpoint({"name": PUBLIC, "model": model})
    client.wait(PROTECTED, timeout=300)
    client.wait(PUBLIC, timeout=300)
    yield
    client.delete_endpoint(PROTECTED)
    client.delete_endpoint(PUBLIC)


@pytest.fixture(scope="module")
def key(server: Server, endpoints: None) -> dict[str, str]:
    return create_key(server, "sig-scoped", "--endpoint", PROTECTED)


def invoke(client: Any, name: str = PROTECTED, body: str = BODY, **fields: Any) -> dict[str, Any]:
    response = client.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json", **fields)
    answer: dict[str, Any] = json.loads(response["Body"].read())
    return answer


def refusal(client: Any, name: str = PROTECTED) -> ClientError:
    """The ClientError an invoke ends in, checked to be botocore's first and only try."""
    with pytest.raises(ClientError) as caught:
        invoke(client, name)
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    return caught.value


def error_of(caught: ClientError) -> tuple[str, int, str]:
    return (caught.response["Error"]["Code"], caught.response["ResponseMetadata"]["HTTPStatusCode"],
            caught.response["Error"]["Message"])


def test_a_key_from_the_cli_invokes_a_protected_endpoint(server: Server, key: dict[str, str]) -> None:
    assert key["AWS_ACCESS_KEY_ID"].startswith("HSAK") and len(key["AWS_ACCESS_KEY_ID"]) == 20
    client = runtime_client(server, key)
    # A signed header with runs of whitespace (and its ends trimmed on the way) verifies as botocore signed it.
    answer = invoke(client, CustomAttributes="  trace=1;   tenant=a  ", Accept="application/json")
    assert answer["echo"] == "signed" and answer["custom_attributes"].strip() == "trace=1;   tenant=a"
    stream = client.invoke_endpoint_with_response_stream(EndpointName=PROTECTED, Body=BODY,
                                                         ContentType="application/json")
    parts = b"".join(event["PayloadPart"]["Bytes"] for event in stream["Body"] if "PayloadPart" in event)
    assert json.loads(parts)["echo"] == "signed"
    listed = json.loads(hubserve_cli(server, "token", "list"))
    assert {"id": key["AWS_ACCESS_KEY_ID"], "kind": "aws", "endpoints": [PROTECTED], "admin": False}.items() <= \
        next(t for t in listed if t["id"] == key["AWS_ACCESS_KEY_ID"]).items()


def test_wrong_secret(server: Server, key: dict[str, str]) -> None:
    wrong = {**key, "AWS_SECRET_ACCESS_KEY": key["AWS_SECRET_ACCESS_KEY"][::-1]}
    code, status, message = error_of(refusal(runtime_client(server, wrong)))
    assert (code, status) == ("InvalidSignatureException", 400) and message.startswith(MISMATCH)


def test_unknown_and_revoked_keys(server: Server, endpoints: None) -> None:
    unknown = {"AWS_ACCESS_KEY_ID": "HSAK" + secrets.token_hex(8).upper(), "AWS_SECRET_ACCESS_KEY": "x" * 40}
    assert error_of(refusal(runtime_client(server, unknown))) == (
        "UnrecognizedClientException", 400, "The security token included in the request is invalid.")
    revoked = create_key(server, "sig-revoked")
    client = runtime_client(server, revoked)
    assert invoke(client)["echo"] == "signed"
    hubserve_cli(server, "token", "revoke", revoked["AWS_ACCESS_KEY_ID"])
    assert error_of(refusal(client))[0] == "UnrecognizedClientException"


def test_a_body_changed_after_signing(server: Server, key: dict[str, str]) -> None:
    client = runtime_client(server, key)

    def swap_body(request: AWSPreparedRequest, **_kwargs: Any) -> None:
        assert request.body == BODY.encode()
        request.body = BODY.replace("signed", "forged").encode()  # the same length: only the signature can tell

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", swap_body)
    code, status, message = error_of(refusal(client))
    assert (code, status) == ("InvalidSignatureException", 400) and message.startswith(MISMATCH)


@pytest.mark.parametrize(("minutes", "message"), [(-16, "Signature expired: "), (16, "Signature not yet current: ")])
def test_a_request_signed_over_15_minutes_off(server: Server, key: dict[str, str], minutes: int, message: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    client = runtime_client(server, key)
    assert invoke(client)["echo"] == "signed"
    skewed = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: skewed)
    code, status, text = error_of(refusal(client))
    assert (code, status) == ("InvalidSignatureException", 400) and text.startswith(message)
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=minutes * 13 // 16))
    assert invoke(client)["echo"] == "signed"  # 13 minutes off is within the bound


def test_a_key_out_of_its_scope(server: Server, endpoints: None) -> None:
    other = create_key(server, "sig-elsewhere", "--endpoint", "somewhere-else")
    code, status, message = error_of(refusal(runtime_client(server, other)))
    assert (code, status) == ("AccessDeniedException", 403) and PROTECTED in message
    admin = create_key(server, "sig-admin", "--admin")
    assert invoke(runtime_client(server, admin))["echo"] == "signed"


def test_the_control_plane_takes_admin_keys_only(server: Server, key: dict[str, str]) -> None:
    def control(keys: dict[str, str]) -> Any:
        return boto3.client("sagemaker", endpoint_url=server.url, region_name="eu-west-1",
                            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])

    admin = create_key(server, "sig-control", "--admin")
    assert PROTECTED in [e["EndpointName"] for e in control(admin).list_endpoints()["Endpoints"]]
    for keys, code, status in ((key, "AccessDeniedException", 403),
                               ({**admin, "AWS_SECRET_ACCESS_KEY": "x" * 40}, "InvalidSignatureException", 400)):
        with pytest.raises(ClientError) as caught:
            control(keys).list_endpoints()
        assert error_of(caught.value)[:2] == (code, status)
        assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0


def test_another_service_scope(server: Server, key: dict[str, str]) -> None:
    request = AWSRequest("POST", f"{server.url}/endpoints/{PROTECTED}/invocations", data=BODY.encode(),
                         headers={"Content-Type": "application/json"})
    credentials = Credentials(key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(credentials, "execute-api", "eu-west-1").add_auth(request)
    response = httpx.post(request.url, content=BODY, headers=dict(request.headers.items()))
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert response.json() == {"message": "Credential should be scoped to correct service: 'sagemaker'. "}


def test_no_credentials_on_a_protected_endpoint(server: Server, endpoints: None) -> None:
    from botocore import UNSIGNED

    client = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="eu-west-1",
                          config=Config(signature_version=UNSIGNED))
    assert error_of(refusal(client))[0] == "MissingAuthenticationTokenException"


def test_bearer_tokens_still_work(server: Server, key: dict[str, str]) -> None:
    url = f"{server.url}/endpoints/{PROTECTED}/invocations"
    token = json.loads(hubserve_cli(server, "token", "create", "sig-bearer", "--endpoint", PROTECTED))["token"]
    response = httpx.post(url, content=BODY, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["echo"] == "signed"
    # The key's secret is no bearer token.
    response = httpx.post(url, content=BODY, headers={"authorization": f"Bearer {key['AWS_SECRET_ACCESS_KEY']}"})
    assert response.status_code == 403
    # Other front doors keep their own error shapes.
    response = httpx.post(f"{server.url}/endpoints/{PROTECTED}", json={"inputs": "x"})
    assert response.status_code == 401 and "error" in response.json()


def test_an_admin_bearer_token(server: Server, endpoints: None) -> None:
    token = json.loads(hubserve_cli(server, "token", "create", "sig-ops", "--admin"))
    assert (token["kind"], token["admin"]) == ("bearer", True)
    headers = {"authorization": f"Bearer {token['token']}"}
    assert httpx.get(f"{server.url}/api/v1/endpoints", headers=headers).status_code == 200
    response = httpx.post(f"{server.url}/endpoints/{PROTECTED}/invocations", content=BODY, headers=headers)
    assert response.status_code == 200
    hubserve_cli(server, "token", "revoke", token["id"])
    assert httpx.get(f"{server.url}/api/v1/endpoints", headers=headers).status_code == 403


def test_public_endpoints_take_any_keys(server: Server, endpoints: None) -> None:
    anyone = {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-checked"}
    assert invoke(runtime_client(server, anyone), PUBLIC)["echo"] == "signed"
    response = httpx.post(f"{server.url}/endpoints/{PUBLIC}/invocations", content=BODY,
                          headers={"authorization": "AWS4-HMAC-SHA256 malformed"})
    assert response.status_code == 200


def aws_cli(server: Server, key: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **key, "AWS_DEFAULT_REGION": "us-west-2", "AWS_CONFIG_FILE": str(out.with_suffix(".cfg")),
           "AWS_SHARED_CREDENTIALS_FILE": str(out.with_suffix(".creds"))}
    return subprocess.run(
        [str(Path(sys.executable).with_name("aws")), "sagemaker-runtime", "invoke-endpoint", "--endpoint-url",
         server.url, "--endpoint-name", PROTECTED, "--content-type", "application/json", "--body", BODY, str(out)],
        env=env, capture_output=True, text=True, timeout=120)


def test_aws_cli_v1_with_a_key(server: Server, key: dict[str, str], tmp_path: Path) -> None:
    result = aws_cli(server, key, tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out.json").read_text())["echo"] == "signed"
    wrong = {**key, "AWS_SECRET_ACCESS_KEY": "x" * 40}
    result = aws_cli(server, wrong, tmp_path / "wrong.json")
    assert result.returncode == 255 and "(InvalidSignatureException)" in result.stderr


def test_no_secret_at_rest_nor_in_the_log(server: Server, key: dict[str, str]) -> None:
    assert invoke(runtime_client(server, key))["echo"] == "signed"
    secret = key["AWS_SECRET_ACCESS_KEY"].encode()
    stored = [path for path in server.home.rglob("*") if path.is_file()]
    assert any(path.name == "hubserve.db" for path in stored)
    assert [path.name for path in stored if secret in path.read_bytes()] == []
    assert secret not in server.log.read_bytes()
