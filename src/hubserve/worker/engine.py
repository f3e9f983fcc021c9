"""The engine inside a replica: dynamic batching for tasks, continuous batching and token streams for
generation, and plain calls for custom code; the model never runs on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hubserve.errors import BadRequest, HubserveError, ModelError, Overloaded
from hubserve.invocation import (
    InvocationRequest,
    InvocationResult,
    RecordResult,
    Route,
    StreamHead,
    encode_record_results,
    unpack_frames,
)
from hubserve.spec import EngineSpec
from hubserve.worker import codecs, protocols
from hubserve.worker.batching import DynamicBatcher, Work
from hubserve.worker.config import WorkerConfig
from hubserve.worker.generation.direct import ChunkSink, chunk_sink
from hubserve.worker.handlers import ChunkStream, CustomCode, TaskModel
from hubserve.worker.loader import load_handler
from hubserve.worker.torch_threads import adopt_torch_threads

# The routes custom code answers itself: the endpoint URL, and SageMaker's response stream (its generators' chunks).
CUSTOM_ROUTES = (Route.ROOT, Route.RESPONSE_STREAM)
# How long a record waits before it asks a generation engine full of other callers' requests again.
OVERLOADED_RETRY_S = 0.05


class Engine:
    def __init__(self, handler: TaskModel | CustomCode, engine_spec: EngineSpec, model_id: str | None = None,
                 name: str | None = None) -> None:
        self.model: TaskModel | None = handler if isinstance(handler, TaskModel) else None
        # What the protocols' info routes name the model: the endpoint's model (a Hub id, a path, a URL); and what
        # OpenAI's answers name it when the request did not: the endpoint, as /v1/models lists it.
        adapter_dir = getattr(getattr(self.model, "adapter", None), "model_dir", None)
        self.model_id = model_id or (adapter_dir.name if adapter_dir is not None else "custom")
        self.name = name or self.model_id
        self.custom: CustomCode | None = None if isinstance(handler, TaskModel) else handler
        self.task = self.model.task if self.model is not None else "custom"
        adapter: Any = self.model.adapter if self.model is not None else None
        # Generation adapters schedule their own steps (continuous batching); other tasks batch here.
        self.generator: Any = adapter if hasattr(adapter, "predict_async") else None
        # Forwards run on this one thread (see torch_threads: a second thread running torch slows both).
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model",
                                                initializer=adopt_torch_threads)
        # Decoding large bodies (images, audio, big JSON) stays off the event loop too.
        self._codec_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codec")
        self.batcher: DynamicBatcher | None = None
        # Records of RECORDS messages running at once on a generation engine: within its max_concurrent_requests, so
        # that a mini-batch larger than that waits its turn rather than failing its own records with 429s.
        self._record_slots = asyncio.Semaphore(engine_spec.max_concurrent_requests)
        if self.generator is not None:
            self.generator.configure_generation(**engine_spec.generation_limits())
        elif self.model is not None:
            size = engine_spec.max_batch_size or self.model.adapter.default_max_batch_size
            self.batcher = DynamicBatcher(self._run_batch, self._model_thread, size,
                                          engine_spec.max_batch_delay_ms / 1000)

    @classmethod
    def load(cls, config: WorkerConfig) -> Engine:
        return cls(load_handler(config), config.spec.engine, config.spec.model, config.spec.name)

    def start(self) -> None:
        """Start background work; call from the replica's event loop."""
        if self.batcher is not None:
            self.batcher.start()

    async def _decode(self, request: InvocationRequest) -> Work:
        assert self.model is not None
        if codecs.cheap_to_decode(request.body, request.content_type):
            return self.model.decode_work(request)
        return await asyncio.get_running_loop().run_in_executor(self._codec_thread, self.model.decode_work, request)

    def _run_batch(self, works: list[Work]) -> list[InvocationResult | BaseException]:
        """The batch's answers, encoded on the model thread as soon as they exist (by the work's own `finish` when
        a protocol shapes it): no hop on the way out."""
        assert self.model is not None
        return [output if isinstance(output, BaseException) else _encoded(output, work)
                for work, output in zip(works, self.model.run_batch(works), strict=True)]

    async def submit(self, work: Work) -> Any:
        """`work` through the dynamic batcher (with concurrent requests): what its `finish` (else the Accept
        encoding) makes of the adapter's output."""
        if self.batcher is None:
            raise BadRequest(f"this endpoint's task ({self.task}) is not batched")
        return await self.batcher.submit(work)

    def _protocol(self, request: InvocationRequest) -> bool:
        """Whether a protocol's route shapes this call: custom code answers CUSTOM_ROUTES itself."""
        return bool(request.route) and not (self.custom is not None and request.route in CUSTOM_ROUTES)

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        if request.route is Route.RECORDS:
            return await self._invoke_records(request)
        if self._protocol(request):
            return await protocols.invoke(self, request)
        if self.custom is not None:
            return await asyncio.get_running_loop().run_in_executor(self._model_thread, self.custom, request)
        work = await self._decode(request)
        if self.generator is not None:
            output = await self.generator.predict_async(work.inputs, work.parameters)
            return codecs.encode_result(output, request.accept)  # text: microseconds
        assert self.batcher is not None
        result: InvocationResult = await self.batcher.submit(work)
        return result

    async def _invoke_records(self, request: InvocationRequest) -> InvocationResult:
        """A batch transform's mini-batch: every record submitted at once (so they share the batcher's or the
        generation engine's batches; custom code takes them one by one), each answered as the DEFAULT route answers
        that record alone. A record's error is its own: the others still get their answers."""
        try:
            records = unpack_frames(request.body)
        except Exception as exc:
            raise BadRequest(f"a RECORDS message that does not parse: {exc}") from None
        single = dataclasses.replace(request, body=b"", route=Route.DEFAULT)
        results = await asyncio.gather(*(self._record(dataclasses.replace(single, body=record))
                                         for record in records))
        return encode_record_results(results)

    async def _record(self, request: InvocationRequest) -> RecordResult:
        try:
            answer = await (self.invoke(request) if self.generator is None else self._generate_record(request))
        except HubserveError as exc:
            return RecordResult(ok=False, status=exc.status, message=exc.message)
        except Exception as exc:  # as the replica fails a request the engine did not map
            return RecordResult(ok=False, status=ModelError.status, message=f"{type(exc).__name__}: {exc}")
        return RecordResult(ok=True, body=answer.body, content_type=answer.content_type)

    async def _generate_record(self, request: InvocationRequest) -> InvocationResult:
        """A record through the generation engine: it waits for a slot while the engine is full (others' requests
        too), where a caller of its own would get a 429 to retry."""
        async with self._record_slots:
            while True:
                try:
                    return await self.invoke(request)
                except Overloaded:
                    await asyncio.sleep(OVERLOADED_RETRY_S)

    async def stream(self, request: InvocationRequest,
                     sink: ChunkSink | None = None) -> AsyncGenerator[protocols.Event, None]:
        """Events of a streamed answer (one per token, then a final one; for RESPONSE_STREAM a StreamHead, then raw
        chunks); errors come before the first. Where the events reach the channel as they are, generation may write
        its token events to `sink` itself: then only the last comes here."""
        if self.custom is not None and request.route is Route.RESPONSE_STREAM:
            async with contextlib.aclosing(self._custom_chunks(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        if self._protocol(request):
            async for event in await protocols.stream(self, request, sink):
                yield event
            return
        if self.generator is None or self.model is None:
            raise BadRequest(f"this endpoint's task ({self.task}) does not stream; leave out \"stream\"")
        work = await self._decode(request)
        events = self.generator.stream_async(work.inputs, work.parameters)
        if asyncio.iscoroutine(events):
            with chunk_sink(sink):  # these events go to the channel as they are
                events = await events
        async for event in events:
            yield event

    async def _custom_chunks(self, request: InvocationRequest) -> AsyncGenerator[bytes, None]:
        """Custom code's answer as a response stream (its StreamHead, then chunks): a generator's chunks as it makes
        them, each on the model thread like all user code; any other answer whole. When the caller goes away, the
        generator is closed there, after the chunk in the making."""
        assert self.custom is not None
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._model_thread, self.custom.open, request)
        if not isinstance(answer, ChunkStream):
            yield StreamHead(answer.content_type).encode()
            yield answer.body
            return
        chunks = answer.chunks
        try:
            chunk = await loop.run_in_executor(self._model_thread, next, chunks, None)
            yield StreamHead(answer.content_type).encode()  # only now: an error before the first chunk is an HTTP one
            while chunk is not None:
                yield chunk
                chunk = await loop.run_in_executor(self._model_thread, next, chunks, None)
        finally:
            await loop.run_in_executor(self._model_thread, chunks.close)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"task": self.task}
        if self.batcher is not None:
            stats["batching"] = self.batcher.stats.to_dict()
        generation = getattr(self.generator, "engine", None)
        if generation is not None:
            stats["generation"] = {**generation.counters, **generation.token_times}
        return stats


def _encoded(output: Any, work: Work) -> Any:
    try:
        if work.finish is not None:
            return work.finish(output)
        return codecs.encode_result(output, work.accept)
    except HubserveError as exc:  # e.g. an Accept this answer has no form in: that caller's error alone
        return exc
    except Exception as exc:  # a protocol's shaping failed on this answer: that caller's error alone
        return ModelError(f"{type(exc).__name__}: {exc}")
