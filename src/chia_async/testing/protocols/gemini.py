"""Google Gemini ``generateContent``, on both the Gemini API and Vertex AI paths.

One protocol serves both surfaces because they share the request and response bodies and
differ only in the resource path::

    /v1beta/models/{model}:generateContent          Gemini API (also v1, v1alpha)
    /v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent
                                                    Vertex AI (also v1)
    /v1beta1/publishers/google/models/{model}:…     Vertex AI express mode (API key)

Streaming is ``:streamGenerateContent?alt=sse``: every SSE event is a whole
``GenerateContentResponse`` holding only the new parts, with no ``[DONE]`` sentinel; the
stream ends with a chunk carrying ``finishReason`` and the final ``usageMetadata``. Without
``alt=sse`` the service streams the same objects as the elements of one JSON array, and so
does this protocol. Errors use Google's ``{"error": {"code", "message", "status",
"details"}}`` shape, and the same object sent as a stream element is how the service fails a
stream that already started (google-genai raises ``ClientError``/``ServerError`` for it).
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, unquote

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

__all__ = ["GeminiProtocol"]

_RESOURCE: Final = (
    r"^/(?P<version>v1|v1beta|v1alpha|v1beta1)"
    r"/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?"
    r"(?:publishers/(?P<publisher>[^/]+)/)?"
    r"models/(?P<model>[^/:]+)"
)
_RESOURCE_NAME: Final = re.compile(r"^/[^/]+/(?P<name>.+?)(?::\w+)?$")
_METHOD_ROUTE: Final = re.compile(
    _RESOURCE + r":(?P<method>generateContent|streamGenerateContent|countTokens)$"
)
_GET_ROUTE: Final = re.compile(_RESOURCE + r"$")

_FINISH_REASONS: Final[Mapping[StopReason, str]] = {
    "end_turn": "STOP",
    # Gemini has no stop reason of its own for function calls: the turn simply STOPs.
    "tool_use": "STOP",
    "max_tokens": "MAX_TOKENS",
    "content_filter": "SAFETY",
}

# The Google canonical code each HTTP status stands for (google.rpc.Code's HTTP mapping).
_STATUS_NAMES: Final[Mapping[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_KIND_STATUS: Final[Mapping[ErrorKind, int]] = {
    "rate_limit": 429,
    "overloaded": 503,
    "server": 500,
    "authentication": 401,
    "permission": 403,
    # Exhausted prepaid credit / spending caps come back as quota exhaustion, not 402.
    "billing": 429,
    "invalid_request": 400,
    "context_length": 400,
    "not_found": 404,
}

_KIND_MESSAGES: Final[Mapping[ErrorKind, str]] = {
    "rate_limit": "Resource has been exhausted (e.g. check quota).",
    "overloaded": "The model is overloaded. Please try again later.",
    "server": (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    "authentication": (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential. "
        "See https://developers.google.com/identity/sign-in/web/devconsole-project."
    ),
    "permission": "Permission denied on resource project (or it may not exist).",
    "billing": (
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: "
        "https://ai.google.dev/gemini-api/docs/rate-limits."
    ),
    "invalid_request": "Request contains an invalid argument.",
    # Gemini's 1M-token window; the count is one past it, which is all the wording needs.
    "context_length": (
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    ),
    "not_found": "Requested entity was not found.",
}

_HELP: Final = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}

_BLOCKED_RATING: Final = {
    "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "probability": "HIGH",
    "blocked": True,
}


class GeminiProtocol(Protocol):
    """Gemini ``generateContent`` / ``streamGenerateContent`` / ``countTokens``."""

    name = "gemini"

    def match(self, method: str, path: str) -> bool:
        """Claim the ``models/{m}:method`` endpoints and a model ``GET`` on both surfaces.

        A bare ``GET /v1/models/{m}`` is left alone: it is also OpenAI's model lookup, and
        the Gemini SDK never needs it before generating.
        """
        path = unquote(path)
        verb = method.upper()
        if verb == "POST":
            return _METHOD_ROUTE.match(path) is not None
        if verb == "GET":
            route = _GET_ROUTE.match(path)
            return route is not None and (
                route["version"] != "v1" or route["publisher"] is not None
            )
        return False

    def parse(self, method: str, path: str, query: str, body: Any) -> ParsedRequest | None:
        """Read a generate request; None for ``countTokens`` and model lookups.

        Raises ValueError when the body is not a JSON object, or when a function's
        ``parameters`` use a field the service's ``Schema`` does not have (the core answers
        400, as the service does).
        """
        route = _METHOD_ROUTE.match(unquote(path))
        if route is None or route["method"] == "countTokens":
            return None
        if not isinstance(body, Mapping):
            raise ValueError("the request body must be a JSON object")
        doc = body
        _check_declarations(_list(doc.get("tools")))
        contents = [c for c in _list(doc.get("contents")) if isinstance(c, Mapping)]
        config = _mapping(_field(doc, "generationConfig"))
        max_tokens = _field(config, "maxOutputTokens")
        resource = _RESOURCE_NAME.match(unquote(path))
        return ParsedRequest(
            protocol=self.name,
            model=route["model"],
            stream=route["method"] == "streamGenerateContent",
            system="\n".join(_texts(_field(doc, "systemInstruction"))),
            last_user_text=_last_user_text(contents),
            tool_names=tuple(_tool_names(_list(doc.get("tools")))),
            tool_results=tuple(_tool_results(contents)),
            message_count=len(contents),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            options={
                "vertex": route["publisher"] is not None,
                "api_version": route["version"],
                "resource": resource["name"] if resource else f"models/{route['model']}",
                # Without alt=sse the stream is one JSON array (the service's default).
                "sse": "sse" in parse_qs(query).get("alt", []),
            },
        )

    def auxiliary(
        self, method: str, path: str, query: str, body: Any, headers: Mapping[str, str]
    ) -> BodyReply:
        """Answer ``countTokens`` (about four characters per token) and model lookups."""
        path = unquote(path)
        route = _METHOD_ROUTE.match(path)
        if route is not None and route["method"] == "countTokens":
            return _json_reply(200, _count_tokens(route, _mapping(body)))
        route = _GET_ROUTE.match(path)
        if route is not None and method.upper() == "GET":
            return _json_reply(200, _model_resource(route))
        return self.render_error(Fault(kind="http_error", error="not_found"), None)

    def render(self, turn: Turn, request: ParsedRequest) -> Reply:
        """Render one ``GenerateContentResponse``, or SSE chunks of them when streaming."""
        envelope = _envelope(turn, request)
        if request.stream:
            return self._render_stream(turn, request, envelope)
        if turn.block_reason is not None:
            return _json_reply(200, _blocked(turn, envelope))
        parts: list[dict[str, Any]] = []
        if turn.reasoning_chunks():
            parts.append({"text": "".join(turn.reasoning_chunks()), "thought": True})
        if turn.full_text:
            parts.append({"text": turn.full_text})
        parts.extend(_function_call_parts(turn))
        doc = {
            "candidates": [_final_candidate(turn, parts)],
            "usageMetadata": _usage(turn),
            **envelope,
        }
        return _json_reply(200, doc)

    def _render_stream(
        self, turn: Turn, request: ParsedRequest, envelope: Mapping[str, str]
    ) -> StreamReply:
        fault = turn.fault
        sse = _is_sse(request)
        headers = {
            "content-type": "text/event-stream" if sse else "application/json; charset=UTF-8",
            "cache-control": "no-cache",
            "x-content-type-options": "nosniff",
        }
        # Breaks SSE (unterminated JSON in a data line) and the JSON array alike.
        malformed = b"data: {not json\r\n\r\n" if sse else b",\r\n{not json"
        if turn.block_reason is not None:
            # A blocked prompt is a normal 200 stream with a single promptFeedback chunk.
            return StreamReply(
                headers=headers,
                end=[_element(orjson.dumps(_blocked(turn, envelope)), sse, first=True, last=True)],
                error_chunk=_midstream_chunk(fault, request, chunks_before=0),
                malformed_chunk=malformed,
            )
        # usageMetadata rides on every chunk and is cumulative; only the last one has the
        # candidate count, so a client summing per-chunk usage is wrong here as it is live.
        running_usage = {
            "promptTokenCount": turn.input_tokens,
            "totalTokenCount": turn.input_tokens,
        }
        chunks = [
            _element(
                orjson.dumps(
                    {
                        "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                        "usageMetadata": running_usage,
                        **envelope,
                    }
                ),
                sse,
                first=i == 0,
            )
            for i, part in enumerate(_stream_parts(turn))
        ]
        # The end marker carries no content (parts went out above), like the live service's
        # closing "finishReason + usage" event.
        end = _element(
            orjson.dumps(
                {
                    "candidates": [_final_candidate(turn, [])],
                    "usageMetadata": _usage(turn),
                    **envelope,
                }
            ),
            sse,
            first=not chunks,
            last=True,
        )
        return StreamReply(
            headers=headers,
            chunks=chunks,
            end=[end],
            error_chunk=_midstream_chunk(fault, request, chunks_before=len(chunks)),
            malformed_chunk=malformed,
        )

    def render_error(self, fault: Fault, request: ParsedRequest | None) -> BodyReply:
        """Render ``{"error": {code, message, status, details}}`` with Google's status names."""
        status = fault.status if fault.status is not None else _KIND_STATUS[fault.error]
        headers = {"content-type": "application/json; charset=UTF-8"}
        if fault.retry_after is not None:
            headers.update(_retry_after_headers(fault.retry_after))
        headers.update({k.lower(): v for k, v in fault.headers.items()})
        if fault.body is not None:
            body = _raw_body(fault.body)
        else:
            body = orjson.dumps(_error_doc(fault, status, request))
        return BodyReply(status=status, headers=headers, body=body)

    def render_midstream_error(self, fault: Fault, request: ParsedRequest) -> bytes:
        """The error object as one stream element; google-genai raises it by its ``code``."""
        return _error_element(fault, request, first=fault.after_chunks <= 0)


