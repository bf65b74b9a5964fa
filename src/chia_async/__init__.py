"""chia_async: an async-first agent runtime.

One interface drives coding-agent CLIs (Claude Code, Codex, OpenCode, Gemini CLI,
Antigravity) and provider APIs (Anthropic, Bedrock, Vertex Gemini, OpenAI-compatible
endpoints)::

    async for event in llm.stream("fix the failing test", tools=[bash]):
        print(event.kind)
    result = await llm.aprompt("fix the failing test", tools=[bash])
    result = llm.prompt("fix the failing test", tools=[bash])

Public names are imported lazily: ``import chia_async`` loads no provider SDK, no ``mcp``
and no ``ray`` (nor anyio); each is loaded when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chia_async._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "LLMCallBase": "chia_async.base",
    "EventStream": "chia_async.base",
    "Attempt": "chia_async.base",
    "ChiaTool": "chia_async.tools",
    "QueryResult": "chia_async.results",
    "ClaudeCodeQueryResult": "chia_async.results",
    "CodexQueryResult": "chia_async.results",
    "SessionRef": "chia_async.results",
    "Usage": "chia_async.results",
    "RetryPolicy": "chia_async.retry",
    "parse_rate_limit_reset": "chia_async.ratelimit",
    "parse_rate_limit_event": "chia_async.ratelimit",
    "TurnEvent": "chia_async.events",
    "SessionStarted": "chia_async.events",
    "TextDelta": "chia_async.events",
    "ReasoningDelta": "chia_async.events",
    "ToolCallStarted": "chia_async.events",
    "ToolCallFinished": "chia_async.events",
    "ToolResult": "chia_async.events",
    "FileChange": "chia_async.events",
    "RateLimitStatus": "chia_async.events",
    "Retrying": "chia_async.events",
    "StepFinished": "chia_async.events",
    "Raw": "chia_async.events",
    "Completed": "chia_async.events",
    "ChiaError": "chia_async.errors",
}

__all__ = [
    "Attempt",
    "ChiaError",
    "ChiaTool",
    "ClaudeCodeQueryResult",
    "CodexQueryResult",
    "Completed",
    "EventStream",
    "FileChange",
    "LLMCallBase",
    "QueryResult",
    "RateLimitStatus",
    "Raw",
    "ReasoningDelta",
    "RetryPolicy",
    "Retrying",
    "SessionRef",
    "SessionStarted",
    "StepFinished",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolResult",
    "TurnEvent",
    "Usage",
    "__version__",
    "parse_rate_limit_event",
    "parse_rate_limit_reset",
]

if TYPE_CHECKING:
    from chia_async.base import Attempt, EventStream, LLMCallBase
    from chia_async.errors import ChiaError
    from chia_async.events import (
        Completed,
        FileChange,
        RateLimitStatus,
        Raw,
        ReasoningDelta,
        Retrying,
        SessionStarted,
        StepFinished,
        TextDelta,
        ToolCallFinished,
        ToolCallStarted,
        ToolResult,
        TurnEvent,
    )
    from chia_async.ratelimit import parse_rate_limit_event, parse_rate_limit_reset
    from chia_async.results import (
        ClaudeCodeQueryResult,
        CodexQueryResult,
        QueryResult,
        SessionRef,
        Usage,
    )
    from chia_async.retry import RetryPolicy
    from chia_async.tools import ChiaTool


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
