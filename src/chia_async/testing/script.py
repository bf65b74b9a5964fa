"""Scripts for the scripted model server: what the fake model says, turn by turn.

A *script* is a named sequence of :class:`Turn` objects (or a function that computes the
next turn from the request). Each generation request to the server consumes one turn.
A turn is provider-neutral: every wire protocol renders the same ``Turn`` in its own shape
(SSE events, AWS event-stream frames, JSON bodies, error bodies).

Faults are part of a turn: ``Turn(fault=Fault.http(429, retry_after=1))`` makes that request
fail the way the real service fails, in the provider's own error body.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

__all__ = [
    "ErrorKind",
    "Fault",
    "FaultKind",
    "ParsedRequest",
    "RecordedRequest",
    "Script",
    "ScriptFileError",
    "StopReason",
    "ToolCall",
    "ToolResultSeen",
    "Turn",
    "TurnFunction",
    "load_scripts",
]

#: Provider-neutral stop reasons; each protocol maps them to its own words
#: (``end_turn``/``stop``/``STOP``/``end_turn``, ``max_tokens``/``length``/``MAX_TOKENS``, ...).
StopReason = Literal["end_turn", "tool_use", "max_tokens", "content_filter"]

#: Provider-neutral error kinds; each protocol renders them with its own status code, error
#: type/code and body (e.g. ``overloaded`` is Anthropic 529 ``overloaded_error``, OpenAI 503,
#: Gemini 503 ``UNAVAILABLE``, Bedrock ``ServiceUnavailableException``).
ErrorKind = Literal[
    "rate_limit",  # 429 (Bedrock: ThrottlingException)
    "overloaded",  # 529/503
    "server",  # 500
    "authentication",  # 401 (Bedrock: UnrecognizedClientException 403)
    "permission",  # 403 (Bedrock: AccessDeniedException)
    "billing",  # OpenAI 429 insufficient_quota, Anthropic 400 billing, 402 elsewhere
    "invalid_request",  # 400 (Bedrock: ValidationException)
    "context_length",  # 400 with the provider's context-length wording/code
    "not_found",  # 404 model not found
]

FaultKind = Literal[
    "http_error",  # respond with status/headers/provider error body, no stream
    "midstream",  # stream `after_chunks` chunks, then the provider's in-stream error event
    "stall",  # send headers (and `after_chunks` chunks), then silence until the client leaves
    "drop",  # send `after_chunks` chunks, then close the connection without an end marker
    "malformed",  # send `after_chunks` chunks, then one chunk that is not valid for the protocol
    "truncate",  # send every content chunk but omit the end marker ([DONE], message_stop, ...)
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """A failure the server plays instead of (or in the middle of) a normal turn."""

    kind: FaultKind
    error: ErrorKind = "server"
    status: int | None = None  # overrides the protocol's status for `error`
    message: str | None = None  # overrides the protocol's default message
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. retry-after, x-ratelimit-*
    body: bytes | str | Mapping[str, Any] | None = None  # overrides the whole error body
    after_chunks: int = 0  # for midstream/stall/drop/malformed
    retry_after: float | None = (
        None  # adds retry-after (+ retry-after-ms) headers; Gemini RetryInfo
    )

    @classmethod
    def http(
        cls,
        status: int,
        error: ErrorKind | None = None,
        *,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        """An HTTP error response. ``error`` defaults from the status (429 → rate_limit...)."""
        kind = error or _error_for_status(status)
        return cls(
            kind="http_error",
            error=kind,
            status=status,
            message=message,
            headers=dict(headers or {}),
            body=body,
            retry_after=retry_after,
        )


def _error_for_status(status: int) -> ErrorKind:
    table: dict[int, ErrorKind] = {
        400: "invalid_request",
        401: "authentication",
        402: "billing",
        403: "permission",
        404: "not_found",
        413: "context_length",
        429: "rate_limit",
        503: "overloaded",
        529: "overloaded",
    }
    return table.get(status, "server" if status >= 500 else "invalid_request")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A tool call the fake model makes. ``id`` is generated when omitted."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    namespace: str | None = None  # OpenAI Responses namespaced tools (Codex MCP: "mcp__<server>")


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One model response.

    ``text`` and ``reasoning`` may be given as a list of chunks; a plain string is split into
    ``chunks`` roughly equal pieces. ``stop`` defaults to ``tool_use`` when there are tool calls,
    else ``end_turn``. ``latency`` delays the response headers; ``chunk_delay`` delays every
    chunk after the first (a slow drip). ``fault`` replaces or interrupts the turn.
    """

    text: str | Sequence[str] = ""
    reasoning: str | Sequence[str] = ""
    tool_calls: Sequence[ToolCall] = ()
    stop: StopReason | None = None
    input_tokens: int = 10
    output_tokens: int = 5
    chunks: int = 2
    latency: float = 0.0
    chunk_delay: float = 0.0
    fault: Fault | None = None
    block_reason: str | None = None  # Gemini promptFeedback.blockReason (no candidates)
    model: str | None = None  # echoed model name; defaults to the request's model

    @property
    def stop_reason(self) -> StopReason:
        """The effective stop reason."""
        if self.stop is not None:
            return self.stop
        return "tool_use" if self.tool_calls else "end_turn"

    def text_chunks(self) -> list[str]:
        """The answer text as the list of deltas to stream."""
        return _split(self.text, self.chunks)

    def reasoning_chunks(self) -> list[str]:
        """The reasoning text as the list of deltas to stream."""
        return _split(self.reasoning, self.chunks)

    @property
    def full_text(self) -> str:
        """The whole answer text."""
        return "".join(self.text_chunks())


