"""OpenAI Chat Completions (``POST /v1/chat/completions``), as the openai SDK and opencode use it.

Streaming answers are SSE ``data:`` lines of ``chat.completion.chunk`` objects ending with
``data: [DONE]``; errors are ``{"error": {"message", "type", "param", "code"}}`` bodies with
OpenAI's status codes, codes and wording. The error helpers here are shared with the
Responses protocol, which uses the same error envelope.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from typing import Any

import orjson

from chia_async.testing.protocols.base import BodyReply, Protocol, Reply, StreamReply
from chia_async.testing.script import (
    ErrorKind,
    Fault,
    ParsedRequest,
    StopReason,
    ToolCall,
    ToolResultSeen,
    Turn,
)

__all__ = ["OpenAIChatProtocol"]

_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODELS_PATHS = ("/v1/models", "/models")

_FINISH_REASONS: dict[StopReason, str] = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "content_filter": "content_filter",
}

#: Model ids listed by ``GET /v1/models``; a scripted server answers for any model name.
MOCK_MODELS = ("mock-model",)

# (status, type, code, param, message) per error kind, worded as api.openai.com words them.
_ERRORS: dict[ErrorKind, tuple[int, str, str | None, str | None, str]] = {
    "rate_limit": (
        429,
        "requests",
        "rate_limit_exceeded",
        None,
        "Rate limit reached for {model} in organization org-mock on requests per min (RPM): "
        "Limit 60, Used 60, Requested 1. Please try again in {retry}s. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.",
    ),
    "billing": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        None,
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
    ),
    "context_length": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130000 tokens. Please reduce the length of the messages.",
    ),
    "authentication": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        None,
        "Incorrect API key provided: sk-****. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "permission": (
        403,
        "invalid_request_error",
        None,
        None,
        "You have insufficient permissions for this operation. Missing scopes: model.request.",
    ),
    "not_found": (
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "invalid_request": (
        400,
        "invalid_request_error",
        None,
        None,
        "Invalid request (scripted).",
    ),
    "server": (
        500,
        "server_error",
        None,
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "overloaded": (
        503,
        "server_error",
        None,
        None,
        "The engine is currently overloaded, please try again later.",
    ),
}

# a private generator, so that seeding the global one in a test does not repeat ids
_random = random.Random()

_JSON = "application/json"
_SSE_HEADERS: Mapping[str, str] = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
}


def new_id(prefix: str, bits: int = 128) -> str:
    """``prefix`` + a random hex suffix: ids must be unique, not secret, and cheap to make."""
    return f"{prefix}{_random.getrandbits(bits):0{bits // 4}x}"


def request_id() -> str:
    """A fresh ``x-request-id`` value."""
    return new_id("req_")


def arguments_json(call: ToolCall) -> str:
    """The tool call's arguments as the JSON string OpenAI sends (a str is sent verbatim)."""
    if isinstance(call.arguments, str):
        return call.arguments
    return orjson.dumps(call.arguments).decode()