# -- rendering helpers ---------------------------------------------------------------------


def _midstream_chunk(
    fault: Fault | None, request: ParsedRequest, *, chunks_before: int
) -> bytes | None:
    if fault is None or fault.kind != "midstream":
        return None
    return _error_element(fault, request, first=min(fault.after_chunks, chunks_before) <= 0)


def _error_element(fault: Fault, request: ParsedRequest, *, first: bool) -> bytes:
    status = fault.status if fault.status is not None else _KIND_STATUS[fault.error]
    if fault.body is not None:
        payload = _raw_body(fault.body)
    else:
        payload = orjson.dumps(_error_doc(fault, status, request))
    # In the JSON-array form the error is the last element, so it also closes the array (and
    # opens it when no chunk went out before it).
    return _element(payload, _is_sse(request), first=first, last=True)


def _stream_parts(turn: Turn) -> Iterator[dict[str, Any]]:
    for piece in turn.reasoning_chunks():
        yield {"text": piece, "thought": True}
    for piece in turn.text_chunks():
        yield {"text": piece}
    # Function calls arrive whole, one per event: Gemini does not stream partial arguments.
    yield from _function_call_parts(turn)


def _function_call_parts(turn: Turn) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in turn.tool_calls:
        function_call: dict[str, Any] = {"name": call.name, "args": _args(call)}
        # The live API only sends ids in some modes; a script that sets one gets it echoed
        # so that clients correlating by id can be tested too.
        if call.id is not None:
            function_call["id"] = call.id
        part: dict[str, Any] = {"functionCall": function_call}
        if not parts and turn.reasoning_chunks():
            # Thinking models sign the first function call of a step; clients must send the
            # signature back with the call in the next request's history.
            part["thoughtSignature"] = _thought_signature()
        parts.append(part)
    return parts


