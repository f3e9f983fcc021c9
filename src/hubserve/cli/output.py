"""How the `hubserve` commands write what they get back: JSON, rows in columns, and text as it streams in."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Rows in columns as wide as their longest cell."""
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
                     for cells in (header, *rows))


def write_as_they_come(chunks: Iterator[str]) -> None:
    """Until the chunks end or Ctrl-C."""
    try:
        for chunk in chunks:
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
