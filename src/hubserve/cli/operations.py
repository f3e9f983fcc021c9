"""What a server has and how it is doing: `hubserve models`, `hubserve analytics` and `hubserve metrics`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hubserve.cli.output import print_json, table
from hubserve.client import Client


def add_operations_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="the models available on the server, with their tasks")
    models.add_argument("--json", action="store_true")
    analytics = commands.add_parser("analytics", help="an endpoint's requests, status classes and latency")
    analytics.add_argument("name")
    analytics.add_argument("--period", choices=["1h", "1d"], default="1h")
    analytics.add_argument("--json", action="store_true", help="also each minute's (1h) or quarter's (1d) figures")
    commands.add_parser("metrics", help="the server's Prometheus metrics")


def cmd_models(args: argparse.Namespace, client: Client) -> None:
    models = client.list_models()
    if args.json:
        print_json(models)
        return
    print(table(("ID", "FORMAT", "SOURCE", "TASKS"),
                [(model["id"], model["format"], model["source"], ", ".join(model["tasks"])) for model in models]))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def analytics_text(report: dict[str, Any]) -> str:
    """An endpoint's totals over the period: requests, requests/min, status classes and latency percentiles."""
    totals = report["totals"]
    statuses = {"2xx": 0, "4xx": 0, "5xx": 0, **totals["status"]}
    return "\n".join([
        f"{report['name']}, last {report['period']}",
        f"requests  {totals['requests']:,} ({totals['requests_per_min']:,.1f}/min)",
        "status    " + "  ".join(f"{kind} {count:,}" for kind, count in sorted(statuses.items())),
        "latency   " + "  ".join(f"{p} {_ms(totals[f'{p}_ms'])}" for p in ("p50", "p90", "p99"))])


def cmd_analytics(args: argparse.Namespace, client: Client) -> None:
    report = client.analytics(args.name, args.period)
    if args.json:
        print_json(report)
    else:
        print(analytics_text(report))


def cmd_metrics(_args: argparse.Namespace, client: Client) -> None:
    sys.stdout.write(client.metrics())
