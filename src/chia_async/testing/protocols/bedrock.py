"""Amazon Bedrock Runtime Converse API: ``/model/{modelId}/converse`` and ``converse-stream``.

Converse answers with one JSON document; ConverseStream answers with AWS event-stream
frames (see :mod:`~chia_async.testing.protocols.eventstream`). Errors are rest-json: the
error code travels in the ``x-amzn-ErrorType`` header (botocore reads it before the body)
and the body is ``{"message": ...}``. Errors after the stream started are modeled
``exception`` messages inside the stream, which botocore raises as ``EventStreamError``.

Bedrock has exceptions that no :data:`~chia_async.testing.script.ErrorKind` names
(``ModelNotReadyException``, ``ServiceQuotaExceededException``...); :func:`bedrock_fault`
builds a :class:`~chia_async.testing.script.Fault` for any of them by name.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import unquote

import orjson

from chia_async.testing.protocols.base import BodyReply, Protocol, Reply, StreamReply
from chia_async.testing.protocols.eventstream import (
    corrupt_frame,
    event_frame,
    exception_frame,
)
from chia_async.testing.script import (
    ErrorKind,
    Fault,
    ParsedRequest,
    StopReason,
    ToolCall,
    ToolResultSeen,
    Turn,
)

__all__ = ["BEDROCK_EXCEPTIONS", "BedrockProtocol", "bedrock_fault"]

# modelId may be an ARN with ':' and '/' in it; the SDK percent-encodes both, and whether the
# server core hands us the raw or the decoded path, the greedy group still ends at the last
# path segment, which is the operation.
_ROUTE: Final = re.compile(r"^/model/(?P<model>.+)/(?P<op>converse|converse-stream|count-tokens)$")

_ERROR_TYPE_SUFFIX: Final = ":http://internal.amazon.com/coral/com.amazon.bedrock/"

#: Every Bedrock Runtime error this protocol renders: name -> (HTTP status, default message).
BEDROCK_EXCEPTIONS: Final[Mapping[str, tuple[int, str]]] = {
    "ThrottlingException": (429, "Too many requests, please wait before trying again."),
    "ServiceQuotaExceededException": (
        400,
        "Your request exceeds the service quota for your account. You can view your quotas "
        "at https://docs.aws.amazon.com/servicequotas/latest/userguide/gs-request-quota.html. "
        "You can resubmit your request later.",
    ),
    "ValidationException": (400, "The provided request is not valid."),
    "AccessDeniedException": (
        403,
        "You don't have access to the model with the specified model ID.",
    ),
    "UnrecognizedClientException": (403, "The security token included in the request is invalid."),
    "ResourceNotFoundException": (
        404,
        "Could not resolve the foundation model from the provided model identifier.",
    ),
    "InternalServerException": (
        500,
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    "ServiceUnavailableException": (503, "Bedrock is unable to process your request."),
    "ModelTimeoutException": (
        408,
        "Model has timed out in processing the request. Try your request again.",
    ),
    "ModelNotReadyException": (
        429,
        "Model is not ready to serve inference requests. The AWS SDK will automatically retry "
        "the operation up to 5 times. For information about configuring automatic retries, see "
        "Retry behavior in the AWS SDKs and Tools reference guide.",
    ),
    "ModelErrorException": (424, "The model returned an error."),
}

_EXCEPTION_FOR_KIND: Final[Mapping[ErrorKind, str]] = {
    "rate_limit": "ThrottlingException",
    "overloaded": "ServiceUnavailableException",
    "server": "InternalServerException",
    "authentication": "UnrecognizedClientException",
    "permission": "AccessDeniedException",
    # Bedrock has no billing error of its own: a missing or failed payment method surfaces as
    # access denied with the Marketplace reason in the message.
    "billing": "AccessDeniedException",
    "invalid_request": "ValidationException",
    "context_length": "ValidationException",
    "not_found": "ResourceNotFoundException",
}

# A status that only one Bedrock exception uses picks that exception even if the fault's
# kind (derived from the status by Fault.http) would say otherwise.
_EXCEPTION_FOR_STATUS: Final[Mapping[int, str]] = {
    408: "ModelTimeoutException",
    424: "ModelErrorException",
}

_KIND_MESSAGES: Final[Mapping[ErrorKind, str]] = {
    "billing": (
        "Model access is denied due to INVALID_PAYMENT_INSTRUMENT:A valid payment instrument "
        "must be provided. Your AWS Marketplace subscription for this model cannot be completed "
        "at this time."
    ),
    "context_length": "Input is too long for requested model.",
}

# The exceptions ConverseStream models inside the stream, by their member names in the
# stream shape (botocore resolves ``:exception-type`` against exactly these).
_STREAM_EXCEPTION_FOR_KIND: Final[Mapping[ErrorKind, str]] = {
    "rate_limit": "throttlingException",
    "overloaded": "serviceUnavailableException",
    "server": "internalServerException",
    "invalid_request": "validationException",
    "context_length": "validationException",
}
_STREAM_EXCEPTIONS: Final = frozenset(
    {
        "internalServerException",
        "modelStreamErrorException",
        "validationException",
        "throttlingException",
        "serviceUnavailableException",
    }
)

_STOP_REASONS: Final[Mapping[StopReason, str]] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "content_filter": "content_filtered",
}

_GUARDRAIL_MESSAGE: Final = "Sorry, the model cannot answer this question."
_PADDING: Final = "abcdefghijklmnopqrstuvwxyzABCDEF"


def bedrock_fault(
    exception: str,
    *,
    message: str | None = None,
    status: int | None = None,
    retry_after: float | None = None,
) -> Fault:
    """An HTTP error fault rendered as the Bedrock exception named ``exception``.

    Use it for the exceptions no :data:`~chia_async.testing.script.ErrorKind` maps to, e.g.
    ``Turn(fault=bedrock_fault("ModelNotReadyException"))``. Unknown names are allowed (the
    SDK raises a plain ``ClientError`` with that code) and default to status 400.
    """
    default_status, _ = BEDROCK_EXCEPTIONS.get(exception, (400, ""))
    return Fault.http(
        status if status is not None else default_status,
        message=message,
        headers={"x-amzn-ErrorType": exception + _ERROR_TYPE_SUFFIX},
        retry_after=retry_after,
    )


class BedrockProtocol(Protocol):
    """Bedrock Runtime Converse / ConverseStream (and CountTokens as an auxiliary endpoint)."""

    name = "bedrock"

    def match(self, method: str, path: str) -> bool:
        """Claim ``POST /model/{modelId}/converse|converse-stream|count-tokens``."""
        return method.upper() == "POST" and _ROUTE.match(path) is not None

    def parse(self, method: str, path: str, query: str, body: Any) -> ParsedRequest | None:
        """Read a Converse request; None for CountTokens.

        Raises ValueError when the body is not a JSON object, or when the conversation breaks
        a rule the service enforces (roles alternate starting with the user, no blank text,
        a toolResult for every toolUse of the turn before, ``toolConfig`` present when tool
        blocks are): the core answers 400 ``ValidationException``, as the service does.
        """
        route = _ROUTE.match(path)
        if route is None or route["op"] == "count-tokens":
            return None
        if not isinstance(body, Mapping):
            raise ValueError("the request body must be a JSON object")
        doc = body
        messages = [m for m in _list(doc.get("messages")) if isinstance(m, Mapping)]
        tools = _list(_mapping(doc.get("toolConfig")).get("tools"))
        _check_conversation(messages, has_tools=bool(tools))
        max_tokens = _mapping(doc.get("inferenceConfig")).get("maxTokens")
        return ParsedRequest(
            protocol=self.name,
            model=unquote(route["model"]),
            stream=route["op"] == "converse-stream",
            system="\n".join(_texts(_list(doc.get("system")))),
            last_user_text=_last_user_text(messages),
            tool_names=tuple(
                str(spec["name"])
                for tool in tools
                if isinstance(spec := _mapping(tool).get("toolSpec"), Mapping) and "name" in spec
            ),
            tool_results=tuple(_tool_results(messages)),
            message_count=len(messages),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        )

    def auxiliary(
        self, method: str, path: str, query: str, body: Any, headers: Mapping[str, str]
    ) -> BodyReply:
        """Answer CountTokens with a rough estimate (about four characters per token)."""
        route = _ROUTE.match(path)
        if route is None or route["op"] != "count-tokens":
            return self.render_error(
                Fault(kind="http_error", error="invalid_request", message="Unknown operation."),
                None,
            )
        spec = _mapping(_mapping(body).get("input"))
        converse = _mapping(spec.get("converse"))
        chars = sum(len(t) for t in _texts(_list(converse.get("system"))))
        for message in _list(converse.get("messages")):
            chars += sum(len(t) for t in _texts(_list(_mapping(message).get("content"))))
        invoke_body = _mapping(spec.get("invokeModel")).get("body")
        if isinstance(invoke_body, str | bytes):
            chars += len(invoke_body)
        return _json_reply(200, {"inputTokens": max(1, math.ceil(chars / 4))})

    def render(self, turn: Turn, request: ParsedRequest) -> Reply:
        """Render a Converse document, or ConverseStream frames when streaming."""
        if request.stream:
            return self._render_stream(turn, request)
        content: list[dict[str, Any]] = []
        if turn.reasoning_chunks():
            content.append(
                {
                    "reasoningContent": {
                        "reasoningText": {
                            "text": "".join(turn.reasoning_chunks()),
                            "signature": _signature(),
                        }
                    }
                }
            )
        text = _answer_text(turn)
        if text:
            content.append({"text": text})
        for call in turn.tool_calls:
            content.append(
                {
                    "toolUse": {
                        "toolUseId": _tool_use_id(call),
                        "name": call.name,
                        "input": _input_document(call),
                    }
                }
            )
        return _json_reply(
            200,
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": _stop_reason(turn),
                "usage": _usage(turn),
                "metrics": {"latencyMs": _latency_ms(turn)},
            },
        )

    def _render_stream(self, turn: Turn, request: ParsedRequest) -> StreamReply:
        chunks = list(_stream_events(turn))
        end = [
            _event("messageStop", {"stopReason": _stop_reason(turn)}),
            _event(
                "metadata", {"usage": _usage(turn), "metrics": {"latencyMs": _latency_ms(turn)}}
            ),
        ]
        fault = turn.fault
        return StreamReply(
            status=200,
            headers={
                "content-type": "application/vnd.amazon.eventstream",
                "x-amzn-requestid": str(uuid.uuid4()),
            },
            chunks=chunks,
            end=end,
            error_chunk=(
                self.render_midstream_error(fault, request)
                if fault is not None and fault.kind == "midstream"
                else None
            ),
            # A well-formed frame whose message CRC is wrong: botocore must refuse it
            # (ChecksumMismatch) rather than hand a half-trusted event to the caller.
            malformed_chunk=corrupt_frame(
                _event("contentBlockDelta", {"delta": {"text": "garbled"}, "contentBlockIndex": 0})
            ),
        )

    def render_error(self, fault: Fault, request: ParsedRequest | None) -> BodyReply:
        """Render a rest-json error: ``x-amzn-ErrorType`` header plus ``{"message": ...}``."""
        explicit = _explicit_exception(fault)
        exception = explicit or _EXCEPTION_FOR_STATUS.get(
            fault.status or 0, _EXCEPTION_FOR_KIND.get(fault.error, "InternalServerException")
        )
        default_status, default_message = BEDROCK_EXCEPTIONS.get(exception, (400, ""))
        status = fault.status if fault.status is not None else default_status
        # A named exception speaks with its own words; otherwise the kind may refine them
        # (context length and billing share their exception with other errors).
        message = (
            fault.message
            or (explicit and default_message)
            or _KIND_MESSAGES.get(fault.error)
            or default_message
            or exception
        )
        if fault.error == "not_found" and request is not None and fault.message is None:
            message = (
                f"Could not resolve the foundation model from the provided model identifier: "
                f"{request.model}."
            )
        headers: dict[str, str] = {
            "content-type": "application/json",
            "x-amzn-requestid": str(uuid.uuid4()),
            "x-amzn-errortype": exception + _ERROR_TYPE_SUFFIX,
        }
        if fault.retry_after is not None:
            headers.update(_retry_after_headers(fault.retry_after))
        headers.update({k.lower(): v for k, v in fault.headers.items()})
        return BodyReply(status=status, headers=headers, body=_error_body(fault, message))

    def render_midstream_error(self, fault: Fault, request: ParsedRequest) -> bytes:
        """A modeled ``exception`` message, raised by botocore as ``EventStreamError``."""
        explicit = _explicit_exception(fault)
        exception_type = None
        if explicit is not None:
            camel = explicit[:1].lower() + explicit[1:]
            exception_type = camel if camel in _STREAM_EXCEPTIONS else None
        if exception_type is None:
            exception_type = _STREAM_EXCEPTION_FOR_KIND.get(
                fault.error, "modelStreamErrorException"
            )
        status = fault.status or _status_for_kind(fault.error)
        message = (
            fault.message
            or _KIND_MESSAGES.get(fault.error)
            or BEDROCK_EXCEPTIONS[_EXCEPTION_FOR_KIND[fault.error]][1]
        )
        payload: dict[str, Any] = {"message": message}
        if exception_type == "modelStreamErrorException":
            payload["originalStatusCode"] = status
            payload["originalMessage"] = message
        if fault.body is not None:
            return exception_frame(exception_type, _error_body(fault, message))
        return exception_frame(exception_type, orjson.dumps(payload))


# -- rendering helpers ---------------------------------------------------------------------


def _stream_events(turn: Turn) -> Iterator[bytes]:
    yield _event("messageStart", {"role": "assistant"})
    index = 0
    reasoning = turn.reasoning_chunks()
    if reasoning:
        for piece in reasoning:
            yield _delta(index, {"reasoningContent": {"text": piece}})
        # The signature arrives as its own delta after the text, before the block stops.
        yield _delta(index, {"reasoningContent": {"signature": _signature()}})
        yield _event("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    text = turn.text_chunks()
    if not text and turn.block_reason is not None:
        text = [_GUARDRAIL_MESSAGE]
    if text:
        # Bedrock sends no contentBlockStart for text blocks, only for tool use.
        for piece in text:
            yield _delta(index, {"text": piece})
        yield _event("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    for call in turn.tool_calls:
        yield _event(
            "contentBlockStart",
            {
                "start": {"toolUse": {"toolUseId": _tool_use_id(call), "name": call.name}},
                "contentBlockIndex": index,
            },
        )
        for fragment in _fragments(_input_json(call), turn.chunks):
            yield _delta(index, {"toolUse": {"input": fragment}})
        yield _event("contentBlockStop", {"contentBlockIndex": index})
        index += 1


def _event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    # Bedrock pads every event with a "p" member so that frame sizes do not leak the length of
    # the content; it is not in the service model, so conforming clients must ignore it.
    body = {**payload, "p": _PADDING}
    return event_frame(event_type, orjson.dumps(body))


def _delta(index: int, delta: Mapping[str, Any]) -> bytes:
    return _event("contentBlockDelta", {"delta": delta, "contentBlockIndex": index})


def _answer_text(turn: Turn) -> str:
    # A guardrail intervention replaces the answer with the guardrail's blocked-output message.
    if turn.block_reason is not None:
        return turn.full_text or _GUARDRAIL_MESSAGE
    return turn.full_text


def _stop_reason(turn: Turn) -> str:
    # Turn.block_reason is Gemini's prompt block; Bedrock's counterpart is a guardrail.
    if turn.block_reason is not None:
        return "guardrail_intervened"
    return _STOP_REASONS[turn.stop_reason]


def _usage(turn: Turn) -> dict[str, int]:
    return {
        "inputTokens": turn.input_tokens,
        "outputTokens": turn.output_tokens,
        "totalTokens": turn.input_tokens + turn.output_tokens,
    }


def _latency_ms(turn: Turn) -> int:
    return max(1, round(turn.latency * 1000))


def _tool_use_id(call: ToolCall) -> str:
    return call.id or "tooluse_" + uuid.uuid4().hex[:22]


def _signature() -> str:
    return "sig_" + uuid.uuid4().hex


def _input_json(call: ToolCall) -> str:
    # A string is sent verbatim so a script can stream arguments that are not valid JSON.
    if isinstance(call.arguments, str):
        return call.arguments
    return orjson.dumps(dict(call.arguments)).decode()


def _input_document(call: ToolCall) -> Any:
    if not isinstance(call.arguments, str):
        return dict(call.arguments)
    try:
        return orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError as exc:
        # Converse carries input as a JSON document, so invalid JSON cannot be expressed.
        raise ValueError(
            f"tool call {call.name!r}: Bedrock Converse needs JSON arguments, got "
            f"{call.arguments!r} (invalid arguments can only be streamed)"
        ) from exc


def _fragments(value: str, parts: int) -> list[str]:
    if not value:
        return ["{}"]
    parts = max(1, min(parts, len(value)))
    size = -(-len(value) // parts)
    return [value[i : i + size] for i in range(0, len(value), size)]


def _json_reply(status: int, doc: Mapping[str, Any]) -> BodyReply:
    return BodyReply(
        status=status,
        headers={"content-type": "application/json", "x-amzn-requestid": str(uuid.uuid4())},
        body=orjson.dumps(doc),
    )


def _explicit_exception(fault: Fault) -> str | None:
    for name, value in fault.headers.items():
        if name.lower() == "x-amzn-errortype":
            return value.split(":", 1)[0] or None
    return None


def _status_for_kind(kind: ErrorKind) -> int:
    return BEDROCK_EXCEPTIONS[_EXCEPTION_FOR_KIND[kind]][0]


def _error_body(fault: Fault, message: str) -> bytes:
    if fault.body is None:
        return orjson.dumps({"message": message})
    if isinstance(fault.body, bytes):
        return fault.body
    if isinstance(fault.body, str):
        return fault.body.encode()
    return orjson.dumps(dict(fault.body))


def _retry_after_headers(seconds: float) -> dict[str, str]:
    whole = math.ceil(seconds)
    return {"retry-after": str(whole), "retry-after-ms": str(round(seconds * 1000))}


# -- parsing helpers -----------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _texts(blocks: Sequence[Any]) -> list[str]:
    return [str(b["text"]) for b in blocks if isinstance(b, Mapping) and "text" in b]


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        texts = _texts(_list(message.get("content")))
        if texts:
            return "\n".join(texts)
    return ""


def _check_conversation(messages: Sequence[Mapping[str, Any]], *, has_tools: bool) -> None:
    """Refuse what the live service refuses, in its words."""
    expected: list[str] = []  # toolUse ids of the assistant turn just before
    for i, message in enumerate(messages):
        role = message.get("role")
        if i == 0 and role != "user":
            raise ValueError(
                "A conversation must start with a user message. Try again with a conversation "
                "that starts with a user message."
            )
        if i > 0 and role == messages[i - 1].get("role"):
            raise ValueError(
                "A conversation must alternate between user and assistant roles. Make sure the "
                "conversation alternates between user and assistant roles and try again."
            )
        results: list[str] = []
        uses: list[str] = []
        for j, block in enumerate(_list(message.get("content"))):
            block = _mapping(block)
            if "text" in block and not str(block["text"]).strip():
                raise ValueError(
                    f"The text field in the ContentBlock object at messages.{i}.content.{j} is "
                    "blank. Add text to the text field, and try again."
                )
            if ("toolUse" in block or "toolResult" in block) and not has_tools:
                raise ValueError(
                    "The toolConfig field must be defined when using toolUse and toolResult "
                    "content blocks."
                )
            if "toolUse" in block:
                tool_use = _mapping(block["toolUse"])
                if not isinstance(tool_use.get("input"), Mapping):
                    raise ValueError(
                        f"The format of the value at messages.{i}.content.{j}.toolUse.input is "
                        "invalid. Provide a json object for the field and try again."
                    )
                uses.append(str(tool_use.get("toolUseId", "")))
            if "toolResult" in block:
                results.append(str(_mapping(block["toolResult"]).get("toolUseId", "")))
        missing = [call_id for call_id in expected if call_id not in results]
        if role == "user" and missing:
            raise ValueError(
                f"Expected toolResult blocks at messages.{i}.content for the following Ids: "
                f"{', '.join(missing)}"
            )
        expected = uses


def _tool_results(messages: Sequence[Mapping[str, Any]]) -> Iterator[ToolResultSeen]:
    for message in messages:
        for block in _list(message.get("content")):
            result = _mapping(_mapping(block).get("toolResult"))
            if not result:
                continue
            parts: list[str] = []
            for item in _list(result.get("content")):
                item = _mapping(item)
                if "text" in item:
                    parts.append(str(item["text"]))
                elif "json" in item:
                    parts.append(orjson.dumps(item["json"]).decode())
            yield ToolResultSeen(
                call_id=str(result.get("toolUseId", "")),
                output="\n".join(parts),
                is_error=result.get("status") == "error",
            )
