"""OpenCode CLI backend: ``opencode run --format json``, then ``opencode export <session>``.

opencode is provider-agnostic: ``model`` is ``provider/model`` (``anthropic/claude-sonnet-4-6``)
and opencode runs its own agentic tool loop, so MCP tools are handed to the CLI, not run here.

**One call** runs ``opencode run --format json --agent <agent_name>`` in its own process group
with the prompt on stdin (opencode reads piped stdin as the message), never in argv. Everything
the run needs goes into a per-run config file (0600, in the call's scratch directory, named by
``OPENCODE_CONFIG``; opencode merges it over the user's global and project configs): the agent
(with ``system_message`` as its prompt), tools as ``mcp`` servers (header values and server
environment stay in that file), the provider that ``base_url``/``api_key`` define. The events
are mapped as they stream (text and tool parts arrive whole: opencode prints a part when it is
complete). After a clean exit, ``opencode export <session>`` gives the final answer (the text of
the run's last assistant message) and its usage, as the reference does; the exported session
is also what a resume carries to another worker. A failed run is classified from its stream
without an export (another ~2 s start): in 1.18 the stream's ``error`` already holds the
status, headers and body. Runs set a session title, which spares opencode a title request.

**Pitfalls of opencode 1.18 this backend handles** (captured in
``tests/fixtures/cli-samples/opencode``):

* opencode takes its project directory from ``$PWD``, not from the process's working
  directory: every run gets ``PWD`` set to ``work_dir``.
* ``run --session <id>`` from another directory than the session's recorded one sends the
  request and then never exits. A resume therefore imports the carried export first
  (``opencode import`` binds the session to the importing directory) unless this process ran
  the session's last turn in the same place; a resume known to come from another directory
  with nothing to import is refused with :class:`InvalidRequestError`; and every run has the
  idle deadline as a last guard (a session id set by hand can still hit the hang).
* A run prints nothing before its first part is complete: about 3-4 s of start-up, the
  whole first model step, and **silent retries**. opencode retries 429, 5xx and connection
  errors inside the run, up to 5 times, waiting what ``retry-after-ms``/``retry-after`` say
  or else 2, 4, 8, 16, 32 s (+ up to 25 % jitter): a persistent 5xx takes ~80 s before the
  run fails, a 429 as long as its ``retry-after`` asks. 1.18 has no setting for this (its
  retry count is a constant), so ``idle_timeout_seconds`` (default 300 s) must stay well
  above 80 s; the error that ends the run is then retried by our retry policy, which is the
  one that retries. Each silent retry leaves a ``stream error`` line in stderr (see below),
  kept in the result's and the error's ``stderr``. Tests bound opencode's retries by serving
  errors with a small ``retry-after-ms``, which opencode honours.
* The output limit is not an error to opencode: the run exits 0 with a ``step_finish`` whose
  reason is ``length``; it is raised here as :class:`MaxOutputTokensError` (partial text kept).
* The real cause of some failures (an unknown model: ``UnknownError`` "Unexpected server
  error", reference ``err_…``) is only in opencode's log, so runs pass ``--print-logs
  --log-level ERROR`` and the cause is read from stderr by that reference.

Errors keep the reference's ``chia.models.opencode`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson

from chia_async import errors
from chia_async._event_base import TurnEvent
from chia_async.base import Attempt
from chia_async.errors import ChiaError
from chia_async.events import (
    Raw,
    ReasoningDelta,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.redaction import register_secret
from chia_async.results import QueryResult, Usage
from chia_async.retry import retry_after_from_headers
from chia_async.subprocess.backend import CLIBackend, Invocation, RecordParser, write_private
from chia_async.subprocess.environment import build_child_env
from chia_async.subprocess.framing import TextChunk
from chia_async.subprocess.process import ProcessOutcome, ProcessSpec, SupervisedProcess
from chia_async.tools import ChiaTool

__all__ = [
    "AuthenticationError",
    "BillingError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "OpenCodeError",
    "OpenCodeLLM",
    "OpenCodeQueryResult",
    "OpenCodeStreamParser",
    "OpenCodeStreamState",
    "RateLimitError",
    "ServerError",
    "UnknownOpenCodeError",
    "answer_from_export",
    "classify_run_error",
    "parse_run_error",
    "parse_session_id",
]


class OpenCodeError(errors.BackendError):
    """Base for all opencode CLI errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, exit_code: int = -1, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, exit_code=exit_code, raw_message=raw_message
        )


class RateLimitError(OpenCodeError, errors.RateLimitError):
    """The provider behind opencode reported a usage/rate limit."""

    def __init__(
        self, node_id: str, reset_time: datetime, raw_message: str = "", exit_code: int = -1
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, exit_code=exit_code
        )


