"""`hubserve serve`: its options over the `HUBSERVE_*` settings, and the server run on them."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubserve.settings import ServerSettings

SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?))?(b?)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from `8G`, `512M`, `1.5GiB`, `2GB` or `1073741824`: K, M, G, T (with or without `iB`) are powers of
    1024, as Docker and `free` count; KB, MB, GB, TB are powers of 1000."""
    match = SIZE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give bytes or a number with K, M, G or T "
                                         f"(8G, 512M, 1.5GiB)")
    number, unit, binary, byte_suffix = match[1], match[2], match[3], match[4]
    base = 1000 if byte_suffix and not binary else 1024
    size = int(float(number) * base ** ("kmgt".index(unit.lower()) + 1)) if unit else int(float(number))
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size of at least one byte")
    return size


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--home", help="state folder (env HUBSERVE_HOME, default ~/.hubserve)")
    serve.add_argument("--demo", action="store_true", help="also serve the bundled MiniLM as endpoint 'minilm'")
    serve.add_argument("--max-memory", type=parse_size, metavar="SIZE",
                       help="memory all replicas together may use (8G, 512M, 1.5GiB or bytes; default a share of "
                            "the machine's): a scale-up past it is refused")
    serve.add_argument("--public-metrics", action="store_true", help="serve GET /metrics without the admin token")
    serve.add_argument("--ray", metavar="ADDRESS", dest="ray_address",
                       help="place replicas on this Ray cluster ('auto': the one this machine is part of; env "
                            "HUBSERVE_RAY_ADDRESS)")
    serve.add_argument("--data-plane", action="store_true",
                       help="with --ray: serve the invocations of the endpoints of the server that owns them on that "
                            "cluster, managing none (env HUBSERVE_DATA_PLANE)")


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """`hubserve serve`'s options over the `HUBSERVE_*` environment (an option not given leaves it be)."""
    from pydantic import ValidationError

    from hubserve.settings import ServerSettings

    options = {"host": args.host, "port": args.port, "home": args.home, "max_memory": args.max_memory,
               "public_metrics": args.public_metrics, "ray_address": args.ray_address,
               "data_plane": args.data_plane}
    try:
        return ServerSettings(**{k: v for k, v in options.items() if v})
    except ValidationError as exc:
        raise SystemExit("hubserve serve: " + "; ".join(e["msg"].removeprefix("Value error, ")
                                                        for e in exc.errors())) from None


def cmd_serve(args: argparse.Namespace) -> None:
    import asyncio

    import uvicorn
    import uvloop
    from uvicorn.config import LOGGING_CONFIG

    from hubserve.api.app import create_app
    from hubserve.api.http_protocol import with_head_timeout

    settings = server_settings(args)
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