def _final_candidate(turn: Turn, parts: list[dict[str, Any]]) -> dict[str, Any]:
    finish = _FINISH_REASONS[turn.stop_reason]
    candidate: dict[str, Any] = {}
    if parts:
        candidate["content"] = {"role": "model", "parts": parts}
    elif finish != "SAFETY":
        # The service sends a content object without parts when there is nothing new to say;
        # a response blocked for safety has no content at all.
        candidate["content"] = {"role": "model"}
    candidate["finishReason"] = finish
    if finish == "SAFETY":
        candidate["safetyRatings"] = [_BLOCKED_RATING]
    candidate["index"] = 0
    return candidate


def _envelope(turn: Turn, request: ParsedRequest) -> dict[str, str]:
    """The top-level fields every response (and every stream chunk) repeats."""
    envelope = {
        "modelVersion": turn.model or request.model,
        "responseId": _response_id(),
    }
    if request.options.get("vertex"):
        envelope["createTime"] = (
            datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        )
    return envelope


def _blocked(turn: Turn, envelope: Mapping[str, str]) -> dict[str, Any]:
    return {
        "promptFeedback": {
            "blockReason": turn.block_reason,
            "safetyRatings": [_BLOCKED_RATING],
        },
        "usageMetadata": {
            "promptTokenCount": turn.input_tokens,
            "totalTokenCount": turn.input_tokens,
        },
        **envelope,
    }


