"""An endpoint's life from the command line: deploy, update, list, describe, delete, pause, resume, and the spec
and autoscaling options they take."""

from __future__ import annotations

import argparse
from typing import Any

from hubserve.cli.model_options import add_model_options, model_fields
from hubserve.cli.output import print_json
from hubserve.client import Client
from hubserve.spec import AutoscalingSpec

# `hubserve deploy` and `update` options of an endpoint's autoscaling: (option, AutoscalingSpec field, type, help).
AUTOSCALING_OPTIONS = (
    ("--min-replicas", "min_replicas", int, "replicas it keeps when idle; 0 scales it to zero"),
    ("--max-replicas", "max_replicas", int, "replicas it may grow to under load"),
    ("--target", "target", float, "requests in flight per replica above which it scales up"),
    ("--scale-up-after", "scale_up_after_s", float, "seconds over the target before a replica is added"),
    ("--scale-down-after", "scale_down_after_s", float, "seconds a replica idles before it is removed"),
    ("--scale-to-zero-after", "scale_to_zero_after_s", float,
     "seconds without a request before the last replica stops (with --min-replicas 0)"),
    ("--scale-up-hold", "scale_up_hold_s", float,
     "seconds a request at zero replicas waits for one to be ready (per request: header X-Scale-Up-Timeout)"),
)


def add_endpoint_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = commands.add_parser("deploy", help="create an endpoint")
    deploy.add_argument("name")
    _add_spec_options(deploy)
    update = commands.add_parser("update", help="change an endpoint (replicas keep serving meanwhile)")
    update.add_argument("name")
    _add_spec_options(update)
    commands.add_parser("list", help="list endpoints: state, ready/target replicas [autoscaling bounds], model")
    for verb in ("describe", "delete"):
        commands.add_parser(verb, help=f"{verb} an endpoint").add_argument("name")
    commands.add_parser("pause", help="stop an endpoint's replicas, keeping its spec (it answers 503 until "
                                      "resumed)").add_argument("name")
    resume = commands.add_parser("resume", help="deploy a paused endpoint again")
    resume.add_argument("name")
    _add_wait_options(resume)


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--replicas", type=int, help="a fixed count, or with autoscaling the count it starts with")
    parser.add_argument("--security", choices=["public", "protected"])
    parser.add_argument("--max-payload-bytes", type=int)
    scaling = parser.add_argument_group("autoscaling", "replicas sized to the traffic (on update, the options not "
                                                       "given keep their values)")
    for option, field, kind, help_text in AUTOSCALING_OPTIONS:
        default = AutoscalingSpec.model_fields[field].default
        metavar = "N" if kind is int else "REQUESTS" if field == "target" else "SECONDS"
        scaling.add_argument(option, dest=field, type=kind, metavar=metavar, help=f"{help_text} (default {default:g})")
    _add_wait_options(parser)


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait until the endpoint serves")
    parser.add_argument("--wait-timeout", type=float, default=600.0)


def _autoscaling(args: argparse.Namespace) -> dict[str, Any] | None:
    """The autoscaling options given (those left out keep the spec's values), or None when none is."""
    given = {field: getattr(args, field) for _, field, _, _ in AUTOSCALING_OPTIONS if getattr(args, field) is not None}
    return given or None


def _spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {**model_fields(args), "replicas": args.replicas, "security": args.security,
              "max_payload_bytes": args.max_payload_bytes, "autoscaling": _autoscaling(args)}
    return {k: v for k, v in fields.items() if v is not None}


def cmd_deploy(args: argparse.Namespace, client: Client) -> None:
    endpoint = client.create_endpoint({"name": args.name, **_spec_fields(args)})
    if args.wait:
        endpoint = client.wait(args.name, timeout=args.wait_timeout)
    print_json(endpoint)


def cmd_update(args: argparse.Namespace, client: Client) -> None:
    change = _spec_fields(args)
    if "autoscaling" in change:  # an update replaces the autoscaling whole: the options not given keep their values
        current = client.get_endpoint(args.name)["spec"].get("autoscaling") or {}
        change["autoscaling"] = {**current, **change["autoscaling"]}
    endpoint = client.update_endpoint(args.name, change)
    if args.wait:
        endpoint = client.wait(args.name, timeout=args.wait_timeout)
    print_json(endpoint)


def _replicas(endpoint: dict[str, Any]) -> str:
    """Ready of target replicas, and the autoscaling's bounds if it has them: `1/2 [0-4]`."""
    status, scaling = endpoint["status"], endpoint["spec"].get("autoscaling")
    replicas = f"{status['ready_replicas']}/{status['target_replicas']}"
    return f"{replicas} [{scaling['min_replicas']}-{scaling['max_replicas']}]" if scaling else replicas


def cmd_list(_args: argparse.Namespace, client: Client) -> None:
    for endpoint in client.list_endpoints():
        print(f"{endpoint['spec']['name']:<32} {endpoint['status']['state']:<13} {_replicas(endpoint):<10} "
              f"{endpoint['spec']['model']}")


def cmd_describe(args: argparse.Namespace, client: Client) -> None:
    print_json(client.get_endpoint(args.name))


def cmd_delete(args: argparse.Namespace, client: Client) -> None:
    client.delete_endpoint(args.name)
    print(f"deleted {args.name}")


def cmd_pause(args: argparse.Namespace, client: Client) -> None:
    print(f"{args.name}: {client.pause_endpoint(args.name)['status']['state']}")


def cmd_resume(args: argparse.Namespace, client: Client) -> None:
    endpoint = client.resume_endpoint(args.name)
    if args.wait:
        endpoint = client.wait(args.name, timeout=args.wait_timeout)
    print(f"{args.name}: {endpoint['status']['state']}")
