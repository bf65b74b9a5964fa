"""Codex CLI backend (``codex exec --json``).

Each call runs ``codex exec --json`` in its own process group with the prompt on stdin
(``-``), never in argv. Everything the run needs is passed as per-run ``-c key=value``
overrides, so the user's own ``config.toml`` is never modified:

* tools become ``mcp_servers.<name>.*`` entries, approved for the run
  (``default_tools_approval_mode="approve"``: ``exec`` cannot ask, and refuses an MCP call
  that needs approval); header values and server environment travel in the child's
  environment (``env_http_headers``, ``env_vars``), not in argv;
* ``base_url=`` defines a Responses-API provider for the run, with the CLI's own retries
  turned down to ``cli_retries`` (our retry policy is the one that retries).

``exec --json`` prints whole items, not deltas: ``agent_message`` and ``reasoning``
snapshots are diffed into :class:`~chia_async.events.TextDelta` /
:class:`~chia_async.events.ReasoningDelta` (a turn's successive messages set apart by a blank
line; the result is the last one, the answer); ``turn.completed`` usage is cumulative over
the thread and is turned into this turn's figures. A failed turn ends with ``turn.failed``; its
text is classified into the reference's classes (see :meth:`CodexStreamParser.classify`).

Errors keep the reference's ``chia.models.codex`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from chia_async import errors
from chia_async._event_base import TurnEvent
from chia_async.base import Attempt, check_flags
from chia_async.errors import ChiaError
from chia_async.events import (
    FileChange,
    Raw,
    ReasoningDelta,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.ratelimit import parse_rate_limit_reset
from chia_async.redaction import register_secret
from chia_async.results import CodexQueryResult, QueryResult, Usage
from chia_async.subprocess.backend import CLIBackend, Invocation, RecordParser
from chia_async.subprocess.environment import build_child_env
from chia_async.subprocess.process import ProcessOutcome
from chia_async.tools import ChiaTool

__all__ = [
    "AuthenticationError",
    "BillingError",
    "CodexError",
    "CodexLLM",
    "CodexQueryResult",
    "CodexStreamParser",
    "CodexStreamState",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownCodexError",
    "parse_rate_limit_reset",
    "parse_session_id",
]


class CodexError(errors.BackendError):
    """Base for Codex CLI errors. Every subclass pickles with all its fields (for Ray).

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class RateLimitError(CodexError, errors.RateLimitError):
    """A rate or usage limit was hit; ``reset_time`` says when it lifts."""

    def __init__(
        self,
        node_id: str,
        reset_time: datetime | None = None,
        raw_message: str = "",
        exit_code: int = -1,
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, exit_code=exit_code
        )


class AuthenticationError(CodexError, errors.AuthenticationError):
    """The credentials are missing, invalid or expired."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(CodexError, errors.BillingError):
    """The account has a billing, credit or quota problem."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(CodexError, errors.InvalidRequestError):
    """The request is malformed or names something that does not exist."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(CodexError, errors.ServerError):
    """A transient service-side failure (5xx, overloaded, connection)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class MaxOutputTokensError(CodexError, errors.MaxOutputTokensError):
    """The response was truncated at the output token limit."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class UnknownCodexError(CodexError, errors.UnknownError):
    """A Codex failure that could not be classified."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


# -- the exec --json protocol ----------------------------------------------------------
#
# Codex prints no status codes or error kinds in `exec --json`, only its own messages. Each
# pattern below is backed by a capture of the real text (tests/fixtures/cli-samples/codex
# and tests/codex): the CLI's canonical messages first, then the HTTP status it quotes
# ("unexpected status 401 Unauthorized", "last status: 429 Too Many Requests"), then words.

