"""OpenAI-compatible Chat Completions backend and the base of its presets.

Errors keep the reference's ``chia.models.openai_compat`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import anyio

from chia_async import errors
from chia_async.base import Attempt, LLMCallBase
from chia_async.events import ReasoningDelta, TextDelta, ToolCallStarted
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
from chia_async.redaction import register_secret
from chia_async.results import QueryResult, Usage
from chia_async.retry import retry_after_from_headers

__all__ = [
    "OpenAICompatLLM",
    "classify_openai_error",
    "AuthenticationError",
    "BillingError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "OpenAICompatError",
    "RateLimitError",
    "ServerError",
    "UnknownOpenAIError",
]


class OpenAICompatError(errors.BackendError):
    """Base for all OpenAI-compatible backend errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, status_code: int | None = None, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, status_code=status_code, raw_message=raw_message
        )


class RateLimitError(OpenAICompatError, errors.RateLimitError):
    """HTTP 429."""

    def __init__(
        self,
        node_id: str,
        reset_time: datetime,
        raw_message: str = "",
        status_code: int | None = None,
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, status_code=status_code
        )


class AuthenticationError(OpenAICompatError, errors.AuthenticationError):
    """HTTP 401 / 403."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class InvalidRequestError(OpenAICompatError, errors.InvalidRequestError):
    """HTTP 400 / 404."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ServerError(OpenAICompatError, errors.ServerError):
    """HTTP 5xx, connection, or timeout."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class MaxOutputTokensError(OpenAICompatError, errors.MaxOutputTokensError):
    """The response was truncated at max_tokens (finish_reason='length')."""

    def __init__(
        self,
        node_id: str,
        status_code: int | None = None,
        raw_message: str = "",
        partial_text: str = "",
    ) -> None:
        self._init(
            node_id=node_id,
            status_code=status_code,
            raw_message=raw_message,
            partial_text=partial_text,
        )


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """HTTP 400 (or 413) whose body shows the prompt exceeded the context window.

    Subclasses InvalidRequestError so it inherits never-retry semantics (re-sending the same
    oversized prompt cannot help) while letting callers detect the context-overflow case
    specifically. Distinct from MaxOutputTokensError, which is about output truncation."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class BillingError(OpenAICompatError, errors.BillingError):
    """Payment / quota problem (HTTP 402, or a 429 carrying insufficient_quota).

    Never retried: spending more requests cannot restore quota or credit."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class UnknownOpenAIError(OpenAICompatError, errors.UnknownError):
    """Unclassified OpenAI-compatible error."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


# -- classification -------------------------------------------------------------------------

_CONTEXT = re.compile(
    r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long|"
    r"reduce the length|input (?:is )?too long",
    re.IGNORECASE,
)
_QUOTA_CODES = ("insufficient_quota", "billing_hard_limit_reached", "billing_not_active")


