"""Claude Code backend (``claude --print``; the Anthropic API with ``backend="api"``).

Errors keep the reference's ``chia.models.claude`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors` (``claude.RateLimitError`` is an
``errors.RateLimitError``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import anyio
import orjson

from chia_async import errors
from chia_async._event_base import TurnEvent
from chia_async.base import Attempt
from chia_async.errors import ChiaError
from chia_async.events import (
    RateLimitStatus,
    Raw,
    ReasoningDelta,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.extras import require
from chia_async.loop.clients import LoopLocal
from chia_async.loop.runner import (
    ProviderAdapter,
    StepResult,
    ToolCallRequest,
    ToolCallResult,
    check_loop_options,
    parse_arguments,
    run_tool_loop,
)
from chia_async.loop.schema import CompiledTools
from chia_async.ratelimit import parse_rate_limit_event, parse_rate_limit_reset, parse_reset_value
from chia_async.redaction import register_secret
from chia_async.results import ClaudeCodeQueryResult, QueryResult, SessionRef, Usage
from chia_async.retry import retry_after_from_headers
from chia_async.subprocess.backend import CLIBackend, Invocation, RecordParser, write_private
from chia_async.subprocess.process import ProcessOutcome
from chia_async.tools import ChiaTool

__all__ = [
    "ClaudeCodeLLM",
    "ClaudeStreamParser",
    "ClaudeStreamState",
    "AuthenticationError",
    "BillingError",
    "ClaudeCodeError",
    "ClaudeCodeQueryResult",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownClaudeError",
    "project_slug",
    "parse_rate_limit_event",
    "parse_rate_limit_reset",
]


class ClaudeCodeError(errors.BackendError):
    """Base for all Claude Code CLI errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, exit_code: int = -1, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, exit_code=exit_code, raw_message=raw_message
        )


class RateLimitError(ClaudeCodeError, errors.RateLimitError):
    """Raised when the Claude CLI response indicates a usage-limit hit."""

    def __init__(
        self, node_id: str, reset_time: datetime, raw_message: str = "", exit_code: int = -1
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, exit_code=exit_code
        )


class AuthenticationError(ClaudeCodeError, errors.AuthenticationError):
    """Raised when the CLI's auth token/API key is invalid or expired."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(ClaudeCodeError, errors.BillingError):
    """Raised when the billing account has payment issues."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(ClaudeCodeError, errors.InvalidRequestError):
    """Raised when the request is malformed (bad prompt, unsupported params, etc.)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(ClaudeCodeError, errors.ServerError):
    """Raised when Anthropic's API returns a server-side error (500/503)."""

    def __init__(
        self,
        node_id: str,
        exit_code: int = -1,
        raw_message: str = "",
        retry_after: int | None = None,
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, retry_after=retry_after
        )


class MaxOutputTokensError(ClaudeCodeError, errors.MaxOutputTokensError):
    """Raised when the LLM's response was truncated by the output token limit."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", partial_text: str = ""
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, partial_text=partial_text
        )


class UnknownClaudeError(ClaudeCodeError, errors.UnknownError):
    """Raised for unclassified CLI errors."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", stderr: str = ""
    ) -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message, stderr=stderr)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


# -- the stream-json protocol ----------------------------------------------------------

#: ``api_error_status`` / synthetic ``error`` kinds whose failure is a context overflow
_CONTEXT_PATTERNS = re.compile(
    r"prompt is too long|context (?:window|length)|too many (?:input )?tokens|"
    r"maximum context|exceeds? the (?:maximum|context)",
    re.IGNORECASE,
)
_MAX_OUTPUT_PATTERN = re.compile(r"exceeded the \d+ output token maximum|max_tokens", re.I)
_AUTH_PATTERNS = re.compile(
    r"invalid api key|authentication|unauthori[sz]ed|oauth token has expired|please run /login|"
    r"not logged in|invalid bearer token|x-api-key",
    re.IGNORECASE,
)
_BILLING_PATTERNS = re.compile(
    r"credit balance is too low|billing|payment|insufficient credit|purchase credits", re.I
)
_RATE_PATTERNS = re.compile(
    r"hit your limit|usage limit|rate limit|rate_limit|request rejected \(429\)|"
    r"too many requests",
    re.IGNORECASE,
)
_SERVER_PATTERNS = re.compile(
    r"overloaded|internal server error|api error: 5\d\d|server-side issue|"
    r"service unavailable|bad gateway|connection error|econnreset|socket hang up|timed out",
    re.IGNORECASE,
)
_SESSION_MISSING = re.compile(r"no conversation found with session id", re.IGNORECASE)


