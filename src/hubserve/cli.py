"""The `hubserve` command: serve, deploy, list, describe, update, delete, invoke, logs, token, and batch transform
jobs (transform, jobs)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from hubserve.client import Client, HubserveAPIError, job_spec, unique_job_name

# Seconds between a job's progress lines when the output is not a terminal (a log file, CI).
PLAIN_EVERY_S = 10.0
# Seconds between polls of a job's progress.
PROGRESS_POLL_S = 0.5
BAR_WIDTH, MIN_BAR_WIDTH = 30, 10


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The model source's options, shared by an endpoint and a job."""
    return {"model": args.model, "task": args.task, "revision": args.revision, "device": args.device,
            "dtype": args.dtype, "timeout_s": args.timeout, "env": _env_pairs(args.env) if args.env else None}


def _spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {**_model_fields(args), "replicas": args.replicas, "security": args.security,
              "max_payload_bytes": args.max_payload_bytes}
    return {k: v for k, v in fields.items() if v is not None}


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """A job's body from `hubserve transform`'s options (those not given keep the server's defaults)."""
    return job_spec({
        **_model_fields(args), "endpoint": args.endpoint, "instance_count": args.instance_count,
        "input": args.input, "output": args.output, "content_type": args.content_type, "split_type": args.split_type,
        "batch_strategy": args.strategy, "max_payload_mb": args.max_payload_mb,
        "max_concurrent_transforms": args.max_concurrent_transforms, "accept": args.accept,
        "assemble_with": args.assemble_with, "input_filter": args.input_filter, "output_filter": args.output_filter,
        "join_source": args.join_source, "on_error": args.on_error})


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


def _write_as_they_come(chunks: Iterator[str]) -> None:
    """Until the chunks end or Ctrl-C."""
    try:
        for chunk in chunks:
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


def cmd_logs(args: argparse.Namespace, client: Client) -> None:
    if args.follow:
        _write_as_they_come(client.follow_logs(args.name, tail=args.tail))
    else:
        sys.stdout.write(client.logs(args.name, tail=args.tail))


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_text(job: dict[str, Any]) -> str:
    """Where a job stands, in one line: its state, records done of the total (unknown until its inputs are
    counted), records that failed, records/s and the time left."""
    progress, state = job["progress"], job["state"]
    done, total = progress["records_done"], progress["records_total"]
    parts = [job["spec"]["name"], state, f"{done:,}/{total:,} records" if total is not None else f"{done:,} records"]
    if total:
        parts.append(f"{done / total:.0%}")
    if progress["records_failed"]:
        parts.append(f"{progress['records_failed']:,} failed")
    if progress["records_per_s"] is not None:
        parts.append(f"{progress['records_per_s']:,.1f} records/s")
    if progress["eta_s"] is not None and state == "InProgress":
        parts.append(f"ETA {_duration(progress['eta_s'])}")
    return "  ".join(parts)


def progress_bar(job: dict[str, Any], columns: int) -> str:
    """`progress_text` behind a bar of the records done, in a terminal of `columns` characters: the bar shrinks to
    leave the text room, and goes when it would be too short to read."""
    text = progress_text(job)
    width = min(BAR_WIDTH, columns - len(text) - 4)
    if width < MIN_BAR_WIDTH:
        return text[:max(columns - 1, 0)]
    done, total = job["progress"]["records_done"], job["progress"]["records_total"]
    fraction = min(done / total, 1.0) if total else float(job["state"] == "Completed")
    filled = int(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {text}"


class ProgressDisplay:
    """Shows each poll of a job on `stream`: on a terminal, a bar redrawn in place; elsewhere (a log file, CI),
    a plain line when the state changes and at most every `PLAIN_EVERY_S` seconds meanwhile."""

    def __init__(self, stream: TextIO, tty: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.tty = tty
        self.clock = clock
        self.drawn = False
        self.last_state: str | None = None
        self.last_line_at = 0.0

    def __call__(self, job: dict[str, Any]) -> None:
        if self.tty:
            self.stream.write("\r" + progress_bar(job, shutil.get_terminal_size().columns) + "\x1b[K")
            self.drawn = True
        elif job["state"] != self.last_state or self.clock() - self.last_line_at >= PLAIN_EVERY_S:
            self.stream.write(progress_text(job) + "\n")
            self.last_state, self.last_line_at = job["state"], self.clock()
        self.stream.flush()

    def end(self) -> None:
        """Ends the bar's line, so that what follows starts on a line of its own."""
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


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
            _print(job)
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
        _print(client.get_job(args.name))
    elif args.jobs_command == "stop":
        print(f"{args.name}: {client.stop_job(args.name)['state']}")
    elif args.follow:
        _write_as_they_come(client.follow_job_logs(args.name, tail=args.tail))
    else:
        sys.stdout.write(client.job_logs(args.name, tail=args.tail))


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


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Hub id, local folder, .gguf, archive (model.tar.gz) or URL "
                                        "(file://, s3://, http(s)://, hf://)")
    parser.add_argument("--task")
    parser.add_argument("--revision")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="SageMaker-style env, e.g. HF_MODEL_ID=org/name HF_TASK=text-classification")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--timeout", type=float, help="invocation timeout in seconds")


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.add_argument("--replicas", type=int)
    parser.add_argument("--security", choices=["public", "protected"])
    parser.add_argument("--max-payload-bytes", type=int)
    parser.add_argument("--wait", action="store_true", help="wait until the endpoint is running")
    parser.add_argument("--wait-timeout", type=float, default=600.0)


def _add_job_commands(commands: Any) -> None:
    transform = commands.add_parser(
        "transform", help="run a batch transform job (a file, a folder or a prefix of records in, answers out) "
                          "with a live progress bar; Ctrl-C detaches, the job goes on")
    transform.add_argument("name", nargs="?", help="the job's name (default: transform-<time>)")
    transform.add_argument("--attach", metavar="NAME", help="show a job's progress again, until it ends")
    transform.add_argument("--detach", action="store_true", help="print the job and return at once")
    _add_model_options(transform)
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

    _add_job_commands(commands)

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
            "delete": cmd_delete, "invoke": cmd_invoke, "logs": cmd_logs, "transform": cmd_transform,
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
