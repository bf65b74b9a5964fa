"""Gemini CLI backend (``gemini --output-format stream-json``, ``@google/gemini-cli``).

Each call runs the CLI headless in its own process group. What a run needs is set up in a
**per-run config home** (``GEMINI_CLI_HOME``, inside the call's 0700 scratch directory), so
the user's own ``~/.gemini`` is never modified:

* ``settings.json`` there is the user's settings with this run's on top: tools as
  ``mcpServers`` entries (trusted: headless mode cannot ask), ``general.maxAttempts``,
  telemetry written to a local file (see truncation below), folder trust off (the caller
  chose the working directory), an API-key auth type when ``api_key`` is given. Secret
  header and server-environment values are written as ``${VAR}`` references to the child's
  environment, which the CLI expands, not as text;
* the other entries of the user's ``~/.gemini`` (OAuth credentials, accounts, extensions,
  commands...) are linked in, so every auth method and customisation keeps working;
* the system message is appended to the global context file (``GEMINI.md``), which the CLI
  puts into the model's system instruction.

**The prompt goes on stdin**, with no ``-p``: headless mode starts whenever stdin is not a
terminal and takes piped stdin as the prompt (``-p`` would be appended to it). The CLI reads
at most 8 MiB of stdin and silently truncates the rest, so a longer prompt is refused here
with :class:`InvalidRequestError` instead.

**Errors** come from the ``result`` record's ``error.message`` (the API's JSON error, with its
``code``, is embedded in it) and from the exit code, which is the HTTP status modulo 256
(401 → 145, 429 → 173, 500 → 244, 503 → 247, 400 → 144); then from text patterns, each
backed by a captured fixture. **Truncation** at the output limit is reported by nothing in
stream-json (the run ends ``status: success``): with ``detect_truncation=True`` each run
writes the CLI's own OpenTelemetry log to its scratch directory (``logPrompts`` off), and a
final API response whose finish reason is ``length`` raises :class:`MaxOutputTokensError`.

**Sessions.** The CLI keeps chats in ``<config home>/.gemini/tmp/<project>/chats/
session-<time>-<id8>.jsonl`` (``<project>``: the working directory's base name, slugified).
With ``resume_session=True`` the chat file travels in
:attr:`GeminiCLIQueryResult.session_transcript` (and in this object, which pickles) and is
restored into the next run's config home before ``--resume <id>``: a conversation
continues in a fresh home, on another machine, from another working directory.

Errors follow the style of the reference's CLI families (``GeminiCLIError`` and its
subclasses, each also inheriting the shared class of :mod:`chia_async.errors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson

from chia_async import errors
from chia_async._event_base import TurnEvent
from chia_async.base import Attempt, check_flags
from chia_async.errors import ChiaError
from chia_async.events import (
    Raw,
    SessionStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.ratelimit import parse_rate_limit_reset
from chia_async.redaction import register_secret
from chia_async.results import QueryResult, Usage
from chia_async.subprocess.backend import CLIBackend, Invocation, RecordParser, write_private
from chia_async.subprocess.process import ProcessOutcome
from chia_async.tools import ChiaTool

__all__ = [
    "AuthenticationError",
    "BillingError",
    "ContentBlockedError",
    "ContextLengthExceededError",
    "GeminiCLIError",
    "GeminiCLILLM",
    "GeminiCLIQueryResult",
    "GeminiStreamParser",
    "GeminiStreamState",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownGeminiCLIError",
    "gemini_mcp_server",
    "parse_rate_limit_reset",
    "project_slug",
    "telemetry_finish_reason",
]


class GeminiCLIError(errors.BackendError):
    """Base for Gemini CLI errors. Every subclass pickles with all its fields (for Ray).

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class RateLimitError(GeminiCLIError, errors.RateLimitError):
    """A rate limit or quota was hit (HTTP 429); ``reset_time`` says when it lifts."""

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


class AuthenticationError(GeminiCLIError, errors.AuthenticationError):
    """The credentials are missing, invalid or expired (HTTP 401/403, no auth method)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(GeminiCLIError, errors.BillingError):
    """The quota is exhausted for billing reasons (plan, credit, payment)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(GeminiCLIError, errors.InvalidRequestError):
    """The request or the invocation is invalid (HTTP 400/404, a bad flag or setting)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(GeminiCLIError, errors.ServerError):
    """A transient service-side failure (HTTP 5xx, overloaded, connection)."""

    def __init__(
        self,
        node_id: str,
        exit_code: int = -1,
        raw_message: str = "",
        retry_after: float | None = None,
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, retry_after=retry_after
        )


class MaxOutputTokensError(GeminiCLIError, errors.MaxOutputTokensError):
    """The answer was cut at the output token limit; ``partial_text`` holds what arrived."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", partial_text: str = ""
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, partial_text=partial_text
        )