def _split(value: str | Sequence[str], parts: int) -> list[str]:
    if not isinstance(value, str):
        return [str(v) for v in value if v]
    if not value:
        return []
    parts = max(1, min(parts, len(value)))
    size = -(-len(value) // parts)
    return [value[i : i + size] for i in range(0, len(value), size)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResultSeen:
    """A tool result the client sent back to the model in a request."""

    call_id: str
    output: str
    is_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedRequest:
    """The protocol-neutral view of a generation request, for turn functions and tests."""

    protocol: str  # "openai_chat" | "openai_responses" | "anthropic" | "gemini" | "bedrock"
    model: str
    stream: bool
    system: str = ""
    last_user_text: str = ""
    tool_names: tuple[str, ...] = ()
    tool_results: tuple[ToolResultSeen, ...] = ()
    message_count: int = 0
    max_tokens: int | None = None
    # Protocol-specific request settings the renderer needs and that have no neutral field,
    # e.g. OpenAI Chat ``{"include_usage": True}`` from ``stream_options``. Left out of
    # equality and hashing, so a ParsedRequest stays hashable and compares by its neutral view.
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """Every request the server received, recorded for assertions."""

    script: str
    method: str
    path: str  # path below the script prefix, e.g. "/v1/messages"
    query: str
    headers: Mapping[str, str]  # lower-cased names
    body: Any  # parsed JSON, or raw bytes when not JSON
    parsed: ParsedRequest | None  # None for non-generation requests (HEAD /, count_tokens)
    received_at: float  # time.monotonic()
    turn_index: int | None = None  # which turn of the script answered it


TurnFunction = Callable[[ParsedRequest], "Turn"]


class Script:
    """A named sequence of turns, consumed one per generation request.

    ``turns`` is a sequence of :class:`Turn` or a function ``ParsedRequest -> Turn``.
    With ``repeat=True`` the sequence loops (handy for benchmarks); otherwise a request
    after the last turn is answered with a 500 whose message says the script is exhausted.
    """

    def __init__(self, name: str, turns: Sequence[Turn] | TurnFunction, *, repeat: bool = False):
        if not name or "/" in name:
            raise ValueError(f"script name must be a non-empty path segment, got {name!r}")
        self.name = name
        self.repeat = repeat
        self._fn: TurnFunction | None = None
        self._turns: list[Turn] = []
        if callable(turns):
            self._fn = turns
        else:
            self._turns = list(turns)
            for t in self._turns:
                if not isinstance(t, Turn):
                    raise TypeError(f"script {name!r}: expected Turn objects, got {t!r}")
        self._counter = itertools.count()

    def next_turn(self, request: ParsedRequest) -> tuple[int, Turn | None]:
        """Return ``(index, turn)`` for the next request; ``turn`` is None when exhausted."""
        index = next(self._counter)
        if self._fn is not None:
            return index, self._fn(request)
        if index < len(self._turns):
            return index, self._turns[index]
        if self.repeat and self._turns:
            return index, self._turns[index % len(self._turns)]
        return index, None


class ScriptFileError(ValueError):
    """A script file (or mapping) that :func:`load_scripts` cannot turn into scripts."""


_TURN_KEYS = frozenset(
    {
        "text",
        "reasoning",
        "tool_calls",
        "stop",
        "input_tokens",
        "output_tokens",
        "chunks",
        "latency",
        "chunk_delay",
        "fault",
        "block_reason",
        "model",
    }
)
_TOOL_CALL_KEYS = frozenset({"name", "arguments", "id", "namespace"})
_FAULT_KEYS = frozenset(
    {"kind", "error", "status", "message", "headers", "body", "after_chunks", "retry_after"}
)
_SCRIPT_KEYS = frozenset({"turns", "repeat"})


def load_scripts(source: str | os.PathLike[str] | Mapping[str, Any]) -> list[Script]:
    """Build scripts from a script file (JSON, or YAML when PyYAML is installed) or a mapping.

    The format is ``{"scripts": {"<name>": {"repeat": false, "turns": [<turn>, ...]}}}``; a
    script may also be given as a bare list of turns. A turn is a mapping of :class:`Turn`
    fields, with ``tool_calls`` as a list of :class:`ToolCall` mappings and ``fault`` as a
    :class:`Fault` mapping (an ``http_error`` fault without ``error`` takes it from ``status``,
    as :meth:`Fault.http` does). Unknown keys and wrongly typed values raise
    :class:`ScriptFileError` naming where they are.
    """
    if isinstance(source, Mapping):
        data: Any = source
        origin = "script mapping"
    else:
        path = os.fspath(source)
        origin = path
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise ScriptFileError(f"cannot read script file {path!r}: {exc}") from exc
        data = _decode_script_file(path, raw)
    if not isinstance(data, Mapping):
        raise ScriptFileError(f"{origin}: the top level must be a mapping with a 'scripts' key")
    _reject_unknown(data, frozenset({"scripts"}), origin)
    scripts = data.get("scripts")
    if not isinstance(scripts, Mapping) or not scripts:
        raise ScriptFileError(f"{origin}: 'scripts' must be a non-empty mapping of name -> script")
    return [
        _script_from(str(name), spec, f"{origin}: scripts.{name}") for name, spec in scripts.items()
    ]


def _decode_script_file(path: str, raw: bytes) -> Any:
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError as exc:
            raise ScriptFileError(
                f"{path}: YAML script files need PyYAML, which is not installed; use JSON"
            ) from exc
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ScriptFileError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ScriptFileError(f"{path}: invalid JSON: {exc}") from exc


def _reject_unknown(data: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ScriptFileError(
                f"{where}: unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})"
            )


def _script_from(name: str, spec: Any, where: str) -> Script:
    repeat = False
    if isinstance(spec, Mapping):
        _reject_unknown(spec, _SCRIPT_KEYS, where)
        repeat = _typed(spec.get("repeat", False), bool, f"{where}.repeat")
        turns_spec = spec.get("turns")
    else:
        turns_spec = spec
    if not isinstance(turns_spec, list):
        raise ScriptFileError(f"{where}.turns: expected a list of turns")
    turns = [_turn_from(t, f"{where}.turns[{i}]") for i, t in enumerate(turns_spec)]
    try:
        return Script(name, turns, repeat=repeat)
    except ValueError as exc:
        raise ScriptFileError(f"{where}: {exc}") from exc


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    # bool is an int subclass; a number field given `true` is a mistake worth reporting
    if (
        isinstance(value, bool)
        and kind is not bool
        and not (isinstance(kind, tuple) and bool in kind)
    ):
        raise ScriptFileError(f"{where}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ScriptFileError(f"{where}: expected {names}, got {value!r}")
    return value


def _text_value(value: Any, where: str) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ScriptFileError(f"{where}: expected a string or a list of strings, got {value!r}")


def _literal(value: Any, allowed: tuple[Any, ...], where: str) -> Any:
    if value not in allowed:
        raise ScriptFileError(
            f"{where}: {value!r} is not one of: {', '.join(str(a) for a in allowed)}"
        )
    return value


def _turn_from(spec: Any, where: str) -> Turn:
    if not isinstance(spec, Mapping):
        raise ScriptFileError(f"{where}: expected a mapping of turn fields, got {spec!r}")
    _reject_unknown(spec, _TURN_KEYS, where)
    kwargs: dict[str, Any] = {}
    for key in ("text", "reasoning"):
        if key in spec:
            kwargs[key] = _text_value(spec[key], f"{where}.{key}")
    for key in ("input_tokens", "output_tokens", "chunks"):
        if key in spec:
            kwargs[key] = _typed(spec[key], int, f"{where}.{key}")
    for key in ("latency", "chunk_delay"):
        if key in spec:
            kwargs[key] = float(_typed(spec[key], (int, float), f"{where}.{key}"))
    for key in ("block_reason", "model"):
        if spec.get(key) is not None:
            kwargs[key] = _typed(spec[key], str, f"{where}.{key}")
    if spec.get("stop") is not None:
        kwargs["stop"] = _literal(spec["stop"], get_args(StopReason), f"{where}.stop")
    if "tool_calls" in spec:
        calls = _typed(spec["tool_calls"], list, f"{where}.tool_calls")
        kwargs["tool_calls"] = tuple(
            _tool_call_from(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls)
        )
    if spec.get("fault") is not None:
        kwargs["fault"] = _fault_from(spec["fault"], f"{where}.fault")
    return Turn(**kwargs)


def _tool_call_from(spec: Any, where: str) -> ToolCall:
    if not isinstance(spec, Mapping):
        raise ScriptFileError(f"{where}: expected a mapping, got {spec!r}")
    _reject_unknown(spec, _TOOL_CALL_KEYS, where)
    if "name" not in spec:
        raise ScriptFileError(f"{where}: missing 'name'")
    kwargs: dict[str, Any] = {"name": _typed(spec["name"], str, f"{where}.name")}
    if "arguments" in spec:
        kwargs["arguments"] = _typed(spec["arguments"], (dict, str), f"{where}.arguments")
    for key in ("id", "namespace"):
        if spec.get(key) is not None:
            kwargs[key] = _typed(spec[key], str, f"{where}.{key}")
    return ToolCall(**kwargs)


def _fault_from(spec: Any, where: str) -> Fault:
    if not isinstance(spec, Mapping):
        raise ScriptFileError(f"{where}: expected a mapping, got {spec!r}")
    _reject_unknown(spec, _FAULT_KEYS, where)
    if "kind" not in spec:
        raise ScriptFileError(f"{where}: missing 'kind'")
    kind = _literal(spec["kind"], get_args(FaultKind), f"{where}.kind")
    kwargs: dict[str, Any] = {"kind": kind}
    status = spec.get("status")
    if status is not None:
        kwargs["status"] = _typed(status, int, f"{where}.status")
    if spec.get("error") is not None:
        kwargs["error"] = _literal(spec["error"], get_args(ErrorKind), f"{where}.error")
    elif kind == "http_error" and status is not None:
        kwargs["error"] = _error_for_status(status)
    if spec.get("message") is not None:
        kwargs["message"] = _typed(spec["message"], str, f"{where}.message")
    if spec.get("headers") is not None:
        headers = _typed(spec["headers"], dict, f"{where}.headers")
        kwargs["headers"] = {str(k): str(v) for k, v in headers.items()}
    if spec.get("body") is not None:
        kwargs["body"] = _typed(spec["body"], (str, dict), f"{where}.body")
    if "after_chunks" in spec:
        kwargs["after_chunks"] = _typed(spec["after_chunks"], int, f"{where}.after_chunks")
    if spec.get("retry_after") is not None:
        kwargs["retry_after"] = float(
            _typed(spec["retry_after"], (int, float), f"{where}.retry_after")
        )
    return Fault(**kwargs)
