"""`hubserve invoke` and `hubserve logs`: a running endpoint's answer to a body, and its workers' log lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hubserve.cli.output import print_json, write_as_they_come
from hubserve.client import Client


def add_invoke_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _read_body(value: str) -> bytes:
    """`fileb://path` or `file://path` reads a file (as the AWS CLI does); anything else is the body."""
    for prefix in ("fileb://", "file://"):
        if value.startswith(prefix):
            return Path(value[len(prefix):]).expanduser().read_bytes()
    return value.encode()


def cmd_invoke(args: argparse.Namespace, client: Client) -> None:
    body, content_type = client.invoke(args.name, _read_body(args.body), args.content_type, args.accept)
    if args.outfile == "-":
        sys.stdout.buffer.write(body)
    else:
        Path(args.outfile).write_bytes(body)
        print_json({"ContentType": content_type, "InvokedProductionVariant": "AllTraffic"})


def cmd_logs(args: argparse.Namespace, client: Client) -> None:
    if args.follow:
        write_as_they_come(client.follow_logs(args.name, tail=args.tail))
    else:
        sys.stdout.write(client.logs(args.name, tail=args.tail))
