"""The engine inside a replica: dynamic batching for tasks, continuous batching and token streams for
generation, and plain calls for custom code; the model never runs on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from hubserve.errors import BadRequest
from hubserve.invocation import InvocationRequest, InvocationResult
from hubserve.spec import EngineSpec
from hubserve.worker import codecs
from hubserve.worker.batching import DynamicBatcher
from hubserve.worker.config import WorkerConfig
from hubserve.worker.handlers import CustomCode, TaskModel
from hubserve.worker.loader import load_handler

T = TypeVar("T")


class Engine:
    def __init__(self, handler: TaskModel | CustomCode, engine_spec: EngineSpec) -> None:
        self.model: TaskModel | None = handler if isinstance(handler, TaskModel) else None
        self.custom: CustomCode | None = None if isinstance(handler, TaskModel) else handler
        self.task = self.model.task if self.model is not None else "custom"
        adapter: Any = self.model.adapter if self.model is not None else None
        # Generation adapters schedule their own steps (continuous batching); other tasks batch here.
        self.generator: Any = adapter if hasattr(adapter, "predict_async") else None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # Decoding bodies (JSON, images, audio) and encoding answers stay off the event loop too.
        self._codec_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codec")
        self.batcher: DynamicBatcher | None = None
        if self.generator is not None:
            self.generator.configure_generation(**engine_spec.generation_limits())
        elif self.model is not None:
            size = engine_spec.max_batch_size or self.model.adapter.default_max_batch_size
            self.batcher = DynamicBatcher(self.model.run_batch, self._model_thread, size,
                                          engine_spec.max_batch_delay_ms / 1000)

    @classmethod
    def load(cls, config: WorkerConfig) -> Engine:
        return cls(load_handler(config), config.spec.engine)

    def start(self) -> None:
        """Start background work; call from the replica's event loop."""
        if self.batcher is not None:
            self.batcher.start()

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._codec_thread, function, *args)

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        if self.custom is not None:
            return await asyncio.get_running_loop().run_in_executor(self._model_thread, self.custom, request)
        assert self.model is not None
        work = await self._off_loop(self.model.decode_work, request)
        if self.generator is not None:
            output = await self.generator.predict_async(work.inputs, work.parameters)
        else:
            assert self.batcher is not None
            output = await self.batcher.submit(work)
        return await self._off_loop(codecs.encode_result, output, request.accept)

    async def stream(self, request: InvocationRequest) -> AsyncIterator[dict[str, Any]]:
        """Events of a streamed answer (one per token, then a final one); errors come before the first."""
        if self.generator is None or self.model is None:
            raise BadRequest(f"this endpoint's task ({self.task}) does not stream; leave out \"stream\"")
        work = await self._off_loop(self.model.decode_work, request)
        events = self.generator.stream_async(work.inputs, work.parameters)
        if asyncio.iscoroutine(events):
            events = await events
        async for event in events:
            yield event

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"task": self.task}
        if self.batcher is not None:
            stats["batching"] = self.batcher.stats.to_dict()
        generation = getattr(self.generator, "engine", None)
        if generation is not None:
            stats["generation"] = generation.counters
        return stats
