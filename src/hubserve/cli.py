"""The `hubserve` command: serve, deploy, list, describe, update, delete, invoke, logs, token."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hubserve.client import Client, HubserveAPIError


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "model": args.model, "task": args.task, "revision": args.revision, "device": args.device,
        "dtype": args.dtype, "replicas": args.replicas, "security": args.security,
        "timeout_s": args.timeout, "max_payload_bytes": args.max_payload_bytes,
        "env": _env_pairs(args.env) if args.env else None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _read_body(value: str) -> bytes:
    """`fileb://path` or `file://path` reads a file (as the AWS CLI does); anything else is the body."""
    for prefix in ("fileb://", "file://"):
        if value.startswith(prefix):
            return Path(value[len(prefix):]).expanduser().read_bytes()
    return value.encode()


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


def cmd_serve(args: argparse.Namespace) -> None:
    import asyncio

    import uvicorn
    import uvloop
    from uvicorn.config import LOGGING_CONFIG

    from hubserve.api.app import create_app
    from hubserve.api.http_protocol import with_head_timeout
    from hubserve.settings import ServerSettings

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "home": args.home}.items() if v}
    settings = ServerSettings(**overrides)
    app = create_app(settings)
    # hubserve's own lines (a client gone mid-body, a connection cut off) go where uvicorn's go.
    log_config = {**LOGGING_CONFIG, "loggers": {**LOGGING_CONFIG["loggers"], "hubserve": {
        "handlers": ["default"], "level": "INFO", "propagate": False}}}
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                            log_config=log_config, http=with_head_timeout(settings.header_timeout_s))
    server = uvicorn.Server(config)

    async def run() -> None:
        serving = asyncio.ensure_future(server.serve())
        if args.demo:
            from hubserve.demo import start_demo

            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            if server.started:
                asyncio.ensure_future(start_demo(app.state.manager, f"http://{settings.host}:{settings.port}"))
        await serving

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # about half the loop's cost per request
        runner.run(run())


def cmd_deploy(args: argparse.Namespace, client: Client) -> None:
    endpoint = client.create_endpoint({"name": args.name, **_spec_fields(args)})
    if args.wait:
        endpoint = client.wait(args.name, timeout=args.wait_timeout)
    _print(endpoint)


def cmd_update(args: argparse.Namespace, client: Client) -> None:
    endpoint = client.update_endpoint(args.name, _spec_fields(args))
    if args.wait:
        endpoint = client.wait(args.name, timeout=args.wait_timeout)
    _print(endpoint)


def cmd_list(_args: argparse.Namespace, client: Client) -> None:
    for endpoint in client.list_endpoints():
        status = endpoint["status"]
        print(f"{endpoint['spec']['name']:<32} {status['state']:<13} "
              f"{status['ready_replicas']}/{status['target_replicas']}  {endpoint['spec']['model']}")


def cmd_describe(args: argparse.Namespace, client: Client) -> None:
    _print(client.get_endpoint(args.name))


def cmd_delete(args: argparse.Namespace, client: Client) -> None:
    client.delete_endpoint(args.name)
    print(f"deleted {args.name}")


def cmd_invoke(args: argparse.Namespace, client: Client) -> None:
    body, content_type = client.invoke(args.name, _read_body(args.body), args.content_type, args.accept)
    if args.outfile == "-":
        sys.stdout.buffer.write(body)
    else:
        Path(args.outfile).write_bytes(body)
        _print({"ContentType": content_type, "InvokedProductionVariant": "AllTraffic"})


def cmd_logs(args: argparse.Namespace, client: Client) -> None:
    if args.follow:
        try:
            for chunk in client.follow_logs(args.name, tail=args.tail):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        except KeyboardInterrupt:
            return
    else:
        sys.stdout.write(client.logs(args.name, tail=args.tail))


def cmd_token(args: argparse.Namespace, client: Client) -> None:
    if args.token_command == "create":
        created = client.create_token(args.token_name, args.endpoint or None, aws=args.aws, admin=args.admin)
        if args.aws:  # ready for `export $(hubserve token create NAME --aws)` or a .env file
            print(f"AWS_ACCESS_KEY_ID={created['access_key_id']}")
            print(f"AWS_SECRET_ACCESS_KEY={created['secret_access_key']}")
        else:
            _print(created)
    elif args.token_command == "list":
        _print(client.list_tokens())
    else:
        client.revoke_token(args.token_id)
        print(f"revoked {args.token_id}")


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Hub id, local folder, .gguf, archive (model.tar.gz) or URL "
                                        "(file://, s3://, http(s)://, hf://)")
    parser.add_argument("--task")
    parser.add_argument("--revision")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="SageMaker-style env, e.g. HF_MODEL_ID=org/name HF_TASK=text-classification")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--replicas", type=int)
    parser.add_argument("--security", choices=["public", "protected"])
    parser.add_argument("--timeout", type=float, help="invocation timeout in seconds")
    parser.add_argument("--max-payload-bytes", type=int)
    parser.add_argument("--wait", action="store_true", help="wait until the endpoint is running")
    parser.add_argument("--wait-timeout", type=float, default=600.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubserve", description=__doc__)
    parser.add_argument("--url", help="server URL (env HUBSERVE_URL, default http://127.0.0.1:8080)")
    parser.add_argument("--token", help="API token (env HUBSERVE_TOKEN, else the local admin token file)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--home", help="state folder (env HUBSERVE_HOME, default ~/.hubserve)")
    serve.add_argument("--demo", action="store_true", help="also serve the bundled MiniLM as endpoint 'minilm'")

    deploy = commands.add_parser("deploy", help="create an endpoint")
    deploy.add_argument("name")
    _add_spec_options(deploy)
    update = commands.add_parser("update", help="change an endpoint (replicas keep serving meanwhile)")
    update.add_argument("name")
    _add_spec_options(update)
    commands.add_parser("list", help="list endpoints")
    for verb in ("describe", "delete"):
        commands.add_parser(verb, help=f"{verb} an endpoint").add_argument("name")

    invoke = commands.add_parser("invoke", help="call an endpoint, like aws sagemaker-runtime invoke-endpoint")
    invoke.add_argument("name")
    invoke.add_argument("--body", required=True, help="fileb://path, file://path or the body itself")
    invoke.add_argument("--content-type", default="application/json")
    invoke.add_argument("--accept", default="application/json")
    invoke.add_argument("outfile", help="where to write the answer ('-' for stdout)")

    logs = commands.add_parser("logs", help="show an endpoint's worker logs")
    logs.add_argument("name")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--tail", type=int, default=200)

    token = commands.add_parser("token", help="manage access tokens and AWS keys")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="a bearer token, or an AWS key pair (shown once)")
    create.add_argument("token_name")
    create.add_argument("--endpoint", action="append", help="limit the token to this endpoint (repeatable)")
    create.add_argument("--aws", action="store_true",
                        help="an AWS access key for SigV4 clients (boto3, the AWS CLI, the sagemaker SDK), printed "
                             "as AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines")
    create.add_argument("--admin", action="store_true", help="control-plane rights (and so every endpoint)")
    token_commands.add_parser("list")
    token_commands.add_parser("revoke", help="revoke a token or an AWS key (by id)").add_argument("token_id")
    return parser


COMMANDS = {"deploy": cmd_deploy, "update": cmd_update, "list": cmd_list, "describe": cmd_describe,
            "delete": cmd_delete, "invoke": cmd_invoke, "logs": cmd_logs, "token": cmd_token}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        cmd_serve(args)
        return
    try:
        with Client(url=args.url, token=args.token) as client:
            COMMANDS[args.command](args, client)
    except HubserveAPIError as exc:
        print(f"hubserve: error {exc.status}: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from exc
