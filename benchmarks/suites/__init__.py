"""The suites: each `run(context)` measures its configurations and returns their rows."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.context import Context
from benchmarks.report import Row
from benchmarks.suites import (
    clients,
    coldstart,
    embeddings,
    encoders,
    generation,
    llamacpp,
    ray,
    sagemaker_stream,
    scale_to_zero,
    soak,
    transform,
)

SUITES: dict[str, Callable[[Context], list[Row]]] = {
    "embeddings": embeddings.run,
    "encoders": encoders.run,
    "generation": generation.run,
    "llamacpp": llamacpp.run,
    "clients": clients.run,
    "sagemaker_stream": sagemaker_stream.run,
    "transform": transform.run,
    "coldstart": coldstart.run,
    "scale_to_zero": scale_to_zero.run,
    "ray": ray.run,
    "soak": soak.run,
}
