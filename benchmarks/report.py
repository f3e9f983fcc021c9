"""Results: rows of figures with their ratio to a baseline and their target, printed as a table and saved as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

from benchmarks.processes import Unavailable

Comparison = Literal["ratio", "delta"]
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """A goal for a row: its ratio to the baseline at least/at most `bound`, its difference from the baseline at
    most `bound`, or its value at most `bound`."""

    kind: Literal["ratio_min", "ratio_max", "delta_max", "value_max"]
    bound: float

    def met(self, row: Row) -> bool | None:
        """Whether `row` meets the target (None when a figure it needs is missing)."""
        figure = {"ratio_min": row.ratio, "ratio_max": row.ratio, "delta_max": row.delta, "value_max": row.value}
        value = figure[self.kind]
        if value is None:
            return None
        return value >= self.bound if self.kind == "ratio_min" else value <= self.bound

    def describe(self, unit: str) -> str:
        return {
            "ratio_min": f">= {self.bound:g}x",
            "ratio_max": f"<= {self.bound:g}x",
            "delta_max": f"<= +{self.bound:g} {unit}",
            "value_max": f"<= {self.bound:g} {unit}",
        }[self.kind]


@dataclass
class Row:
    """One figure of one configuration."""

    suite: str
    config: str
    metric: str
    value: float | None
    unit: str
    baseline: str | None = None  # the configuration (and metric) this row is compared with
    ratio: float | None = None  # value / baseline value
    delta: float | None = None  # value - baseline value, in `unit`
    target: str | None = None
    met: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.config} / {self.metric}"


def row(suite: str, config: str, metric: str, value: float | None, unit: str, *, baseline: Row | None = None,
        compare: Comparison = "ratio", target: Target | None = None, note: str = "",
        details: dict[str, Any] | None = None) -> Row:
    """A row, compared with `baseline` (ratio or difference) and checked against `target`."""
    result = Row(suite, config, metric, value, unit, note=note, details=details or {})
    if baseline is not None:
        result.baseline = baseline.key
        if value is not None and baseline.value:
            result.ratio = value / baseline.value
            if compare == "delta":
                result.delta = value - baseline.value
    if target is not None:
        result.target = target.describe(unit)
        result.met = target.met(result)
    return result


def unavailable(suite: str, config: str, metrics: list[tuple[str, str]], reason: str) -> list[Row]:
    """Rows without figures for a configuration that could not be measured, saying why."""
    return [Row(suite, config, metric, None, unit, note=f"unavailable: {reason}") for metric, unit in metrics]


def attempt(config: str, measure: Callable[[], T]) -> T | Unavailable:
    """`measure()`, or, if it raises, an `Unavailable` that says why (one configuration that cannot run here must
    not end the whole run)."""
    try:
        return measure()
    except Exception as error:
        if not isinstance(error, Unavailable):
            traceback.print_exc(file=sys.stderr)
            error = Unavailable(f"{type(error).__name__}: {error}")
        reason = " ".join(str(error).split())
        say(f"{config}: unavailable: {reason}")
        return Unavailable(reason)


def guarded(suite: str, config: str, metrics: list[tuple[str, str]], measure: Callable[[], list[Row]]) -> list[Row]:
    """`measure()`'s rows, or, if it raises, rows that say the configuration was unavailable and why."""
    result = attempt(config, measure)
    return unavailable(suite, config, metrics, str(result)) if isinstance(result, Unavailable) else result


_STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, with the seconds since the run started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _compared(result: Row) -> str:
    if result.delta is not None:
        return f"{result.delta:+.3g} {result.unit}"
    return f"{result.ratio:.2f}x" if result.ratio is not None else ""


def format_table(rows: list[Row], suite_notes: dict[str, str] | None = None) -> str:
    """The rows as a plain-text table, one block per suite (its header line with `suite_notes[suite]`)."""
    header = ("configuration", "figure", "value", "unit", "vs baseline", "target", "met", "note")
    lines = [[r.config, r.metric, _figure(r.value), r.unit, _compared(r), r.target or "",
              {True: "yes", False: "NO", None: ""}[r.met], r.note] for r in rows]
    for previous, result, cells in zip(rows, rows[1:], lines[1:], strict=False):
        if result.note and (result.config, result.note) == (previous.config, previous.note):
            cells[-1] = '"'  # the same note again
    widths = [max(len(str(cells[i])) for cells in [list(header), *lines]) for i in range(len(header) - 1)]

    def render(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + cells[-1]

    out = [render(header)]
    suite = None
    for result, cells in zip(rows, lines, strict=True):
        if result.suite != suite:
            suite = result.suite
            title = f"{suite} ({suite_notes[suite]})" if suite_notes and suite in suite_notes else suite
            out.append(f"-- {title} " + "-" * max(0, sum(widths) + 2 * len(widths) - len(title) - 4))
        out.append(render(cells).rstrip())
    return "\n".join(out)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> dict[str, Any]:
    """The CPU's model name and whether it computes bf16 natively (else torch emulates it, several times slower)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None, "native_bf16": None}
    pairs = (line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in pairs}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"), "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"})}


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    return {
        **_cpu(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "versions": {name: _version(name) for name in
                     ("torch", "transformers", "sentence-transformers", "hubserve", "litserve", "httpx", "uvicorn",
                      "onnxruntime", "openvino", "llama-cpp-python", "gguf")},
    }


def write_json(path: Path, rows: list[Row], **context: Any) -> None:
    """The rows and `context` (machine, settings, models, ...) as one JSON document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**context, "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