_MAX_OUTPUT = re.compile(r"reason: max_output_tokens|max_output_tokens", re.IGNORECASE)
_CONTENT_FILTER = re.compile(r"reason: content_filter", re.IGNORECASE)
_MCP_STARTUP = re.compile(r"required MCP servers? failed to initialize", re.IGNORECASE)
#: the CLI refused to start the turn: its configuration, directory or input
_SETUP = re.compile(
    r"error loading config|unknown variant|error finding codex home|"
    r"not inside a trusted directory|no prompt provided|no rollout found",
    re.IGNORECASE,
)
_CONTEXT = re.compile(
    r"out of room in the model's context window|context window exceeded|"
    r"context_length_exceeded|maximum context length|exceeds the context window|"
    r"prompt is too long",
    re.IGNORECASE,
)
_USAGE_LIMIT = re.compile(
    r"hit your usage limit|reached your usage limit|usage limit reached", re.IGNORECASE
)
_BILLING = re.compile(
    r"quota exceeded|insufficient_quota|out of credits|credit limit|billing|"
    r"upgrade to plus|usage not included|payment required",
    re.IGNORECASE,
)
_STATUS = re.compile(r"\b(?:unexpected status|last status:?|status code:?)\s+(\d{3})\b", re.I)
_RATE = re.compile(r"rate limit|too many requests|slow down|rate_limit", re.IGNORECASE)
_AUTH = re.compile(
    r"missing environment variable|unauthori[sz]ed|invalid api key|incorrect api key|"
    r"authentication|refresh token|sign in again|log in again|not logged in|access token|"
    r"invalid bearer",
    re.IGNORECASE,
)
_SERVER = re.compile(
    r"high demand|at capacity|overloaded|stream disconnected|error while reading the server|"
    r"connection failed|connection (?:reset|refused|closed)|timed out|timeout|"
    r"internal server error|service unavailable|bad gateway|gateway timeout|"
    r"temporarily unavailable|server had an error|server_error|capacity unavailable",
    re.IGNORECASE,
)
_INVALID = re.compile(
    r"invalid value|invalid type|no thread with id|thread not found|no saved session|"
    r"does not exist or you do not have access|invalid_request|invalid request|"
    r"invalid_prompt|unsupported",
    re.IGNORECASE,
)
#: retry notices the CLI prints while it retries on its own ("Reconnecting... 1/5 (...)")
_RETRY_NOTICE = re.compile(r"^reconnecting\.\.\.", re.IGNORECASE)
#: stderr lines every run prints; they say nothing about a failure
_STDERR_NOISE = re.compile(
    r"^(?:WARNING: proceeding, even though we could not create PATH aliases|"
    r"Reading additional input from stdin|Stack backtrace:|\s*\d+: <unknown>)"
)
_SESSION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$")


def parse_session_id(stdout: str) -> str | None:
    """Extract a Codex session (thread) id from ``exec --json`` stdout, or None.

    Reads ``thread.started.thread_id``; older builds printed ``session_configured``
    (``msg.session_id``) or a top-level ``session_id``. Lines that are not JSON are skipped.
    """
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("type") == "thread.started" and _str(record.get("thread_id")):
            return str(record["thread_id"])
        msg = record.get("msg")
        if isinstance(msg, dict) and msg.get("type") == "session_configured":
            found = _str(msg.get("session_id"))
            if found:
                return found
        found = _str(record.get("session_id"))
        if found:
            return found
    return None


@dataclass
class CodexStreamState:
    """What a ``codex exec --json`` run said, as it streamed."""

    session_id: str | None = None
    completed: dict[str, Any] | None = None  # the turn.completed record
    failure: str | None = None  # turn.failed's error.message
    last_error: str | None = None  # the last `error` record that was not a retry notice
    retry_notices: int = 0
    final_message: str = ""  # the last agent_message: the answer
    messages: int = 0  # agent messages seen
    usage: Usage | None = None  # this turn's usage
    snapshots: dict[str, str] = field(default_factory=dict)  # item id -> text sent so far
    announced: set[str] = field(default_factory=set)  # tool items whose call was emitted


