"""AWS event-stream framing (``application/vnd.amazon.eventstream``), encoder side.

Bedrock's streaming operations (ConverseStream, InvokeModelWithResponseStream) send a body of
binary messages rather than SSE. Each message is::

    prelude:  total length (u32) | headers length (u32) | CRC32 of those 8 bytes (u32)
    headers:  name length (u8) | name | value type (u8) | value (typed, see below)
    payload:  raw bytes (JSON for Bedrock)
    trailer:  CRC32 of everything before it (u32)

All integers are big-endian. Only the encoder lives here: the tests decode with botocore's own
parser so that the framing is checked against the reference implementation, not against itself.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from typing import Final

__all__ = [
    "HeaderValue",
    "corrupt_frame",
    "encode_frame",
    "event_frame",
    "exception_frame",
]

#: Header values this encoder can write. ``bool`` is checked before ``int`` because it is one.
HeaderValue = str | bytes | bool | int | uuid.UUID

# Value type tags from the event-stream specification.
_TRUE: Final = 0
_FALSE: Final = 1
_INT32: Final = 4
_INT64: Final = 5
_BYTES: Final = 6
_STRING: Final = 7
_UUID: Final = 9

_PRELUDE_LENGTH: Final = 12  # two u32 lengths + the prelude CRC
_TRAILER_LENGTH: Final = 4
# botocore rejects headers over 128 KiB and payloads over 16 MiB; stay well inside both
# so that an oversized frame is a bug here, not a confusing failure in the client.
_MAX_HEADERS_LENGTH: Final = 128 * 1024
_MAX_PAYLOAD_LENGTH: Final = 16 * 1024 * 1024


def _crc32(data: bytes, crc: int = 0) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def _encode_header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) < 256:
        raise ValueError(f"event-stream header name must be 1..255 bytes, got {name!r}")
    out = bytearray([len(raw_name)])
    out += raw_name
    if isinstance(value, bool):
        out.append(_TRUE if value else _FALSE)
    elif isinstance(value, int):
        if -(2**31) <= value < 2**31:
            out.append(_INT32)
            out += struct.pack("!i", value)
        else:
            out.append(_INT64)
            out += struct.pack("!q", value)
    elif isinstance(value, uuid.UUID):
        out.append(_UUID)
        out += value.bytes
    else:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(raw) > 0xFFFF:
            raise ValueError(f"event-stream header {name!r} value is longer than 65535 bytes")
        out.append(_STRING if isinstance(value, str) else _BYTES)
        out += struct.pack("!H", len(raw))
        out += raw
    return bytes(out)


def encode_frame(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """Encode one event-stream message with valid prelude and message CRCs."""
    raw_headers = b"".join(_encode_header(name, value) for name, value in headers.items())
    if len(raw_headers) > _MAX_HEADERS_LENGTH:
        raise ValueError("event-stream headers exceed 128 KiB")
    if len(payload) > _MAX_PAYLOAD_LENGTH:
        raise ValueError("event-stream payload exceeds 16 MiB")
    total = _PRELUDE_LENGTH + len(raw_headers) + len(payload) + _TRAILER_LENGTH
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", _crc32(prelude))
    # The message CRC covers the prelude *including* its own CRC, then headers and payload.
    body = prelude + raw_headers + payload
    return body + struct.pack("!I", _crc32(body))


def event_frame(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """A normal event message (``:message-type: event``) as AWS services send it."""
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": content_type,
            ":message-type": "event",
        },
        payload,
    )


def exception_frame(
    exception_type: str, payload: bytes, content_type: str = "application/json"
) -> bytes:
    """A modeled in-stream exception (``:message-type: exception``).

    ``exception_type`` must be the member name of the exception in the operation's stream
    shape (``throttlingException``, ``modelStreamErrorException``...): botocore looks the
    shape up by that exact name to build the error it raises.
    """
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": content_type,
            ":message-type": "exception",
        },
        payload,
    )


def corrupt_frame(frame: bytes) -> bytes:
    """Return ``frame`` with its message CRC flipped, so a conforming decoder must reject it.

    The prelude stays intact: the decoder reads the right length and fails on the checksum,
    which is how a corrupted (rather than truncated) message shows up on the wire.
    """
    if len(frame) < _PRELUDE_LENGTH + _TRAILER_LENGTH:
        raise ValueError("not an event-stream frame")
    (crc,) = struct.unpack("!I", frame[-_TRAILER_LENGTH:])
    return frame[:-_TRAILER_LENGTH] + struct.pack("!I", crc ^ 0xFFFFFFFF)
