"""AWS's event-stream framing (`application/vnd.amazon.eventstream`), which InvokeEndpointWithResponseStream answers
in: per message a prelude (total and headers length, their CRC-32), string headers, the payload, a CRC-32 of it all.
botocore reads `PayloadPart` events as `{"PayloadPart": {"Bytes": payload}}`, and raises an exception event as an
`EventStreamError` whose code is its `:exception-type` and whose message is its payload's `Message`."""

from __future__ import annotations

import json
import struct
import zlib

MEDIA_TYPE = "application/vnd.amazon.eventstream"
STRING = 7  # the header value type of a UTF-8 string (u16 length, then the bytes)


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message."""
    encoded = b"".join(
        struct.pack(">B", len(name)) + name.encode() + struct.pack(">BH", STRING, len(value.encode())) + value.encode()
        for name, value in headers.items())
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def payload_part(data: bytes) -> bytes:
    """A data event: `data` reaches the caller as one `PayloadPart`'s `Bytes`."""
    return message({":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                    ":message-type": "event"}, data)


def model_stream_error(text: str, code: str = "StreamBroken") -> bytes:
    """The exception event that ends a stream which failed after its first part (SageMaker's ModelStreamError;
    boto3 keeps only the message, so `text` says what happened)."""
    return message({":exception-type": "ModelStreamError", ":content-type": "application/json",
                    ":message-type": "exception"}, json.dumps({"Message": text, "ErrorCode": code}).encode())
