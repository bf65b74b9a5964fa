"""What a call returns: :class:`QueryResult` and its backend subclasses, :class:`Usage`,
:class:`SessionRef`.

All are frozen, slotted dataclasses: picklable, and JSON round-trippable with
``to_dict()`` / ``from_dict()``. ``QueryResult`` keeps the reference's positional signature
``QueryResult(result, returncode, stderr, stream_result, success=False)``; everything added
since is keyword-only so the backend subclasses can keep theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chia_async._codec import Tagged, tagged_from_dict
from chia_async._event_base import TurnEvent
from chia_async.errors import ChiaError

__all__ = [
    "ClaudeCodeQueryResult",
    "CodexQueryResult",
    "QueryResult",
    "SessionRef",
    "Usage",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage(TurnEvent):
    """Token counts (and cost when the backend reports one).

    Also a :data:`~chia_async.events.TurnEvent`: backends emit it per model call, and
    :attr:`QueryResult.usage` is the sum over the call. ``Usage() + Usage()`` adds fields.
    """

    kind: Literal["usage"] = field(default="usage", init=False)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        cost = None
        if self.cost_usd is not None or other.cost_usd is not None:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost_usd=cost,
        )

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRef(Tagged):
    """Which conversation a call belongs to, so a later call can resume it."""

    kind: Literal["session"] = field(default="session", init=False)
    backend: str
    session_id: str
    cwd: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class QueryResult(Tagged):
    """The outcome of one call.

    ``success`` is decided by the backend from every signal it has (exit code, terminal
    record, is_error, subtype, stop reason), never from the exit code alone. When every
    attempt of a retryable failure failed, ``aprompt()``/``prompt()`` return a result with
    ``success=False``, ``result=""``, ``returncode=-1`` and the last error in ``error``.
    """

    result: str
    returncode: int
    stderr: str
    stream_result: str
    success: bool = False
    kind: str = field(default="query_result", init=False, repr=False)
    usage: Usage = field(default_factory=Usage, kw_only=True)
    session: SessionRef | None = field(default=None, kw_only=True)
    events: int = field(default=0, kw_only=True)
    stop_reason: str | None = field(default=None, kw_only=True)
    duration_s: float = field(default=0.0, kw_only=True)
    error: ChiaError | None = field(default=None, kw_only=True, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryResult:
        """Rebuild a result (of the right subclass) from :meth:`to_dict` output."""
        result: QueryResult = tagged_from_dict(QueryResult, data)
        if not isinstance(result, cls):
            raise ValueError(f"expected {cls.__name__}, got {type(result).__name__}")
        return result

    def __str__(self) -> str:
        return self.result


@dataclass(frozen=True, slots=True)
class ClaudeCodeQueryResult(QueryResult):
    """A Claude Code result that carries the session transcript for resuming elsewhere.

    ``session_transcript`` holds the bytes of ``<session_id>.jsonl`` from the worker that ran
    the call; a ``resume_session=True`` backend restores it before ``--resume`` on any worker.
    """

    session_transcript: bytes | None = None
    session_transcript_path: str | None = None
    kind: str = field(default="claude_code_query_result", init=False, repr=False)


@dataclass(frozen=True, slots=True)
class CodexQueryResult(QueryResult):
    """A Codex result that carries the thread's state files for resuming elsewhere.

    ``session_state`` maps paths relative to ``CODEX_HOME`` to file contents (the rollout
    file); they are restored into a fresh ``CODEX_HOME`` before ``codex exec resume``.
    """

    session_id: str | None = None
    session_state: dict[str, bytes] | None = None
    session_state_paths: tuple[str, ...] = ()
    kind: str = field(default="codex_query_result", init=False, repr=False)