class CodexStreamParser:
    """Maps ``exec --json`` records to events and classifies the run's outcome.

    Pure: no I/O. ``usage_before`` is the thread's cumulative usage before this turn (from
    the rollout of a resumed thread), subtracted from ``turn.completed``'s cumulative
    figures. ``local_zone`` is the zone the CLI prints reset clock times in.
    """

    def __init__(
        self,
        node_id: str,
        *,
        model: str | None = None,
        cwd: str | None = None,
        usage_before: Usage | None = None,
        local_zone: tzinfo | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.node_id = node_id
        self.model = model
        self.cwd = cwd
        self.usage_before = usage_before
        self.local_zone = local_zone
        self.state = CodexStreamState()
        self._now = now or (lambda: datetime.now(UTC))

    # -- records -> events ---------------------------------------------------------------

    def feed(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        """The events one stdout record stands for (``Raw`` for anything unknown)."""
        kind = record.get("type")
        if kind == "thread.started":
            self.state.session_id = _str(record.get("thread_id")) or self.state.session_id
            return [
                SessionStarted(
                    session_id=self.state.session_id or "",
                    backend="codex",
                    model=self.model,
                    cwd=self.cwd,
                )
            ]
        if kind == "turn.started":
            return []
        if kind in ("item.started", "item.updated", "item.completed"):
            item = record.get("item")
            if isinstance(item, Mapping):
                return self._item(item, done=kind == "item.completed", record=record)
        elif kind == "turn.completed":
            return self._completed(record)
        elif kind == "turn.failed":
            error = record.get("error")
            message = error.get("message") if isinstance(error, Mapping) else None
            self.state.failure = str(message) if message else "the turn failed"
            return []
        elif kind == "error":
            message = str(record.get("message", ""))
            if _RETRY_NOTICE.match(message):
                self.state.retry_notices += 1
            elif message:
                self.state.last_error = message
        return [Raw(source="codex", data=dict(record))]

    def _item(
        self, item: Mapping[str, Any], *, done: bool, record: Mapping[str, Any]
    ) -> list[TurnEvent]:
        kind = item.get("type")
        item_id = str(item.get("id", ""))
        if kind == "agent_message":
            text = str(item.get("text") or "")
            before = self.state.snapshots.get(item_id, "")
            delta = self._diff(item_id, text)
            if done:
                self.state.final_message = text
            if not delta:
                return []
            if not before:  # the first text of a new message
                self.state.messages += 1
                if self.state.messages > 1:
                    delta = "\n\n" + delta  # keep it apart from the message before
            return [TextDelta(text=delta)]
        if kind == "reasoning":
            delta = self._diff(item_id, str(item.get("text") or ""))
            return [ReasoningDelta(text=delta)] if delta else []
        if kind == "mcp_tool_call":
            name = f"mcp__{item.get('server', '')}__{item.get('tool', '')}"
            arguments = item.get("arguments")
            events = self._announce(item_id, name, arguments)
            if done:
                error = item.get("error")
                failed = item.get("status") == "failed" or bool(error)
                if isinstance(error, Mapping) and error.get("message"):
                    output = str(error["message"])
                else:
                    output = _mcp_output(item.get("result"))
                events.append(
                    ToolResult(
                        call_id=item_id,
                        name=name,
                        output=output,
                        is_error=failed,
                        executed_by="backend",
                    )
                )
            return events
        if kind == "command_execution":
            events = self._announce(item_id, "shell", {"command": item.get("command", "")})
            if done:
                exit_code = item.get("exit_code")
                failed = item.get("status") in ("failed", "declined") or (
                    isinstance(exit_code, int) and exit_code != 0
                )
                events.append(
                    ToolResult(
                        call_id=item_id,
                        name="shell",
                        output=str(item.get("aggregated_output") or ""),
                        is_error=failed,
                        executed_by="backend",
                    )
                )
            return events
        if kind == "web_search":
            events = self._announce(item_id, "web_search", {"query": item.get("query", "")})
            if done:
                events.append(ToolResult(call_id=item_id, name="web_search", executed_by="backend"))
            return events
        if kind == "file_change" and done and item.get("status") == "completed":
            changes = item.get("changes")
            events = [
                FileChange(path=str(change.get("path", "")), change=_change_kind(change))
                for change in (changes if isinstance(changes, list) else [])
                if isinstance(change, Mapping)
            ]
            if events:
                return events
        if kind in ("command_execution", "mcp_tool_call") and not done:
            return []
        return [Raw(source="codex", data=dict(record))]

    def _diff(self, item_id: str, text: str) -> str:
        """The part of a snapshot not sent yet. A snapshot that rewrites what was sent
        (not an extension of it) is sent whole: nothing the CLI said is lost."""
        before = self.state.snapshots.get(item_id, "")
        self.state.snapshots[item_id] = text
        if text.startswith(before):
            return text[len(before) :]
        return text

    def _announce(self, item_id: str, name: str, arguments: Any) -> list[TurnEvent]:
        if item_id in self.state.announced:
            return []
        self.state.announced.add(item_id)
        parsed = dict(arguments) if isinstance(arguments, Mapping) else {}
        return [
            ToolCallStarted(call_id=item_id, name=name),
            ToolCallFinished(
                call_id=item_id,
                name=name,
                arguments=parsed,
                raw_arguments=orjson.dumps(arguments).decode(),
            ),
        ]

    def _completed(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        self.state.completed = dict(record)
        raw = record.get("usage")
        total = _usage(raw) if isinstance(raw, Mapping) else Usage()
        turn = _subtract(total, self.usage_before) if self.usage_before else total
        self.state.usage = turn
        return [turn, StepFinished(finish_reason="completed", usage=turn)]

    # -- outcome -------------------------------------------------------------------------

    def outcome(self, exit_code: int | None, stderr: str = "") -> dict[str, Any]:
        """The ``turn.completed`` record of a successful run, or raise the run's typed error.

        Success needs every signal: ``turn.completed``, no ``turn.failed``, exit code 0.
        """
        code = -1 if exit_code is None else exit_code
        completed = self.state.completed
        if completed is not None and self.state.failure is None and code == 0:
            return completed
        message = self.state.failure or self.state.last_error
        if message:
            raise self.classify(message, code)
        hint = _stderr_hint(stderr)
        if completed is not None:
            raise UnknownCodexError(
                self.node_id,
                exit_code=code,
                raw_message=f"codex exited with code {exit_code} after turn.completed{hint}",
            )
        if hint:
            classified = self._classify_text(hint, code)
            if classified is not None:
                raise classified
        raise UnknownCodexError(
            self.node_id,
            exit_code=code,
            raw_message=f"codex exited with code {exit_code} without turn.completed{hint}",
        )

    def classify(self, message: str, exit_code: int = -1) -> ChiaError:
        """The typed error for a ``turn.failed`` / ``error`` message."""
        classified = self._classify_text(message, exit_code)
        if classified is not None:
            return classified
        return UnknownCodexError(self.node_id, exit_code=exit_code, raw_message=message)

    def _classify_text(self, message: str, code: int) -> ChiaError | None:
        node = self.node_id
        # 1. the CLI's own canonical messages
        if _MAX_OUTPUT.search(message):
            error = MaxOutputTokensError(node, exit_code=code, raw_message=message)
            # the shared field, beyond the reference's signature: what arrived before the cut
            error._init(**{**error.fields(), "partial_text": self.state.final_message})
            return error
        if _CONTENT_FILTER.search(message):
            return errors.ContentBlockedError(node, "content_filter", message)
        if _CONTEXT.search(message):
            return ContextLengthExceededError(node, exit_code=code, raw_message=message)
        if _MCP_STARTUP.search(message) or _SETUP.search(message):
            # a tool server that cannot start, a bad config value, an unknown thread:
            # trying again changes nothing
            return InvalidRequestError(node, exit_code=code, raw_message=message)
        if _USAGE_LIMIT.search(message):
            return self._rate_limit(message, code)
        if _BILLING.search(message):
            return BillingError(node, exit_code=code, raw_message=message)
        # 2. the HTTP status it quotes
        status_match = _STATUS.search(message)
        if status_match:
            status = int(status_match.group(1))
            if status in (401, 403):
                return AuthenticationError(node, exit_code=code, raw_message=message)
            if status == 402:
                return BillingError(node, exit_code=code, raw_message=message)
            if status == 429:
                return self._rate_limit(message, code)
            if status == 413:
                return ContextLengthExceededError(node, exit_code=code, raw_message=message)
            if status >= 500 or status == 408:
                return ServerError(node, exit_code=code, raw_message=message)
            if 400 <= status < 500:
                return InvalidRequestError(node, exit_code=code, raw_message=message)
        # 3. words
        if _RATE.search(message):
            return self._rate_limit(message, code)
        if _AUTH.search(message):
            return AuthenticationError(node, exit_code=code, raw_message=message)
        if _SERVER.search(message):
            return ServerError(node, exit_code=code, raw_message=message)
        if _INVALID.search(message):
            return InvalidRequestError(node, exit_code=code, raw_message=message)
        return None

    def _rate_limit(self, message: str, code: int) -> RateLimitError:
        # Codex prints clock times in its machine's local zone ("try again at 9:17 PM",
        # "try again at Nov 27th, 2026 7:18 PM"); a bare 429 carries no reset at all, and
        # None leaves the wait to our backoff.
        reset = parse_rate_limit_reset(message, self._now(), default_zone=self.local_zone)
        return RateLimitError(self.node_id, reset, raw_message=message, exit_code=code)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _usage(raw: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        cache_read_tokens=_int(raw.get("cached_input_tokens")),
        cache_write_tokens=_int(raw.get("cache_write_input_tokens")),
        reasoning_tokens=_int(raw.get("reasoning_output_tokens")),
    )


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def _subtract(total: Usage, before: Usage) -> Usage:
    """This turn's share of a cumulative figure. A total below the baseline means the
    counters restarted (a thread the CLI no longer had history for): the total is the turn."""
    if any(getattr(total, f) < getattr(before, f) for f in _USAGE_FIELDS):
        return total
    return Usage(**{f: getattr(total, f) - getattr(before, f) for f in _USAGE_FIELDS})


def _mcp_output(result: Any) -> str:
    if not isinstance(result, Mapping):
        return "" if result is None else orjson.dumps(result).decode()
    content = result.get("content")
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                parts.append(orjson.dumps(block).decode())
        return "".join(parts)
    structured = result.get("structured_content")
    return orjson.dumps(structured).decode() if structured is not None else ""


def _change_kind(change: Mapping[str, Any]) -> Any:
    kind = change.get("kind")
    if isinstance(kind, Mapping):  # {"type": "update", "move_path": ...}
        kind = kind.get("type")
    return kind if kind in ("add", "update", "delete", "rename") else "update"


def _stderr_hint(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not _STDERR_NOISE.match(line)]
    text = "\n".join(lines).strip()
    return f"; stderr: {text[-2000:]}" if text else ""


# -- per-run configuration -------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _toml_value(value: object) -> str:
    """``value`` as a TOML value for ``codex -c key=<value>``: strings, numbers, booleans,
    lists and mappings (inline tables). Raises ``TypeError``/``ValueError`` for anything
    else, so a bad override fails before a process starts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a Codex config value must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot pass a {type(value).__name__} as a Codex config value")


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"Codex config keys must be non-empty strings, got {key!r}")
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _check_config_path(key: object) -> str:
    if not isinstance(key, str) or not all(_BARE_KEY.match(p) for p in key.split(".")):
        raise ValueError(
            f"config_overrides keys must be dotted paths of [A-Za-z0-9_-] names, got {key!r}"
        )
    return key


#: the provider ``base_url=`` defines for a run
PROVIDER_ID = "chia"

_SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
_APPROVALS = ("untrusted", "on-failure", "on-request", "never")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_STATE_ROOTS = ("sessions", "archived_sessions")


def _state_path(codex_home: Path, relative: str) -> Path:
    """Where a ``session_state`` entry goes under ``codex_home``; refuses anything but a
    rollout file below ``sessions/`` (the state may come from another machine)."""
    rel = PurePosixPath(relative)
    if (
        rel.is_absolute()
        or ".." in rel.parts
        or len(rel.parts) < 2
        or rel.parts[0] not in _STATE_ROOTS
        or not rel.name.startswith("rollout-")
        or rel.suffix != ".jsonl"
    ):
        raise ValueError(f"session_state path {relative!r} is not a Codex rollout file")
    return codex_home.joinpath(*rel.parts)


def _rollout_files(codex_home: Path, session_id: str) -> list[Path]:
    if not _SESSION_ID.match(session_id):
        return []
    found: list[Path] = []
    for root in _STATE_ROOTS:
        base = codex_home / root
        if base.is_dir():
            found.extend(base.rglob(f"rollout-*-{session_id}.jsonl"))
    return sorted(found)


def _rollout_usage(data: bytes) -> Usage | None:
    """The thread's cumulative usage recorded in a rollout file (its last ``token_count``
    event), or None when it has none."""
    for line in reversed(data.splitlines()):
        if b'"token_count"' not in line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        payload = record.get("payload") if isinstance(record, dict) else None
        info = payload.get("info") if isinstance(payload, dict) else None
        total = info.get("total_token_usage") if isinstance(info, dict) else None
        if isinstance(total, dict):
            return _usage(total)
    return None


class _Parser(CodexStreamParser):
    def is_terminal(self, record: Mapping[str, Any]) -> bool:
        return record.get("type") in ("turn.completed", "turn.failed")


class CodexLLM(CLIBackend):
    """The Codex CLI as a backend: ``codex exec --json``, prompt on stdin.

    Parameters are the reference's. ``codex_bin`` is the executable (a name looked up on
    ``PATH``, or a path); ``work_dir`` the directory the agent works in (default: this
    process's). ``dangerously_bypass_approvals_and_sandbox=True`` (the reference's default)
    passes that flag, which makes ``sandbox`` and ``approval_policy`` moot; otherwise they
    become ``--sandbox <sandbox>`` and ``-c approval_policy=...``. ``skip_git_repo_check``,
    ``ephemeral`` and ``ignore_rules`` are the CLI flags of those names; ``profile`` is
    ``--profile``; ``reasoning_effort`` and ``auto_compact_token_limit`` set
    ``model_reasoning_effort`` and ``model_auto_compact_token_limit``. The system message is
    put before the user message on a new thread (``exec`` has no system-prompt flag).

    Keyword-only, beyond the reference:

    * ``env`` adds or overrides child variables (``HOME``, ``CODEX_HOME``, ``TZ``...).
      Credentials reach the CLI only from here: an ``OPENAI_API_KEY`` or ``CODEX_API_KEY`` in
      this process's environment is not inherited. (Codex's built-in ``openai`` provider
      reads ``CODEX_API_KEY``, or the login in ``$CODEX_HOME/auth.json``.)
    * ``base_url`` runs against that Responses-API endpoint (``https://host/v1``) through a
      per-run provider (``model_providers.chia``, ``wire_api="responses"``), authenticated
      with ``env["CODEX_API_KEY"]`` or ``env["OPENAI_API_KEY"]`` when given.
    * ``cli_retries`` (default 1) caps that provider's own request and stream retries: a
      quick retry inside the CLI survives a blip late in a long run (which our retry layer,
      never retrying after content, cannot), while slow retry storms (37 requests over 25 s
      on a 503 with the CLI's defaults) are left to our policy. The built-in ``openai``
      provider cannot be reconfigured per run; its retries stay the CLI's.
    * ``config_overrides`` adds any ``-c key=value`` (values as Python data, e.g.
      ``{"model_verbosity": "low"}``); they win over the ones this backend sets.
    * ``idle_timeout_seconds`` ends a run whose CLI prints nothing for that long.

    With ``resume_session=True`` each call continues the previous call's thread with
    ``codex exec resume <id>``, also on another machine: the rollout file travels in
    :attr:`CodexQueryResult.session_state` (and in this object, which pickles) and is
    restored under ``$CODEX_HOME/sessions/`` before the resume, in any working directory.
    """

    backend_name: ClassVar[str] = "codex"
    #: the Ray resource a worker must advertise to run Codex calls
    ray_resource: str = "codex"
    result_class: ClassVar[type[QueryResult]] = CodexQueryResult
    cli_name: ClassVar[str] = "codex"
    install_command: ClassVar[str] = "npm install -g @openai/codex"
    raw_source: ClassVar[str] = "codex"
    env_allowlist: ClassVar[tuple[str, ...]] = (
        "CODEX_HOME",
        "CODEX_SQLITE_HOME",
        "OPENAI_BASE_URL",
        "OPENAI_ORGANIZATION",
        "OPENAI_PROJECT",
        "RUST_LOG",
        "NO_COLOR",
    )

    def __init__(
        self,
        model: str | None = None,
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "codex",
        logging_level: int = 10,
        log_dir: str | None = None,
        codex_bin: str = "codex",
        work_dir: str | None = None,
        extra_cli_args: list[str] | None = None,
        sandbox: str = "workspace-write",
        approval_policy: str = "never",
        dangerously_bypass_approvals_and_sandbox: bool = True,
        skip_git_repo_check: bool = True,
        ephemeral: bool = False,
        ignore_rules: bool = False,
        profile: str | None = None,
        reasoning_effort: str | None = None,
        resume_session: bool = False,
        auto_compact_token_limit: int | None = 200000,
        *,
        env: Mapping[str, str] | None = None,
        base_url: str | None = None,
        cli_retries: int = 1,
        config_overrides: Mapping[str, object] | None = None,
        idle_timeout_seconds: float | None = 300.0,
        log_all: bool = False,
    ) -> None:
        if not isinstance(codex_bin, str) or not codex_bin:
            raise TypeError("codex_bin must be a non-empty str")
        if sandbox not in _SANDBOXES:
            raise ValueError(f"sandbox must be one of {', '.join(_SANDBOXES)}; got {sandbox!r}")
        if approval_policy not in _APPROVALS:
            raise ValueError(
                f"approval_policy must be one of {', '.join(_APPROVALS)}; got {approval_policy!r}"
            )
        check_flags(
            dangerously_bypass_approvals_and_sandbox=dangerously_bypass_approvals_and_sandbox,
            skip_git_repo_check=skip_git_repo_check,
            ephemeral=ephemeral,
            ignore_rules=ignore_rules,
            resume_session=resume_session,
        )
        if profile is not None and (not isinstance(profile, str) or not profile):
            raise TypeError("profile must be a non-empty str or None")
        if reasoning_effort is not None and reasoning_effort not in _EFFORTS:
            raise ValueError(
                f"reasoning_effort must be one of {', '.join(_EFFORTS)} or None, got "
                f"{reasoning_effort!r} (other values: config_overrides="
                '{"model_reasoning_effort": ...})'
            )
        if auto_compact_token_limit is not None and (
            isinstance(auto_compact_token_limit, bool)
            or not isinstance(auto_compact_token_limit, int)
            or auto_compact_token_limit <= 0
        ):
            raise ValueError("auto_compact_token_limit must be a positive int or None")
        if resume_session and ephemeral:
            raise ValueError("resume_session needs the thread on disk; ephemeral=True keeps none")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if isinstance(cli_retries, bool) or not isinstance(cli_retries, int) or cli_retries < 0:
            raise ValueError(f"cli_retries must be an int >= 0, got {cli_retries!r}")
        overrides: dict[str, object] = {}
        if config_overrides is not None:
            if not isinstance(config_overrides, Mapping):
                raise TypeError("config_overrides must be a mapping of dotted keys to values")
            for key, value in config_overrides.items():
                _toml_value(value)  # fails now, not at the first call
                overrides[_check_config_path(key)] = value
        super().__init__(
            model=model or "",
            system_message=system_message,
            timeout_seconds=timeout_seconds,
            retries=retries,
            logging_name=logging_name,
            logging_level=logging_level,
            log_dir=log_dir,
            cli_path=codex_bin,
            env=env,
            extra_cli_args=extra_cli_args,
            work_dir=work_dir,
            idle_timeout_seconds=idle_timeout_seconds,
            log_all=log_all,
        )
        self.codex_bin = codex_bin
        self.sandbox = sandbox
        self.approval_policy = approval_policy
        self.dangerously_bypass_approvals_and_sandbox = dangerously_bypass_approvals_and_sandbox
        self.skip_git_repo_check = skip_git_repo_check
        self.ephemeral = ephemeral
        self.ignore_rules = ignore_rules
        self.profile = profile
        self.reasoning_effort = reasoning_effort
        self.resume_session = resume_session
        self.auto_compact_token_limit = auto_compact_token_limit
        self.base_url = base_url
        self.cli_retries = cli_retries
        self.config_overrides = overrides
        #: the thread to resume, and its rollout file(s) relative to CODEX_HOME
        self.session_id: str | None = None
        self.session_state: dict[str, bytes] | None = None
        self._usage_before: Usage | None = None

    def __repr__(self) -> str:
        return (
            f"CodexLLM(model={self.model or None!r}, logging_name={self.logging_name!r}, "
            f"codex_bin={self.codex_bin!r}, work_dir={self.work_dir!r})"
        )

    # -- sessions ----------------------------------------------------------------------------

    def restore_session(self, result: CodexQueryResult) -> None:
        """Continue the thread of ``result`` (from any machine) on the next call."""
        if not isinstance(result, CodexQueryResult):
            raise TypeError(f"expected a CodexQueryResult, got {type(result).__name__}")
        session_id = result.session_id or (result.session.session_id if result.session else None)
        if not session_id:
            raise ValueError("the result carries no session to resume")
        if self.ephemeral:
            raise ValueError("an ephemeral=True backend cannot resume a thread")
        state = dict(result.session_state or {})
        for relative in state:
            _state_path(Path("/"), relative)  # refuse anything but rollout files now
        self.resume_session = True
        self.session_id = session_id
        self.session_state = state or None

    def _cwd(self) -> str:
        return os.path.realpath(self.work_dir or os.getcwd())

    def _child_env_value(self, name: str) -> str | None:
        if name in self.env:
            return self.env[name]
        return os.environ.get(name)

    def _codex_home(self) -> Path:
        configured = self._child_env_value("CODEX_HOME")
        if configured:
            return Path(configured).expanduser()
        return Path(self._child_env_value("HOME") or "~").expanduser() / ".codex"

    def _local_zone(self) -> tzinfo | None:
        """The zone the CLI prints clock times in: its ``TZ``, else this machine's."""
        name = self._child_env_value("TZ")
        if name:
            try:
                return ZoneInfo(name.removeprefix(":"))
            except (ZoneInfoNotFoundError, ValueError):
                pass
        return datetime.now().astimezone().tzinfo

    def _restore_state(self, codex_home: Path) -> None:
        for relative, data in (self.session_state or {}).items():
            path = _state_path(codex_home, relative)
            if path.exists() and path.stat().st_size >= len(data):
                continue  # this machine already has it (or a newer copy)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(path.name + ".chia-tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

    def _capture_state(self, session_id: str) -> tuple[dict[str, bytes], tuple[str, ...]]:
        codex_home = self._codex_home()
        state: dict[str, bytes] = {}
        paths: list[str] = []
        for path in _rollout_files(codex_home, session_id):
            try:
                state[path.relative_to(codex_home).as_posix()] = path.read_bytes()
            except OSError:
                continue
            paths.append(str(path))
        return state, tuple(paths)

    # -- CLIBackend hooks ----------------------------------------------------------------------

    async def _invocation(self, attempt: Attempt, scratch: Path) -> Invocation:
        codex_home = self._codex_home()
        # codex refuses a CODEX_HOME that does not exist; a fresh worker starts without one
        codex_home.mkdir(parents=True, exist_ok=True, mode=0o700)
        resuming = self.resume_session and self.session_id is not None
        self._usage_before = None
        if resuming:
            assert self.session_id is not None
            self._restore_state(codex_home)
            rollouts = _rollout_files(codex_home, self.session_id)
            if rollouts:
                latest = max(rollouts, key=lambda p: p.stat().st_mtime)
                self._usage_before = _rollout_usage(latest.read_bytes())

        argv = [self._executable(), "exec", "--json"]
        if self.skip_git_repo_check:
            argv.append("--skip-git-repo-check")
        if self.ephemeral:
            argv.append("--ephemeral")
        if self.ignore_rules:
            argv.append("--ignore-rules")
        config: dict[str, object] = {}
        if self.dangerously_bypass_approvals_and_sandbox:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            argv += ["--sandbox", self.sandbox]
            config["approval_policy"] = self.approval_policy
        if self.profile:
            argv += ["--profile", self.profile]
        if self.model:
            argv += ["--model", self.model]
        if self.reasoning_effort:
            config["model_reasoning_effort"] = self.reasoning_effort
        if self.auto_compact_token_limit is not None:
            config["model_auto_compact_token_limit"] = self.auto_compact_token_limit
        env: dict[str, str] = {"CODEX_HOME": str(codex_home)}
        if self.base_url:
            config.update(self._provider_config())
        if attempt.tools:
            inherited = build_child_env(allow=self.env_allowlist, explicit=self.env)
            for index, tool in enumerate(attempt.tools):
                config.update(_mcp_config(tool, index, env, inherited, self.logging_name))
        config.update(self.config_overrides)
        for key, value in config.items():
            argv += ["-c", f"{key}={_toml_value(value)}"]
        argv += self.extra_cli_args
        if resuming:
            assert self.session_id is not None
            argv += ["resume", self.session_id]
        argv.append("-")  # the prompt comes on stdin
        prompt = attempt.message
        if self.system_message and not resuming:
            prompt = f"{self.system_message}\n\n{prompt}"
        return Invocation(argv=argv, env=env, stdin=prompt.encode(), cwd=self._cwd())

    def _provider_config(self) -> dict[str, object]:
        prefix = f"model_providers.{PROVIDER_ID}"
        config: dict[str, object] = {
            "model_provider": PROVIDER_ID,
            f"{prefix}.name": PROVIDER_ID,
            f"{prefix}.base_url": self.base_url,
            f"{prefix}.wire_api": "responses",
            f"{prefix}.request_max_retries": self.cli_retries,
            f"{prefix}.stream_max_retries": self.cli_retries,
        }
        for key in ("CODEX_API_KEY", "OPENAI_API_KEY"):
            if self.env.get(key):
                config[f"{prefix}.env_key"] = key
                break
        return config

    def _new_parser(self) -> _Parser:
        return _Parser(
            self.logging_name,
            model=self.model or None,
            cwd=self._cwd(),
            usage_before=self._usage_before,
            local_zone=self._local_zone(),
        )

    async def _finish(
        self, attempt: Attempt, parser: RecordParser, outcome: ProcessOutcome, stdout: str
    ) -> QueryResult:
        assert isinstance(parser, _Parser)
        # A CLI that lingered after its last record was stopped by us: not its failure.
        exit_code = 0 if outcome.killed_after_terminal else outcome.exit_code
        session_id = parser.state.session_id
        state: dict[str, bytes] | None = None
        paths: tuple[str, ...] = ()
        if self.resume_session and session_id:
            # also after a failure: the thread so far can still be continued
            self.session_id = session_id
            captured, paths = self._capture_state(session_id)
            if captured:
                state = self.session_state = captured
        parser.outcome(exit_code, outcome.stderr_tail)
        return attempt.result(
            result=parser.state.final_message,
            returncode=exit_code if exit_code is not None else -1,
            stderr=outcome.stderr_tail,
            stream_result=stdout,
            success=True,
            session_id=session_id,
            session_state=state,
            session_state_paths=paths,
        )


def _mcp_config(
    tool: ChiaTool, index: int, env: dict[str, str], inherited: Mapping[str, str], node_id: str
) -> dict[str, object]:
    """``-c`` entries for one tool. Header values and server environment go into ``env``
    (the codex process's environment), never into argv."""
    prefix = f"mcp_servers.{tool.name}"
    config: dict[str, object] = {}
    if tool.transport == "http":
        config[f"{prefix}.url"] = tool.url
        if tool.headers:
            names: dict[str, str] = {}
            for number, (header, value) in enumerate(tool.headers.items()):
                var = f"CHIA_MCP_{index}_HEADER_{number}"
                env[var] = value
                names[header] = var
                if len(value) >= 16:
                    register_secret(value)
            config[f"{prefix}.env_http_headers"] = names
    elif tool.transport == "stdio":
        config[f"{prefix}.command"] = tool.command[0]
        config[f"{prefix}.args"] = list(tool.command[1:])
        if tool.env:
            for name, value in tool.env.items():
                current = env.get(name, inherited.get(name))
                if current is not None and current != value:
                    raise errors.InvalidRequestError(
                        node_id,
                        f"tool {tool.name!r} sets {name} for its MCP server, but the codex "
                        f"process already has a different {name} (Codex forwards a server's "
                        "variables from its own environment)",
                    )
                env[name] = value
                if len(value) >= 16:
                    register_secret(value)
            config[f"{prefix}.env_vars"] = list(tool.env)
        if tool.cwd:
            config[f"{prefix}.cwd"] = tool.cwd
    else:
        # CLIBackend serves in-process servers on loopback before a run gets here
        raise errors.InvalidRequestError(
            node_id, f"tool {tool.name!r}: the codex CLI reaches MCP servers over HTTP or stdio"
        )
    # `exec` cannot ask for approval and refuses a call that needs it; a tool the caller
    # passed is a tool the caller means to be used. `required`: the turn waits for the
    # server to start (without it a slow stdio server misses the first request) and a
    # server that cannot start fails the run instead of silently leaving its tools out.
    config[f"{prefix}.default_tools_approval_mode"] = "approve"
    config[f"{prefix}.required"] = True
    config[f"{prefix}.tool_timeout_sec"] = float(tool.tool_timeout)
    if tool.allowed_tools is not None:
        config[f"{prefix}.enabled_tools"] = list(tool.allowed_tools)
    return config
