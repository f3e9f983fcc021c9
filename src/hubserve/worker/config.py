"""What the server tells a replica process when it starts it (passed as JSON in the environment)."""

from __future__ import annotations

from pydantic import BaseModel

from hubserve.sources.archives import ArchiveLimits
from hubserve.spec import EndpointSpec

CONFIG_ENV = "HUBSERVE_WORKER_CONFIG"


class WorkerConfig(BaseModel):
    replica_id: str
    spec: EndpointSpec
    host: str
    port: int
    secret: str
    # The server's line for local replicas (`WorkerHub.line_address`): where it hands a streamed answer's client
    # connection over, for the replica to write the events to itself. None: every event goes through the server.
    line: str | None = None
    models_dir: str
    archive_limits: ArchiveLimits  # the server's: archives unpack in the worker
    # torch's threads (which ONNX Runtime and llama.cpp follow) where the replica's placement gave it its own cores
    # (on Ray, its resources' cpus); None: the machine's cores, shared among the endpoint's replicas.
    threads: int | None = None
