"""OpenAI Responses (``POST /v1/responses``), as the openai SDK and the Codex CLI consume it.

A stream is a sequence of ``event: <type>`` + ``data: {...}`` SSE events with increasing
``sequence_number``: ``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` ... ``response.output_item.done`` (reasoning summaries, message
text parts, function calls with their argument deltas), and finally ``response.completed``
(or ``response.incomplete`` for a max-tokens/content-filter stop). A mid-stream failure is a
``response.failed`` event whose ``response.error.code`` Codex maps to its own errors
(``context_length_exceeded``, ``insufficient_quota``, ``rate_limit_exceeded`` ...).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from chia_async.testing.protocols.base import BodyReply, Protocol, Reply, StreamReply
from chia_async.testing.protocols.openai_chat import (
    arguments_json,
    content_text,
    error_object,
    fault_body,
    new_id,
    openai_error_reply,
    request_id,
    split_fragments,
)
from chia_async.testing.script import (
    ErrorKind,
    Fault,
    ParsedRequest,
    ToolResultSeen,
    Turn,
)

__all__ = ["OpenAIResponsesProtocol"]

_RESPONSES_PATHS = frozenset({"/v1/responses", "/responses"})
_INPUT_TOKENS_PATHS = frozenset({"/v1/responses/input_tokens", "/responses/input_tokens"})

_MESSAGES: Mapping[ErrorKind, str] = {
    "context_length": "Your input exceeds the context window of this model. "
    "Please adjust your input and try again.",
}

# response.failed error codes Codex recognises (codex-rs/codex-api/src/sse/responses.rs)
_FAILED_CODES: dict[ErrorKind, str] = {
    "context_length": "context_length_exceeded",
    "billing": "insufficient_quota",
    "rate_limit": "rate_limit_exceeded",
    "invalid_request": "invalid_prompt",
}

_SSE_HEADERS: Mapping[str, str] = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
}


def _event(kind: str, sequence: int, payload: dict[str, Any]) -> bytes:
    payload["type"] = kind
    payload["sequence_number"] = sequence
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class OpenAIResponsesProtocol(Protocol):
    """``POST /v1/responses`` (also without ``/v1``) and ``POST /v1/responses/input_tokens``."""

    name = "openai_responses"

    def match(self, method: str, path: str) -> bool:
        """Claim response creation and input-token counting."""
        return method == "POST" and (path in _RESPONSES_PATHS or path in _INPUT_TOKENS_PATHS)

    def parse(self, method: str, path: str, query: str, body: Any) -> ParsedRequest | None:
        """Read a create-response request; token counting is auxiliary."""
        if path in _INPUT_TOKENS_PATHS:
            return None
        if not isinstance(body, Mapping):
            raise ValueError("the request body must be a JSON object")
        system: list[str] = []
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            system.append(instructions)
        items = body.get("input")
        last_user = ""
        results: list[ToolResultSeen] = []
        count = 0
        if isinstance(items, str):
            last_user = items
            count = 1
        elif isinstance(items, list):
            count = len(items)
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                kind = item.get("type", "message")
                if kind == "message":
                    role = item.get("role")
                    text = content_text(item.get("content"))
                    if role in ("system", "developer"):
                        system.append(text)
                    elif role == "user" and text:
                        last_user = text
                elif kind in ("function_call_output", "custom_tool_call_output"):
                    output = item.get("output")
                    results.append(
                        ToolResultSeen(
                            call_id=str(item.get("call_id", "")),
                            output=output if isinstance(output, str) else content_text(output),
                        )
                    )
        elif items is not None:
            raise ValueError("'input' must be a string or a list of items")
        max_tokens = body.get("max_output_tokens")
        return ParsedRequest(
            protocol=self.name,
            model=str(body.get("model") or ""),
            stream=bool(body.get("stream")),
            system="\n\n".join(s for s in system if s),
            last_user_text=last_user,
            tool_names=tuple(_tool_names(body.get("tools"))),
            tool_results=tuple(results),
            message_count=count,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        )

    def auxiliary(
        self, method: str, path: str, query: str, body: Any, headers: Mapping[str, str]
    ) -> BodyReply:
        """Answer ``input_tokens`` with a rough count (4 bytes a token)."""
        tokens = max(1, len(orjson.dumps(body)) // 4) if body else 1
        return BodyReply(
            status=200,
            headers={"content-type": "application/json", "x-request-id": request_id()},
            body=orjson.dumps({"object": "response.input_tokens", "input_tokens": tokens}),
        )

    def render(self, turn: Turn, request: ParsedRequest) -> Reply:
        """Render ``turn`` as a ``response`` body or an event stream."""
        response_id = new_id("resp_", 192)
        model = turn.model or request.model or "gpt-4o"
        created = int(time.time())
        stop = turn.stop_reason
        incomplete_reason = {"max_tokens": "max_output_tokens", "content_filter": "content_filter"}
        incomplete = incomplete_reason.get(stop)
        item_status = "incomplete" if incomplete else "completed"

        def response(status: str, output: list[Any], **extra: Any) -> dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "background": False,
                "error": None,
                "incomplete_details": None,
                "instructions": None,
                "max_output_tokens": request.max_tokens,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "reasoning": {"effort": None, "summary": None},
                "store": False,
                "temperature": 1.0,
                "text": {"format": {"type": "text"}},
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": None,
                "user": None,
                "metadata": {},
                **extra,
            }

        usage = {
            "input_tokens": turn.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": turn.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": turn.input_tokens + turn.output_tokens,
        }
        final_status = "incomplete" if incomplete else "completed"
        final_extra: dict[str, Any] = {"usage": usage}
        if incomplete:
            final_extra["incomplete_details"] = {"reason": incomplete}

        reasoning_parts = turn.reasoning_chunks()
        text_parts = turn.text_chunks()
        items_done: list[dict[str, Any]] = []
        # (added item, events between added and done, done item) per output item
        plans: list[tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], dict[str, Any]]] = []

        if reasoning_parts:
            item_id = new_id("rs_", 192)
            summary = "".join(reasoning_parts)
            ref = {"item_id": item_id, "summary_index": 0}
            events: list[tuple[str, dict[str, Any]]] = [
                (
                    "response.reasoning_summary_part.added",
                    {**ref, "part": {"type": "summary_text", "text": ""}},
                )
            ]
            events.extend(
                ("response.reasoning_summary_text.delta", {**ref, "delta": piece})
                for piece in reasoning_parts
            )
            events.append(("response.reasoning_summary_text.done", {**ref, "text": summary}))
            events.append(
                (
                    "response.reasoning_summary_part.done",
                    {**ref, "part": {"type": "summary_text", "text": summary}},
                )
            )
            done = {
                "id": item_id,
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": summary}],
                "encrypted_content": None,
            }
            plans.append(({"id": item_id, "type": "reasoning", "summary": []}, events, done))

        if text_parts:
            item_id = new_id("msg_", 192)
            text = "".join(text_parts)
            ref = {"item_id": item_id, "content_index": 0}

            def part(value: str) -> dict[str, Any]:
                return {"type": "output_text", "annotations": [], "logprobs": [], "text": value}

            events = [("response.content_part.added", {**ref, "part": part("")})]
            events.extend(
                ("response.output_text.delta", {**ref, "delta": piece, "logprobs": []})
                for piece in text_parts
            )
            events.append(("response.output_text.done", {**ref, "text": text, "logprobs": []}))
            events.append(("response.content_part.done", {**ref, "part": part(text)}))
            message = {"id": item_id, "type": "message", "role": "assistant"}
            plans.append(
                (
                    {**message, "status": "in_progress", "content": []},
                    events,
                    {**message, "status": item_status, "content": [part(text)]},
                )
            )

        for call in turn.tool_calls:
            item_id = new_id("fc_", 192)
            arguments = arguments_json(call)
            item: dict[str, Any] = {
                "id": item_id,
                "type": "function_call",
                "call_id": call.id or new_id("call_", 96),
                "name": call.name,
            }
            if call.namespace:
                item["namespace"] = call.namespace
            ref = {"item_id": item_id}
            events = [
                ("response.function_call_arguments.delta", {**ref, "delta": fragment})
                for fragment in split_fragments(arguments, turn.chunks)
            ]
            events.append(
                (
                    "response.function_call_arguments.done",
                    {**ref, "name": call.name, "arguments": arguments},
                )
            )
            plans.append(
                (
                    {**item, "status": "in_progress", "arguments": ""},
                    events,
                    {**item, "status": "completed", "arguments": arguments},
                )
            )

        for _, _, done in plans:
            items_done.append(done)

        headers = {"x-request-id": request_id()}
        if not request.stream:
            body = response(final_status, items_done, **final_extra)
            headers["content-type"] = "application/json"
            return BodyReply(status=200, headers=headers, body=orjson.dumps(body))

        chunks: list[bytes] = []
        seq = 0

        def emit(kind: str, payload: dict[str, Any]) -> None:
            nonlocal seq
            chunks.append(_event(kind, seq, payload))
            seq += 1

        emit("response.created", {"response": response("in_progress", [])})
        emit("response.in_progress", {"response": response("in_progress", [])})
        for index, (added, events, done) in enumerate(plans):
            emit("response.output_item.added", {"output_index": index, "item": added})
            for kind, payload in events:
                emit(kind, {**payload, "output_index": index})
            emit("response.output_item.done", {"output_index": index, "item": done})
        final_kind = "response.incomplete" if incomplete else "response.completed"
        end = [
            _event(final_kind, seq, {"response": response(final_status, items_done, **final_extra)})
        ]
        error_chunk = None
        if turn.fault is not None and turn.fault.kind == "midstream":
            error_chunk = self._failed_event(
                turn.fault, request, response, min(turn.fault.after_chunks, len(chunks))
            )
        return StreamReply(
            status=200,
            headers={**_SSE_HEADERS, **headers},
            chunks=chunks,
            end=end,
            error_chunk=error_chunk,
            malformed_chunk=b'event: response.output_text.delta\ndata: {"type": "response.\n\n',
        )

    def render_error(self, fault: Fault, request: ParsedRequest | None) -> BodyReply:
        """An OpenAI error response (the same envelope as Chat Completions)."""
        return openai_error_reply(fault, request, _MESSAGES)

    def render_midstream_error(self, fault: Fault, request: ParsedRequest) -> bytes:
        """A ``response.failed`` event carrying the fault's error code."""
        response_id = new_id("resp_", 192)
        created = int(time.time())

        def response(status: str, output: list[Any], **extra: Any) -> dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "model": request.model or "gpt-4o",
                "output": output,
                **extra,
            }

        return self._failed_event(fault, request, response, fault.after_chunks)

    def _failed_event(
        self, fault: Fault, request: ParsedRequest, response: Any, sequence: int
    ) -> bytes:
        if fault.body is not None:
            return b"event: response.failed\ndata: " + fault_body(fault, {}) + b"\n\n"
        _, error = error_object(fault, request, _MESSAGES)
        failed = response(
            "failed",
            [],
            error={
                "code": _FAILED_CODES.get(fault.error, "server_error"),
                "message": error["message"],
            },
        )
        return _event("response.failed", sequence, {"response": failed})


def _tool_names(tools: Any) -> list[str]:
    names: list[str] = []
    if not isinstance(tools, list):
        return names
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
            # Codex sends MCP tools inline as a namespace; list them as "<namespace>__<name>",
            # the name Codex and Claude Code give MCP tools elsewhere
            prefix = tool.get("name", "")
            names.extend(
                f"{prefix}__{inner['name']}"
                for inner in tool["tools"]
                if isinstance(inner, Mapping) and isinstance(inner.get("name"), str)
            )
        elif isinstance(tool.get("name"), str):
            names.append(tool["name"])
    return names
