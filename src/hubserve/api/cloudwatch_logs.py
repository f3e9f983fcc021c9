"""CloudWatch Logs' reads -- DescribeLogStreams and GetLogEvents, JSON 1.1 with `X-Amz-Target: Logs_20140328.<Action>`
-- of the logs hubserve keeps, as the sagemaker SDK's `wait(logs=True)` reads them: a transform job's log in group
`/aws/sagemaker/TransformJobs`, stream `{job}/{instance}`, and an endpoint's in `/aws/sagemaker/Endpoints/{name}`,
stream `AllTraffic/{instance}`. The instance is this server; one log file is one stream, each of its lines an event,
timed by the time the line starts with (a line with none, a traceback's, by the one before it)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hubserve.api.aws_paging import page_start, page_token
from hubserve.api.common import validation_message
from hubserve.errors import AwsError, NotFound
from hubserve.jobs.service import JobService
from hubserve.serving.manager import EndpointManager

ShapeT = TypeVar("ShapeT", bound=BaseModel)

TARGET_PREFIX = "Logs_20140328."
# The service botocore signs CloudWatch Logs' requests for.
SIGNING_SERVICE = "logs"
TRANSFORM_GROUP = "/aws/sagemaker/TransformJobs"
ENDPOINT_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
ENDPOINT_VARIANT = "AllTraffic"
# Every log comes from this one server: the only instance there is.
INSTANCE = "hubserve"
# GetLogEvents' page: at most 10,000 events and 1 MB, an event counting its UTF-8 bytes and 26 more, as CloudWatch's.
MAX_EVENTS = 10_000
MAX_PAGE_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_STREAMS = 50
# The time a line starts with: the job log's ISO time, the endpoint log's `YYYY-MM-DD HH:MM:SS[,mmm]` (local time).
LEADING_TIME = re.compile(rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,6})?(?:Z|[+-]\d{2}:?\d{2})?(?=\s)")


def invalid(message: str) -> AwsError:
    return AwsError("InvalidParameterException", message)


def parse(shape: type[ShapeT], body: dict[str, Any]) -> ShapeT:
    try:
        return shape.model_validate(body)
    except ValidationError as exc:
        raise invalid(validation_message(exc.errors())) from None


# inputs
class GroupInput(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    logGroupName: str | None = Field(default=None, min_length=1, max_length=512)
    logGroupIdentifier: str | None = Field(default=None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _one_group(self) -> GroupInput:
        if (self.logGroupName is None) == (self.logGroupIdentifier is None):
            raise ValueError("give logGroupName or logGroupIdentifier (one of them)")
        return self

    @property
    def group(self) -> str:
        """The group's name; an identifier may be its ARN (`arn:aws:logs:<region>:<account>:log-group:<name>`)."""
        if self.logGroupName is not None:
            return self.logGroupName
        assert self.logGroupIdentifier is not None
        return self.logGroupIdentifier.partition(":log-group:")[2].removesuffix(":*") or self.logGroupIdentifier


class StreamsInput(GroupInput):
    logStreamNamePrefix: str | None = Field(default=None, min_length=1, max_length=512)
    orderBy: Literal["LogStreamName", "LastEventTime"] = "LogStreamName"
    descending: bool = False
    nextToken: str | None = Field(default=None, min_length=1)
    limit: int = Field(default=MAX_STREAMS, ge=1, le=MAX_STREAMS)

    @model_validator(mode="after")
    def _prefix_by_name(self) -> StreamsInput:
        if self.orderBy == "LastEventTime" and self.logStreamNamePrefix is not None:
            raise ValueError("Cannot order by LastEventTime with a logStreamNamePrefix.")
        return self


class EventsInput(GroupInput):
    logStreamName: str = Field(min_length=1, max_length=512)
    startTime: int | None = Field(default=None, ge=0)
    endTime: int | None = Field(default=None, ge=0)
    nextToken: str | None = Field(default=None, min_length=1)
    limit: int = Field(default=MAX_EVENTS, ge=1, le=MAX_EVENTS)
    startFromHead: bool = False

    def wants(self, event: Event) -> bool:
        return ((self.startTime is None or event.timestamp >= self.startTime)
                and (self.endTime is None or event.timestamp < self.endTime))


# the log files as events
class Event(NamedTuple):
    start: int  # the byte offsets of its line in the file
    end: int
    timestamp: int  # milliseconds since the epoch
    message: str

    @property
    def size(self) -> int:
        return len(self.message.encode()) + EVENT_OVERHEAD

    def shown(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "message": self.message, "ingestionTime": self.timestamp}


def line_time(line: bytes) -> int | None:
    """The time `line` starts with, in milliseconds; times without a zone are the server's local time."""
    match = LEADING_TIME.match(line)
    if match is None:
        return None
    try:
        return round(datetime.fromisoformat(match.group().decode().replace(",", ".")).timestamp() * 1000)
    except ValueError:  # a date that does not exist
        return None


def events(path: Path, start: int = 0, timestamp: int = 0) -> Iterator[Event]:
    """The events of the file's whole lines from byte `start` (a line still being written is left for later);
    `timestamp` is the time of the line before `start`, which a line without one of its own takes."""
    if not path.exists():
        return
    with open(path, "rb") as handle:
        handle.seek(start)
        for line in handle:
            if not line.endswith(b"\n"):
                return
            end = start + len(line)
            timestamp = line_time(line) or timestamp
            message = line.rstrip(b"\r\n").decode(errors="replace")
            if message.strip():
                yield Event(start, end, timestamp, message)
            start = end


