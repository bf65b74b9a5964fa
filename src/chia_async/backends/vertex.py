"""Google Vertex AI backends: Gemini through google-genai (:class:`VertexGeminiLLM`), other
models through the OpenAI-compatible Model-as-a-Service endpoint (:class:`VertexGenericLLM`).

Errors keep the reference's ``chia.models.vertex`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import anyio

from chia_async import errors
from chia_async.backends.openai_compat import OpenAICompatLLM
from chia_async.base import Attempt, LLMCallBase
from chia_async.events import ReasoningDelta, TextDelta, ToolCallStarted
from chia_async.extras import MissingExtraError, require
from chia_async.loop.clients import LoopLocal
from chia_async.loop.idle import IdleDeadline
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
    "VertexGeminiLLM",
    "VertexGenericLLM",
    "classify_vertex_error",
    "maas_base_url",
    "AuthenticationError",
    "ContentBlockedError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownVertexError",
    "VertexError",
]


class VertexError(errors.BackendError):
    """Base for all Vertex backend errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, status_code: int | None = None, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, status_code=status_code, raw_message=raw_message
        )


class RateLimitError(VertexError, errors.RateLimitError):
    """Quota / rate exhaustion (HTTP 429, RESOURCE_EXHAUSTED)."""

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


class AuthenticationError(VertexError, errors.AuthenticationError):
    """Invalid / missing credentials or permission (HTTP 401 / 403)."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class InvalidRequestError(VertexError, errors.InvalidRequestError):
    """Malformed request or unknown model (HTTP 400 / 404)."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ServerError(VertexError, errors.ServerError):
    """Transient service-side failure (HTTP 5xx)."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class MaxOutputTokensError(VertexError, errors.MaxOutputTokensError):
    """The response was truncated at max_output_tokens."""

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


class UnknownVertexError(VertexError, errors.UnknownError):
    """Unclassified Vertex error."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ContentBlockedError(VertexError, errors.ContentBlockedError):
    """The model returned no usable content because the prompt or the response was blocked (safety,
    recitation, blocklist, ...).

    This is NOT an HTTP/API error - Gemini reports it as a 200-OK response whose candidate
    carries a blocking finish_reason (or whose prompt_feedback carries a block_reason with no
    candidates). Surfacing it as a typed error keeps a block from masquerading as a successful
    empty answer. Never automatically retried: re-sending the same prompt will be blocked again."""

    def __init__(self, node_id: str, block_reason: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, block_reason=block_reason, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


# -- Vertex Model-as-a-Service (OpenAI-compatible) ----------------------------------------------


def maas_base_url(project: str, location: str) -> str:
    """The OpenAI-compatible endpoint of Vertex MaaS for a project and location."""
    host = (
        "aiplatform.googleapis.com"
        if location == "global"
        else f"{location}-aiplatform.googleapis.com"
    )
    return f"https://{host}/v1/projects/{project}/locations/{location}/endpoints/openapi"


class _AdcTokenProvider:
    """A GCP access token from Application Default Credentials, refreshed when stale.

    The credentials are looked up on the first call, not at construction: building a
    backend must not read credential files or reach a metadata server.
    """

    def __init__(self) -> None:
        self._credentials: Any = None

    def __call__(self) -> str:
        if self._credentials is None:
            google_auth = require("google.auth", "vertex", feature="VertexGenericLLM")
            self._credentials, _ = google_auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"]
            )
        if not self._credentials.valid:
            requests_transport = require(
                "google.auth.transport.requests", "vertex", feature="VertexGenericLLM"
            )
            self._credentials.refresh(requests_transport.Request())
        return str(self._credentials.token)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # credentials are looked up again in the process that unpickles

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._credentials = None


