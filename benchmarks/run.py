"""Run the benchmarks: `python -m benchmarks.run [--suite embeddings,generation,coldstart] [--quick] [--out FILE]`.

Starts hubserve (and, suite by suite, its peers) on loopback, measures every configuration, prints a table of
figures, ratios and targets, and writes the same as JSON (default `benchmarks/results/<timestamp>.json`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.contention import Snapshot
from benchmarks.context import FULL, QUICK, Context, Counts
from benchmarks.hubserve_api import HubserveAdmin
from benchmarks.models import CACHE, RESULTS, Models, real_models, tiny_models
from benchmarks.processes import BASE_ENV
from benchmarks.report import Row, format_table, machine_info, say, write_json
from benchmarks.suites import SUITES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=",".join(SUITES),
                        help=f"comma-separated suites to run, of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny random models, a few requests: checks the harness in seconds, figures meaningless")
    parser.add_argument("--generation-dtype", default="bfloat16", choices=("bfloat16", "float32"),
                        help="dtype of the generation model everywhere (default bfloat16, as the targets were set in; "
                             "CPUs without native bf16 run it several times slower than float32)")
    parser.add_argument("--out", type=Path,
                        help="where to write the JSON (default benchmarks/results/<timestamp>.json)")
    args = parser.parse_args(argv)
    args.suites = [name.strip() for name in args.suite.split(",") if name.strip()]
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown or not args.suites:
        parser.error(f"unknown suite(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SUITES)}")
    return args


def run_suites(names: list[str], models: Models, counts: Counts,
               work: Path) -> tuple[list[Row], dict[str, dict[str, Any]]]:
    """Start hubserve, run the suites against it, stop it; the rows of every suite, and how busy the machine's other
    processes kept it during each."""
    token = "hs_admin_bench-" + secrets.token_hex(8)
    home, logs = work / "hubserve-home", work / "logs"
    rows: list[Row] = []
    machine_load: dict[str, dict[str, Any]] = {}
    with peers.hubserve(home, token, logs) as server:
        admin = HubserveAdmin(server.url, token)
        try:
            assert server.process is not None
            context = Context(counts=counts, models=models, hubserve=admin, hubserve_pid=server.process.pid,
                              logs=logs)
            for name in names:
                say(f"suite {name}")
                start, load_before = Snapshot.take(), os.getloadavg()[0]
                rows += SUITES[name](context)
                others = Snapshot.take().others_since(start)
                machine_load[name] = {"other_processes_cpu_cores": round(others, 2),
                                      "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
                say(f"suite {name}: other processes kept {others:.2f} cores busy meanwhile")
        finally:
            admin.close()
    return rows, machine_load


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the `with` blocks, so every server started is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The offline baselines run in this process, and see what the servers see (no tokenizer thread pool either: its
    # idle threads would compete with torch's for the cores).
    os.environ.update(BASE_ENV)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.strftime("%Y-%m-%dT%H-%M-%S")
    out = args.out or RESULTS / f"{started}.json"
    counts = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="hubserve-bench-"))
    machine = machine_info()
    say(f"work folder {work} (server logs in {work / 'logs'})")
    dtype = args.generation_dtype
    models = tiny_models(work / "models", work / "cache", dtype) if args.quick else real_models(CACHE, dtype)
    rows, machine_load = run_suites(args.suites, models, counts, work)
    print(format_table(rows, {suite: f"other processes: {load['other_processes_cpu_cores']:.2f} cores busy"
                              for suite, load in machine_load.items()}))
    arguments = sys.argv[1:] if argv is None else argv
    write_json(out, rows, command=" ".join(["python", "-m", "benchmarks.run", *arguments]),
               started=started, quick=args.quick, suites=args.suites, machine=machine,
               load_average_after=list(os.getloadavg()), machine_load_by_suite=machine_load, counts=asdict(counts),
               models={"embedding": str(models.embedding), "generation": str(models.generation_source),
                       "generation_dtype": models.generation_dtype, "embedding_dtype": "float32"})
    print(f"\nwrote {out}")
    if all(r.value is not None for r in rows):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"some configurations were unavailable: server logs kept in {work / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
