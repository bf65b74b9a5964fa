"""The events a turn produces, as ``async for event in llm.stream(...)`` yields them.

Every event is a frozen, slotted, keyword-only dataclass with a ``kind`` discriminator;
every event pickles and round-trips through JSON (``event.to_dict()`` /
``TurnEvent.from_dict(data)``). A turn's events, in the order they can occur::

    SessionStarted      the backend knows the session id (first, when there is one)
    RateLimitStatus     a rate-limit notice from the provider or CLI (informational)
    Retrying            an attempt failed before any content; waiting ``delay`` s to retry
    ReasoningDelta      a piece of the model's reasoning
    TextDelta           a piece of the answer
    ToolCallStarted     the model began a tool call
    ToolCallFinished    the model's tool call is complete, with parsed arguments
    ToolResult          a tool's output (executed by the host loop or by the CLI itself)
    FileChange          the agent changed a file
    Usage               tokens (and cost) of one model call
    StepFinished        one model call ended, with its finish reason
    Raw                 a backend record chia_async does not map; never dropped
    Completed           the last event: carries the QueryResult

A failed turn raises its typed :class:`~chia_async.errors.ChiaError` from the iterator after
the events it already produced; a stream never ends without ``Completed`` or an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from chia_async._event_base import TurnEvent
from chia_async.errors import ChiaError
from chia_async.results import QueryResult, Usage

__all__ = [
    "CONTENT_EVENTS",
    "AnyEvent",
    "Completed",
    "FileChange",
    "Raw",
    "RateLimitStatus",
    "ReasoningDelta",
    "Retrying",
    "SessionStarted",
    "StepFinished",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolResult",
    "TurnEvent",
    "Usage",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(TurnEvent):
    """The backend knows which session this turn belongs to."""

    kind: Literal["session_started"] = field(default="session_started", init=False)
    session_id: str
    backend: str = ""
    model: str | None = None
    cwd: str | None = None
    tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta(TurnEvent):
    """A piece of the answer text."""

    kind: Literal["text_delta"] = field(default="text_delta", init=False)
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningDelta(TurnEvent):
    """A piece of the model's reasoning (thinking) text."""

    kind: Literal["reasoning_delta"] = field(default="reasoning_delta", init=False)
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted(TurnEvent):
    """The model began a tool call (its arguments may still be streaming)."""

    kind: Literal["tool_call_started"] = field(default="tool_call_started", init=False)
    call_id: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallFinished(TurnEvent):
    """The model's tool call is complete. ``arguments`` are parsed; ``raw_arguments`` as sent."""

    kind: Literal["tool_call_finished"] = field(default="tool_call_finished", init=False)
    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult(TurnEvent):
    """A tool's output. ``executed_by`` is ``"host"`` for chia_async's own tool loop and
    ``"backend"`` when a CLI ran the tool itself."""

    kind: Literal["tool_result"] = field(default="tool_result", init=False)
    call_id: str
    name: str = ""
    output: str = ""
    is_error: bool = False
    executed_by: Literal["host", "backend"] = "host"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChange(TurnEvent):
    """The agent created, changed or deleted a file."""

    kind: Literal["file_change"] = field(default="file_change", init=False)
    path: str
    change: Literal["add", "update", "delete", "rename"] = "update"
    diff: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitStatus(TurnEvent):
    """A rate-limit notice. ``status`` is ``"allowed"``, ``"allowed_warning"`` or
    ``"rejected"``; only a rejection is a failure, and that also raises RateLimitError."""

    kind: Literal["rate_limit_status"] = field(default="rate_limit_status", init=False)
    status: str
    reset_time: datetime | None = None
    limit_type: str | None = None
    utilization: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Retrying(TurnEvent):
    """Attempt ``attempt`` failed with ``error``; the next starts after ``delay`` seconds."""

    kind: Literal["retrying"] = field(default="retrying", init=False)
    attempt: int
    delay: float
    error: ChiaError


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinished(TurnEvent):
    """One model call ended. ``finish_reason`` is the provider's own word (``end_turn``,
    ``tool_use``, ``stop``, ``length``...); ``usage`` is that call's usage when known."""

    kind: Literal["step_finished"] = field(default="step_finished", init=False)
    finish_reason: str | None = None
    usage: Usage | None = None
    step: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Raw(TurnEvent):
    """A backend record with no mapping (a new CLI record type, a non-JSON line).

    ``source`` names where it came from (``"claude"``, ``"codex:stderr"``...); ``data`` is the
    parsed JSON value, or the text of a line that was not JSON.
    """

    kind: Literal["raw"] = field(default="raw", init=False)
    source: str
    data: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed(TurnEvent):
    """The last event of a successful turn."""

    kind: Literal["completed"] = field(default="completed", init=False)
    result: QueryResult


AnyEvent = (
    SessionStarted
    | TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallFinished
    | ToolResult
    | FileChange
    | Usage
    | RateLimitStatus
    | Retrying
    | StepFinished
    | Raw
    | Completed
)
"""The union of every concrete event, for exhaustive ``match`` statements."""

#: Events that carry the turn's content. Once one has reached the caller, a failure is
#: raised instead of retried: the caller has already acted on part of an answer.
CONTENT_EVENTS: tuple[type[Any], ...] = (
    TextDelta,
    ReasoningDelta,
    ToolCallStarted,
    ToolCallFinished,
    ToolResult,
    FileChange,
)
