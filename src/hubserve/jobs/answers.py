"""Records in, results out: what a job's runner asks of whatever answers its records (its replicas, or a Ray Data
actor pool), and the per-batch logic both share (the input filter, an oversize record's error, a failed message)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from hubserve.errors import HubserveError, PayloadTooLarge
from hubserve.invocation import RecordResult
from hubserve.jobs.filters import RecordFilter
from hubserve.jobs.records import MAX_BATCH_RECORDS, Batch
from hubserve.jobs.spec import TransformJobSpec
from hubserve.jobs.store import JobFile

# Records in flight per replica when the job leaves it to hubserve (max_concurrent_transforms 0): two of the
# model's batches, so that the next is queued while one runs; and always two messages per replica at least.
BATCHES_IN_FLIGHT = 2
DEFAULT_BATCH_SIZE = 32


class JobFailed(Exception):
    """The job can not go on; `reason` names the file and line when one record is to blame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Answered:
    """A mini-batch of one file's records with each one's result, in the order of the records."""

    file: JobFile
    batch: Batch
    results: list[RecordResult]


class AnswerSource(Protocol):
    """Answers a job's records. `answered` yields every record of `files` from each one's `records_done` on, in input
    order (file by file), and raises JobFailed when the job can not go on."""

    async def start(self) -> None:
        """Until records can be answered (the model loaded somewhere), logging where they run."""
        ...

    def answered(self, files: list[JobFile]) -> AsyncGenerator[Answered, None]: ...

    async def close(self) -> None:
        """Let go of what answers (transient replicas, actors); safe to call at any time, more than once."""
        ...


def window_per_replica(spec: TransformJobSpec, max_batch_size: int | None) -> tuple[int, int]:
    """(messages, records) a job keeps in flight per replica: SageMaker's MaxConcurrentTransforms is requests per
    instance; else enough records to keep the replica's batcher fed (`max_batch_size`: its engine's)."""
    if spec.max_concurrent_transforms:
        return spec.max_concurrent_transforms, 0
    return BATCHES_IN_FLIGHT, BATCHES_IN_FLIGHT * (max_batch_size or DEFAULT_BATCH_SIZE)


def records_per_replica(spec: TransformJobSpec, max_batch_size: int | None) -> int:
    """What one replica (one actor) is handed at once, in records: its window's messages, each of one record
    (SingleRecord) or of a full mini-batch (MultiRecord); and, when the job leaves it to hubserve, at least enough to
    keep its batcher fed."""
    messages, records = window_per_replica(spec, max_batch_size)
    per_message = 1 if spec.batch_strategy == "SingleRecord" else MAX_BATCH_RECORDS
    return messages * per_message if spec.max_concurrent_transforms else max(records, per_message)


InvokeRecords = Callable[[list[bytes]], Awaitable[list[RecordResult]]]


async def answer_batch(batch: Batch, record_filter: RecordFilter, invoke: InvokeRecords) -> list[RecordResult]:
    """Each record's answer or error: the input filter applied, the records it left sent in one message through
    `invoke`; a message that failed whole (a HubserveError) is that error for each of its records."""
    if batch.error is not None:
        return [RecordResult(ok=False, status=PayloadTooLarge.status, message=batch.error)]
    results: list[RecordResult | None] = []
    inputs: list[bytes] = []
    for record in batch.records:
        try:
            inputs.append(record_filter.input(record.data))
            results.append(None)
        except HubserveError as exc:
            results.append(RecordResult(ok=False, status=exc.status, message=exc.message))
    answers: list[RecordResult] = []
    if inputs:
        try:
            answers = await invoke(inputs)
        except HubserveError as exc:
            answers = [RecordResult(ok=False, status=exc.status, message=exc.message)] * len(inputs)
    remaining = iter(answers)
    return [result if result is not None else next(remaining) for result in results]


def load_failure(reason: str) -> str:
    """Why the job fails when its model could not be loaded (`reason`: as the replica or actor reported it)."""
    return f"the model could not be loaded: {reason}"


def read_failure(file: JobFile, exc: Exception) -> str:
    """Why the job fails when a file of its input can not be read on (a record it refuses, or the reading)."""
    if isinstance(exc, HubserveError):
        return f"{file.name}: {exc.message}"
    return f"could not read {file.url}: {type(exc).__name__}: {exc}"