class AuthenticationError(OpenCodeError, errors.AuthenticationError):
    """opencode has no/invalid credentials for the selected provider."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(OpenCodeError, errors.BillingError):
    """The provider account has a billing/payment problem."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(OpenCodeError, errors.InvalidRequestError):
    """Malformed request - bad model string, invalid config, unknown agent, etc."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(OpenCodeError, errors.ServerError):
    """Transient provider/server-side failure (5xx, overloaded, connection)."""

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


class MaxOutputTokensError(OpenCodeError, errors.MaxOutputTokensError):
    """The response was truncated at the output token limit."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", partial_text: str = ""
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, partial_text=partial_text
        )


class UnknownOpenCodeError(OpenCodeError, errors.UnknownError):
    """Unclassified opencode CLI error."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", stderr: str = ""
    ) -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message, stderr=stderr)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


@dataclass(frozen=True, slots=True)
class OpenCodeQueryResult(QueryResult):
    """An opencode result that carries the session for resuming elsewhere.

    ``session_id`` is opencode's session (``ses_…``). With ``resume_session=True``,
    ``session_export`` holds the bytes of ``opencode export <session_id>`` (JSON: the session
    and all its messages) taken after the run; a resume on any worker imports it before
    ``run --session``.
    """

    session_id: str | None = None
    session_export: bytes | None = None
    kind: str = field(default="opencode_query_result", init=False, repr=False)


# -- the run --format json protocol ----------------------------------------------------------

_SESSION_ID = re.compile(r"\bses_[A-Za-z0-9]+")


def _records(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _record_session(record: Mapping[str, Any]) -> str | None:
    sid = record.get("sessionID")
    if not (isinstance(sid, str) and sid):
        part = record.get("part")
        sid = part.get("sessionID") if isinstance(part, Mapping) else None
    return sid if isinstance(sid, str) and sid else None


def parse_session_id(stdout: str) -> str | None:
    """Pull the opencode session id out of ``run --format json`` stdout.

    Each event is ``{type, sessionID, part: {sessionID, ...}}``; the first line carries it
    (``step_start``, or ``error`` for a run that failed before any model output). Falls back
    to a scan for ``ses_…`` if the JSON shape changes. None when there is none.
    """
    for record in _records(stdout):
        sid = _record_session(record)
        if sid:
            return sid
    match = _SESSION_ID.search(stdout)
    return match.group(0) if match else None


def parse_run_error(stdout: str) -> dict[str, Any] | None:
    """Pull the first structured error out of ``run --format json`` stdout.

    opencode prints ``{"type": "error", "sessionID": ..., "error": {name, data}}`` for a
    failure of the run: a provider error (``APIError`` with ``statusCode``, ``isRetryable``,
    ``responseHeaders``, ``responseBody``), a context overflow (``ContextOverflowError``),
    or a failure before any assistant message exists, such as an unknown model (opencode
    1.15: ``UnknownError`` "Model not found: ..."; 1.18: ``UnknownError`` "Unexpected
    server error", whose cause is in the log). Returns the first such ``{name, data}``.
    """
    for record in _records(stdout):
        if record.get("type") == "error" and isinstance(record.get("error"), dict):
            return dict(record["error"])
    return None


# -- classification: structured fields first, then text, each pattern from a capture -----------

_CONTEXT = re.compile(
    r"context[ _]length|context window|maximum context|prompt is too long|too many (?:input )?"
    r"tokens|exceeds? the (?:maximum|context)|ContextOverflow",
    re.IGNORECASE,
)
_BILLING = re.compile(
    r"insufficient_quota|exceeded your current quota|billing|payment required|credit balance|"
    r"insufficient (?:credit|balance|funds)",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"invalid[ _]api[ _]key|incorrect api key|unauthori[sz]ed|authentication|"
    r"ProviderAuthError|api key (?:is )?(?:missing|invalid|not (?:set|found))",
    re.IGNORECASE,
)
_RATE = re.compile(
    r"rate[ _-]?limit|too many requests|resource[ _]exhausted|usage limit", re.IGNORECASE
)
_SERVER = re.compile(
    r"overloaded|internal server error|server[ _]error|service unavailable|bad gateway|"
    r"gateway timeout|connection (?:refused|reset|error|lost)|econn(?:refused|reset)|"
    r"socket hang up|fetch failed|timed out",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(
    r"Provider(?:Model)?NotFoundError|model not found|provider not found|session not found|"
    r"agent .* not found",
    re.IGNORECASE,
)
_MAX_OUTPUT = re.compile(r"MessageOutputLengthError|max(?:imum)?[ _]output[ _]tokens", re.I)


def _body_error(body: Any) -> tuple[str | None, str]:
    """The ``code`` (or ``type``) and message of an error body (OpenAI/Anthropic shapes)."""
    if not isinstance(body, str) or not body.strip().startswith("{"):
        return None, ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (str(code) if code else None), (str(message) if message else "")


def _log_cause(stderr: str, ref: str | None) -> str:
    """The ``error="..."`` of opencode's log line for error reference ``ref`` (--print-logs)."""
    if not ref or not stderr:
        return ""
    match = re.search(rf"ref={re.escape(ref)}\b[^\n]*?\berror=\"((?:[^\"\\]|\\.)*)\"", stderr)
    return match.group(1) if match else ""


def classify_run_error(
    node_id: str,
    error: Mapping[str, Any],
    *,
    exit_code: int = -1,
    stderr: str = "",
    now: datetime | None = None,
) -> ChiaError:
    """Translate one opencode ``{name, data}`` error into this module's classes.

    Order: the error's name (``ContextOverflowError``, ``ProviderAuthError``...), the HTTP
    status opencode got (``data.statusCode``), the provider's error code in
    ``data.responseBody``, then text patterns over the message, the body and, for an
    ``UnknownError``, the cause opencode logged for its reference; last ``isRetryable``.
    """
    name = str(error.get("name") or "")
    raw = error.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    message = str(data.get("message") or name or "opencode reported an error")
    status = data.get("statusCode")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    headers_raw = data.get("responseHeaders")
    headers = (
        {str(k): str(v) for k, v in headers_raw.items()} if isinstance(headers_raw, Mapping) else {}
    )
    code, body_message = _body_error(data.get("responseBody"))
    ref = data.get("ref") if isinstance(data.get("ref"), str) else None
    cause = _log_cause(stderr, ref)
    # "Unexpected server error. Check server logs" is opencode's wrapper for any failure it
    # did not expect (its own, mostly): only the logged cause says what it was
    said = cause if ref else "\n".join(t for t in (message, cause) if t)
    if cause:
        message = f"{message} ({cause})"
    text = "\n".join(t for t in (said, body_message, code or "") if t)
    moment = now or datetime.now(UTC)

    def rate_limit() -> RateLimitError:
        wait = retry_after_from_headers(headers, now=moment) or 0.0
        return RateLimitError(
            node_id, moment + timedelta(seconds=wait), raw_message=message, exit_code=exit_code
        )

    def server() -> ServerError:
        wait = retry_after_from_headers(headers, now=moment)
        return ServerError(
            node_id,
            exit_code=exit_code,
            raw_message=message,
            retry_after=math.ceil(wait) if wait is not None else None,
        )

    # 1. what opencode named the error
    if name == "ContextOverflowError" or code == "context_length_exceeded":
        return ContextLengthExceededError(node_id, exit_code=exit_code, raw_message=message)
    if name == "ProviderAuthError":
        return AuthenticationError(node_id, exit_code=exit_code, raw_message=message)
    if name == "MessageOutputLengthError":
        return MaxOutputTokensError(node_id, exit_code=exit_code, raw_message=message)
    # 2. the HTTP status of the provider's answer
    billing = status == 402 or code == "insufficient_quota" or bool(_BILLING.search(text))
    if status is not None:
        if billing and status < 500:
            return BillingError(node_id, exit_code=exit_code, raw_message=message)
        if status in (401, 403):
            return AuthenticationError(node_id, exit_code=exit_code, raw_message=message)
        if status == 429:
            return rate_limit()
        if status == 413 or (400 <= status < 500 and _CONTEXT.search(text)):
            return ContextLengthExceededError(node_id, exit_code=exit_code, raw_message=message)
        if status == 408 or status >= 500:
            return server()
        if 400 <= status < 500:
            return InvalidRequestError(node_id, exit_code=exit_code, raw_message=message)
    # 3. the provider's error code, then text
    if code == "invalid_api_key":
        return AuthenticationError(node_id, exit_code=exit_code, raw_message=message)
    if billing:
        return BillingError(node_id, exit_code=exit_code, raw_message=message)
    if _MAX_OUTPUT.search(text):
        return MaxOutputTokensError(node_id, exit_code=exit_code, raw_message=message)
    if _CONTEXT.search(text):
        return ContextLengthExceededError(node_id, exit_code=exit_code, raw_message=message)
    if _NOT_FOUND.search(text):
        return InvalidRequestError(node_id, exit_code=exit_code, raw_message=message)
    if _AUTH.search(text):
        return AuthenticationError(node_id, exit_code=exit_code, raw_message=message)
    if code == "rate_limit_exceeded" or _RATE.search(text):
        return rate_limit()
    if data.get("isRetryable") is True or _SERVER.search(text):
        return server()
    return UnknownOpenCodeError(node_id, exit_code=exit_code, raw_message=message, stderr=stderr)


def _classify_exit(node_id: str, exit_code: int, stderr: str) -> ChiaError:
    """A run that failed without printing an error record: read its stderr."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    message = lines[-1].strip() if lines else f"opencode exited with code {exit_code}"
    error = classify_run_error(
        node_id, {"name": "", "data": {"message": stderr.strip()[-2000:]}}, exit_code=exit_code
    )
    if isinstance(error, UnknownOpenCodeError):
        return UnknownOpenCodeError(
            node_id,
            exit_code=exit_code,
            raw_message=f"opencode exited with code {exit_code}: {message[:500]}",
            stderr=stderr,
        )
    return error


# -- records -> events ----------------------------------------------------------------------------


@dataclass
class OpenCodeStreamState:
    """What a ``run --format json`` run said, as it streamed."""

    session_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    finish_reason: str | None = None
    #: assistant messages of this run, in order, and the text parts of each
    message_ids: list[str] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)


class OpenCodeStreamParser:
    """Maps ``opencode run --format json`` records to events and classifies the outcome.

    Pure: no I/O. ``feed()`` returns the events of one record (``SessionStarted`` first, on
    the first record, which carries the session id); :meth:`failure` returns the typed
    error of a run that failed, or None.
    """

    def __init__(
        self,
        node_id: str,
        *,
        model: str | None = None,
        cwd: str | None = None,
        now: datetime | None = None,
    ) -> None:
        self.node_id = node_id
        self.model = model
        self.cwd = cwd
        self.state = OpenCodeStreamState()
        self._now = now

    def is_terminal(self, record: Mapping[str, Any]) -> bool:
        """Never: opencode prints no final record; the process exit ends a run."""
        return False

    def feed(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        """The events one stdout record stands for (``Raw`` for anything unknown)."""
        events: list[TurnEvent] = []
        sid = _record_session(record)
        if sid and self.state.session_id is None:
            self.state.session_id = sid
            events.append(
                SessionStarted(session_id=sid, backend="opencode", model=self.model, cwd=self.cwd)
            )
        kind = record.get("type")
        part = record.get("part")
        part = part if isinstance(part, Mapping) else {}
        if kind == "step_start":
            self._message(part)
        elif kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text:
                self.state.texts.setdefault(self._message(part), []).append(text)
                events.append(TextDelta(text=text))
        elif kind == "reasoning":
            text = part.get("text")
            if isinstance(text, str) and text:
                events.append(ReasoningDelta(text=text))
        elif kind == "tool_use":
            events.extend(self._tool(part, record))
        elif kind == "step_finish":
            events.extend(self._step_finish(part))
        elif kind == "error":
            error = record.get("error")
            self.state.errors.append(dict(error) if isinstance(error, Mapping) else {})
            events.append(Raw(source="opencode", data=dict(record)))
        else:
            events.append(Raw(source="opencode", data=dict(record)))
        return events

    def _message(self, part: Mapping[str, Any]) -> str:
        mid = part.get("messageID")
        mid = mid if isinstance(mid, str) else ""
        if mid and mid not in self.state.message_ids:
            self.state.message_ids.append(mid)
        return mid

    def _tool(self, part: Mapping[str, Any], record: Mapping[str, Any]) -> list[TurnEvent]:
        state = part.get("state")
        if not isinstance(state, Mapping):
            return [Raw(source="opencode", data=dict(record))]
        call_id = str(part.get("callID") or part.get("id") or "")
        name = str(part.get("tool") or "")
        arguments = state.get("input")
        failed = state.get("status") == "error"
        output = state.get("error") if failed else state.get("output")
        return [
            ToolCallStarted(call_id=call_id, name=name),
            ToolCallFinished(
                call_id=call_id,
                name=name,
                arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
                raw_arguments=orjson.dumps(arguments).decode() if arguments is not None else "",
            ),
            ToolResult(
                call_id=call_id,
                name=name,
                output=output if isinstance(output, str) else orjson.dumps(output).decode(),
                is_error=failed,
                executed_by="backend",
            ),
        ]

    def _step_finish(self, part: Mapping[str, Any]) -> list[TurnEvent]:
        self._message(part)
        self.state.steps += 1
        reason = part.get("reason")
        self.state.finish_reason = reason if isinstance(reason, str) else None
        usage = _usage(part.get("tokens"), part.get("cost"))
        return [
            usage,
            StepFinished(
                finish_reason=self.state.finish_reason, usage=usage, step=self.state.steps
            ),
        ]

    def final_text(self) -> str:
        """The run's answer as streamed: the text of its last message that had any."""
        for mid in reversed(self.state.message_ids):
            texts = self.state.texts.get(mid)
            if texts:
                return "\n\n".join(texts)
        return "\n\n".join(self.state.texts.get("", []))

    def failure(self, exit_code: int | None, stderr: str = "") -> ChiaError | None:
        """The run's typed error, or None when it succeeded.

        A run succeeded when it exited 0, printed no ``error`` and finished at least one
        step that was not cut at the output limit (``length``, which opencode exits 0 on).
        """
        code = -1 if exit_code is None else exit_code
        if self.state.errors:
            return classify_run_error(
                self.node_id, self.state.errors[0], exit_code=code, stderr=stderr, now=self._now
            )
        if code != 0:
            return _classify_exit(self.node_id, code, stderr)
        if not self.state.steps:
            return UnknownOpenCodeError(
                self.node_id,
                exit_code=code,
                raw_message="opencode exited without finishing a model step",
                stderr=stderr,
            )
        if self.state.finish_reason == "length":
            return MaxOutputTokensError(
                self.node_id,
                exit_code=code,
                raw_message="the answer stopped at the output token limit (finish reason length)",
                partial_text=self.final_text(),
            )
        if self.state.finish_reason == "content-filter":
            return errors.ContentBlockedError(
                self.node_id, "content-filter", self.final_text() or "the answer was filtered"
            )
        return None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _usage(tokens: Any, cost: Any) -> Usage:
    tokens = tokens if isinstance(tokens, Mapping) else {}
    cache = tokens.get("cache")
    cache = cache if isinstance(cache, Mapping) else {}
    return Usage(
        input_tokens=_int(tokens.get("input")),
        output_tokens=_int(tokens.get("output")),
        reasoning_tokens=_int(tokens.get("reasoning")),
        cache_read_tokens=_int(cache.get("read")),
        cache_write_tokens=_int(cache.get("write")),
        cost_usd=float(cost)
        if isinstance(cost, int | float) and not isinstance(cost, bool)
        else None,
    )


def answer_from_export(
    export: Mapping[str, Any], message_ids: Sequence[str] = ()
) -> tuple[str, Usage, str | None]:
    """The answer, usage and finish reason of one run, from ``opencode export`` JSON.

    The run's assistant messages are those named in ``message_ids`` (from its stream); with
    none given, the assistant messages after the last user message. The answer is the text
    of the last of them that has text (synthetic and ignored parts left out); the usage is
    the sum over all of them.
    """
    messages = export.get("messages")
    messages = [m for m in messages if isinstance(m, Mapping)] if isinstance(messages, list) else []

    def info(message: Mapping[str, Any]) -> Mapping[str, Any]:
        value = message.get("info")
        return value if isinstance(value, Mapping) else {}

    if message_ids:
        wanted = set(message_ids)
        ours = [m for m in messages if info(m).get("id") in wanted]
    else:
        last_user = max(
            (i for i, m in enumerate(messages) if info(m).get("role") == "user"), default=-1
        )
        ours = messages[last_user + 1 :]
    ours = [m for m in ours if info(m).get("role") == "assistant"]
    usage = Usage()
    for message in ours:
        usage = usage + _usage(info(message).get("tokens"), info(message).get("cost"))
    answer = ""
    for message in reversed(ours):
        parts = message.get("parts")
        texts = [
            str(p["text"])
            for p in (parts if isinstance(parts, list) else [])
            if isinstance(p, Mapping)
            and p.get("type") == "text"
            and isinstance(p.get("text"), str)
            and p["text"]
            and not p.get("synthetic")
            and not p.get("ignored")
        ]
        if texts:
            answer = "\n\n".join(texts)
            break
    finish = info(ours[-1]).get("finish") if ours else None
    return answer, usage, finish if isinstance(finish, str) else None


# -- the backend ----------------------------------------------------------------------------------

#: the provider ``base_url=`` defines for a run (``-m chia/<model>``)
PROVIDER_ID = "chia"
#: opencode's own agents: a name among them is configured, not (re)defined
_BUILTIN_AGENTS = frozenset(
    {"build", "plan", "general", "explore", "title", "summary", "compaction"}
)
_AGENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: the session title every run sets: without one, each run makes an extra title request
RUN_TITLE = "chia"


@dataclass(frozen=True, slots=True)
class _RunContext:
    """What one run's later steps (the export) need from its invocation."""

    cwd: str
    env: Mapping[str, str]
    executable: str


#: the current run of this task (set by ``_invocation``, read by ``_new_parser``/``_finish``,
#: which the base calls in the same task): per run, never shared between concurrent calls
_RUN: contextvars.ContextVar[_RunContext] = contextvars.ContextVar("chia_opencode_run")


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            out[key] = _deep_merge(current, value)
        else:
            out[key] = value
    return out


class OpenCodeLLM(CLIBackend):
    """opencode as a backend: ``opencode run --format json``, then ``opencode export``.

    Parameters are the reference's. ``model`` is ``provider/model`` (opencode's default
    model when None); ``opencode_bin`` the executable (a name on ``PATH`` or a path);
    ``agent_name`` the opencode agent that runs the prompt: unless it is one of opencode's
    own (``build``, ``plan``...), it is defined for the run as a primary agent, with
    ``system_message`` as its prompt (opencode then adds its environment block);
    ``work_dir`` the directory the agent works in (default: this process's), which is also
    the ``$PWD`` opencode files the session under. Each call returns an
    :class:`OpenCodeQueryResult`; ``returncode`` is the run's exit code.

    Keyword-only, beyond the reference:

    * ``env`` adds or overrides child variables (``HOME``, ``XDG_DATA_HOME``,
      ``OPENCODE_DISABLE_MODELS_FETCH``...). Credentials reach opencode only from here,
      from ``api_key``, or from opencode's own login store (``opencode auth login``, under
      ``$XDG_DATA_HOME/opencode``): provider keys in this process's environment are not
      inherited. ``OPENCODE_CONFIG`` is this backend's (use ``config``).
    * ``base_url`` runs against that endpoint through a per-run provider ``chia`` (AI SDK
      package ``provider_package``, default ``@ai-sdk/openai-compatible``: OpenAI Chat
      Completions at ``base_url``, e.g. ``https://host/v1``); ``model`` is then the
      endpoint's model id. ``api_key`` is that provider's key, or, without ``base_url``,
      the key of ``model``'s provider (``provider.<id>.options.apiKey``). Both go into the
      0600 run config, never into argv or the environment.
    * ``config`` is merged over the generated run config (opencode config keys:
      ``{"provider": {...}, "permission": {...}}``).
    * ``resume_session=True`` continues the previous call's session, also on another worker
      and in another directory: the export travels in
      :attr:`OpenCodeQueryResult.session_export` (and in this object, which pickles) and is
      imported before ``run --session``. :meth:`restore_session` starts from a result.
    * ``idle_timeout_seconds`` ends a run that prints nothing for that long. Keep it well
      above opencode's silent retries (~80 s on a persistent 5xx) and its longest step.

    Tools are MCP servers opencode connects to itself (``<server>_<tool>`` to the model;
    ``allowed_tools`` limits them through the agent's permissions). Permissions opencode
    would ask for in a terminal are refused in ``run``; pass ``extra_cli_args=["--auto"]``
    to approve them.
    """

    backend_name: ClassVar[str] = "opencode"
    #: the Ray resource a worker must advertise to run opencode calls
    ray_resource: str = "opencode"
    result_class: ClassVar[type[QueryResult]] = OpenCodeQueryResult
    cli_name: ClassVar[str] = "opencode"
    install_command: ClassVar[str] = "npm install -g opencode-ai"
    raw_source: ClassVar[str] = "opencode"
    env_allowlist: ClassVar[tuple[str, ...]] = (
        "OPENCODE_CONFIG_DIR",
        "OPENCODE_DB",
        "OPENCODE_DISABLE_*",
        "OPENCODE_ENABLE_*",
        "OPENCODE_EXPERIMENTAL*",
        "OPENCODE_MODELS_PATH",
        "OPENCODE_MODELS_URL",
        "OPENCODE_PERMISSION",
        "AWS_REGION",
        "AWS_PROFILE",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "VERTEX_LOCATION",
    )

    def __init__(
        self,
        model: str | None = None,
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "opencode",
        logging_level: int = 10,
        log_dir: str | None = None,
        opencode_bin: str = "opencode",
        agent_name: str = "chia",
        work_dir: str | None = None,
        extra_cli_args: list[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        provider_package: str = "@ai-sdk/openai-compatible",
        config: Mapping[str, Any] | None = None,
        resume_session: bool = False,
        idle_timeout_seconds: float | None = 300.0,
        log_all: bool = False,
    ) -> None:
        if not isinstance(opencode_bin, str) or not opencode_bin:
            raise TypeError("opencode_bin must be a non-empty str")
        if not isinstance(agent_name, str) or not _AGENT_NAME.match(agent_name):
            raise ValueError(f"agent_name must match ^[A-Za-z0-9._-]{{1,64}}$, got {agent_name!r}")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if base_url is not None and not model:
            raise ValueError("base_url needs model: the model id at that endpoint")
        if (
            model
            and base_url is None
            and (not isinstance(model, str) or "/" not in model.strip("/"))
        ):
            raise ValueError(
                f"model must be 'provider/model' (e.g. 'anthropic/claude-sonnet-4-6'), got "
                f"{model!r}; or give base_url= to use it as a model id at that endpoint"
            )
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise TypeError("api_key must be a non-empty str or None")
        if api_key is not None and base_url is None and not model:
            raise ValueError("api_key needs model 'provider/model' (whose provider it is for)")
        if not isinstance(provider_package, str) or not provider_package:
            raise TypeError("provider_package must be a non-empty str")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError("config must be a mapping of opencode config keys")
        if not isinstance(resume_session, bool):
            raise TypeError("resume_session must be a bool")
        if env is not None and "OPENCODE_CONFIG" in env:
            raise ValueError(
                "env must not set OPENCODE_CONFIG: the run config is this backend's; pass "
                "config={...} to add settings (OPENCODE_CONFIG_CONTENT is merged over it)"
            )
        if config is not None:
            orjson.dumps(config)  # fails now, not at the first call
        super().__init__(
            model=model or "",
            system_message=system_message,
            timeout_seconds=timeout_seconds,
            retries=retries,
            logging_name=logging_name,
            logging_level=logging_level,
            log_dir=log_dir,
            cli_path=opencode_bin,
            env=env,
            extra_cli_args=extra_cli_args,
            work_dir=work_dir,
            idle_timeout_seconds=idle_timeout_seconds,
            log_all=log_all,
        )
        self.opencode_bin = opencode_bin
        self.agent_name = agent_name
        self.base_url = base_url
        self.api_key = api_key
        if api_key:
            register_secret(api_key)
        self.provider_package = provider_package
        self.config: dict[str, Any] = dict(config or {})
        self.resume_session = resume_session
        #: the session to resume, its export, and the directory it was recorded in
        self.session_id: str | None = None
        self.session_export: bytes | None = None
        self.session_cwd: str | None = None
        # where this object last left the session in a local database (see _restore)
        self._session_local: tuple[object, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"OpenCodeLLM(model={self.model or None!r}, logging_name={self.logging_name!r}, "
            f"opencode_bin={self.opencode_bin!r}, agent_name={self.agent_name!r}, "
            f"work_dir={self.work_dir!r}, api_key={'***' if self.api_key else None})"
        )

    # -- sessions ----------------------------------------------------------------------------

    def restore_session(self, result: OpenCodeQueryResult) -> None:
        """Continue the session of ``result`` (from any worker) on the next call."""
        if not isinstance(result, OpenCodeQueryResult):
            raise TypeError(f"expected an OpenCodeQueryResult, got {type(result).__name__}")
        session_id = result.session_id or (result.session.session_id if result.session else None)
        if not session_id:
            raise ValueError("the result carries no session to resume")
        self.resume_session = True
        self.session_id = session_id
        self.session_export = result.session_export
        self.session_cwd = result.session.cwd if result.session else None
        self._session_local = None

    def _cwd(self) -> str:
        return os.path.realpath(self.work_dir or os.getcwd())

    @staticmethod
    def _location(run: _RunContext) -> tuple[object, ...]:
        """Which local database and directory a session lives in, as seen from this process."""
        return (
            socket.gethostname(),
            os.getpid(),
            run.cwd,
            run.env.get("OPENCODE_DB"),
            run.env.get("XDG_DATA_HOME"),
            run.env.get("HOME"),
        )

    async def _restore(self, attempt: Attempt, scratch: Path, run: _RunContext) -> None:
        """Make the session to resume exist here, bound to this run's directory."""
        if self._session_local == self._location(run):
            return  # this process ran its last turn, here
        if self.session_export is None:
            if self.session_cwd is not None and self.session_cwd != run.cwd:
                raise InvalidRequestError(
                    self.logging_name,
                    raw_message=(
                        f"session {self.session_id} was recorded in {self.session_cwd!r} and "
                        f"there is no export of it to import for {run.cwd!r}: opencode hangs "
                        "when a session is resumed from another directory. Use the same "
                        "work_dir, or restore from a resume_session=True result"
                    ),
                )
            return  # resume what the local database has
        path = write_private(scratch / "session.json", self.session_export)
        outcome, output = await self._aux(attempt, run, ["import", str(path)])
        if outcome.exit_code != 0 or "Imported session" not in output:
            raise UnknownOpenCodeError(
                self.logging_name,
                exit_code=outcome.exit_code if outcome.exit_code is not None else -1,
                raw_message=f"opencode import of session {self.session_id} failed: "
                f"{output.strip()[:500] or outcome.stderr_tail.strip()[-500:]}",
                stderr=outcome.stderr_tail,
            )
        self._session_local = self._location(run)

    async def _aux(
        self, attempt: Attempt, run: _RunContext, args: Sequence[str]
    ) -> tuple[ProcessOutcome, str]:
        """Run ``opencode <args>`` (import, export) like the run itself; its stdout as text."""
        spec = ProcessSpec(
            argv=[run.executable, *args],
            env=run.env,
            cwd=run.cwd,
            total_timeout=max(attempt.remaining(), 0.001),
            idle_timeout=self.idle_timeout_seconds,
            stdout_format="text",
        )
        chunks: list[str] = []
        async with SupervisedProcess(spec, node_id=self.logging_name) as process:
            async for record in process.records():
                if isinstance(record, TextChunk):
                    chunks.append(record.text)
            outcome = await process.wait()
        return outcome, "".join(chunks)

    async def _export(self, attempt: Attempt, run: _RunContext, session_id: str) -> bytes | None:
        """``opencode export <session_id>``, or None (logged) when it fails."""
        outcome, output = await self._aux(attempt, run, ["export", session_id])
        start = output.find("{")
        if outcome.exit_code == 0 and start >= 0:
            data = output[start:].encode()
            try:
                if isinstance(orjson.loads(data), dict):
                    return data
            except orjson.JSONDecodeError:
                pass
        self.logger.warning(
            "%s: opencode export of %s failed (exit %s): %s",
            self.logging_name,
            session_id,
            outcome.exit_code,
            (outcome.stderr_tail.strip() or output.strip())[-500:],
        )
        return None

    # -- the run config ----------------------------------------------------------------------------

    def _run_config(self, tools: Sequence[ChiaTool]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": False,
            "share": "disabled",
        }
        agent: dict[str, Any] = {}
        if self.agent_name not in _BUILTIN_AGENTS:
            agent["mode"] = "primary"
        if self.system_message:
            agent["prompt"] = self.system_message
        permission: dict[str, str] = {}
        mcp: dict[str, Any] = {}
        for tool in tools:
            mcp[tool.name] = _mcp_config(tool, self.logging_name)
            if tool.allowed_tools is not None:
                # last matching rule wins: the server's tools off, then the allowed ones on
                permission[f"{tool.name}_*"] = "deny"
                for name in tool.allowed_tools:
                    permission[f"{tool.name}_{name}"] = "allow"
        if permission:
            agent["permission"] = permission
        if agent:
            config["agent"] = {self.agent_name: agent}
        if mcp:
            config["mcp"] = mcp
        if self.base_url:
            options: dict[str, Any] = {"baseURL": self.base_url}
            if self.api_key:
                options["apiKey"] = self.api_key
            config["provider"] = {
                PROVIDER_ID: {
                    "npm": self.provider_package,
                    "name": PROVIDER_ID,
                    "options": options,
                    "models": {self.model: {"name": self.model, "tool_call": True}},
                }
            }
            config["small_model"] = f"{PROVIDER_ID}/{self.model}"
        elif self.api_key:
            provider = self.model.split("/", 1)[0]
            config["provider"] = {provider: {"options": {"apiKey": self.api_key}}}
        return _deep_merge(config, self.config)

    # -- CLIBackend hooks ----------------------------------------------------------------------

    async def _invocation(self, attempt: Attempt, scratch: Path) -> Invocation:
        cwd = self._cwd()
        config_file = write_private(
            scratch / "opencode.json", orjson.dumps(self._run_config(attempt.tools))
        )
        env = {
            "PWD": cwd,  # opencode's project directory is $PWD, not the process's cwd
            "OPENCODE_CONFIG": str(config_file),
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
        }
        executable = self._executable()
        run = _RunContext(
            cwd=cwd,
            env=build_child_env(allow=self.env_allowlist, explicit={**env, **self.env}),
            executable=executable,
        )
        _RUN.set(run)
        argv = [executable, "run", "--format", "json", "--thinking", "--title", RUN_TITLE]
        argv += ["--print-logs", "--log-level", "ERROR", "--agent", self.agent_name]
        if self.model:
            argv += ["-m", f"{PROVIDER_ID}/{self.model}" if self.base_url else self.model]
        if self.resume_session and self.session_id:
            await self._restore(attempt, scratch, run)
            argv += ["--session", self.session_id]
        argv += self.extra_cli_args
        return Invocation(argv=argv, env=env, stdin=attempt.message.encode(), cwd=cwd)

    def _new_parser(self) -> OpenCodeStreamParser:
        return OpenCodeStreamParser(self.logging_name, model=self.model or None, cwd=_RUN.get().cwd)

    async def _finish(
        self, attempt: Attempt, parser: RecordParser, outcome: ProcessOutcome, stdout: str
    ) -> QueryResult:
        assert isinstance(parser, OpenCodeStreamParser)
        run = _RUN.get()
        state = parser.state
        failure = parser.failure(outcome.exit_code, outcome.stderr_tail)
        session_id = state.session_id
        export: bytes | None = None
        continuable = failure is None or isinstance(failure, errors.MaxOutputTokensError)
        if session_id and (failure is None or (self.resume_session and continuable)):
            export = await self._export(attempt, run, session_id)
        if self.resume_session and session_id and continuable:
            # A cut answer is part of the conversation too: it can be continued.
            self.session_id = session_id
            self.session_export = export  # None rather than a stale one: never lose a turn
            self.session_cwd = run.cwd
            self._session_local = self._location(run)
        if failure is not None:
            raise failure
        answer, usage = parser.final_text(), None
        if export is not None:
            exported = orjson.loads(export)
            text, usage, _ = answer_from_export(exported, state.message_ids)
            answer = text or answer
        result = attempt.result(
            result=answer,
            returncode=outcome.exit_code if outcome.exit_code is not None else -1,
            stderr=outcome.stderr_tail,
            stream_result=stdout,
            success=True,
            session_id=session_id,
            session_export=export if self.resume_session else None,
        )
        if usage is not None and usage != Usage():
            result = dataclasses.replace(result, usage=usage)
        return result


def _mcp_config(tool: ChiaTool, node_id: str) -> dict[str, Any]:
    """One ``mcp`` entry of the run config (its secrets stay in the 0600 file)."""
    timeout_ms = max(1, round(tool.tool_timeout * 1000))
    for value in (*tool.headers.values(), *tool.env.values()):
        if len(value) >= 16:  # likely a token: mask it should the CLI ever echo it
            register_secret(value)
    if tool.transport == "http":
        config: dict[str, Any] = {
            "type": "remote",
            "url": tool.url,
            "enabled": True,
            "timeout": timeout_ms,
        }
        if tool.headers:
            config["headers"] = dict(tool.headers)
            config["oauth"] = False  # the caller authenticates with these headers
        return config
    if tool.transport == "stdio":
        config = {
            "type": "local",
            "command": list(tool.command),
            "enabled": True,
            "timeout": timeout_ms,
        }
        if tool.env:
            config["environment"] = dict(tool.env)
        if tool.cwd:
            config["cwd"] = tool.cwd
        return config
    # CLIBackend serves in-process servers on loopback before a run gets here
    raise InvalidRequestError(
        node_id, raw_message=f"tool {tool.name!r}: opencode reaches MCP servers over HTTP or stdio"
    )
