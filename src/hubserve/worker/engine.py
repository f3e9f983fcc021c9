"""The engine inside a replica: runs the loaded handler off the event loop, one call at a time."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from hubserve.invocation import InvocationRequest, InvocationResult
from hubserve.worker.config import WorkerConfig
from hubserve.worker.loader import Handler, load_handler


class Engine:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.task = handler.task
        # One model thread: the event loop stays free for I/O while the model works.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @classmethod
    def load(cls, config: WorkerConfig) -> Engine:
        return cls(load_handler(config))

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.handler, request)