class ContentBlockedError(GeminiCLIError, errors.ContentBlockedError):
    """The response was blocked (safety, recitation or another policy)."""

    def __init__(
        self, node_id: str, block_reason: str = "", raw_message: str = "", exit_code: int = -1
    ) -> None:
        self._init(
            node_id=node_id, block_reason=block_reason, raw_message=raw_message, exit_code=exit_code
        )


class UnknownGeminiCLIError(GeminiCLIError, errors.UnknownError):
    """A failure the CLI's output does not explain; ``stderr`` holds its tail."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", stderr: str = ""
    ) -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message, stderr=stderr)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. A subclass of this backend's
    InvalidRequestError, as in the other families."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


@dataclass(frozen=True, slots=True)
class GeminiCLIQueryResult(QueryResult):
    """A Gemini CLI result that carries the chat file for resuming elsewhere.

    ``session_transcript`` holds the bytes of ``session-<time>-<id8>.jsonl``;
    ``session_transcript_path`` its path relative to the run's config home
    (``.gemini/tmp/<project>/chats/...``; the home itself is per-run and gone).
    """

    session_transcript: bytes | None = None
    session_transcript_path: str | None = None
    kind: str = field(default="gemini_cli_query_result", init=False, repr=False)


# -- stream-json ---------------------------------------------------------------------------------

# The CLI's own messages for a turn that produced no usable text (InvalidStream events).
_BLOCKED = re.compile(
    r"blocked due to (?P<reason>safety|recitation|other policy)|"
    r"\((?P<finish>SAFETY|RECITATION|OTHER)\) with empty response",
)
_MAX_OUTPUT = re.compile(
    r"truncated because it exceeded the token limit|token limit exhaustion \(MAX_TOKENS\)|"
    r"max(?:imum)? output tokens",
    re.IGNORECASE,
)
_CONTEXT = re.compile(
    r"input token count|exceeds the maximum number of tokens|context (?:window|length)|"
    r"prompt is too long|too many (?:input )?tokens",
    re.IGNORECASE,
)
_BILLING = re.compile(r"billing|payment|credit balance|prepaid|spending cap", re.IGNORECASE)
_RATE = re.compile(
    r"resource has been exhausted|resource_exhausted|rate limit|quota|too many requests|"
    r"hit your (?:\w+ )?limit|usage limit",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"api key not valid|invalid api key|unauthenticated|permission_denied|permission denied|"
    r"invalid authentication credentials|auth method|please re-?authenticate|"
    r"not logged in|token (?:has )?expired|expired or revoked|invalid_grant",
    re.IGNORECASE,
)
_SERVER = re.compile(
    r"overloaded|internal error|service unavailable|unavailable|bad gateway|deadline exceeded|"
    r"fetch failed|econnreset|econnrefused|socket hang up|network error|timed out",
    re.IGNORECASE,
)
_INVALID = re.compile(
    r"invalid_argument|invalid argument|not found for api version|model not found|"
    r"unknown argument|invalid session|no previous sessions|session id .* already exists|"
    r"not a valid|invalid values",
    re.IGNORECASE,
)
#: ``"code": 401`` inside the API error JSON the CLI embeds in its message
_JSON_CODE = re.compile(r'"code"\s*:\s*(\d{3})\b')
#: the CLI's own fatal exit codes (packages/cli exit codes)
_EXIT_AUTH, _EXIT_INPUT, _EXIT_CONFIG = 41, 42, 52


@dataclass
class GeminiStreamState:
    """What a ``gemini --output-format stream-json`` run said, as it streamed."""

    session_id: str | None = None
    model: str | None = None
    result: dict[str, Any] | None = None
    text_parts: list[str] = field(default_factory=list)
    #: text since the last tool call: the answer of the run's final model turn
    final_parts: list[str] = field(default_factory=list)
    tool_names: dict[str, str] = field(default_factory=dict)  # tool_id -> tool_name
    errors: list[str] = field(default_factory=list)  # `error` records of severity error

    @property
    def text(self) -> str:
        """All the assistant text of the run."""
        return "".join(self.text_parts)

    @property
    def final_text(self) -> str:
        """The text of the final model turn (all the text when there was no tool call)."""
        return "".join(self.final_parts) or self.text


class GeminiStreamParser:
    """Maps stream-json records to events and classifies the run's outcome.

    Pure: no I/O. ``feed()`` returns the events for one record; ``outcome()`` returns the
    ``result`` record of a successful run or raises the typed error: structured fields first
    (the API error's ``code`` in the message, the exit code as an HTTP status, the CLI's own
    fatal exit codes), then the message text.
    """

    def __init__(
        self, node_id: str, *, cwd: str | None = None, now: Callable[[], datetime] | None = None
    ) -> None:
        self.node_id = node_id
        self.cwd = cwd
        self.state = GeminiStreamState()
        self._now = now or (lambda: datetime.now(UTC))

    # -- records -> events ----------------------------------------------------------------

    def feed(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        """The events one stdout record stands for (``Raw`` for anything unknown)."""
        kind = record.get("type")
        state = self.state
        if kind == "init":
            state.session_id = _str(record.get("session_id")) or state.session_id
            state.model = _str(record.get("model")) or state.model
            return [
                SessionStarted(
                    session_id=state.session_id or "",
                    backend="gemini_cli",
                    model=state.model,
                    cwd=self.cwd,
                )
            ]
        if kind == "message":
            content = record.get("content")
            if record.get("role") != "assistant" or not isinstance(content, str) or not content:
                return []  # the CLI echoes the prompt as a user message
            state.text_parts.append(content)
            state.final_parts.append(content)
            return [TextDelta(text=content)]
        if kind == "tool_use":
            call_id = _str(record.get("tool_id")) or ""
            name = _str(record.get("tool_name")) or ""
            state.tool_names[call_id] = name
            state.final_parts.clear()
            arguments = record.get("parameters")
            return [
                ToolCallStarted(call_id=call_id, name=name),
                ToolCallFinished(
                    call_id=call_id,
                    name=name,
                    arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
                    raw_arguments=orjson.dumps(arguments).decode() if arguments is not None else "",
                ),
            ]
        if kind == "tool_result":
            call_id = _str(record.get("tool_id")) or ""
            failed = record.get("status") == "error"
            error = record.get("error")
            output = _str(record.get("output")) or ""
            if failed and isinstance(error, Mapping) and not output:
                output = _str(error.get("message")) or ""
            state.final_parts.clear()
            return [
                ToolResult(
                    call_id=call_id,
                    name=state.tool_names.get(call_id, ""),
                    output=output,
                    is_error=failed,
                    executed_by="backend",
                )
            ]
        if kind == "error":
            message = _str(record.get("message"))
            if message and record.get("severity") == "error":
                state.errors.append(message)
            return [Raw(source="gemini", data=dict(record))]
        if kind == "result":
            state.result = dict(record)
            stats = record.get("stats")
            if not isinstance(stats, Mapping):
                return []
            return [
                Usage(
                    input_tokens=_int(stats.get("input_tokens")),
                    output_tokens=_int(stats.get("output_tokens")),
                    cache_read_tokens=_int(stats.get("cached")),
                )
            ]
        return [Raw(source="gemini", data=dict(record))]

    # -- outcome ---------------------------------------------------------------------------

    def outcome(self, exit_code: int | None, stderr: str = "") -> dict[str, Any]:
        """The ``result`` record of a successful run, or raise the run's typed error."""
        result = self.state.result
        code = -1 if exit_code is None else exit_code
        if result is not None and result.get("status") == "success" and code == 0:
            return result
        raise self.classify(code, stderr)

    def classify(self, exit_code: int, stderr: str = "") -> ChiaError:
        """The typed error of a failed run."""
        node, code = self.node_id, exit_code
        result = self.state.result
        error = result.get("error") if result is not None else None
        message = _str(error.get("message")) if isinstance(error, Mapping) else None
        message = message or "\n".join(self.state.errors)
        if not message:
            tail = _stderr_summary(stderr)
            if result is None:
                message = f"gemini exited with code {exit_code} without a result record" + (
                    f": {tail}" if tail else ""
                )
            else:
                message = tail or f"gemini reported status {result.get('status')!r}"
        text = message  # with no result record: what stderr says, minus noise and stacks
        # 1. structured: the API's status code, embedded or as the exit code
        status = _status_code(message, code)
        if status is not None:
            return self._by_status(status, message, code)
        if code == _EXIT_AUTH:
            return AuthenticationError(node, exit_code=code, raw_message=message)
        if code in (_EXIT_INPUT, _EXIT_CONFIG) and not _CONTEXT.search(text):
            return InvalidRequestError(node, exit_code=code, raw_message=message)
        # 2. text
        blocked = _BLOCKED.search(text)
        if blocked:
            reason = (blocked.group("reason") or blocked.group("finish") or "").split()[0]
            return ContentBlockedError(node, reason.upper(), message, exit_code=code)
        if _MAX_OUTPUT.search(text):
            return MaxOutputTokensError(
                node, exit_code=code, raw_message=message, partial_text=self.state.text
            )
        if _CONTEXT.search(text):
            return ContextLengthExceededError(node, exit_code=code, raw_message=message)
        if _AUTH.search(text):
            return AuthenticationError(node, exit_code=code, raw_message=message)
        if _RATE.search(text):
            if _BILLING.search(text):
                return BillingError(node, exit_code=code, raw_message=message)
            return self._rate_limit(message, code)
        if _INVALID.search(text):
            return InvalidRequestError(node, exit_code=code, raw_message=message)
        if _SERVER.search(text):
            return ServerError(node, exit_code=code, raw_message=message)
        return UnknownGeminiCLIError(node, exit_code=code, raw_message=message, stderr=stderr)

    def _by_status(self, status: int, message: str, code: int) -> ChiaError:
        node = self.node_id
        if status in (401, 403) or (status == 400 and _AUTH.search(message)):
            return AuthenticationError(node, exit_code=code, raw_message=message)
        if status == 402:
            return BillingError(node, exit_code=code, raw_message=message)
        if status == 429:
            if _BILLING.search(message):
                return BillingError(node, exit_code=code, raw_message=message)
            return self._rate_limit(message, code)
        if status == 413 or (400 <= status < 500 and _CONTEXT.search(message)):
            return ContextLengthExceededError(node, exit_code=code, raw_message=message)
        if status >= 500 or status == 408:
            return ServerError(node, exit_code=code, raw_message=message)
        return InvalidRequestError(node, exit_code=code, raw_message=message)

    def _rate_limit(self, message: str, code: int) -> RateLimitError:
        # "Suggested retry after 1s." (the API's RetryInfo) or "Please retry in 51.2s"
        reset = parse_rate_limit_reset(message, self._now())
        return RateLimitError(self.node_id, reset, raw_message=message, exit_code=code)


