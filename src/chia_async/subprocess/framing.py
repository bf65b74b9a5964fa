"""JSONL framing: bytes as they arrive from a pipe -> lines -> records.

:class:`JsonlFramer` cuts a byte stream into lines; :func:`parse_record` turns one line into
a JSON object or a :class:`Diagnostic`. They are kept apart so the framer can be fed chunks
of any size, split anywhere, while parsing stays a per-line decision.

Why the framer works on bytes, not text: ``b"\\n"`` never occurs inside a multi-byte UTF-8
sequence, so cutting the raw bytes at newlines and decoding each *complete* line is exactly
an incremental UTF-8 decode — a character split across two chunks is whole again by the
time its line is decoded — and it lets valid lines (nearly all of them) go to orjson as
bytes with no decode step at all. Decoding with ``errors="replace"`` happens only for a line
orjson rejects, so invalid UTF-8 costs something only where it occurs and never raises.

There is no 64 KiB or 1 MiB line limit (the asyncio ``readline`` and SDK limits that break
on large tool results). The cap is per line, 64 MiB by default, and is enforced while the
line accumulates: the framer never holds more than ``line_limit`` plus one chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

import orjson

from chia_async.errors import OutputLineTooLongError

__all__ = [
    "DEFAULT_LINE_LIMIT",
    "Diagnostic",
    "JsonlFramer",
    "Record",
    "TextChunk",
    "decode_line",
    "parse_record",
    "parse_records",
]

#: default cap on one line, in bytes (newline excluded)
DEFAULT_LINE_LIMIT = 64 * 2**20

_BOM = b"\xef\xbb\xbf"
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A stdout line that is not a JSON object: a warning, a banner, a stray ``print``.

    ``text`` is the line decoded as UTF-8 with invalid bytes replaced by U+FFFD. CLIs print
    such lines between their records; they are kept (as ``Raw`` events) but never parsed.
    """

    text: str


@dataclass(frozen=True, slots=True)
class TextChunk(Diagnostic):
    """Stdout text of a CLI that prints plain text, not JSONL (``stdout_format="text"``).

    One chunk per read, as it arrived: not a line, never stripped or skipped, decoded
    incrementally (a character split across reads is whole in the next chunk). It is a
    :class:`Diagnostic` — stdout text that is not a record — so code that knows only JSONL
    records and diagnostics still handles it.
    """


#: what one stdout line (or, in text mode, one read) becomes
Record: TypeAlias = dict[str, Any] | Diagnostic


def decode_line(line: bytes | bytearray | memoryview) -> str:
    """``line`` as text; invalid UTF-8 becomes U+FFFD instead of raising."""
    return bytes(line).decode("utf-8", errors="replace")


def parse_record(line: bytes | str) -> Record:
    """Parse one line: its JSON object, or a :class:`Diagnostic` for anything else.

    Never raises for bad input. A JSON value that is not an object (``[1]``, ``"hi"``,
    ``42``) is a diagnostic too: every CLI record is an object. Invalid UTF-8 inside an
    otherwise valid object, and escaped lone surrogates (``"\\ud83d"``), become U+FFFD
    and the object is returned, so every string in a record can be re-encoded as UTF-8.
    """
    try:
        value = _loads(line)
    except _JSONDecodeError:
        return _parse_slow(line)
    if type(value) is dict:
        return value
    return Diagnostic(line if isinstance(line, str) else decode_line(line))


def parse_records(lines: Iterable[bytes]) -> list[Record]:
    """:func:`parse_record` over many lines (what the framer returns), without a call per line."""
    records: list[Record] = []
    append = records.append
    for line in lines:
        # parse_record inlined: at ~1 µs per small line, a call is a measurable share
        try:
            value = _loads(line)
        except _JSONDecodeError:
            append(_parse_slow(line))
            continue
        append(value if type(value) is dict else Diagnostic(decode_line(line)))
    return records


def _parse_slow(line: bytes | str) -> Record:
    """The rare lines orjson rejects: noise, invalid UTF-8, escapes it refuses."""
    text = line if isinstance(line, str) else decode_line(line)
    if not text.lstrip().startswith("{"):
        return Diagnostic(text)
    try:
        # after replacement, an object with a few invalid bytes in a string parses
        value = _loads(text)
    except _JSONDecodeError:
        try:
            # A Node CLI that cuts a string between the halves of a surrogate pair prints
            # the lone half as an escape ("\\ud83d"), and NaN/Infinity slip out of some
            # encoders: orjson refuses both, json accepts them.
            value = _scrub(json.loads(text))
        except (ValueError, RecursionError):
            return Diagnostic(text)
    return value if type(value) is dict else Diagnostic(text)