def classify_openai_error(exc: BaseException, node_id: str) -> errors.ChiaError:
    """Translate an openai SDK (or transport) exception into this module's error classes."""
    openai = _openai()
    if isinstance(exc, errors.ChiaError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code, kind, message = _error_fields(exc.body, str(exc.message))
        headers = dict(exc.response.headers) if exc.response is not None else {}
        return _by_status(node_id, status, code, kind, message, headers)
    if isinstance(exc, openai.APITimeoutError):
        return ServerError(node_id, raw_message=f"request timed out: {exc}")
    if isinstance(exc, openai.APIConnectionError):
        return ServerError(node_id, raw_message=f"connection failed: {exc}")
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        code, kind, message = _error_fields(exc.body, str(exc.message))
        status = {
            "rate_limit_exceeded": 429,
            "insufficient_quota": 429,
            "context_length_exceeded": 400,
            "invalid_request_error": 400,
            "invalid_api_key": 401,
        }.get(code or kind or "", 500)
        return _by_status(node_id, status, code, kind, message, {})
    if isinstance(exc, ValueError):  # a chunk the SDK could not decode
        return errors.MalformedResponseError(node_id, f"malformed stream chunk: {exc}")
    return ServerError(node_id, raw_message=f"{type(exc).__name__}: {exc}")


def _error_fields(body: object, fallback: str) -> tuple[str | None, str | None, str]:
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, fallback
    code = error.get("code")
    kind = error.get("type")
    message = error.get("message")
    return (
        str(code) if code is not None else None,
        str(kind) if kind is not None else None,
        str(message) if message else fallback,
    )


def _by_status(
    node_id: str,
    status: int,
    code: str | None,
    kind: str | None,
    message: str,
    headers: dict[str, str],
) -> errors.ChiaError:
    if code in _QUOTA_CODES or kind in _QUOTA_CODES or status == 402:
        return BillingError(node_id, status_code=status, raw_message=message)
    if status == 429:
        wait = retry_after_from_headers(headers)
        reset = datetime.now(UTC) + timedelta(seconds=wait or 0.0)
        return RateLimitError(node_id, reset, raw_message=message, status_code=status)
    if status in (401, 403):
        return AuthenticationError(node_id, status_code=status, raw_message=message)
    if (
        code == "context_length_exceeded"
        or status == 413
        or (400 <= status < 500 and _CONTEXT.search(message))
    ):
        return ContextLengthExceededError(node_id, status_code=status, raw_message=message)
    if status == 408 or status >= 500:
        error = ServerError(node_id, status_code=status, raw_message=message)
        error.retry_after = retry_after_from_headers(headers)
        return error
    if 400 <= status < 500:
        return InvalidRequestError(node_id, status_code=status, raw_message=message)
    return UnknownOpenAIError(node_id, status_code=status, raw_message=message)


def _openai() -> Any:
    return require("openai", "openai", feature="OpenAICompatLLM")


@functools.cache
def _chunk_types() -> tuple[Any, Any]:
    # Chunks as plain dicts: the SDK still parses the SSE stream and raises its typed errors
    # (HTTP status, error events), but skips building a pydantic ChatCompletionChunk per
    # chunk, ~0.5 ms per request that this adapter would only read fields from.
    openai = _openai()
    return object, openai.AsyncStream[dict[str, Any]]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- the backend ----------------------------------------------------------------------------

ChatMessages = list[dict[str, Any]]


class OpenAICompatLLM(LLMCallBase):
    """Any OpenAI-compatible Chat Completions endpoint, with client-side MCP tools.

    ``base_url`` selects the endpoint (OpenAI itself by default); the credential is
    ``api_key``, or ``token_provider`` (a zero-argument callable returning a fresh token,
    called before each request so a rotating token never goes stale in the cached client),
    or ``OPENAI_API_KEY`` from the environment. The SDK's own retries are off: this
    library's retry policy decides. ``client_kwargs`` go to ``openai.AsyncOpenAI``.
    ``idle_timeout_seconds`` bounds the silence between two stream chunks.
    """

    backend_name: ClassVar[str] = "openai_compat"
    #: the Ray resource a worker must advertise to run this backend's calls
    ray_resource: str = "openai"
    default_base_url: ClassVar[str | None] = None
    default_api_key: ClassVar[str | None] = None

    def __init__(
        self,
        model: str,
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "openai_compat_llm",
        logging_level: int = 10,
        log_dir: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        token_provider: Callable[[], str] | None = None,
        max_tokens: int = 16000,
        max_tool_iterations: int = 100,
        client_kwargs: dict[str, Any] | None = None,
        *,
        idle_timeout_seconds: float = 120.0,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        super().__init__(
            model=model,
            system_message=system_message,
            timeout_seconds=timeout_seconds,
            retries=retries,
            logging_name=logging_name,
            logging_level=logging_level,
            log_dir=log_dir,
        )
        if token_provider is not None and not callable(token_provider):
            raise TypeError("token_provider must be a callable returning a token")
        check_loop_options(
            max_tokens=max_tokens,
            max_tool_iterations=max_tool_iterations,
            idle_timeout_seconds=idle_timeout_seconds,
            client_kwargs=client_kwargs,
        )
        self.base_url = base_url or self.default_base_url
        self.api_key = api_key or self.default_api_key
        if api_key:
            register_secret(api_key)
        self.token_provider = token_provider
        self.max_tokens = max_tokens
        self.max_tool_iterations = max_tool_iterations
        self.client_kwargs = dict(client_kwargs or {})
        self.idle_timeout_seconds = idle_timeout_seconds
        self._clients: LoopLocal[Any] = LoopLocal(self._build_client, _close_client)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key={'***' if self.api_key else None})"
        )

    def _build_client(self) -> Any:
        openai = _openai()
        api_key: Any = self.api_key
        if self.token_provider is not None:
            provider = self.token_provider

            async def fresh_token() -> str:
                token = await anyio.to_thread.run_sync(provider)
                register_secret(token)
                return token

            api_key = fresh_token
        try:
            return openai.AsyncOpenAI(
                api_key=api_key,
                base_url=self.base_url,
                max_retries=0,
                timeout=openai.Timeout(self.timeout_seconds, connect=10.0),
                **self.client_kwargs,
            )
        except openai.OpenAIError as exc:
            raise AuthenticationError(self.logging_name, raw_message=str(exc)) from None

    async def _run(self, attempt: Attempt) -> QueryResult:
        return await run_tool_loop(
            _ChatAdapter(self), attempt, max_tool_iterations=self.max_tool_iterations
        )


async def _close_client(client: Any) -> None:
    await client.close()