@dataclass(frozen=True)
class Token:
    """Where a page of events ends (`f`, reading on) or starts (`b`, reading back): a byte offset in the file and
    the time of the line before it."""

    direction: Literal["f", "b"]
    offset: int
    timestamp: int

    def __str__(self) -> str:
        return f"{self.direction}/{self.offset}/{self.timestamp}"

    @staticmethod
    def parse(text: str) -> Token:
        direction, _, rest = text.partition("/")
        offset, _, timestamp = rest.partition("/")
        if direction not in ("f", "b") or not offset.isdecimal() or not timestamp.isdecimal():
            raise invalid("The specified nextToken is invalid.")
        return Token("f" if direction == "f" else "b", int(offset), int(timestamp))


def forward_page(query: EventsInput, path: Path, start: Token) -> dict[str, Any]:
    """The events from `start` on, until the page is full."""
    page: list[Event] = []
    size, end = 0, start
    for event in events(path, start.offset, start.timestamp):
        if len(page) == query.limit or size + event.size > MAX_PAGE_BYTES:
            break
        end = Token("f", event.end, event.timestamp)
        if query.wants(event):
            page.append(event)
            size += event.size
    return {"events": [event.shown() for event in page], "nextForwardToken": str(end),
            "nextBackwardToken": str(Token("b", start.offset, start.timestamp))}


def backward_page(query: EventsInput, path: Path, before: int | None) -> dict[str, Any]:
    """The last events before byte `before` (the end of the file when None), as many as the page holds."""
    page: deque[Event] = deque()
    size, last = 0, Token("f", 0, 0)
    for event in events(path):
        if before is not None and event.end > before:
            break
        last = Token("f", event.end, event.timestamp)
        if query.wants(event):
            page.append(event)
            size += event.size
            while len(page) > query.limit or size > MAX_PAGE_BYTES:
                size -= page.popleft().size
    first = Token("b", page[0].start, 0) if page else Token("b", last.offset, last.timestamp)
    return {"events": [event.shown() for event in page], "nextForwardToken": str(last),
            "nextBackwardToken": str(first)}


def stream_shown(name: str, path: Path) -> dict[str, Any]:
    """A stream as DescribeLogStreams lists it: its first event's time, its file's last change as its last."""
    first = next(events(path), None)
    changed = round(path.stat().st_mtime * 1000)
    created = first.timestamp if first is not None and first.timestamp else changed
    return {"logStreamName": name, "creationTime": created, "firstEventTimestamp": created,
            "lastEventTimestamp": changed, "lastIngestionTime": changed, "storedBytes": 0}


@dataclass(frozen=True)
class LogGroups:
    """The groups hubserve serves: its jobs' and its endpoints' logs."""

    manager: EndpointManager
    jobs: JobService

    def streams(self, group: str) -> dict[str, Path]:
        """The group's streams whose files exist (a log with nothing in it yet has no stream)."""
        if group == TRANSFORM_GROUP:
            files = {f"{job.spec.name}/{INSTANCE}": self.jobs.log_path(job.spec.name) for job in self.jobs.list()}
        elif group.startswith(ENDPOINT_GROUP_PREFIX):
            try:
                runtime = self.manager.get(group.removeprefix(ENDPOINT_GROUP_PREFIX))
            except NotFound:
                raise AwsError("ResourceNotFoundException", "The specified log group does not exist.") from None
            files = {f"{ENDPOINT_VARIANT}/{INSTANCE}": runtime.log_path}
        else:
            raise AwsError("ResourceNotFoundException", "The specified log group does not exist.")
        return {name: path for name, path in files.items() if path.exists()}

    def describe_log_streams(self, body: dict[str, Any]) -> dict[str, Any]:
        query = parse(StreamsInput, body)
        prefix = query.logStreamNamePrefix or ""
        shown = [stream_shown(name, path) for name, path in self.streams(query.group).items()
                 if name.startswith(prefix)]
        key = "logStreamName" if query.orderBy == "LogStreamName" else "lastEventTimestamp"
        shown.sort(key=lambda stream: (stream[key], stream["logStreamName"]), reverse=query.descending)
        start = page_start(query.nextToken)
        if start is None:
            raise invalid("The specified nextToken is invalid.")
        end = start + query.limit
        return {"logStreams": shown[start:end], **({"nextToken": page_token(end)} if end < len(shown) else {})}

    def get_log_events(self, body: dict[str, Any]) -> dict[str, Any]:
        query = parse(EventsInput, body)
        path = self.streams(query.group).get(query.logStreamName)
        if path is None:
            raise AwsError("ResourceNotFoundException", "The specified log stream does not exist.")
        token = Token.parse(query.nextToken) if query.nextToken is not None else None
        if token is not None and token.direction == "f":
            return forward_page(query, path, token)
        if token is None and query.startFromHead:
            return forward_page(query, path, Token("f", 0, 0))
        return backward_page(query, path, token.offset if token is not None else None)

    def answer(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        action = ACTIONS.get(target.removeprefix(TARGET_PREFIX))
        if action is None:
            raise AwsError("UnknownOperationException", f"hubserve does not serve the operation {target}; of "
                                                        f"CloudWatch Logs it serves {', '.join(TARGETS)}")
        return action(self, body)


ACTIONS: dict[str, Callable[[LogGroups, dict[str, Any]], dict[str, Any]]] = {
    "DescribeLogStreams": LogGroups.describe_log_streams, "GetLogEvents": LogGroups.get_log_events}
TARGETS = [TARGET_PREFIX + name for name in ACTIONS]