def _status_code(message: str, exit_code: int) -> int | None:
    found = _JSON_CODE.search(message)
    if found and 400 <= int(found.group(1)) <= 599:
        return int(found.group(1))
    if 144 <= exit_code <= 255 and "API Error" in message:
        # process.exit(status) keeps the low 8 bits: 400..511 arrive as 144..255
        return exit_code + 256
    return None


def _stderr_summary(stderr: str) -> str:
    """The lines of stderr that say something (not the CLI's fixed start-up warnings)."""
    noise = ("256-color support not detected", "Ripgrep is not available")
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not any(n in line for n in noise) and not line.startswith("    at ")
    ]
    return "\n".join(lines)[-2000:]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def telemetry_finish_reason(log: str) -> str | None:
    """The finish reason of the last main-model API response in the CLI's local telemetry.

    ``log`` is the text of the file ``telemetry.outfile`` names: pretty-printed
    OpenTelemetry records, one after another (not JSON lines). Finish reasons there are
    OpenTelemetry's words (``stop``, ``length``...); the last one of the response counts.
    """
    decoder = json.JSONDecoder()
    index, end = 0, len(log)
    last: tuple[str, str] | None = None
    while index < end:
        while index < end and log[index].isspace():
            index += 1
        if index >= end:
            break
        try:
            record, index = decoder.raw_decode(log, index)
        except ValueError:
            break  # a record cut short by a crash: what came before still counts
        attributes = record.get("attributes") if isinstance(record, dict) else None
        if not isinstance(attributes, dict):
            continue
        if attributes.get("event.name") != "gemini_cli.api_response":
            continue
        if attributes.get("role") not in (None, "main"):
            continue
        reasons = attributes.get("finish_reasons")
        if isinstance(reasons, list) and reasons and isinstance(reasons[-1], str):
            stamp = str(attributes.get("event.timestamp", ""))
            if last is None or stamp >= last[0]:
                last = (stamp, reasons[-1])
    return last[1] if last is not None else None


