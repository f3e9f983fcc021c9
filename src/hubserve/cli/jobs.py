"""`hubserve transform` and `hubserve jobs`: start a batch transform job and follow it, or list, describe, stop
and read the logs of the jobs there are."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hubserve.cli.model_options import add_model_options, model_fields
from hubserve.cli.output import print_json, write_as_they_come
from hubserve.cli.progress import ProgressDisplay
from hubserve.client import Client, job_spec, unique_job_name

# Seconds between polls of a job's progress.
PROGRESS_POLL_S = 0.5


def add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    transform = commands.add_parser(
        "transform", help="run a batch transform job (a file, a folder or a prefix of records in, answers out) "
                          "with a live progress bar; Ctrl-C detaches, the job goes on")
    transform.add_argument("name", nargs="?", help="the job's name (default: transform-<time>)")
    transform.add_argument("--attach", metavar="NAME", help="show a job's progress again, until it ends")
    transform.add_argument("--detach", action="store_true", help="print the job and return at once")
    add_model_options(transform)
    transform.add_argument("--endpoint", help="run on this running endpoint instead of a --model of its own")
    transform.add_argument("--instance-count", type=int, help="replicas the job starts for its --model (default 1)")
    transform.add_argument("--input", help="a file, a folder or a prefix: a path or a file://, s3://, http(s):// URL")
    transform.add_argument("--output", help="the folder each input file's answers go to, as FILE.out")
    transform.add_argument("--content-type", help="of the records (default application/json)")
    transform.add_argument("--split-type", choices=["Line", "None"],
                           help="Line: a record per line (default); None: a record per file")
    transform.add_argument("--strategy", choices=["MultiRecord", "SingleRecord"],
                           help="records per request to the model: as many as fit in --max-payload-mb "
                                "(MultiRecord, default) or one")
    transform.add_argument("--max-payload-mb", type=int, help="of one request to the model (default 6; 0: no limit)")
    transform.add_argument("--max-concurrent-transforms", type=int,
                           help="requests in flight per replica (default: enough to keep its batches full)")
    transform.add_argument("--accept", help="content type of the answers (default application/json)")
    transform.add_argument("--assemble-with", choices=["Line", "None"],
                           help="Line: an answer per line (default); None: answers concatenated")
    transform.add_argument("--input-filter", help="JSONPath of the part of each record the model gets, e.g. $.text")
    transform.add_argument("--output-filter", help="JSONPath of the part of each (joined) answer written")
    transform.add_argument("--join-source", choices=["None", "Input"],
                           help="Input: write each record joined with its answer")
    transform.add_argument("--on-error", choices=["fail", "skip"],
                           help="a bad record fails the job (default) or goes to FILE.errors with its line number")

    jobs = commands.add_parser("jobs", help="list, describe, stop batch transform jobs and show their logs")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    job_commands.add_parser("list", help="every job: state, records done of the total, model")
    job_commands.add_parser("describe", help="a job's spec, state, progress and failure reason").add_argument("name")
    job_commands.add_parser("stop", help="stop a running job; what it wrote stays").add_argument("name")
    logs = job_commands.add_parser("logs", help="a job's log: files, skipped records, how it ended")
    logs.add_argument("name")
    logs.add_argument("--follow", "-f", action="store_true", help="then new lines until the job ends")
    logs.add_argument("--tail", type=int, default=200)


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """A job's body from `hubserve transform`'s options (those not given keep the server's defaults)."""
    return job_spec({
        **model_fields(args), "endpoint": args.endpoint, "instance_count": args.instance_count,
        "input": args.input, "output": args.output, "content_type": args.content_type, "split_type": args.split_type,
        "batch_strategy": args.strategy, "max_payload_mb": args.max_payload_mb,
        "max_concurrent_transforms": args.max_concurrent_transforms, "accept": args.accept,
        "assemble_with": args.assemble_with, "input_filter": args.input_filter, "output_filter": args.output_filter,
        "join_source": args.join_source, "on_error": args.on_error})


def cmd_transform(args: argparse.Namespace, client: Client) -> None:
    if args.attach:
        if args.name or args.input or args.output:
            raise SystemExit("hubserve transform --attach NAME takes no job options: the job has them")
        name = args.attach
    else:
        if not (args.input and args.output):
            raise SystemExit("hubserve transform needs --input and --output (or --attach NAME)")
        name = args.name or unique_job_name()
        job = client.create_job({"name": name, **_job_fields(args)})
        if args.detach:
            print_json(job)
            return
    display = ProgressDisplay(sys.stdout, sys.stdout.isatty())
    try:
        job = client.wait_job(name, poll=PROGRESS_POLL_S, on_progress=display)
    except KeyboardInterrupt:
        display.end()
        print(f"detached: job {name} goes on. Reattach with `hubserve transform --attach {name}`, "
              f"stop it with `hubserve jobs stop {name}`", file=sys.stderr)
        raise SystemExit(130) from None
    display.end()
    if job["state"] != "Completed":
        reason = job["failure_reason"] or "stopped before the end"
        print(f"hubserve: job {name} {job['state']}: {reason}", file=sys.stderr)
        raise SystemExit(1)
    print(f"answers in {job['spec']['output']}")


def cmd_jobs(args: argparse.Namespace, client: Client) -> None:
    if args.jobs_command == "list":
        for job in client.list_jobs():
            progress, spec = job["progress"], job["spec"]
            total = "?" if progress["records_total"] is None else f"{progress['records_total']:,}"
            print(f"{spec['name']:<32} {job['state']:<10} {progress['records_done']:>11,}/{total:<11} "
                  f"{spec['model'] or 'endpoint ' + spec['endpoint']}")
    elif args.jobs_command == "describe":
        print_json(client.get_job(args.name))
    elif args.jobs_command == "stop":
        print(f"{args.name}: {client.stop_job(args.name)['state']}")
    elif args.follow:
        write_as_they_come(client.follow_job_logs(args.name, tail=args.tail))
    else:
        sys.stdout.write(client.job_logs(args.name, tail=args.tail))