def _usage(turn: Turn) -> dict[str, int]:
    return {
        "promptTokenCount": turn.input_tokens,
        "candidatesTokenCount": turn.output_tokens,
        "totalTokenCount": turn.input_tokens + turn.output_tokens,
    }


def _args(call: ToolCall) -> dict[str, Any]:
    if not isinstance(call.arguments, str):
        return dict(call.arguments)
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        # functionCall.args is a Struct on the wire, so the service cannot send anything else.
        raise ValueError(
            f"tool call {call.name!r}: Gemini needs arguments that form a JSON object, "
            f"got {call.arguments!r}"
        )
    return value


def _response_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _thought_signature() -> str:
    return base64.b64encode(b"chia-thought-signature:" + uuid.uuid4().bytes).decode()


def _is_sse(request: ParsedRequest) -> bool:
    return bool(request.options.get("sse", True))


def _element(data: bytes, sse: bool, *, first: bool, last: bool = False) -> bytes:
    """Frame one streamed response object as an SSE event or a JSON-array element."""
    if sse:
        # The live service ends events with CRLF pairs; clients must accept either ending.
        return b"data: " + data + b"\r\n\r\n"
    return (b"[" if first else b",\r\n") + data + (b"]" if last else b"")


def _json_reply(status: int, doc: Mapping[str, Any]) -> BodyReply:
    return BodyReply(
        status=status,
        headers={"content-type": "application/json; charset=UTF-8"},
        body=orjson.dumps(doc),
    )


def _error_doc(fault: Fault, status: int, request: ParsedRequest | None) -> dict[str, Any]:
    message = fault.message or _KIND_MESSAGES[fault.error]
    if fault.error == "not_found" and request is not None and fault.message is None:
        message = _model_not_found(request)
    details: list[dict[str, Any]] = []
    if status == 429:
        details.append(_HELP)
    if fault.retry_after is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": _duration(fault.retry_after),
            }
        )
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status) or _STATUS_NAMES[_KIND_STATUS[fault.error]],
    }
    if details:
        error["details"] = details
    return {"error": error}


def _model_not_found(request: ParsedRequest) -> str:
    resource = request.options.get("resource", f"models/{request.model}")
    if request.options.get("vertex"):
        return (
            f"Publisher Model `{resource}` was not found or your project does not have access "
            "to it. Please ensure you are using a valid model version. For more information, "
            "see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
        )
    version = request.options.get("api_version", "v1beta")
    return (
        f"{resource} is not found for API version {version}, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods."
    )


def _duration(seconds: float) -> str:
    # google.protobuf.Duration's JSON form: decimal seconds with an "s" suffix, no exponent.
    text = f"{max(0.0, seconds):.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _retry_after_headers(seconds: float) -> dict[str, str]:
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}