class VertexGenericLLM(OpenAICompatLLM):
    """Non-Gemini Vertex models (Llama, Mistral, ...) through the Model-as-a-Service
    OpenAI-compatible endpoint; ``model`` is the MaaS id, e.g.
    ``"meta/llama-3.1-8b-instruct-maas"``.

    The endpoint comes from ``project``/``location`` (or ``GOOGLE_CLOUD_PROJECT`` /
    ``GOOGLE_CLOUD_LOCATION``); auth is a GCP access token from Application Default
    Credentials, supplied through ``token_provider`` and refreshed before it goes stale.
    Everything else — the tool loop, errors, retries — is OpenAICompatLLM's.
    """

    backend_name: ClassVar[str] = "vertex_maas"
    ray_resource: str = "vertex"

    def __init__(
        self,
        model: str,
        project: str | None = None,
        location: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.location = location or os.environ.get("GOOGLE_CLOUD_LOCATION")
        if kwargs.get("base_url") is None:
            if not (self.project and self.location):
                raise ValueError(
                    "VertexGenericLLM needs project and location (or GOOGLE_CLOUD_PROJECT "
                    "and GOOGLE_CLOUD_LOCATION)"
                )
            kwargs["base_url"] = maas_base_url(self.project, self.location)
        if kwargs.get("api_key") is None and kwargs.get("token_provider") is None:
            kwargs["token_provider"] = _AdcTokenProvider()
        kwargs.setdefault("logging_name", "vertex_generic")
        super().__init__(model, **kwargs)


# -- Gemini on Vertex (google-genai) --------------------------------------------------------

logger = logging.getLogger("chia_async.loop")

# A 400 over the context window: "The input token count (1048577) exceeds the maximum number
# of tokens allowed (1048576)."
_GEMINI_CONTEXT = re.compile(
    r"input token count.*exceeds|exceeds the maximum number of tokens|context (?:length|window)|"
    r"prompt is too long|too many tokens",
    re.IGNORECASE,
)
#: Finish reasons that mean the answer was withheld: never an empty success, never retried.
_BLOCKING_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
#: Finish reasons of an answer the model botched; asking again usually works.
_GLITCH_FINISH = frozenset(
    {"MALFORMED_FUNCTION_CALL", "MALFORMED_RESPONSE", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"}
)
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def classify_vertex_error(exc: BaseException, node_id: str) -> errors.ChiaError:
    """Translate a google-genai / google-auth (or transport) exception into this module's
    classes. The HTTP code decides first, then the message patterns; a ``RetryInfo`` detail
    (or a Retry-After header) sets how long to wait."""
    if isinstance(exc, errors.ChiaError):
        return exc
    genai_errors = require("google.genai.errors", "vertex", feature="VertexGeminiLLM")
    if isinstance(exc, genai_errors.APIError):
        status = exc.code if isinstance(exc.code, int) else 500
        message = str(exc.message or exc.status or exc)
        wait = _retry_delay(exc.details)
        if wait is None:
            wait = retry_after_from_headers(_headers_of(getattr(exc, "response", None)))
        return _vertex_by_status(node_id, status, message, wait)
    auth_errors = sys.modules.get("google.auth.exceptions")
    if auth_errors is not None:
        if isinstance(exc, auth_errors.TransportError):
            return ServerError(node_id, raw_message=f"credential refresh failed: {exc}")
        if isinstance(exc, auth_errors.GoogleAuthError):
            return AuthenticationError(node_id, raw_message=f"Google credentials: {exc}")
    if isinstance(exc, ValueError):  # a chunk the SDK could not decode (JSON, pydantic)
        return errors.MalformedResponseError(node_id, f"malformed stream chunk: {exc}")
    if isinstance(exc, OSError) or _is_transport_error(exc):
        return ServerError(node_id, raw_message=f"connection failed: {type(exc).__name__}: {exc}")
    return UnknownVertexError(node_id, raw_message=f"{type(exc).__name__}: {exc}")


def _is_transport_error(exc: BaseException) -> bool:
    for module, name in (("aiohttp", "ClientError"), ("httpx2", "TransportError")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


def _headers_of(response: Any) -> dict[str, str]:
    headers = getattr(response, "headers", None)
    try:
        return {str(k): str(v) for k, v in dict(headers or {}).items()}
    except (TypeError, ValueError):
        return {}


def _retry_delay(details: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "30s"``), if any."""
    error = details.get("error", details) if isinstance(details, dict) else None
    items = error.get("details") if isinstance(error, dict) else None
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("@type") == _RETRY_INFO:
            delay = item.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return max(0.0, float(delay[:-1]))
                except ValueError:
                    return None
            if isinstance(delay, dict):  # a Duration given as an object
                seconds = float(delay.get("seconds", 0) or 0)
                return max(0.0, seconds + float(delay.get("nanos", 0) or 0) / 1e9)
    return None


def _vertex_by_status(
    node_id: str, status: int, message: str, wait: float | None
) -> errors.ChiaError:
    if status == 429:
        reset = datetime.now(UTC) + timedelta(seconds=wait or 0.0)
        return RateLimitError(node_id, reset, raw_message=message, status_code=status)
    if status in (401, 403):
        return AuthenticationError(node_id, status_code=status, raw_message=message)
    if status == 413 or (400 <= status < 500 and _GEMINI_CONTEXT.search(message)):
        return ContextLengthExceededError(node_id, status_code=status, raw_message=message)
    if status >= 500 or status in (408, 499):
        error = ServerError(node_id, status_code=status, raw_message=message)
        error.retry_after = wait
        return error
    if 400 <= status < 500:
        return InvalidRequestError(node_id, status_code=status, raw_message=message)
    return UnknownVertexError(node_id, status_code=status, raw_message=message)


def _genai_types() -> Any:
    return require("google.genai.types", "vertex", feature="VertexGeminiLLM")


class VertexGeminiLLM(LLMCallBase):
    """Gemini on Vertex AI through google-genai's async client, with client-side MCP tools.

    The project comes from ``project`` or ``GOOGLE_CLOUD_PROJECT``, the location from
    ``location`` or ``GOOGLE_CLOUD_LOCATION`` (else ``"global"``, as the SDK does). Auth is
    Application Default Credentials, looked up on the first request, never at construction;
    ``client_kwargs`` go to ``google.genai.Client`` (``credentials``, ``http_options``, or
    ``api_key`` for Vertex express mode). The SDK's own retries are off: this library's
    retry policy decides. One client per event loop, kept for the life of the loop.

    Tool schemas are compiled to Gemini's OpenAPI subset (no ``$ref``, no
    ``additionalProperties``, unions of constants as ``enum``, nullable unions as
    ``nullable``). A blocked prompt or a blocking finish reason raises
    :class:`ContentBlockedError`; ``MAX_TOKENS`` raises :class:`MaxOutputTokensError` with
    the partial text. ``idle_timeout_seconds`` bounds the silence between two stream chunks.
    """

    backend_name: ClassVar[str] = "vertex_gemini"
    #: the Ray resource a worker must advertise to run this backend's calls
    ray_resource: str = "vertex"

    def __init__(
        self,
        model: str,
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "vertex_gemini",
        logging_level: int = 10,
        log_dir: str | None = None,
        project: str | None = None,
        location: str | None = None,
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
        check_loop_options(
            max_tokens=max_tokens,
            max_tool_iterations=max_tool_iterations,
            idle_timeout_seconds=idle_timeout_seconds,
            client_kwargs=client_kwargs,
        )
        self.client_kwargs = dict(client_kwargs or {})
        api_key = self.client_kwargs.get("api_key")
        for secret in (api_key, getattr(self.client_kwargs.get("credentials"), "token", None)):
            if isinstance(secret, str):
                register_secret(secret)
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.location = location or os.environ.get("GOOGLE_CLOUD_LOCATION") or "global"
        if not self.project and not api_key:
            raise ValueError(
                "VertexGeminiLLM needs a project (project= or GOOGLE_CLOUD_PROJECT), "
                "or an api_key in client_kwargs for Vertex express mode"
            )
        self.max_tokens = max_tokens
        self.max_tool_iterations = max_tool_iterations
        self.idle_timeout_seconds = float(idle_timeout_seconds)
        self._clients: LoopLocal[Any] = LoopLocal(self._build_client, _close_genai_client)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, project={self.project!r}, "
            f"location={self.location!r})"
        )

    def _build_client(self) -> Any:
        genai = require("google.genai", "vertex", feature="VertexGeminiLLM")
        types = _genai_types()
        kwargs = dict(self.client_kwargs)
        options = kwargs.pop("http_options", None)
        if options is None:
            options = types.HttpOptions()
        elif isinstance(options, dict):
            options = types.HttpOptions.model_validate(options)
        else:
            options = options.model_copy()
        # One retry layer, ours. No SDK timeout either: the call's deadline and the idle
        # deadline bound every request, and an aiohttp timeout costs a thread hop per request.
        options.retry_options = types.HttpRetryOptions(attempts=1)
        if not kwargs.get("api_key"):  # express mode takes no project/location
            kwargs.setdefault("project", self.project)
            kwargs.setdefault("location", self.location)
        try:
            return genai.Client(vertexai=True, http_options=options, **kwargs)
        except ValueError as exc:
            raise InvalidRequestError(self.logging_name, raw_message=str(exc)) from None

    async def _run(self, attempt: Attempt) -> QueryResult:
        return await run_tool_loop(
            _GeminiAdapter(self), attempt, max_tool_iterations=self.max_tool_iterations
        )


async def _close_genai_client(client: Any) -> None:
    await client.aio.aclose()
    client.close()


class _GeminiAdapter(ProviderAdapter[list[Any]]):
    schema_dialect = "gemini"

    def __init__(self, llm: VertexGeminiLLM) -> None:
        self.llm = llm
        self._config: Any = None
        self._config_tools: CompiledTools | None = None

    def initial_messages(self, attempt: Attempt) -> list[Any]:
        # A plain dict: the SDK validates contents itself, and a types.Content built here
        # would be validated twice (~0.5 ms per request).
        return [{"role": "user", "parts": [{"text": attempt.message}]}]

    def _request_config(self, tools: CompiledTools) -> Any:
        # built once per set of declarations (the loop recompiles only when a server changes)
        if self._config is None or tools is not self._config_tools:
            types = _genai_types()
            config = types.GenerateContentConfig(
                max_output_tokens=self.llm.max_tokens,
                # the loop runs the tools; the SDK must not call anything itself
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            )
            if self.llm.system_message:
                config.system_instruction = self.llm.system_message
            declarations = []
            for declaration in tools.declarations:
                try:
                    declarations.append(types.FunctionDeclaration.model_validate(declaration))
                except ValueError as exc:  # one tool, not the request
                    logger.warning("tool %s dropped: the SDK refuses it: %s", declaration, exc)
            if declarations:
                config.tools = [types.Tool(function_declarations=declarations)]
            self._config, self._config_tools = config, tools
        return self._config

    async def step(
        self, messages: list[Any], tools: CompiledTools, attempt: Attempt, number: int
    ) -> StepResult:
        llm = self.llm
        node = llm.logging_name
        idle = llm.idle_timeout_seconds
        parts: list[Any] = []
        ids: dict[str, str | None] = {}
        step = StepResult(raw={"parts": parts, "ids": ids, "detail": None})
        config = self._request_config(tools)
        try:
            client = await llm._clients.get()
            with IdleDeadline(idle) as deadline:
                stream = await client.aio.models.generate_content_stream(
                    model=llm.model, contents=messages, config=config
                )
                try:
                    iterator = stream.__aiter__()
                    while True:
                        deadline.arm()
                        try:
                            chunk = await iterator.__anext__()
                        except StopAsyncIteration:
                            break
                        deadline.disarm()
                        await self._chunk(chunk, step, parts, ids, attempt, number)
                finally:
                    with anyio.CancelScope(shield=True):
                        await stream.aclose()  # releases the pooled connection
        except MissingExtraError:
            raise
        except Exception as exc:
            raise classify_vertex_error(exc, node) from None
        if deadline.expired:
            raise errors.StallError(node, f"no stream data for {idle:g} s", timeout=idle)
        step.raw["parts"] = _merge_text_parts(parts)
        return self._check(step)

    async def _chunk(
        self,
        chunk: Any,
        step: StepResult,
        parts: list[Any],
        ids: dict[str, str | None],
        attempt: Attempt,
        number: int,
    ) -> None:
        feedback = chunk.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum_text(feedback.block_reason)
            raise ContentBlockedError(
                self.llm.logging_name,
                block_reason=reason,
                raw_message=feedback.block_reason_message or f"the prompt was blocked ({reason})",
            )
        usage = chunk.usage_metadata
        if usage is not None:  # cumulative on every chunk: the last one is the total
            thoughts = usage.thoughts_token_count or 0
            step.usage = Usage(
                input_tokens=usage.prompt_token_count or 0,
                output_tokens=(usage.candidates_token_count or 0) + thoughts,
                cache_read_tokens=usage.cached_content_token_count or 0,
                reasoning_tokens=thoughts,
            )
        if not chunk.candidates:
            return
        candidate = chunk.candidates[0]
        content = candidate.content
        for part in (content.parts if content is not None else None) or ():
            call = part.function_call
            if call is not None:
                call_id = call.id or f"{call.name}#{number}.{len(step.tool_calls)}"
                ids[call_id] = call.id
                arguments, raw, problem = parse_arguments(dict(call.args or {}))
                step.tool_calls.append(
                    ToolCallRequest(call_id, call.name or "", arguments, raw, problem)
                )
                await attempt.emit(ToolCallStarted(call_id=call_id, name=call.name or ""))
            elif part.text:
                if part.thought:
                    step.reasoning += part.text
                    await attempt.emit(ReasoningDelta(text=part.text))
                else:
                    step.text += part.text
                    await attempt.emit(TextDelta(text=part.text))
            parts.append(part)
        if candidate.finish_reason is not None:
            step.finish_reason = _enum_text(candidate.finish_reason)
            if candidate.finish_message:
                step.raw["detail"] = candidate.finish_message

    def _check(self, step: StepResult) -> StepResult:
        node = self.llm.logging_name
        reason = step.finish_reason
        detail = step.raw.get("detail")
        if reason is None:
            raise errors.IncompleteResponseError(
                node, "the stream ended without a finish reason: the answer is incomplete"
            )
        if reason in _BLOCKING_FINISH:
            raise ContentBlockedError(
                node,
                block_reason=reason,
                raw_message=detail or f"the answer was blocked ({reason})",
            )
        if step.tool_calls:
            return step
        if reason == "MAX_TOKENS":
            raise MaxOutputTokensError(
                node,
                raw_message=f"the answer stopped at max_output_tokens={self.llm.max_tokens}",
                partial_text=step.text,
            )
        if reason in _GLITCH_FINISH:
            raise ServerError(node, raw_message=f"the model's answer was unusable ({reason})")
        if reason not in ("STOP", "FINISH_REASON_UNSPECIFIED"):
            raise UnknownVertexError(node, raw_message=f"the answer ended with {reason}")
        return step

    def append_step(
        self, messages: list[Any], step: StepResult, results: Sequence[ToolCallResult]
    ) -> None:
        types = _genai_types()
        raw = step.raw if isinstance(step.raw, dict) else {}
        # The model's parts go back verbatim: thinking models check their thought signatures.
        messages.append(types.Content(role="model", parts=list(raw.get("parts") or [])))
        ids: dict[str, str | None] = raw.get("ids") or {}
        by_id = {r.call_id: r for r in results}
        responses = []
        for call in step.tool_calls:  # one functionResponse per functionCall, in order
            result = by_id.get(call.call_id)
            output = result.output if result is not None else "Error: the tool call was cancelled"
            failed = result.is_error if result is not None else True
            responses.append(
                types.Part(
                    function_response=types.FunctionResponse(
                        id=ids.get(call.call_id),
                        name=call.name,
                        response={"error": output} if failed else {"output": output},
                    )
                )
            )
        messages.append(types.Content(role="user", parts=responses))


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _merge_text_parts(parts: list[Any]) -> list[Any]:
    """Adjacent streamed text parts of the same kind joined into one (a thought signature
    stays on its own part), so the history sent back does not grow by a part per chunk."""
    merged: list[Any] = []
    for part in parts:
        last = merged[-1] if merged else None
        if (
            last is not None
            and part.text is not None
            and last.text is not None
            and part.function_call is None
            and bool(part.thought) == bool(last.thought)
            and not part.thought_signature
            and not last.thought_signature
        ):
            merged[-1] = last.model_copy(update={"text": last.text + part.text})
        else:
            merged.append(part)
    return merged