def _scrub(value: Any) -> Any:
    """Replace lone surrogates (which no UTF-8 encoder accepts later) with U+FFFD."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


class JsonlFramer:
    """Cut a byte stream into lines.

    Feed chunks as they arrive, split anywhere (inside a multi-byte character, between
    ``\\r`` and ``\\n``); :meth:`feed` returns the lines completed so far and :meth:`flush`
    the unterminated last line at EOF. Lines come back as ``bytes`` without their ``\\n``
    or a trailing ``\\r``; a UTF-8 byte-order mark at the start of the stream is dropped;
    empty lines are skipped. Pass lines to :func:`parse_record` / :func:`parse_records`.

    A line longer than ``line_limit`` bytes raises
    :class:`~chia_async.errors.OutputLineTooLongError` from the :meth:`feed` that crosses
    the limit, before the line is held in full: memory stays within ``line_limit`` plus
    one chunk. After that error the framer is spent; start a new one for a new stream.

    Not thread-safe; one framer per stream.
    """

    __slots__ = ("_at_start", "_failed", "_limit", "_node_id", "_pending", "_pending_len")

    def __init__(self, line_limit: int = DEFAULT_LINE_LIMIT, *, node_id: str = "") -> None:
        if isinstance(line_limit, bool) or not isinstance(line_limit, int) or line_limit < 1:
            raise ValueError(f"line_limit must be a positive int, got {line_limit!r}")
        self._limit = line_limit
        self._node_id = node_id
        # the unterminated line so far, as the chunks it arrived in: joined once, when it ends
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._at_start = True
        self._failed = False

    @property
    def line_limit(self) -> int:
        """The cap on one line, in bytes."""
        return self._limit

    @property
    def buffered(self) -> int:
        """Bytes held for the line not yet terminated."""
        return self._pending_len

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the lines it completed, in order."""
        if self._failed:
            raise RuntimeError("this framer already reported an oversized line")
        limit = self._limit
        newline = data.find(b"\n")
        if newline < 0:
            if data:
                self._pending_len += len(data)
                if self._pending_len > limit:
                    self._fail(self._pending_len)
                self._pending.append(data)
            return []

        lines = data.split(b"\n")
        if self._pending:
            head_len = self._pending_len + newline
            if head_len > limit:
                self._fail(head_len)
            self._pending.append(lines[0])
            head = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
            lines[0] = head
            # a CRLF split across chunks: its \r arrived with an earlier chunk
            strip_cr = head[-1:] == b"\r"
        else:
            strip_cr = False
        tail = lines.pop()
        if tail:
            if len(tail) > limit:
                self._fail(len(tail))
            self._pending.append(tail)
            self._pending_len = len(tail)

        # Lines wholly inside this chunk are no longer than the chunk; only a chunk bigger
        # than the cap needs each of them measured.
        if len(data) > limit:
            longest = max(map(len, lines))
            if longest > limit:
                self._fail(longest)
        if strip_cr or b"\r" in data:
            lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
        if self._at_start:
            self._at_start = False
            if lines[0][:3] == _BOM:
                lines[0] = lines[0][3:]
        if b"" in lines:
            lines = [line for line in lines if line]
        return lines

    def flush(self) -> list[bytes]:
        """End of stream: the last, unterminated line (zero or one of them)."""
        if self._failed or not self._pending:
            return []
        line = b"".join(self._pending)
        self._pending.clear()
        self._pending_len = 0
        if line[-1:] == b"\r":
            line = line[:-1]
        if self._at_start:
            self._at_start = False
            if line[:3] == _BOM:
                line = line[3:]
        return [line] if line else []

    def _fail(self, size: int) -> NoReturn:
        self._failed = True
        self._pending.clear()
        self._pending_len = 0
        raise OutputLineTooLongError(
            self._node_id,
            raw_message=(
                f"an output line exceeded the line limit of {self._limit} bytes "
                f"({size} bytes without a newline so far)"
            ),
        )