def split_fragments(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` contiguous non-empty fragments."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def content_text(content: Any) -> str:
    """Join the text of a message ``content`` that is a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return ""


def retry_headers(fault: Fault) -> dict[str, str]:
    """``retry-after`` and ``retry-after-ms`` for a fault that sets ``retry_after``."""
    if fault.retry_after is None:
        return {}
    return {
        "retry-after": str(max(0, math.ceil(fault.retry_after))),
        "retry-after-ms": str(max(0, round(fault.retry_after * 1000))),
    }


def error_object(
    fault: Fault, request: ParsedRequest | None, overrides: Mapping[ErrorKind, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """The status and ``{"message", "type", "param", "code"}`` error object for ``fault``.

    ``overrides`` replaces the default message of some error kinds (the Responses API words
    its context-length error differently).
    """
    status, etype, code, param, message = _ERRORS[fault.error]
    if overrides and fault.error in overrides:
        message = overrides[fault.error]
    retry = fault.retry_after if fault.retry_after is not None else 1
    message = message.format(
        model=(request.model if request and request.model else "gpt-4o"),
        retry=f"{retry:g}",
    )
    return fault.status or status, {
        "message": fault.message if fault.message is not None else message,
        "type": etype,
        "param": param,
        "code": code,
    }


def openai_error_reply(
    fault: Fault, request: ParsedRequest | None, overrides: Mapping[ErrorKind, str] | None = None
) -> BodyReply:
    """An OpenAI-style HTTP error response for ``fault`` (shared by Chat and Responses)."""
    status, error = error_object(fault, request, overrides)
    headers: dict[str, str] = {"content-type": _JSON, "x-request-id": request_id()}
    if fault.error == "rate_limit":
        reset = f"{fault.retry_after if fault.retry_after is not None else 1:g}s"
        headers.update(
            {
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": reset,
                "x-ratelimit-limit-tokens": "150000",
                "x-ratelimit-remaining-tokens": "149984",
                "x-ratelimit-reset-tokens": "6ms",
            }
        )
    headers.update(retry_headers(fault))
    headers.update(fault.headers)
    return BodyReply(status=status, headers=headers, body=fault_body(fault, {"error": error}))


def fault_body(fault: Fault, default: Mapping[str, Any]) -> bytes:
    """The error body: ``fault.body`` when it overrides the protocol's, else ``default``."""
    body = fault.body
    if body is None:
        return orjson.dumps(default)
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


def model_list_body(created: int) -> bytes:
    """A ``GET /v1/models`` body that both the openai and the anthropic SDK can read.

    The two APIs share the path, so one body carries both shapes' fields.
    """
    data = [
        {
            "id": model,
            "object": "model",
            "created": created,
            "owned_by": "chia-async",
            "type": "model",
            "display_name": model,
            "created_at": "2025-01-01T00:00:00Z",
        }
        for model in MOCK_MODELS
    ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": MOCK_MODELS[0],
            "last_id": MOCK_MODELS[-1],
        }
    )


def model_body(model: str, created: int) -> bytes:
    """A ``GET /v1/models/{id}`` body readable by both SDKs."""
    return orjson.dumps(
        {
            "id": model,
            "object": "model",
            "created": created,
            "owned_by": "chia-async",
            "type": "model",
            "display_name": model,
            "created_at": "2025-01-01T00:00:00Z",
        }
    )


def models_auxiliary(method: str, path: str) -> BodyReply | None:
    """Answer ``GET /v1/models`` and ``GET /v1/models/{id}``; None for any other request."""
    if method != "GET":
        return None
    for prefix in _MODELS_PATHS:
        if path == prefix:
            body = model_list_body(int(time.time()))
        elif path.startswith(prefix + "/") and len(path) > len(prefix) + 1:
            body = model_body(path[len(prefix) + 1 :], int(time.time()))
        else:
            continue
        return BodyReply(status=200, headers={"content-type": _JSON}, body=body)
    return None


def is_models_path(method: str, path: str) -> bool:
    """True for ``GET /v1/models`` (or ``/models``) and ``GET /v1/models/{id}``."""
    if method != "GET":
        return False
    return any(path == p or path.startswith(p + "/") for p in _MODELS_PATHS)


class OpenAIChatProtocol(Protocol):
    """``POST /v1/chat/completions`` (also without ``/v1``) and ``GET /v1/models``."""

    name = "openai_chat"

    def match(self, method: str, path: str) -> bool:
        """Claim chat completions and the model list."""
        return (method == "POST" and path in _CHAT_PATHS) or is_models_path(method, path)

    def parse(self, method: str, path: str, query: str, body: Any) -> ParsedRequest | None:
        """Read a chat completion request; model-list requests are auxiliary."""
        if method != "POST":
            return None
        if not isinstance(body, Mapping):
            raise ValueError("the request body must be a JSON object")
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise ValueError("'messages' must be a list")
        system: list[str] = []
        last_user = ""
        results: list[ToolResultSeen] = []
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            role = message.get("role")
            if role in ("system", "developer"):
                system.append(content_text(message.get("content")))
            elif role == "user":
                text = content_text(message.get("content"))
                if text:
                    last_user = text
            elif role == "tool":
                results.append(
                    ToolResultSeen(
                        call_id=str(message.get("tool_call_id", "")),
                        output=content_text(message.get("content")),
                    )
                )
        tools = []
        for tool in body.get("tools") or ():
            if isinstance(tool, Mapping):
                fn = tool.get("function")
                if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
                    tools.append(fn["name"])
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, Mapping) and bool(
            stream_options.get("include_usage")
        )
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return ParsedRequest(
            protocol=self.name,
            model=str(body.get("model") or ""),
            stream=bool(body.get("stream")),
            system="\n\n".join(s for s in system if s),
            last_user_text=last_user,
            tool_names=tuple(tools),
            tool_results=tuple(results),
            message_count=len(messages),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            options={"include_usage": include_usage} if include_usage else {},
        )

    def auxiliary(
        self, method: str, path: str, query: str, body: Any, headers: Mapping[str, str]
    ) -> BodyReply:
        """Answer the model list."""
        reply = models_auxiliary(method, path)
        if reply is None:
            return self.render_error(Fault(kind="http_error", error="not_found"), None)
        return reply

    def render(self, turn: Turn, request: ParsedRequest) -> Reply:
        """Render ``turn`` as a ``chat.completion`` body or a chunk stream."""
        model = turn.model or request.model or "gpt-4o"
        completion_id = new_id("chatcmpl-")
        created = int(time.time())
        calls = [(call.id or new_id("call_", 96), call) for call in turn.tool_calls]
        finish = _FINISH_REASONS[turn.stop_reason]
        usage = {
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.output_tokens,
            "total_tokens": turn.input_tokens + turn.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        headers = {"x-request-id": request_id()}
        if not request.stream:
            message: dict[str, Any] = {
                "role": "assistant",
                # OpenAI sends null content beside tool calls, "" for an empty answer
                "content": turn.full_text or (None if calls else ""),
                "refusal": None,
                "annotations": [],
            }
            reasoning = "".join(turn.reasoning_chunks())
            if reasoning:
                # not OpenAI's own field, but the one openai-compatible servers (vLLM,
                # DeepSeek, OpenRouter) use and that opencode reads
                message["reasoning_content"] = reasoning
            if calls:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": arguments_json(call)},
                    }
                    for call_id, call in calls
                ]
            body = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": "fp_scripted",
            }
            headers["content-type"] = _JSON
            return BodyReply(status=200, headers=headers, body=orjson.dumps(body))

        include_usage = bool(request.options.get("include_usage"))
        base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_scripted",
        }
        if include_usage:
            # with include_usage every chunk carries "usage": null until the final one
            base["usage"] = None

        def chunk(delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks.extend(chunk({"reasoning_content": piece}) for piece in turn.reasoning_chunks())
        chunks.extend(chunk({"content": piece}) for piece in turn.text_chunks())
        for index, (call_id, call) in enumerate(calls):
            fragments = split_fragments(arguments_json(call), turn.chunks) or [""]
            first = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": fragments[0]},
            }
            chunks.append(chunk({"tool_calls": [first]}))
            chunks.extend(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
                for fragment in fragments[1:]
            )
        chunks.append(chunk({}, finish))
        if include_usage:
            chunks.append(
                b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            )
        error_chunk = None
        if turn.fault is not None and turn.fault.kind == "midstream":
            error_chunk = self.render_midstream_error(turn.fault, request)
        return StreamReply(
            status=200,
            headers={**_SSE_HEADERS, **headers},
            chunks=chunks,
            end=[b"data: [DONE]\n\n"],
            error_chunk=error_chunk,
            malformed_chunk=b'data: {"id": "' + completion_id.encode() + b'", "choices": [\n\n',
        )

    def render_error(self, fault: Fault, request: ParsedRequest | None) -> BodyReply:
        """An OpenAI error response."""
        return openai_error_reply(fault, request)

    def render_midstream_error(self, fault: Fault, request: ParsedRequest) -> bytes:
        """``data: {"error": {...}}``, which the openai SDK raises as ``APIError``."""
        _, error = error_object(fault, request)
        return b"data: " + fault_body(fault, {"error": error}) + b"\n\n"
