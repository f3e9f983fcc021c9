"""Telemetry of the API process: request counts and latencies, Prometheus metrics, per-endpoint analytics."""

from hubserve.serving.telemetry.recorder import Telemetry

__all__ = ["Telemetry"]
