"""The model source's options (`--model`, `--task`, `--env`, ...), shared by an endpoint and a job."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Hub id, local folder, .gguf, archive (model.tar.gz) or URL "
                                        "(file://, s3://, http(s)://, hf://)")
    parser.add_argument("--task")
    parser.add_argument("--revision")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="SageMaker-style env, e.g. HF_MODEL_ID=org/name HF_TASK=text-classification")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--timeout", type=float, help="invocation timeout in seconds")


def model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The spec's fields from the model source's options."""
    return {"model": args.model, "task": args.task, "revision": args.revision, "device": args.device,
            "dtype": args.dtype, "timeout_s": args.timeout, "env": _env_pairs(args.env) if args.env else None}


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env