def _raw_body(body: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(dict(body))


def _count_tokens(route: re.Match[str], body: Mapping[str, Any]) -> dict[str, Any]:
    # The Gemini API also accepts the whole request wrapped in generateContentRequest.
    request = _mapping(_field(body, "generateContentRequest")) or body
    chars = sum(len(t) for t in _texts(_field(request, "systemInstruction")))
    for content in _list(request.get("contents")):
        chars += sum(len(t) for t in _texts(content))
    tokens = max(1, math.ceil(chars / 4)) if chars else 0
    if route["publisher"] is not None:
        return {"totalTokens": tokens, "totalBillableCharacters": chars}
    return {
        "totalTokens": tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
    }


def _model_resource(route: re.Match[str]) -> dict[str, Any]:
    model = route["model"]
    if route["publisher"] is not None:
        return {
            "name": f"publishers/{route['publisher']}/models/{model}",
            "versionId": "001",
            "openSourceCategory": "PROPRIETARY",
            "launchStage": "GA",
        }
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


# -- parsing helpers -----------------------------------------------------------------------


def _field(doc: Mapping[str, Any], camel: str) -> Any:
    # Proto JSON accepts both spellings; the SDKs send camelCase, curl users often snake_case.
    if camel in doc:
        return doc[camel]
    return doc.get(re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower())


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _texts(content: Any) -> list[str]:
    """Text parts of a Content (thought parts excluded); a bare string counts as one."""
    if isinstance(content, str):
        return [content]
    return [
        str(part["text"])
        for part in _list(_mapping(content).get("parts"))
        if isinstance(part, Mapping) and "text" in part and not part.get("thought")
    ]


def _last_user_text(contents: Sequence[Mapping[str, Any]]) -> str:
    for content in reversed(contents):
        if content.get("role", "user") != "user":
            continue
        texts = _texts(content)
        if texts:
            return "\n".join(texts)
    return ""


# The fields of the service's ``Schema`` message, in both proto-JSON spellings; anything else
# in ``functionDeclarations[].parameters`` is refused ("Unknown name"). ``parametersJsonSchema``
# takes full JSON Schema and is not checked.
_SCHEMA_FIELDS: Final = frozenset(
    spelling
    for name in (
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "default",
        "items",
        "minItems",
        "maxItems",
        "enum",
        "properties",
        "propertyOrdering",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "minimum",
        "maximum",
    )
    for spelling in (name, re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())
)


def _check_declarations(tools: Sequence[Any]) -> None:
    for t, tool in enumerate(tools):
        declarations = _list(_field(_mapping(tool), "functionDeclarations"))
        for d, declaration in enumerate(declarations):
            parameters = _mapping(declaration).get("parameters")
            if parameters is not None:
                _check_schema(parameters, f"tools[{t}].function_declarations[{d}].parameters")


def _check_schema(node: Any, where: str) -> None:
    """Refuse what the live service refuses, in its words."""
    if not isinstance(node, Mapping):
        raise ValueError(f"Invalid JSON payload received. Expected an object at '{where}'.")
    for key, value in node.items():
        if key not in _SCHEMA_FIELDS:
            raise ValueError(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field."
            )
        if key == "type" and not isinstance(value, str):
            raise ValueError(
                f"Invalid JSON payload received. Proto field is not repeating, cannot start "
                f"list. at '{where}.type'"
            )
    for name, sub in _mapping(node.get("properties")).items():
        _check_schema(sub, f"{where}.properties[{name}].value")
    if node.get("items") is not None:
        _check_schema(node["items"], f"{where}.items")
    for i, sub in enumerate(_list(_field(node, "anyOf"))):
        _check_schema(sub, f"{where}.any_of[{i}]")


def _tool_names(tools: Sequence[Any]) -> Iterator[str]:
    for tool in tools:
        for declaration in _list(_field(_mapping(tool), "functionDeclarations")):
            if isinstance(declaration, Mapping) and "name" in declaration:
                yield str(declaration["name"])


def _tool_results(contents: Sequence[Mapping[str, Any]]) -> Iterator[ToolResultSeen]:
    for content in contents:
        for part in _list(content.get("parts")):
            result = _mapping(_field(_mapping(part), "functionResponse"))
            if not result:
                continue
            response = _mapping(result.get("response"))
            # google-genai and most clients wrap results as {"output": ...} or {"error": ...};
            # anything else is passed on as its JSON.
            is_error = "error" in response and "output" not in response
            payload = response.get("error" if is_error else "output", response)
            output = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
            # Gemini correlates results by function name unless the call carried an id.
            yield ToolResultSeen(
                call_id=str(result.get("id") or result.get("name", "")),
                output=output,
                is_error=is_error,
            )
