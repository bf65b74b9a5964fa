"""Anthropic Messages (``POST /v1/messages``), as the anthropic SDK and Claude Code use it.

A stream is ``message_start``, a ``ping``, then per content block ``content_block_start`` /
``content_block_delta`` (``thinking_delta`` + ``signature_delta``, ``text_delta``,
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` with the stop reason and
usage, and ``message_stop``. Errors are ``{"type": "error", "error": {"type", "message"},
"request_id"}`` with a ``request-id`` header; a mid-stream failure is an ``event: error``.
Claude Code also probes ``HEAD <base>`` before its first request, which is answered 200.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from chia_async.testing.protocols.base import BodyReply, Protocol, Reply, StreamReply
from chia_async.testing.protocols.openai_chat import (
    fault_body,
    is_models_path,
    models_auxiliary,
    new_id,
    retry_headers,
    split_fragments,
)
from chia_async.testing.script import (
    ErrorKind,
    Fault,
    ParsedRequest,
    StopReason,
    ToolResultSeen,
    Turn,
)

__all__ = ["AnthropicProtocol"]

_MESSAGES_PATHS = frozenset({"/v1/messages", "/messages"})
_COUNT_PATHS = frozenset({"/v1/messages/count_tokens", "/messages/count_tokens"})
_ROOT_PATHS = frozenset({"/", ""})

_STOP_REASONS: dict[StopReason, str] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "content_filter": "refusal",
}

# (status, error type, message) per error kind, worded as api.anthropic.com words them
_ERRORS: dict[ErrorKind, tuple[int, str, str]] = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "This request would exceed your organization's rate limit of 50 requests per minute. "
        "For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the "
        "response headers for current usage. Please reduce the prompt length or the maximum "
        "tokens requested, or try again later.",
    ),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "server": (500, "api_error", "Internal server error"),
    "authentication": (401, "authentication_error", "invalid x-api-key"),
    "permission": (
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "billing": (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. "
        "Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    "invalid_request": (400, "invalid_request_error", "Invalid request (scripted)."),
    "context_length": (
        400,
        "invalid_request_error",
        "prompt is too long: 250000 tokens > 200000 maximum",
    ),
    "not_found": (404, "not_found_error", "model: {model}"),
}

_SSE_HEADERS: Mapping[str, str] = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
}


def _request_id() -> str:
    return new_id("req_", 96)


def _event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        block.get("text", "")
        for block in content
        if isinstance(block, Mapping) and block.get("type") == "text"
    )


def _tool_input(arguments: Mapping[str, Any] | str) -> Any:
    if not isinstance(arguments, str):
        return dict(arguments)
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        # a deliberately broken argument string is passed on as-is, so the client sees it
        return arguments


def _rfc3339(seconds_from_now: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _error_payload(fault: Fault, request: ParsedRequest | None) -> tuple[int, dict[str, Any]]:
    status, etype, message = _ERRORS[fault.error]
    status = fault.status or status
    if fault.error == "billing" and status == 402:
        etype = "billing_error"
    elif status == 413:
        etype, message = "request_too_large", "Request exceeds the maximum allowed number of bytes."
    elif status == 504:
        etype, message = "timeout_error", "Request timed out"
    model = request.model if request and request.model else "claude-opus-4-8"
    text = fault.message if fault.message is not None else message.format(model=model)
    return status, {"type": etype, "message": text}


class AnthropicProtocol(Protocol):
    """``POST /v1/messages``, ``/v1/messages/count_tokens``, ``HEAD|GET /``, ``GET /v1/models``."""

    name = "anthropic"

    def match(self, method: str, path: str) -> bool:
        """Claim messages, token counting, the root probe and the model list."""
        if method == "POST":
            return path in _MESSAGES_PATHS or path in _COUNT_PATHS
        if method in ("HEAD", "GET") and path in _ROOT_PATHS:
            return True
        return is_models_path(method, path)

    def parse(self, method: str, path: str, query: str, body: Any) -> ParsedRequest | None:
        """Read a messages request; everything else is auxiliary."""
        if method != "POST" or path not in _MESSAGES_PATHS:
            return None
        if not isinstance(body, Mapping):
            raise ValueError("the request body must be a JSON object")
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise ValueError("'messages' must be a list")
        last_user = ""
        results: list[ToolResultSeen] = []
        for message in messages:
            if not isinstance(message, Mapping) or message.get("role") != "user":
                continue
            content = message.get("content")
            text = _block_text(content)
            if text:
                last_user = text
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, Mapping) and block.get("type") == "tool_result":
                        results.append(
                            ToolResultSeen(
                                call_id=str(block.get("tool_use_id", "")),
                                output=_block_text(block.get("content")),
                                is_error=bool(block.get("is_error")),
                            )
                        )
        tools = tuple(
            tool["name"]
            for tool in body.get("tools") or ()
            if isinstance(tool, Mapping) and isinstance(tool.get("name"), str)
        )
        max_tokens = body.get("max_tokens")
        return ParsedRequest(
            protocol=self.name,
            model=str(body.get("model") or ""),
            stream=bool(body.get("stream")),
            system=_block_text(body.get("system")),
            last_user_text=last_user,
            tool_names=tools,
            tool_results=tuple(results),
            message_count=len(messages),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        )

    def auxiliary(
        self, method: str, path: str, query: str, body: Any, headers: Mapping[str, str]
    ) -> BodyReply:
        """Answer the root probe, token counting and the model list."""
        if path in _COUNT_PATHS:
            tokens = max(1, len(orjson.dumps(body)) // 4) if body else 1
            return BodyReply(
                status=200,
                headers={"content-type": "application/json", "request-id": _request_id()},
                body=orjson.dumps({"input_tokens": tokens}),
            )
        models = models_auxiliary(method, path)
        if models is not None:
            return models
        # HEAD/GET <base>: Claude Code's connectivity probe only looks at the status
        return BodyReply(status=200, headers={"content-type": "text/plain; charset=utf-8"})

    def render(self, turn: Turn, request: ParsedRequest) -> Reply:
        """Render ``turn`` as a ``message`` body or an SSE event stream."""
        message_id = new_id("msg_", 96)
        model = turn.model or request.model or "claude-opus-4-8"
        stop_reason = _STOP_REASONS[turn.stop_reason]
        usage = {
            "input_tokens": turn.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": turn.output_tokens,
            "service_tier": "standard",
        }
        reasoning = turn.reasoning_chunks()
        signature = new_id("sig_", 256) if reasoning else ""
        text = turn.text_chunks()
        calls = [(call.id or new_id("toolu_", 96), call) for call in turn.tool_calls]
        headers = {"request-id": _request_id()}

        if not request.stream:
            content: list[dict[str, Any]] = []
            if reasoning:
                content.append(
                    {"type": "thinking", "thinking": "".join(reasoning), "signature": signature}
                )
            if text:
                content.append({"type": "text", "text": "".join(text)})
            content.extend(
                {
                    "type": "tool_use",
                    "id": call_id,
                    "name": call.name,
                    "input": _tool_input(call.arguments),
                }
                for call_id, call in calls
            )
            body = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }
            headers["content-type"] = "application/json"
            return BodyReply(status=200, headers=headers, body=orjson.dumps(body))

        start_usage = {**usage, "output_tokens": 1}
        chunks = [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            ),
            _event("ping", {"type": "ping"}),
        ]
        index = 0

        def block(start: Mapping[str, Any], deltas: Sequence[Mapping[str, Any]]) -> None:
            nonlocal index
            chunks.append(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            chunks.extend(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
                for delta in deltas
            )
            chunks.append(
                _event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
            index += 1

        if reasoning:
            block(
                {"type": "thinking", "thinking": "", "signature": ""},
                [{"type": "thinking_delta", "thinking": piece} for piece in reasoning]
                + [{"type": "signature_delta", "signature": signature}],
            )
        if text:
            block(
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": piece} for piece in text],
            )
        for call_id, call in calls:
            arguments = (
                call.arguments
                if isinstance(call.arguments, str)
                else orjson.dumps(call.arguments).decode()
            )
            block(
                {"type": "tool_use", "id": call_id, "name": call.name, "input": {}},
                [
                    {"type": "input_json_delta", "partial_json": fragment}
                    for fragment in split_fragments(arguments, turn.chunks)
                ],
            )
        chunks.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {
                        "input_tokens": turn.input_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": turn.output_tokens,
                    },
                },
            )
        )
        error_chunk = None
        if turn.fault is not None and turn.fault.kind == "midstream":
            error_chunk = self.render_midstream_error(turn.fault, request)
        return StreamReply(
            status=200,
            headers={**_SSE_HEADERS, **headers},
            chunks=chunks,
            end=[_event("message_stop", {"type": "message_stop"})],
            error_chunk=error_chunk,
            malformed_chunk=b'event: content_block_delta\ndata: {"type": "content_block_\n\n',
        )

    def render_error(self, fault: Fault, request: ParsedRequest | None) -> BodyReply:
        """An Anthropic error response with a ``request-id`` header.

        A rate-limit error carries the ``anthropic-ratelimit-*`` headers (resets in RFC 3339)
        and ``retry-after`` (1 s unless ``fault.retry_after`` says otherwise), as the API
        sends them; an overloaded error carries ``x-should-retry: true``.
        """
        status, error = _error_payload(fault, request)
        rid = _request_id()
        headers: dict[str, str] = {"content-type": "application/json", "request-id": rid}
        if fault.error == "rate_limit":
            wait = fault.retry_after if fault.retry_after is not None else 1.0
            reset = _rfc3339(wait)
            for bucket, limit in (
                ("requests", "50"),
                ("tokens", "80000"),
                ("input-tokens", "40000"),
                ("output-tokens", "8000"),
            ):
                headers[f"anthropic-ratelimit-{bucket}-limit"] = limit
                headers[f"anthropic-ratelimit-{bucket}-remaining"] = (
                    "0" if bucket == "requests" else limit
                )
                headers[f"anthropic-ratelimit-{bucket}-reset"] = reset
            headers["retry-after"] = str(max(0, math.ceil(wait)))
        elif fault.error == "overloaded":
            headers["x-should-retry"] = "true"
        headers.update(retry_headers(fault))
        headers.update(fault.headers)
        body = fault_body(fault, {"type": "error", "error": error, "request_id": rid})
        return BodyReply(status=status, headers=headers, body=body)

    def render_midstream_error(self, fault: Fault, request: ParsedRequest) -> bytes:
        """``event: error``, which the anthropic SDK raises from the stream."""
        _, error = _error_payload(fault, request)
        body = fault_body(fault, {"type": "error", "error": error, "request_id": _request_id()})
        return b"event: error\ndata: " + body + b"\n\n"