class _ChatAdapter(ProviderAdapter[ChatMessages]):
    schema_dialect = "openai"

    def __init__(self, llm: OpenAICompatLLM) -> None:
        self.llm = llm

    def initial_messages(self, attempt: Attempt) -> ChatMessages:
        messages: ChatMessages = []
        if self.llm.system_message:
            messages.append({"role": "system", "content": self.llm.system_message})
        messages.append({"role": "user", "content": attempt.message})
        return messages

    async def step(
        self, messages: ChatMessages, tools: CompiledTools, attempt: Attempt, number: int
    ) -> StepResult:
        llm = self.llm
        node = llm.logging_name
        request: dict[str, Any] = {
            "model": llm.model,
            "messages": messages,
            "max_tokens": llm.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools.declarations:
            request["tools"] = list(tools.declarations)
        step = StepResult()
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        try:
            client = await llm._clients.get()
            with anyio.fail_after(llm.idle_timeout_seconds):
                # What client.chat.completions.create(stream=True) does, minus its deep
                # TypedDict transform of the body (a no-op for these plain JSON messages, and
                # ~0.5 ms per step once the history holds tool schemas and results) and its
                # pydantic model per chunk.
                stream = await client.post(
                    "/chat/completions",
                    body=request,
                    cast_to=_chunk_types()[0],
                    stream=True,
                    stream_cls=_chunk_types()[1],
                )
            async with stream:
                iterator = stream.__aiter__()
                while True:
                    with anyio.fail_after(llm.idle_timeout_seconds):
                        try:
                            chunk = await iterator.__anext__()
                        except StopAsyncIteration:
                            break
                    await self._chunk(chunk, step, text, calls, attempt)
        except TimeoutError:
            raise errors.StallError(
                node,
                f"no stream data for {llm.idle_timeout_seconds:g} s",
                timeout=llm.idle_timeout_seconds,
            ) from None
        except Exception as exc:
            raise classify_openai_error(exc, node) from None
        step.text = "".join(text)
        for index in sorted(calls):
            call = calls[index]
            arguments, raw, problem = parse_arguments(call["arguments"] or None)
            step.tool_calls.append(
                ToolCallRequest(
                    # some servers (Ollama, vLLM) omit ids: make stable ones
                    call_id=call["id"] or f"call_{number}_{index}",
                    name=call["name"],
                    arguments=arguments,
                    raw_arguments=raw,
                    argument_error=problem,
                )
            )
        if step.finish_reason is None and not step.tool_calls:
            raise errors.IncompleteResponseError(
                node, "the stream ended without a finish_reason: the answer is incomplete"
            )
        if step.tool_calls:
            return step  # a tool turn whatever finish_reason says (servers get it wrong)
        if step.finish_reason == "length":
            raise MaxOutputTokensError(
                node,
                raw_message=f"the answer stopped at max_tokens={llm.max_tokens}",
                partial_text=step.text,
            )
        if step.finish_reason == "content_filter":
            raise errors.ContentBlockedError(node, "content_filter", "the answer was filtered")
        return step

    async def _chunk(
        self,
        chunk: Any,
        step: StepResult,
        text: list[str],
        calls: dict[int, dict[str, Any]],
        attempt: Attempt,
    ) -> None:
        # Chunks arrive as the JSON the server sent (see _chunk_types), read defensively:
        # OpenAI-compatible servers differ in which fields they send and how.
        if not isinstance(chunk, dict):
            raise errors.MalformedResponseError(
                self.llm.logging_name, f"a stream chunk is not a JSON object: {chunk!r:.200}"
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details")
            step.usage = Usage(
                input_tokens=_int(usage.get("prompt_tokens")),
                output_tokens=_int(usage.get("completion_tokens")),
                cache_read_tokens=_int(details.get("cached_tokens"))
                if isinstance(details, dict)
                else 0,
            )
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    text.append(content)
                    await attempt.emit(TextDelta(text=content))
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    await attempt.emit(ReasoningDelta(text=reasoning))
                for fragment in delta.get("tool_calls") or ():
                    if not isinstance(fragment, dict):
                        continue
                    index = fragment.get("index")
                    if not isinstance(index, int):
                        index = len(calls)
                    call = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                    if fragment.get("id"):
                        call["id"] = str(fragment["id"])
                    function = fragment.get("function")
                    if isinstance(function, dict):
                        name = function.get("name")
                        if isinstance(name, str) and name:
                            first = not call["name"]
                            call["name"] += name
                            if first:
                                await attempt.emit(
                                    ToolCallStarted(
                                        call_id=call["id"] or f"call_{index}", name=call["name"]
                                    )
                                )
                        arguments = function.get("arguments")
                        if isinstance(arguments, dict):  # some servers send objects
                            call["arguments"] = arguments
                        elif isinstance(arguments, str) and arguments:
                            call["arguments"] = (call["arguments"] or "") + arguments
            finish = choice.get("finish_reason")
            if finish:
                step.finish_reason = str(finish)

    def append_step(
        self, messages: ChatMessages, step: StepResult, results: Sequence[ToolCallResult]
    ) -> None:
        messages.append(
            {
                "role": "assistant",
                "content": step.text or None,
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.raw_arguments or "{}"},
                    }
                    for call in step.tool_calls
                ],
            }
        )
        for result in results:
            messages.append(
                {"role": "tool", "tool_call_id": result.call_id, "content": result.output}
            )
