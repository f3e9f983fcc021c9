"""The `hubserve` command: serve, deploy, list, describe, update, pause, resume, delete, invoke, logs, analytics,
metrics, models, token, and batch transform jobs (transform, jobs)."""

from __future__ import annotations

import argparse
import sys

from hubserve.cli.endpoints import (
    add_endpoint_commands,
    cmd_delete,
    cmd_deploy,
    cmd_describe,
    cmd_list,
    cmd_pause,
    cmd_resume,
    cmd_update,
)
from hubserve.cli.invoke import add_invoke_commands, cmd_invoke, cmd_logs
from hubserve.cli.jobs import add_job_commands, cmd_jobs, cmd_transform
from hubserve.cli.operations import add_operations_commands, cmd_analytics, cmd_metrics, cmd_models
from hubserve.cli.serve import add_serve_command, cmd_serve
from hubserve.cli.tokens import add_token_commands, cmd_token
from hubserve.client import Client, HubserveAPIError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubserve", description=__doc__)
    parser.add_argument("--url", help="server URL (env HUBSERVE_URL, default http://127.0.0.1:8080)")
    parser.add_argument("--token", help="API token (env HUBSERVE_TOKEN, else the local admin token file)")
    commands = parser.add_subparsers(dest="command", required=True)
    # In the order `hubserve --help` lists them.
    add_serve_command(commands)
    add_endpoint_commands(commands)
    add_operations_commands(commands)
    add_invoke_commands(commands)
    add_job_commands(commands)
    add_token_commands(commands)
    return parser


COMMANDS = {"deploy": cmd_deploy, "update": cmd_update, "list": cmd_list, "describe": cmd_describe,
            "pause": cmd_pause, "resume": cmd_resume, "delete": cmd_delete, "invoke": cmd_invoke, "logs": cmd_logs,
            "models": cmd_models, "analytics": cmd_analytics, "metrics": cmd_metrics, "transform": cmd_transform,
            "jobs": cmd_jobs, "token": cmd_token}


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