@dataclass
class ClaudeStreamState:
    """What a ``claude --print --output-format stream-json`` run said, as it streamed."""

    session_id: str | None = None
    model: str | None = None
    result: dict[str, Any] | None = None
    last_assistant_text: str = ""
    error_kind: str | None = None  # the synthetic assistant line's top-level "error"
    error_text: str = ""
    rate_limit_reset: datetime | None = None
    retry_delay_s: float | None = None  # the CLI's own last api_retry delay
    partial_blocks: dict[int, str] = field(default_factory=dict)  # index -> block type
    streamed_text: bool = False  # text arrived as deltas (partial messages)


class ClaudeStreamParser:
    """Maps stream-json records to events and classifies the run's outcome.

    Pure: no I/O. ``feed()`` returns the events for one record; ``outcome()`` returns the
    final ``result`` record or raises the typed error, from structured fields first
    (``api_error_status``, the synthetic assistant ``error`` kind, a rejected
    ``rate_limit_event``), then from text (result text, ``errors[]``, stderr).
    """

    def __init__(self, node_id: str, *, now: Callable[[], datetime] | None = None) -> None:
        self.node_id = node_id
        self.state = ClaudeStreamState()
        self._now = now or (lambda: datetime.now(UTC))

    # -- records -> events ---------------------------------------------------------------

    def feed(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        """The events one stdout record stands for (``Raw`` for anything unknown)."""
        kind = record.get("type")
        handler = {
            "system": self._system,
            "stream_event": self._stream_event,
            "assistant": self._assistant,
            "user": self._user,
            "rate_limit_event": self._rate_limit,
            "result": self._result,
        }.get(kind if isinstance(kind, str) else "")
        if handler is None:
            return [Raw(source="claude", data=dict(record))]
        return handler(record)

    def _system(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        subtype = record.get("subtype")
        if subtype == "init":
            self.state.session_id = _str(record.get("session_id")) or self.state.session_id
            self.state.model = _str(record.get("model")) or self.state.model
            tools = record.get("tools")
            return [
                SessionStarted(
                    session_id=self.state.session_id or "",
                    backend="claude_code",
                    model=self.state.model,
                    cwd=_str(record.get("cwd")),
                    tools=tuple(t for t in tools if isinstance(t, str))
                    if isinstance(tools, list)
                    else (),
                )
            ]
        if subtype == "api_retry":
            delay = record.get("retry_delay_ms")
            if isinstance(delay, int | float):
                self.state.retry_delay_s = float(delay) / 1000.0
        return [Raw(source="claude", data=dict(record))]

    def _stream_event(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        event = record.get("event")
        if not isinstance(event, Mapping):
            return [Raw(source="claude", data=dict(record))]
        etype = event.get("type")
        index = event.get("index")
        if etype == "content_block_start" and isinstance(index, int):
            block = event.get("content_block") or {}
            btype = str(block.get("type", ""))
            self.state.partial_blocks[index] = btype
            if btype in ("tool_use", "server_tool_use", "mcp_tool_use"):
                return [
                    ToolCallStarted(
                        call_id=str(block.get("id", "")), name=str(block.get("name", ""))
                    )
                ]
            return []
        if etype == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                self.state.streamed_text = True
                return [TextDelta(text=str(delta["text"]))]
            if dtype == "thinking_delta" and delta.get("thinking"):
                return [ReasoningDelta(text=str(delta["thinking"]))]
            return []  # input_json_delta, signature_delta: the whole block follows
        if etype == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            return [StepFinished(finish_reason=_str(reason))] if reason else []
        if etype in ("message_start", "content_block_stop", "message_stop", "ping"):
            return []
        return [Raw(source="claude", data=dict(record))]

    def _assistant(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        message = record.get("message")
        if not isinstance(message, Mapping):
            return [Raw(source="claude", data=dict(record))]
        content = message.get("content") or []
        texts = [
            str(b.get("text", ""))
            for b in content
            if isinstance(b, Mapping) and b.get("type") == "text"
        ]
        if record.get("error") or message.get("model") == "<synthetic>":
            # the CLI's report of an API error, dressed as an assistant message
            self.state.error_kind = _str(record.get("error")) or self.state.error_kind
            self.state.error_text = "".join(texts) or self.state.error_text
            return [Raw(source="claude", data=dict(record))]
        events: list[TurnEvent] = []
        if texts:
            self.state.last_assistant_text = "".join(texts)
        for block in content:
            if not isinstance(block, Mapping):
                continue
            btype = block.get("type")
            if btype == "text" and not self.state.streamed_text and block.get("text"):
                events.append(TextDelta(text=str(block["text"])))
            elif btype == "thinking" and not self.state.partial_blocks and block.get("thinking"):
                events.append(ReasoningDelta(text=str(block["thinking"])))
            elif btype in ("tool_use", "server_tool_use", "mcp_tool_use"):
                call_id = str(block.get("id", ""))
                name = str(block.get("name", ""))
                arguments = block.get("input")
                if not self.state.partial_blocks:
                    events.append(ToolCallStarted(call_id=call_id, name=name))
                events.append(
                    ToolCallFinished(
                        call_id=call_id,
                        name=name,
                        arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
                        raw_arguments=orjson.dumps(arguments).decode(),
                    )
                )
        return events

    def _user(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        message = record.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        events: list[TurnEvent] = []
        if isinstance(content, list):
            for block in content:
                if isinstance(block, Mapping) and block.get("type") == "tool_result":
                    events.append(
                        ToolResult(
                            call_id=str(block.get("tool_use_id", "")),
                            output=_tool_output_text(block.get("content")),
                            is_error=bool(block.get("is_error", False)),
                            executed_by="backend",
                        )
                    )
        return events or [Raw(source="claude", data=dict(record))]

    def _rate_limit(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        info = record.get("rate_limit_info")
        if not isinstance(info, Mapping):
            return [Raw(source="claude", data=dict(record))]
        reset = None
        for key in ("resetsAt", "resets_at", "reset"):
            if key in info:
                reset = parse_reset_value(info[key])
                break
        if info.get("status") == "rejected":
            self.state.rate_limit_reset = reset or self.state.rate_limit_reset
        utilization = info.get("utilization")
        return [
            RateLimitStatus(
                status=str(info.get("status", "")),
                reset_time=reset,
                limit_type=_str(info.get("rateLimitType")),
                utilization=float(utilization) if isinstance(utilization, int | float) else None,
            )
        ]

    def _result(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        self.state.result = dict(record)
        self.state.session_id = _str(record.get("session_id")) or self.state.session_id
        usage = record.get("usage") if isinstance(record.get("usage"), Mapping) else {}
        assert isinstance(usage, Mapping)
        cost = record.get("total_cost_usd")
        return [
            Usage(
                input_tokens=_int(usage.get("input_tokens")),
                output_tokens=_int(usage.get("output_tokens")),
                cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
                cache_write_tokens=_int(usage.get("cache_creation_input_tokens")),
                cost_usd=float(cost) if isinstance(cost, int | float) else None,
            )
        ]

    # -- outcome -------------------------------------------------------------------------

    def outcome(self, exit_code: int | None, stderr: str = "") -> dict[str, Any]:
        """The ``result`` record of a successful run, or raise the run's typed error."""
        result = self.state.result
        code = -1 if exit_code is None else exit_code
        if result is None:
            text = stderr.strip() or "no output"
            classified = self._classify_text(text, code, stderr)
            if classified is not None:
                raise classified
            raise UnknownClaudeError(
                self.node_id,
                exit_code=code,
                raw_message=f"claude exited with code {exit_code} without a result record",
                stderr=stderr,
            )
        failed = bool(result.get("is_error")) or result.get("subtype") not in (None, "success")
        if not failed and code == 0:
            if result.get("stop_reason") == "max_tokens":
                raise MaxOutputTokensError(
                    self.node_id,
                    exit_code=code,
                    raw_message="the answer stopped at the output token limit",
                    partial_text=_str(result.get("result")) or self.state.last_assistant_text,
                )
            return result
        raise self._classify(result, code, stderr)

    def _classify(self, result: Mapping[str, Any], code: int, stderr: str) -> ChiaError:
        errors_list = result.get("errors")
        text = "\n".join(
            part
            for part in (
                _str(result.get("result")) or "",
                self.state.error_text,
                "\n".join(str(e) for e in errors_list) if isinstance(errors_list, list) else "",
            )
            if part
        )
        message = text or f"claude reported an error (subtype {result.get('subtype')!r})"
        status = result.get("api_error_status")
        kind = self.state.error_kind
        # 1. structured: the HTTP status the CLI got, then the synthetic error kind
        if isinstance(status, int):
            if status in (401, 403):
                return AuthenticationError(self.node_id, exit_code=code, raw_message=message)
            if status == 402:
                return BillingError(self.node_id, exit_code=code, raw_message=message)
            if status == 429:
                if _BILLING_PATTERNS.search(message):
                    return BillingError(self.node_id, exit_code=code, raw_message=message)
                return self._rate_limit_error(message, code)
            if status == 413 or (status == 400 and _CONTEXT_PATTERNS.search(message)):
                return ContextLengthExceededError(self.node_id, exit_code=code, raw_message=message)
            if status == 400 and _BILLING_PATTERNS.search(message):
                return BillingError(self.node_id, exit_code=code, raw_message=message)
            if 400 <= status < 500:
                return InvalidRequestError(self.node_id, exit_code=code, raw_message=message)
            if status >= 500:
                return ServerError(self.node_id, exit_code=code, raw_message=message)
        if kind == "authentication_failed":
            return AuthenticationError(self.node_id, exit_code=code, raw_message=message)
        if kind in ("billing_error", "billing"):
            return BillingError(self.node_id, exit_code=code, raw_message=message)
        if kind == "rate_limit":
            return self._rate_limit_error(message, code)
        if kind == "server_error":
            return ServerError(self.node_id, exit_code=code, raw_message=message)
        if kind == "invalid_request":
            if _CONTEXT_PATTERNS.search(message):
                return ContextLengthExceededError(self.node_id, exit_code=code, raw_message=message)
            return InvalidRequestError(self.node_id, exit_code=code, raw_message=message)
        if self.state.rate_limit_reset is not None:
            return self._rate_limit_error(message, code)
        # 2. text
        classified = self._classify_text(message, code, stderr)
        if classified is not None:
            return classified
        return UnknownClaudeError(self.node_id, exit_code=code, raw_message=message, stderr=stderr)

    def _classify_text(self, message: str, code: int, stderr: str) -> ChiaError | None:
        if _MAX_OUTPUT_PATTERN.search(message):
            return MaxOutputTokensError(
                self.node_id,
                exit_code=code,
                raw_message=message,
                partial_text=self.state.last_assistant_text,
            )
        if _CONTEXT_PATTERNS.search(message):
            return ContextLengthExceededError(self.node_id, exit_code=code, raw_message=message)
        if _BILLING_PATTERNS.search(message):
            return BillingError(self.node_id, exit_code=code, raw_message=message)
        if _RATE_PATTERNS.search(message) or parse_rate_limit_reset(message, self._now()):
            return self._rate_limit_error(message, code)
        if _AUTH_PATTERNS.search(message):
            return AuthenticationError(self.node_id, exit_code=code, raw_message=message)
        if _SESSION_MISSING.search(message):
            return InvalidRequestError(self.node_id, exit_code=code, raw_message=message)
        if _SERVER_PATTERNS.search(message):
            return ServerError(self.node_id, exit_code=code, raw_message=message)
        return None

    def _rate_limit_error(self, message: str, code: int) -> RateLimitError:
        now = self._now()
        reset = self.state.rate_limit_reset or parse_rate_limit_reset(message, now)
        if reset is None:
            # No reset time was given: the CLI's own last retry delay is the best estimate
            # of when to try again; without one, "now" leaves the wait to our backoff.
            reset = now + timedelta(seconds=self.state.retry_delay_s or 0.0)
        return RateLimitError(self.node_id, reset, raw_message=message, exit_code=code)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _tool_output_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                parts.append(orjson.dumps(block).decode())
        return "".join(parts)
    return "" if content is None else orjson.dumps(content).decode()


# -- the backend ---------------------------------------------------------------------------


def project_slug(cwd: str) -> str:
    """Claude Code's directory name for a working directory: every character that is not
    a letter or digit becomes ``-`` (``/home/ray/llm_env`` → ``-home-ray-llm-env``)."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


class _Parser(ClaudeStreamParser):
    def is_terminal(self, record: Mapping[str, Any]) -> bool:
        return record.get("type") == "result"


class ClaudeCodeLLM(CLIBackend):
    """Claude Code as a backend: ``claude --print --output-format stream-json``.

    ``backend="api"`` talks to the Anthropic Messages API directly (anthropic SDK, its
    retries off) on the shared MCP tool loop, honouring ``max_tokens``, ``thinking``
    (``"adaptive"``, a token budget, or None) and ``max_tool_iterations``; its endpoint is
    ``base_url`` or ``env["ANTHROPIC_BASE_URL"]``.

    Each call runs the CLI in its own process group with the prompt on stdin and the
    system message in a 0600 file (never in argv). Tools become an ``--mcp-config`` file
    and are granted for the run (``--allowedTools=mcp__<name>``): in ``--print`` a tool
    that is not allowed is refused, and a caller who passes a tool means it to be used.

    ``api_key`` is given to the CLI as ``ANTHROPIC_API_KEY``; an ``ANTHROPIC_API_KEY`` in
    this process's environment is *not* inherited (it would silently switch a
    subscription login to API billing). ``env`` adds or overrides child variables
    (``ANTHROPIC_BASE_URL``, ``HOME``, ``CLAUDE_CONFIG_DIR``...). ``CLAUDE_CODE_MAX_RETRIES``
    defaults to 2: quick retries inside the CLI survive a transient error late in a long
    agentic run, which our own retry layer (which never retries after content) cannot.

    With ``resume_session=True`` each call continues the previous call's conversation,
    also on another machine: the transcript travels in
    :attr:`ClaudeCodeQueryResult.session_transcript` (and in this object, which pickles),
    and is restored under the working directory's project slug before ``--resume``.

    ``projects_cwd`` is where transcripts are read and written; by default it is derived
    from the config dir (``$CLAUDE_CONFIG_DIR`` or ``$HOME/.claude``) and the working
    directory (the reference's default was a fixed path of its container image).
    ``max_tokens``, ``thinking`` and ``max_tool_iterations`` apply to ``backend="api"``
    (the CLI has its own limits).
    """

    backend_name: ClassVar[str] = "claude_code"
    #: the Ray resource a worker must advertise (``anthropic`` for ``backend="api"``)
    ray_resource: str = "claude_code"
    result_class: ClassVar[type[QueryResult]] = ClaudeCodeQueryResult
    cli_name: ClassVar[str] = "claude"
    install_command: ClassVar[str] = "npm install -g @anthropic-ai/claude-code"
    raw_source: ClassVar[str] = "claude"
    env_allowlist: ClassVar[tuple[str, ...]] = (
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_MODEL",
        "ANTHROPIC_SMALL_FAST_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "CLAUDE_CONFIG_DIR",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
        "CLAUDE_CODE_USE_BEDROCK",
        "CLAUDE_CODE_USE_VERTEX",
        "CLAUDE_CODE_SKIP_BEDROCK_AUTH",
        "CLAUDE_CODE_SKIP_VERTEX_AUTH",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
        "DISABLE_ERROR_REPORTING",
        "MCP_TIMEOUT",
        "MCP_TOOL_TIMEOUT",
        "BASH_DEFAULT_TIMEOUT_MS",
        "BASH_MAX_TIMEOUT_MS",
        "AWS_REGION",
        "AWS_PROFILE",
        "CLOUD_ML_REGION",
        "ANTHROPIC_VERTEX_PROJECT_ID",
    )

    def __init__(
        self,
        model: str = "claude-sonnet-4-6",
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "claude_code",
        logging_level: int = 10,
        log_dir: str | None = None,
        resume_session: bool = False,
        projects_cwd: str | None = None,
        extra_cli_args: list[str] | None = None,
        log_stream: bool = True,
        log_all: bool = False,
        backend: str = "cli",
        api_key: str | None = None,
        max_tokens: int = 16000,
        thinking: str | None = "adaptive",
        max_tool_iterations: int = 100,
        *,
        env: Mapping[str, str] | None = None,
        work_dir: str | None = None,
        cli_path: str | None = None,
        idle_timeout_seconds: float | None = 300.0,
        include_partial_messages: bool = True,
        base_url: str | None = None,
    ) -> None:
        if backend not in ("cli", "api"):
            raise ValueError(f"backend must be 'cli' or 'api', got {backend!r}")
        _thinking_config(thinking)  # validate early
        check_loop_options(max_tokens=max_tokens, max_tool_iterations=max_tool_iterations)
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError("api_key must be a str or None")
        super().__init__(
            model=model,
            system_message=system_message,
            timeout_seconds=timeout_seconds,
            retries=retries,
            logging_name=logging_name,
            logging_level=logging_level,
            log_dir=log_dir,
            cli_path=cli_path,
            env=env,
            extra_cli_args=extra_cli_args,
            work_dir=work_dir,
            idle_timeout_seconds=idle_timeout_seconds,
            log_stream=log_stream,
            log_all=log_all,
        )
        self.backend = backend
        self.api_key = api_key
        if api_key:
            register_secret(api_key)
        self.resume_session = resume_session
        self.projects_cwd = projects_cwd
        self.max_tokens = max_tokens
        self.thinking = thinking
        self.max_tool_iterations = max_tool_iterations
        self.include_partial_messages = include_partial_messages
        self.session_id: str | None = None
        self.session_transcript: bytes | None = None
        self.base_url = base_url
        self._api_history: list[dict[str, Any]] = []
        self._api_clients: LoopLocal[Any] = LoopLocal(self._build_api_client, _close_api_client)
        if backend == "api":
            self.ray_resource = "anthropic"

    def _build_api_client(self) -> Any:
        anthropic = require("anthropic", "anthropic", feature="ClaudeCodeLLM(backend='api')")
        base_url = self.base_url or self.env.get("ANTHROPIC_BASE_URL")
        return anthropic.AsyncAnthropic(
            api_key=self.api_key,
            base_url=base_url,
            max_retries=0,  # one retry layer: ours
            timeout=anthropic.Timeout(float(self.timeout_seconds), connect=10.0),
        )

    async def _run(self, attempt: Attempt) -> QueryResult:
        if self.backend == "cli":
            return await super()._run(attempt)
        adapter = _MessagesAdapter(self)
        result = await run_tool_loop(adapter, attempt, max_tool_iterations=self.max_tool_iterations)
        if self.resume_session and adapter.messages is not None:
            final = adapter.last_step.raw if adapter.last_step is not None else None
            self._api_history = [*adapter.messages, {"role": "assistant", "content": final or []}]
            # The conversation travels in the result like the CLI's transcript does, so
            # restore_session(result) continues it on another machine.
            self.session_id = self.session_id or f"api-{uuid.uuid4()}"
            assert isinstance(result, ClaudeCodeQueryResult)  # result_class
            result = dataclasses.replace(
                result,
                session=SessionRef(
                    backend="claude_code_api", session_id=self.session_id, model=self.model
                ),
                session_transcript=orjson.dumps(self._api_history),
            )
        return result

    def __repr__(self) -> str:
        return (
            f"ClaudeCodeLLM(model={self.model!r}, backend={self.backend!r}, "
            f"logging_name={self.logging_name!r}, api_key={'***' if self.api_key else None})"
        )

    # -- sessions ----------------------------------------------------------------------------

    def restore_session(self, result: ClaudeCodeQueryResult) -> None:
        """Continue the conversation of ``result`` (from any machine) on the next call."""
        if result.session is None:
            raise ValueError("the result carries no session to resume")
        self.resume_session = True
        self.session_id = result.session.session_id
        self.session_transcript = result.session_transcript
        if result.session.backend == "claude_code_api":
            self._api_history = orjson.loads(result.session_transcript or b"[]")

    def _cwd(self) -> str:
        return os.path.realpath(self.work_dir or os.getcwd())

    def _child_env_value(self, name: str) -> str | None:
        if name in self.env:
            return self.env[name]
        return os.environ.get(name) if name in ("HOME", "CLAUDE_CONFIG_DIR") else None

    def _projects_dir(self) -> Path:
        if self.projects_cwd:
            return Path(self.projects_cwd)
        config = self._child_env_value("CLAUDE_CONFIG_DIR")
        base = (
            Path(config)
            if config
            else Path(self._child_env_value("HOME") or "~").expanduser() / ".claude"
        )
        return base / "projects" / project_slug(self._cwd())

    def _transcript_path(self, session_id: str) -> Path:
        return self._projects_dir() / f"{session_id}.jsonl"

    def _restore_transcript(self) -> None:
        if not (self.session_id and self.session_transcript):
            return
        path = self._transcript_path(self.session_id)
        if path.exists() and path.stat().st_size >= len(self.session_transcript):
            return  # this machine already has it (or a newer copy)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".jsonl.chia-tmp")
        tmp.write_bytes(self.session_transcript)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def _capture_transcript(self, session_id: str) -> tuple[bytes | None, str | None]:
        path = self._transcript_path(session_id)
        try:
            return path.read_bytes(), str(path)
        except OSError:
            return None, None

    # -- CLIBackend hooks ----------------------------------------------------------------------

    async def _invocation(self, attempt: Attempt, scratch: Path) -> Invocation:
        argv = [self._executable(), "--print", "--output-format", "stream-json", "--verbose"]
        if self.include_partial_messages:
            argv.append("--include-partial-messages")
        if self.model:
            argv += ["--model", self.model]
        if self.system_message:
            prompt_file = write_private(scratch / "system-prompt.txt", self.system_message)
            argv += ["--append-system-prompt-file", str(prompt_file)]
        if attempt.tools:
            config = {"mcpServers": {t.name: _mcp_server_config(t) for t in attempt.tools}}
            config_file = write_private(scratch / "mcp.json", orjson.dumps(config))
            # `=` form: both flags are variadic and would swallow the next argument
            argv.append(f"--mcp-config={config_file}")
            for tool in attempt.tools:
                for rule in _allow_rules(tool):
                    argv.append(f"--allowedTools={rule}")
        if self.resume_session and self.session_id:
            self._restore_transcript()
            argv += ["--resume", self.session_id]
        argv += self.extra_cli_args
        env = {"CLAUDE_CODE_MAX_RETRIES": "2", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        if attempt.tools:
            # Otherwise the first model request goes out before a slow (stdio) server is
            # connected, offering a WaitForMcpServers tool instead of the server's tools.
            # Blocking connects are bounded by the CLI's MCP_TIMEOUT (30 s by default).
            env["MCP_CONNECTION_NONBLOCKING"] = "0"
        if self.api_key:
            env["ANTHROPIC_API_KEY"] = self.api_key
        return Invocation(argv=argv, env=env, stdin=attempt.message.encode(), cwd=self._cwd())

    def _new_parser(self) -> _Parser:
        return _Parser(self.logging_name)

    async def _finish(
        self, attempt: Attempt, parser: RecordParser, outcome: ProcessOutcome, stdout: str
    ) -> QueryResult:
        assert isinstance(parser, _Parser)
        # A CLI that lingered after its result record was stopped by us: not its failure.
        exit_code = 0 if outcome.killed_after_terminal else outcome.exit_code
        session_id = parser.state.session_id
        transcript, transcript_path = None, None
        if self.resume_session and session_id:
            # also after a failure: the conversation so far can still be continued
            self.session_id = session_id
            transcript, transcript_path = self._capture_transcript(session_id)
            if transcript is not None:
                self.session_transcript = transcript
        record = parser.outcome(exit_code, outcome.stderr_tail)
        result = attempt.result(
            result=_str(record.get("result")) or "",
            returncode=exit_code if exit_code is not None else -1,
            stderr=outcome.stderr_tail,
            stream_result=stdout,
            success=True,
            session_transcript=transcript,
            session_transcript_path=transcript_path,
        )
        stop_reason = _str(record.get("stop_reason"))  # the result record's word is final
        return dataclasses.replace(result, stop_reason=stop_reason) if stop_reason else result


def _mcp_server_config(tool: ChiaTool) -> dict[str, Any]:
    if tool.transport == "http":
        config: dict[str, Any] = {"type": "http", "url": tool.url}
        if tool.headers:
            config["headers"] = dict(tool.headers)
        return config
    if tool.transport == "stdio":
        config = {"type": "stdio", "command": tool.command[0], "args": list(tool.command[1:])}
        if tool.env:
            config["env"] = dict(tool.env)
        return config
    raise errors.InvalidRequestError(
        "claude_code",
        f"tool {tool.name!r} is an in-process MCP server; CLI backends reach tools over HTTP "
        "or stdio: serve it and pass ChiaTool.http(url)",
    )


def _allow_rules(tool: ChiaTool) -> list[str]:
    if tool.allowed_tools is None:
        return [f"mcp__{tool.name}"]  # every tool of that server
    return [f"mcp__{tool.name}__{name}" for name in tool.allowed_tools]


# -- backend="api": the Anthropic Messages API on the shared tool loop ----------------------------

_ANTHROPIC_TYPE_STATUS = {
    "overloaded_error": 529,
    "api_error": 500,
    "rate_limit_error": 429,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "billing_error": 402,
}
_CREDIT = re.compile(r"credit balance|billing|payment", re.IGNORECASE)


def classify_anthropic_error(exc: BaseException, node_id: str) -> ChiaError:
    """Translate an anthropic SDK (or transport) exception into this module's classes."""
    anthropic = require("anthropic", "anthropic", feature="ClaudeCodeLLM(backend='api')")
    if isinstance(exc, ChiaError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        kind = _anthropic_type(exc.body)
        if status < 400:  # an `error` event inside a 200 stream: the type says what it was
            status = _ANTHROPIC_TYPE_STATUS.get(kind or "", 500)
        message = _anthropic_message(exc.body, str(exc.message))
        headers = dict(exc.response.headers) if exc.response is not None else {}
        return _anthropic_by_status(node_id, status, kind, message, headers)
    if isinstance(exc, anthropic.APITimeoutError | anthropic.APIConnectionError):
        return ServerError(node_id, raw_message=f"{type(exc).__name__}: {exc}")
    if isinstance(exc, anthropic.APIError):  # an `error` event inside the stream
        kind = _anthropic_type(exc.body)
        message = _anthropic_message(exc.body, str(exc.message))
        status = _ANTHROPIC_TYPE_STATUS.get(kind or "", 500)
        return _anthropic_by_status(node_id, status, kind, message, {})
    if isinstance(exc, ValueError):
        return errors.MalformedResponseError(node_id, f"malformed stream event: {exc}")
    return ServerError(node_id, raw_message=f"{type(exc).__name__}: {exc}")


def _anthropic_type(body: object) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return str(kind) if kind else None


def _anthropic_message(body: object, fallback: str) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message) if message else fallback


def _anthropic_by_status(
    node_id: str, status: int, kind: str | None, message: str, headers: Mapping[str, str]
) -> ChiaError:
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return AuthenticationError(node_id, raw_message=message)
    if status == 402 or kind == "billing_error" or (status == 400 and _CREDIT.search(message)):
        return BillingError(node_id, raw_message=message)
    if status == 429:
        wait = retry_after_from_headers(headers)
        reset = datetime.now(UTC) + timedelta(seconds=wait or 0.0)
        return RateLimitError(node_id, reset, raw_message=message)
    if status == 413 or (400 <= status < 500 and _CONTEXT_PATTERNS.search(message)):
        return ContextLengthExceededError(node_id, raw_message=message)
    if status >= 500 or status == 408:
        error = ServerError(node_id, raw_message=message)
        error.retry_after = retry_after_from_headers(headers)
        return error
    if 400 <= status < 500:
        return InvalidRequestError(node_id, raw_message=message)
    return UnknownClaudeError(node_id, raw_message=message)


def _thinking_config(thinking: str | int | None) -> dict[str, Any] | None:
    if thinking is None or thinking == "disabled":
        return None
    if thinking == "adaptive":
        return {"type": "adaptive"}
    if isinstance(thinking, int) and not isinstance(thinking, bool):
        return {"type": "enabled", "budget_tokens": thinking}
    raise ValueError(
        f"thinking must be 'adaptive', 'disabled', a token budget or None, got {thinking!r}"
    )


async def _close_api_client(client: Any) -> None:
    await client.close()


class _MessagesAdapter(ProviderAdapter[list[dict[str, Any]]]):
    schema_dialect = "anthropic"

    def __init__(self, llm: ClaudeCodeLLM) -> None:
        self.llm = llm
        self.messages: list[dict[str, Any]] | None = None
        self.last_step: StepResult | None = None

    def initial_messages(self, attempt: Attempt) -> list[dict[str, Any]]:
        history = list(self.llm._api_history) if self.llm.resume_session else []
        self.messages = [*history, {"role": "user", "content": attempt.message}]
        return self.messages

    async def step(
        self, messages: list[dict[str, Any]], tools: CompiledTools, attempt: Attempt, number: int
    ) -> StepResult:
        llm = self.llm
        node = llm.logging_name
        request: dict[str, Any] = {
            "model": llm.model,
            "max_tokens": llm.max_tokens,
            "messages": messages,
            "stream": True,
        }
        if llm.system_message:
            request["system"] = llm.system_message
        if tools.declarations:
            request["tools"] = list(tools.declarations)
        thinking = _thinking_config(llm.thinking)
        if thinking is not None:
            request["thinking"] = thinking
        step = StepResult()
        blocks: dict[int, dict[str, Any]] = {}
        text: list[str] = []
        stopped = False
        try:
            client = await llm._api_clients.get()
            with anyio.fail_after(llm.idle_timeout_seconds or 300.0):
                stream = await client.messages.create(**request)
            async with stream:
                iterator = stream.__aiter__()
                while True:
                    with anyio.fail_after(llm.idle_timeout_seconds or 300.0):
                        try:
                            event = await iterator.__anext__()
                        except StopAsyncIteration:
                            break
                    stopped = await self._event(event, step, blocks, text, attempt) or stopped
        except TimeoutError:
            raise errors.StallError(node, "no stream data within the idle deadline") from None
        except Exception as exc:
            raise classify_anthropic_error(exc, node) from None
        if not stopped:
            raise errors.IncompleteResponseError(node, "the stream ended before message_stop")
        step.text = "".join(text)
        content = [blocks[i] for i in sorted(blocks)]
        for block in content:
            if block["type"] == "tool_use":
                arguments, raw, problem = parse_arguments(block.pop("_json", "") or None)
                block["input"] = arguments
                step.tool_calls.append(
                    ToolCallRequest(block["id"], block["name"], arguments, raw, problem)
                )
        step.raw = content
        if not step.tool_calls and step.finish_reason == "max_tokens":
            raise MaxOutputTokensError(
                node, raw_message=f"stopped at max_tokens={llm.max_tokens}", partial_text=step.text
            )
        if step.finish_reason == "refusal":
            raise errors.ContentBlockedError(node, "refusal", step.text or "the model refused")
        self.last_step = step
        return step

    async def _event(
        self,
        event: Any,
        step: StepResult,
        blocks: dict[int, dict[str, Any]],
        text: list[str],
        attempt: Attempt,
    ) -> bool:
        kind = event.type
        if kind == "message_start":
            usage = event.message.usage
            step.usage = Usage(
                input_tokens=usage.input_tokens or 0,
                cache_read_tokens=getattr(usage, "cache_read_input_tokens", 0) or 0,
                cache_write_tokens=getattr(usage, "cache_creation_input_tokens", 0) or 0,
            )
        elif kind == "content_block_start":
            block = event.content_block.model_dump(exclude_none=True)
            if block["type"] == "tool_use":
                block["_json"] = ""
                await attempt.emit(ToolCallStarted(call_id=block["id"], name=block["name"]))
            blocks[event.index] = block
        elif kind == "content_block_delta":
            block = blocks.setdefault(event.index, {"type": "text", "text": ""})
            delta = event.delta
            if delta.type == "text_delta":
                block["text"] = block.get("text", "") + delta.text
                text.append(delta.text)
                await attempt.emit(TextDelta(text=delta.text))
            elif delta.type == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.thinking
                await attempt.emit(ReasoningDelta(text=delta.thinking))
            elif delta.type == "signature_delta":
                block["signature"] = block.get("signature", "") + delta.signature
            elif delta.type == "input_json_delta":
                block["_json"] = block.get("_json", "") + delta.partial_json
        elif kind == "message_delta":
            step.finish_reason = event.delta.stop_reason
            output = getattr(event.usage, "output_tokens", 0) or 0
            step.usage = dataclasses.replace(step.usage, output_tokens=output)
        elif kind == "message_stop":
            return True
        return False

    def append_step(
        self, messages: list[dict[str, Any]], step: StepResult, results: Sequence[ToolCallResult]
    ) -> None:
        # The assistant turn goes back verbatim (thinking blocks and their signatures
        # included: the API checks them), then one user turn with a result per tool_use.
        messages.append({"role": "assistant", "content": step.raw or []})
        answered = {r.call_id for r in results}
        content = [
            {
                "type": "tool_result",
                "tool_use_id": r.call_id,
                "content": r.output,
                "is_error": r.is_error,
            }
            for r in results
        ]
        for call in step.tool_calls:  # every tool_use needs its tool_result
            if call.call_id not in answered:
                content.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": call.call_id,
                        "content": "Error: the tool call was cancelled",
                        "is_error": True,
                    }
                )
        messages.append({"role": "user", "content": content})