# -- configuration -------------------------------------------------------------------------------


def gemini_mcp_server(
    tool: ChiaTool,
    *,
    node_id: str,
    trust: bool,
    env: dict[str, str] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """One ``mcpServers`` entry in the Gemini CLI's settings format (Antigravity reads the same).

    With ``env``, header values and a stdio server's environment are put there under
    ``CHIA_MCP_<index>_...`` names and the entry refers to them as ``${NAME}`` (the CLI
    expands such references), so secrets are not written into the file.
    """

    def secret(kind: str, number: int, value: str) -> str:
        if env is None:
            return value
        name = f"CHIA_MCP_{index}_{kind}_{number}"
        env[name] = value
        if len(value) >= 16:
            register_secret(value)
        return "${" + name + "}"

    config: dict[str, Any]
    if tool.transport == "http":
        config = {"httpUrl": tool.url}
        if tool.headers:
            config["headers"] = {
                key: secret("HEADER", n, value)
                for n, (key, value) in enumerate(tool.headers.items())
            }
    elif tool.transport == "stdio":
        config = {"command": tool.command[0], "args": list(tool.command[1:])}
        if tool.env:
            config["env"] = {
                key: secret("ENV", n, value) for n, (key, value) in enumerate(tool.env.items())
            }
        if tool.cwd:
            config["cwd"] = tool.cwd
    else:
        raise errors.InvalidRequestError(
            node_id,
            f"tool {tool.name!r} is an in-process MCP server; CLI backends reach tools over HTTP "
            "or stdio: serve it and pass ChiaTool.http(url)",
        )
    config["timeout"] = int(tool.tool_timeout * 1000)
    if tool.allowed_tools is not None:
        config["includeTools"] = list(tool.allowed_tools)
    if trust:
        config["trust"] = True
    return config


def project_slug(cwd: str) -> str:
    """The Gemini CLI's directory name for a new project: the base name of the working
    directory, lower-cased, every other character than ``a-z0-9`` a single ``-``."""
    base = os.path.basename(os.path.normpath(cwd)) or "project"
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", base.lower())).strip("-")
    return slug or "project"


_JSONC = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def _read_settings(path: Path, logger: logging.Logger) -> dict[str, Any]:
    """A settings file (JSON with comments, as the CLI accepts), or {} when absent/invalid."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    text = _JSONC.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", raw)
    try:
        value = json.loads(text)
    except ValueError as exc:
        logger.warning("ignoring %s: not valid JSON (%s)", path, exc)
        return {}
    return value if isinstance(value, dict) else {}


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


#: entries of the user's ~/.gemini that each run gets its own of (the rest is linked in)
_PER_RUN = frozenset({"settings.json", "tmp", "history", "projects.json", "projects.json.lock"})
#: the CLI reads at most this much stdin and silently drops the rest
_STDIN_MAX = 8 * 1024 * 1024
_APPROVAL_MODES = ("default", "auto_edit", "yolo", "plan")


@dataclass(frozen=True, slots=True)
class _RunFiles:
    home: Path  # the run's GEMINI_CLI_HOME
    telemetry: Path | None  # the CLI's local telemetry log


#: what _invocation set up for _finish, per attempt (an LLM may run many calls at once)
_RUN_FILES: weakref.WeakKeyDictionary[Attempt, _RunFiles] = weakref.WeakKeyDictionary()


class _Parser(GeminiStreamParser):
    def is_terminal(self, record: Mapping[str, Any]) -> bool:
        return record.get("type") == "result"


class GeminiCLILLM(CLIBackend):
    """The Gemini CLI as a backend: ``gemini --output-format stream-json``, prompt on stdin.

    ``model`` is passed as ``-m`` (None: the CLI's default, ``auto``, which first asks a
    router model to pick one: pass a model to save that request). ``gemini_bin`` is the
    executable (a name on ``PATH`` or a path); ``work_dir`` the directory the agent works in
    (default: this process's); ``add_dirs`` become ``--include-directories``;
    ``approval_mode`` is ``--approval-mode`` (default ``yolo``: headless mode cannot ask,
    and in ``default`` mode the CLI does not even offer its shell tool); ``sandbox`` is
    ``--sandbox``. ``gemini_dir`` is the user's config dir seeded into each run (default
    ``$GEMINI_CLI_HOME/.gemini`` or ``$HOME/.gemini``, from ``env`` or this process).

    Keyword-only:

    * ``api_key`` is given to the CLI as ``GEMINI_API_KEY`` (with the matching auth type);
      a key in this process's environment is not inherited. Vertex AI and Google-login auth
      work through ``env`` and the user's config dir.
    * ``max_attempts`` (``general.maxAttempts``, 1 to 10, default 2) caps the CLI's own
      retries of a failed model request. The CLI's default, 10, backs off from ~5 s to
      ~30 s and sat silent for 215 s on a persistent 503 before failing (no retry events in
      stream-json); one quick retry inside the CLI survives a blip late in a long agentic
      run, which our retry layer (never retrying after content) cannot, and anything longer
      is left to our policy, which announces each retry and honours reset times. Tests use 1.
    * ``settings`` are merged into the run's ``settings.json`` over everything else but the
      tools, e.g. ``{"model": {"maxSessionTurns": 20}}``.
    * ``detect_truncation`` (default True): see the module docstring. Set False to leave
      the user's telemetry settings in force (truncated answers then look complete).
    * ``env`` adds or overrides child variables; ``idle_timeout_seconds`` ends a run whose
      CLI prints nothing for that long; ``log_stream``/``log_all`` as for every CLI backend.
    """

    backend_name: ClassVar[str] = "gemini_cli"
    #: the Ray resource a worker must advertise to run Gemini CLI calls
    ray_resource: str = "gemini_cli"
    result_class: ClassVar[type[QueryResult]] = GeminiCLIQueryResult
    cli_name: ClassVar[str] = "gemini"
    install_command: ClassVar[str] = "npm install -g @google/gemini-cli"
    raw_source: ClassVar[str] = "gemini"
    env_allowlist: ClassVar[tuple[str, ...]] = (
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_VERTEX_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_GCA",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GEMINI_MODEL",
        "GEMINI_SANDBOX",
        "GEMINI_CLI_NO_RELAUNCH",
        "GEMINI_FORCE_FILE_STORAGE",
        "GEMINI_CLI_USE_COMPUTE_ADC",
        "CLOUD_SHELL",
        "NO_BROWSER",
        "SEATBELT_PROFILE",
    )

    def __init__(
        self,
        model: str | None = None,
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "gemini_cli",
        logging_level: int = 10,
        log_dir: str | None = None,
        gemini_bin: str = "gemini",
        work_dir: str | None = None,
        add_dirs: list[str] | None = None,
        gemini_dir: str | None = None,
        approval_mode: str = "yolo",
        sandbox: bool = False,
        resume_session: bool = False,
        extra_cli_args: list[str] | None = None,
        *,
        api_key: str | None = None,
        max_attempts: int = 2,
        settings: Mapping[str, Any] | None = None,
        detect_truncation: bool = True,
        env: Mapping[str, str] | None = None,
        idle_timeout_seconds: float | None = 300.0,
        log_stream: bool = True,
        log_all: bool = False,
    ) -> None:
        if not isinstance(gemini_bin, str) or not gemini_bin:
            raise TypeError("gemini_bin must be a non-empty str")
        dirs: object = add_dirs
        if dirs is not None and (
            isinstance(dirs, str)
            or not isinstance(dirs, Sequence)
            or not all(isinstance(d, str) and d for d in dirs)
        ):
            raise TypeError("add_dirs must be a list of non-empty str")
        if gemini_dir is not None and not isinstance(gemini_dir, str | os.PathLike):
            raise TypeError("gemini_dir must be a path or None")
        if approval_mode not in _APPROVAL_MODES:
            raise ValueError(
                f"approval_mode must be one of {_APPROVAL_MODES}, got {approval_mode!r}"
            )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise TypeError("max_attempts must be an int")
        if not 1 <= max_attempts <= 10:
            raise ValueError(f"max_attempts must be between 1 and 10, got {max_attempts}")
        if settings is not None and not isinstance(settings, Mapping):
            raise TypeError("settings must be a mapping or None")
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError("api_key must be a str or None")
        check_flags(
            sandbox=sandbox,
            resume_session=resume_session,
            detect_truncation=detect_truncation,
        )
        super().__init__(
            model=model or "",
            system_message=system_message,
            timeout_seconds=timeout_seconds,
            retries=retries,
            logging_name=logging_name,
            logging_level=logging_level,
            log_dir=log_dir,
            cli_path=gemini_bin,
            env=env,
            extra_cli_args=extra_cli_args,
            work_dir=work_dir,
            idle_timeout_seconds=idle_timeout_seconds,
            log_stream=log_stream,
            log_all=log_all,
        )
        # GEMINI_CLI_HOME names the user's config home to seed from; each run gets its own
        self._source_home = self.env.pop("GEMINI_CLI_HOME", None)
        self.gemini_bin = gemini_bin
        self.add_dirs = list(add_dirs or [])
        self.gemini_dir = os.fspath(gemini_dir) if gemini_dir is not None else None
        self.approval_mode = approval_mode
        self.sandbox = sandbox
        self.resume_session = resume_session
        self.api_key = api_key
        if api_key:
            register_secret(api_key)
        self.max_attempts = max_attempts
        self.settings = json.loads(json.dumps(dict(settings or {})))  # a checked, plain copy
        self.detect_truncation = detect_truncation
        self.session_id: str | None = None
        self.session_transcript: bytes | None = None
        self.session_transcript_name: str | None = None

    def __repr__(self) -> str:
        return (
            f"GeminiCLILLM(model={self.model!r}, logging_name={self.logging_name!r}, "
            f"api_key={'***' if self.api_key else None})"
        )

    # -- sessions ----------------------------------------------------------------------------

    def restore_session(self, result: GeminiCLIQueryResult) -> None:
        """Continue the conversation of ``result`` (from any machine) on the next call."""
        if result.session is None or not result.session_transcript:
            raise ValueError(
                "the result carries no session to resume (the chat file travels only in "
                "results of a resume_session=True backend)"
            )
        self.resume_session = True
        self.session_id = result.session.session_id
        self.session_transcript = result.session_transcript
        self.session_transcript_name = (
            os.path.basename(result.session_transcript_path)
            if result.session_transcript_path
            else None
        )

    def _restore_chat(self, home: Path, cwd: str) -> None:
        if not (self.session_id and self.session_transcript):
            return
        name = self.session_transcript_name or f"session-chia-{self.session_id[:8]}.jsonl"
        project = home / ".gemini" / "tmp" / project_slug(cwd)
        chats = project / "chats"
        chats.mkdir(parents=True, exist_ok=True, mode=0o700)
        # claims the project directory for this working directory, as the CLI would
        write_private(project / ".project_root", cwd)
        write_private(chats / os.path.basename(name), self.session_transcript)

    def _capture_chat(self, home: Path, session_id: str) -> tuple[bytes | None, str | None]:
        newest: tuple[float, str, Path] | None = None
        for path in (home / ".gemini" / "tmp").glob(f"*/chats/*-{session_id[:8]}.jsonl"):
            try:
                with open(path, "rb") as file:
                    header = orjson.loads(file.readline() or b"{}")
                mtime = path.stat().st_mtime
            except (OSError, orjson.JSONDecodeError):
                continue
            if not isinstance(header, dict) or header.get("sessionId") != session_id:
                continue
            key = (mtime, path.name, path)
            if newest is None or key[:2] > newest[:2]:
                newest = key
        if newest is None:
            return None, None
        path = newest[2]
        try:
            return path.read_bytes(), str(path.relative_to(home))
        except OSError:
            return None, None

    # -- the per-run config home ---------------------------------------------------------------

    def _cwd(self) -> str:
        return os.path.realpath(self.work_dir or os.getcwd())

    def _source_dir(self) -> Path:
        if self.gemini_dir:
            return Path(self.gemini_dir).expanduser()
        home = (
            self._source_home
            or self.env.get("HOME")
            or os.environ.get("GEMINI_CLI_HOME")
            or os.environ.get("HOME")
            or "~"
        )
        return Path(home).expanduser() / ".gemini"

    def _prepare_home(
        self, scratch: Path, tools: Sequence[ChiaTool], env: dict[str, str]
    ) -> tuple[Path, Path | None]:
        """Build the run's config home; returns it and the telemetry file (if any)."""
        home = scratch / "gemini-home"
        config = home / ".gemini"
        config.mkdir(parents=True, mode=0o700)
        source = self._source_dir()
        settings = _read_settings(source / "settings.json", self.logger)
        telemetry = scratch / "telemetry.log" if self.detect_truncation else None
        ours: dict[str, Any] = {
            "general": {
                "disableAutoUpdate": True,
                "disableUpdateNag": True,
                "maxAttempts": self.max_attempts,
            },
            "privacy": {"usageStatisticsEnabled": False},
            "security": {"folderTrust": {"enabled": False}},
        }
        if telemetry is not None:
            ours["telemetry"] = {
                "enabled": True,
                "target": "local",
                "outfile": str(telemetry),
                "logPrompts": False,
            }
        if self.api_key:
            ours["security"]["auth"] = {"selectedType": "gemini-api-key"}
        settings = _merge(_merge(settings, ours), self.settings)
        if tools:
            servers = settings.get("mcpServers")
            merged = dict(servers) if isinstance(servers, dict) else {}
            for index, tool in enumerate(tools):
                merged[tool.name] = gemini_mcp_server(
                    tool, node_id=self.logging_name, trust=True, env=env, index=index
                )
            settings["mcpServers"] = merged
        write_private(config / "settings.json", orjson.dumps(settings, option=orjson.OPT_INDENT_2))
        context_name = _context_file_name(settings)
        skip = _PER_RUN | {context_name}
        with contextlib.suppress(OSError):
            for entry in source.iterdir():
                if entry.name not in skip:
                    (config / entry.name).symlink_to(entry)
        if self.system_message:
            own = ""
            with contextlib.suppress(OSError):
                own = (source / context_name).read_text(encoding="utf-8").rstrip() + "\n\n"
            write_private(config / context_name, own + self.system_message + "\n")
        else:
            with contextlib.suppress(OSError):
                if (source / context_name).exists():
                    (config / context_name).symlink_to(source / context_name)
        return home, telemetry

    # -- CLIBackend hooks ----------------------------------------------------------------------

    async def _invocation(self, attempt: Attempt, scratch: Path) -> Invocation:
        prompt = attempt.message.encode()
        if len(prompt) > _STDIN_MAX:
            raise InvalidRequestError(
                self.logging_name,
                raw_message=f"the prompt is {len(prompt)} bytes; the Gemini CLI reads at most "
                f"{_STDIN_MAX} bytes of input and would silently drop the rest",
            )
        cwd = self._cwd()
        env: dict[str, str] = {}
        home, telemetry = self._prepare_home(scratch, attempt.tools, env)
        _RUN_FILES[attempt] = _RunFiles(home, telemetry)
        tmp = scratch / "tmp"
        tmp.mkdir(mode=0o700)
        # GEMINI_CLI_HOME: the per-run config home. TMPDIR: the CLI writes an error report
        # file there on every API error; inside scratch they go away with the run.
        env.update({"GEMINI_CLI_HOME": str(home), "TMPDIR": str(tmp)})
        if self.api_key:
            env["GEMINI_API_KEY"] = self.api_key
        argv = [self._executable()]
        if self.model:
            argv += ["-m", self.model]
        argv += ["--output-format", "stream-json", "--approval-mode", self.approval_mode]
        if self.sandbox:
            argv.append("--sandbox")
        for directory in self.add_dirs:
            argv += ["--include-directories", directory]
        if self.resume_session and self.session_id:
            self._restore_chat(home, cwd)
            argv += ["--resume", self.session_id]
        argv += self.extra_cli_args
        return Invocation(argv=argv, env=env, stdin=prompt, cwd=cwd)

    def _new_parser(self) -> _Parser:
        return _Parser(self.logging_name, cwd=self._cwd())

    async def _finish(
        self, attempt: Attempt, parser: RecordParser, outcome: ProcessOutcome, stdout: str
    ) -> QueryResult:
        assert isinstance(parser, _Parser)
        files = _RUN_FILES.pop(attempt)
        # A CLI that lingered after its result record was stopped by us: not its failure.
        exit_code = 0 if outcome.killed_after_terminal else outcome.exit_code
        session_id = parser.state.session_id
        transcript, transcript_path = None, None
        if self.resume_session and session_id:
            # also after a failure: the conversation so far can still be continued
            self.session_id = session_id
            transcript, transcript_path = self._capture_chat(files.home, session_id)
            if transcript is not None:
                self.session_transcript = transcript
                self.session_transcript_name = os.path.basename(transcript_path or "")
        parser.outcome(exit_code, outcome.stderr_tail)
        finish = _finish_reason(files.telemetry)
        if finish in ("length", "max_tokens", "MAX_TOKENS"):
            raise MaxOutputTokensError(
                self.logging_name,
                exit_code=exit_code if exit_code is not None else -1,
                raw_message="the answer stopped at the output token limit (finish reason "
                f"{finish!r}; the CLI reported success)",
                partial_text=parser.state.text,
            )
        result = attempt.result(
            result=parser.state.final_text,
            returncode=exit_code if exit_code is not None else -1,
            stderr=outcome.stderr_tail,
            stream_result=stdout,
            success=True,
            session_transcript=transcript,
            session_transcript_path=transcript_path,
        )
        return dataclasses.replace(result, stop_reason=finish) if finish else result


def _finish_reason(telemetry: Path | None) -> str | None:
    if telemetry is None:
        return None
    try:
        log = telemetry.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return telemetry_finish_reason(log)


def _context_file_name(settings: Mapping[str, Any]) -> str:
    context = settings.get("context")
    name = context.get("fileName") if isinstance(context, Mapping) else None
    if isinstance(name, list):
        name = next((n for n in name if isinstance(n, str) and n), None)
    if isinstance(name, str) and name and "/" not in name:
        return name
    return "GEMINI.md"
