"""Amazon Bedrock backend (Converse / ConverseStream through aioboto3).

Errors keep the reference's ``chia.models.bedrock`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import anyio

from chia_async import errors
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
    "BedrockLLM",
    "classify_bedrock_error",
    "AuthenticationError",
    "BedrockError",
    "BillingError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownBedrockError",
]


class BedrockError(errors.BackendError):
    """Base for all Bedrock backend errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, status_code: str = "", raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, status_code=status_code, raw_message=raw_message
        )


class RateLimitError(BedrockError, errors.RateLimitError):
    """Throttling / quota exhaustion (ThrottlingException etc.)."""

    def __init__(
        self, node_id: str, reset_time: datetime, raw_message: str = "", status_code: str = ""
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, status_code=status_code
        )


class AuthenticationError(BedrockError, errors.AuthenticationError):
    """Invalid / expired / unauthorized AWS credentials."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class InvalidRequestError(BedrockError, errors.InvalidRequestError):
    """Malformed request or unknown model (ValidationException etc.)."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ServerError(BedrockError, errors.ServerError):
    """Transient service-side failure (5xx, model timeout, connection)."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class MaxOutputTokensError(BedrockError, errors.MaxOutputTokensError):
    """The response was truncated at maxTokens."""

    def __init__(
        self, node_id: str, status_code: str = "", raw_message: str = "", partial_text: str = ""
    ) -> None:
        self._init(
            node_id=node_id,
            status_code=status_code,
            raw_message=raw_message,
            partial_text=partial_text,
        )


class UnknownBedrockError(BedrockError, errors.UnknownError):
    """Unclassified Bedrock error."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class BillingError(AuthenticationError, errors.BillingError):
    """Model access denied for a payment reason (an AWS Marketplace subscription that cannot
    be completed, no valid payment instrument). Not in the reference: a subclass of this
    backend's AuthenticationError, so code written against the reference still catches it."""

    kind = errors.BillingError.kind

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


# -- classification -------------------------------------------------------------------------

_THROTTLED = frozenset(
    {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
)
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "MissingAuthenticationTokenException",
        "UnauthorizedException",
        "NotAuthorized",
    }
)
# ModelNotReady answers 429 but is a cold model, not a quota: retried as a server error.
_TRANSIENT = frozenset(
    {
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "ModelTimeoutException",
        "ModelNotReadyException",
        "ModelErrorException",
        "ModelStreamErrorException",
    }
)
# The ValidationException texts of a prompt over the context window: Bedrock's own
# ("Input is too long for requested model."), Anthropic's behind it ("prompt is too long:
# 210000 tokens > 200000 maximum") and the Converse check ("Too many input tokens").
_CONTEXT = re.compile(
    r"input is too long|too many input tokens|prompt is too long|context (?:length|window)|"
    r"maximum context|input token count .*exceeds|exceeds the maximum (?:number of )?"
    r"(?:input )?tokens",
    re.IGNORECASE,
)
# AccessDeniedException whose reason is payment, e.g. "Model access is denied due to
# INVALID_PAYMENT_INSTRUMENT:A valid payment instrument must be provided. Your AWS Marketplace
# subscription for this model cannot be completed at this time."
_PAYMENT = re.compile(r"INVALID_PAYMENT_INSTRUMENT|payment instrument|Marketplace subscription")
# ValidationException of a model that does tool use only without streaming (Llama 4 on
# Bedrock: "This model doesn't support tool use in streaming mode.").
_NO_STREAMING = re.compile(
    r"(?:doesn't|does not) support (?:tool use in )?streaming|streaming is not supported",
    re.IGNORECASE,
)


def classify_bedrock_error(exc: BaseException, node_id: str) -> errors.ChiaError:
    """Translate a botocore / aiobotocore (or transport) exception into this module's classes.

    Structured fields decide first (the error code, then the HTTP status), then the message
    patterns above, each matching the service's own wording.
    """
    if isinstance(exc, errors.ChiaError):
        return exc
    boto = require("botocore.exceptions", "bedrock", feature="BedrockLLM")
    if isinstance(exc, boto.ClientError):  # EventStreamError (in-stream) is one too
        response = exc.response if isinstance(exc.response, dict) else {}
        error = response.get("Error") or {}
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or exc)
        metadata = response.get("ResponseMetadata") or {}
        status = metadata.get("HTTPStatusCode")
        headers = metadata.get("HTTPHeaders") or {}
        # in-stream exceptions are named as stream members: throttlingException
        code = code[:1].upper() + code[1:]
        return _by_code(
            node_id, code, status if isinstance(status, int) else None, message, headers
        )
    if isinstance(
        exc,
        boto.NoCredentialsError
        | boto.PartialCredentialsError
        | boto.CredentialRetrievalError
        | boto.TokenRetrievalError
        | boto.SSOError
        | boto.ProfileNotFound,
    ):
        return AuthenticationError(node_id, raw_message=f"AWS credentials: {exc}")
    if isinstance(exc, boto.NoRegionError):
        return InvalidRequestError(
            node_id, raw_message="no AWS region: pass region= or set AWS_REGION"
        )
    if isinstance(exc, boto.ParamValidationError):
        return InvalidRequestError(node_id, raw_message=str(exc))
    if isinstance(exc, boto.HTTPClientError | boto.ConnectionError):  # timeouts, refused
        return ServerError(node_id, raw_message=f"{type(exc).__name__}: {exc}")
    eventstream = require("botocore.eventstream", "bedrock", feature="BedrockLLM")
    if isinstance(exc, eventstream.ParserError | ValueError):
        return errors.MalformedResponseError(node_id, f"malformed ConverseStream event: {exc}")
    if isinstance(exc, OSError) or _is_aiohttp_error(exc):
        return ServerError(node_id, raw_message=f"connection failed: {type(exc).__name__}: {exc}")
    return UnknownBedrockError(node_id, raw_message=f"{type(exc).__name__}: {exc}")


def _is_aiohttp_error(exc: BaseException) -> bool:
    aiohttp = sys.modules.get("aiohttp")  # aiobotocore's transport, loaded with it
    return aiohttp is not None and isinstance(exc, aiohttp.ClientError)


def _by_code(
    node_id: str, code: str, status: int | None, message: str, headers: dict[str, str]
) -> errors.ChiaError:
    if code in _THROTTLED:
        wait = retry_after_from_headers(headers)
        reset = datetime.now(UTC) + timedelta(seconds=wait or 0.0)
        return RateLimitError(node_id, reset, raw_message=message, status_code=code)
    if code in _TRANSIENT:
        return _server_error(node_id, code, message, headers)
    if code in _DENIED or status in (401, 403):
        if _PAYMENT.search(message):
            return BillingError(node_id, status_code=code, raw_message=message)
        return AuthenticationError(node_id, status_code=code, raw_message=message)
    if code == "ValidationException" and _CONTEXT.search(message):
        return ContextLengthExceededError(node_id, status_code=code, raw_message=message)
    if status is not None and (status >= 500 or status == 408):
        return _server_error(node_id, code, message, headers)
    if status == 429:
        reset = datetime.now(UTC) + timedelta(seconds=retry_after_from_headers(headers) or 0.0)
        return RateLimitError(node_id, reset, raw_message=message, status_code=code)
    if code.endswith("Exception") or (status is not None and 400 <= status < 500):
        return InvalidRequestError(node_id, status_code=code, raw_message=message)
    return UnknownBedrockError(node_id, status_code=code, raw_message=message)


def _server_error(
    node_id: str, code: str, message: str, headers: dict[str, str]
) -> errors.ChiaError:
    error = ServerError(node_id, status_code=code, raw_message=message)
    error.retry_after = retry_after_from_headers(headers)
    return error


# -- the backend ----------------------------------------------------------------------------

ConverseMessages = list[dict[str, Any]]

_SESSION_KEYS = frozenset({"profile_name", "botocore_session", "aws_account_id"})
_SECRET_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class BedrockLLM(LLMCallBase):
    """Amazon Bedrock's Converse API, with client-side MCP tools.

    Any tool-capable chat model on Bedrock (Claude, Nova, Llama, Mistral, ...): ``model`` is
    a model id or an inference-profile id/ARN. Credentials come from the standard AWS chain
    (environment, shared profile, SSO, IAM role); the region from ``region``, ``AWS_REGION``
    or ``AWS_DEFAULT_REGION`` (or the profile). ``client_kwargs`` go to
    ``aioboto3.Session().client("bedrock-runtime", ...)`` (``endpoint_url``, explicit keys,
    a ``botocore.config.Config`` as ``config``); ``profile_name`` goes to the session.

    One client per event loop, kept for the life of the loop, with a connection pool of
    ``max_connections`` (size it for your concurrency); botocore's own retries are off, this
    library's retry policy decides. Replies stream through ConverseStream;
    ``streaming=False`` uses Converse, which is also chosen by itself for a model that
    answers that it cannot stream tool use. ``idle_timeout_seconds`` bounds the silence
    between two stream events.
    """

    backend_name: ClassVar[str] = "bedrock"
    #: the Ray resource a worker must advertise to run this backend's calls
    ray_resource: str = "bedrock"

    def __init__(
        self,
        model: str,
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "bedrock_llm",
        logging_level: int = 10,
        log_dir: str | None = None,
        region: str | None = None,
        max_tokens: int = 16000,
        max_tool_iterations: int = 100,
        client_kwargs: dict[str, Any] | None = None,
        *,
        idle_timeout_seconds: float = 120.0,
        max_connections: int = 100,
        streaming: bool = True,
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
        if not isinstance(max_connections, int) or max_connections <= 0:
            raise ValueError("max_connections must be a positive int")
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.max_tokens = max_tokens
        self.max_tool_iterations = max_tool_iterations
        self.client_kwargs = dict(client_kwargs or {})
        for key in _SECRET_KEYS:
            value = self.client_kwargs.get(key)
            if isinstance(value, str):
                register_secret(value)
        self.idle_timeout_seconds = float(idle_timeout_seconds)
        self.max_connections = max_connections
        self.streaming = streaming
        # set when the model refused ConverseStream with tools: later steps use Converse
        self._converse_only = False
        self._clients: LoopLocal[_ClientSlot] = LoopLocal(self._new_slot, _close_slot)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, region={self.region!r})"

    def _new_slot(self) -> _ClientSlot:
        return _ClientSlot(self._client_context)

    def _client_context(self) -> Any:
        """The aioboto3 client's async context manager (entering it opens the client)."""
        aioboto3 = require("aioboto3", "bedrock", feature="BedrockLLM")
        botocore_config = require("botocore.config", "bedrock", feature="BedrockLLM")
        kwargs = dict(self.client_kwargs)
        session_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _SESSION_KEYS}
        config = botocore_config.Config(
            connect_timeout=10,
            read_timeout=self.timeout_seconds,
            max_pool_connections=self.max_connections,
            user_agent_extra="chia-async",
        )
        user_config = kwargs.pop("config", None)
        if user_config is not None:
            config = config.merge(user_config)
        # One retry layer, ours: botocore's "max_attempts" counts retries, while
        # total_max_attempts=1 is the setting that means a single request.
        config = config.merge(
            botocore_config.Config(retries={"total_max_attempts": 1, "mode": "standard"})
        )
        kwargs.setdefault("region_name", self.region)
        session = aioboto3.Session(**session_kwargs)
        return session.client("bedrock-runtime", config=config, **kwargs)

    async def _run(self, attempt: Attempt) -> QueryResult:
        return await run_tool_loop(
            _ConverseAdapter(self), attempt, max_tool_iterations=self.max_tool_iterations
        )


class _ClientSlot:
    """The client of one event loop. Opening an aioboto3 client is async (it resolves
    credentials), so the slot opens it on first use, once, however many calls ask at once."""

    def __init__(self, context_factory: Any) -> None:
        self._context_factory = context_factory
        self._context: Any = None
        self._client: Any = None
        self._lock = anyio.Lock()

    async def get(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    context = self._context_factory()
                    self._client = await context.__aenter__()
                    self._context = context
        return self._client

    async def aclose(self) -> None:
        context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)


async def _close_slot(slot: _ClientSlot) -> None:
    await slot.aclose()


@dataclass(slots=True)
class _Block:
    """One content block of a streamed reply, assembled from its deltas."""

    kind: str  # "text" | "reasoning" | "toolUse"
    text: list[str] = field(default_factory=list)
    signature: str = ""
    redacted: bytes = b""
    tool_use_id: str = ""
    name: str = ""


class _ConverseAdapter(ProviderAdapter[ConverseMessages]):
    schema_dialect = "bedrock"

    def __init__(self, llm: BedrockLLM) -> None:
        self.llm = llm

    def initial_messages(self, attempt: Attempt) -> ConverseMessages:
        return [{"role": "user", "content": [{"text": attempt.message}]}]

    async def step(
        self, messages: ConverseMessages, tools: CompiledTools, attempt: Attempt, number: int
    ) -> StepResult:
        llm = self.llm
        node = llm.logging_name
        request: dict[str, Any] = {
            "modelId": llm.model,
            "messages": messages,
            "inferenceConfig": {"maxTokens": llm.max_tokens},
        }
        if llm.system_message:
            request["system"] = [{"text": llm.system_message}]
        if tools.declarations:
            request["toolConfig"] = {"tools": list(tools.declarations)}
        try:
            client = await (await llm._clients.get()).get()
            if llm.streaming and not llm._converse_only:
                try:
                    step = await self._stream(client, request, attempt, number)
                except InvalidRequestError as exc:
                    if not _NO_STREAMING.search(exc.raw_message):
                        raise
                    llm._converse_only = True
                    step = await self._converse(client, request, attempt, number)
            else:
                step = await self._converse(client, request, attempt, number)
        except MissingExtraError:
            raise
        except Exception as exc:
            raise classify_bedrock_error(exc, node) from None
        return self._check(step)

    async def _stream(
        self, client: Any, request: dict[str, Any], attempt: Attempt, number: int
    ) -> StepResult:
        idle = self.llm.idle_timeout_seconds
        step = StepResult()
        blocks: dict[int, _Block] = {}
        stopped = False
        with IdleDeadline(idle) as deadline:
            try:
                response = await client.converse_stream(**request)
            except Exception as exc:
                raise classify_bedrock_error(exc, self.llm.logging_name) from None
            stream = response["stream"]
            try:
                iterator = stream.__aiter__()
                while True:
                    deadline.arm()
                    try:
                        event = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    deadline.disarm()
                    stopped = await self._event(event, step, blocks, attempt) or stopped
            finally:
                stream.close()  # an abandoned stream would keep its pooled connection
        if deadline.expired:
            raise errors.StallError(
                self.llm.logging_name, f"no stream data for {idle:g} s", timeout=idle
            )
        if not stopped:
            raise errors.IncompleteResponseError(
                self.llm.logging_name, "the stream ended before messageStop"
            )
        content: list[dict[str, Any]] = []
        text: list[str] = []
        for index in sorted(blocks):
            block = blocks[index]
            if block.kind == "text":
                value = "".join(block.text)
                text.append(value)
                if value:
                    content.append({"text": value})
            elif block.kind == "reasoning":
                if block.redacted:
                    content.append({"reasoningContent": {"redactedContent": block.redacted}})
                else:
                    reasoning: dict[str, Any] = {"text": "".join(block.text)}
                    if block.signature:
                        reasoning["signature"] = block.signature
                    content.append({"reasoningContent": {"reasoningText": reasoning}})
            else:
                arguments, raw, problem = parse_arguments("".join(block.text) or None)
                call_id = block.tool_use_id or f"tooluse_{number}_{index}"
                step.tool_calls.append(
                    ToolCallRequest(call_id, block.name, arguments, raw, problem)
                )
                content.append(
                    {"toolUse": {"toolUseId": call_id, "name": block.name, "input": arguments}}
                )
        step.text = "".join(text)
        step.raw = content
        return step

    async def _event(
        self, event: dict[str, Any], step: StepResult, blocks: dict[int, _Block], attempt: Attempt
    ) -> bool:
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta") or {}
            index = body.get("contentBlockIndex", 0)
            if "text" in delta:
                block = blocks.setdefault(index, _Block("text"))
                block.text.append(delta["text"])
                if delta["text"]:
                    await attempt.emit(TextDelta(text=delta["text"]))
            elif "toolUse" in delta:
                block = blocks.setdefault(index, _Block("toolUse"))
                block.text.append(delta["toolUse"].get("input") or "")
            elif "reasoningContent" in delta:
                block = blocks.setdefault(index, _Block("reasoning"))
                reasoning = delta["reasoningContent"]
                if reasoning.get("text"):
                    block.text.append(reasoning["text"])
                    await attempt.emit(ReasoningDelta(text=reasoning["text"]))
                if reasoning.get("signature"):
                    block.signature += reasoning["signature"]
                if reasoning.get("redactedContent"):
                    block.redacted += reasoning["redactedContent"]
        elif "contentBlockStart" in event:
            body = event["contentBlockStart"]
            tool_use = (body.get("start") or {}).get("toolUse")
            if tool_use is not None:
                block = _Block("toolUse", tool_use_id=tool_use.get("toolUseId", ""))
                block.name = tool_use.get("name", "")
                blocks[body.get("contentBlockIndex", 0)] = block
                await attempt.emit(ToolCallStarted(call_id=block.tool_use_id, name=block.name))
        elif "messageStop" in event:
            step.finish_reason = event["messageStop"].get("stopReason")
            return True
        elif "metadata" in event:
            step.usage = _usage(event["metadata"].get("usage"))
        return False

    async def _converse(
        self, client: Any, request: dict[str, Any], attempt: Attempt, number: int
    ) -> StepResult:
        # One document, no deltas: bounded by the call's deadline, not the idle one.
        response = await client.converse(**request)
        step = StepResult(finish_reason=response.get("stopReason"))
        step.usage = _usage(response.get("usage"))
        content = list(((response.get("output") or {}).get("message") or {}).get("content") or [])
        text: list[str] = []
        for index, block in enumerate(content):
            if "text" in block:
                text.append(block["text"])
                if block["text"]:
                    await attempt.emit(TextDelta(text=block["text"]))
            elif "reasoningContent" in block:
                reasoning = (block["reasoningContent"].get("reasoningText") or {}).get("text")
                if reasoning:
                    await attempt.emit(ReasoningDelta(text=reasoning))
            elif "toolUse" in block:
                tool_use = block["toolUse"]
                arguments, raw, problem = parse_arguments(tool_use.get("input"))
                call_id = tool_use.get("toolUseId") or f"tooluse_{number}_{index}"
                tool_use["toolUseId"] = call_id
                await attempt.emit(ToolCallStarted(call_id=call_id, name=tool_use["name"]))
                step.tool_calls.append(
                    ToolCallRequest(call_id, tool_use["name"], arguments, raw, problem)
                )
        step.text = "".join(text)
        step.raw = [b for b in content if b.get("text", True)]  # Bedrock rejects blank text
        return step

    def _check(self, step: StepResult) -> StepResult:
        node = self.llm.logging_name
        reason = step.finish_reason
        if step.tool_calls:
            return step  # a tool turn, whatever the stop reason says
        if reason == "max_tokens":
            raise MaxOutputTokensError(
                node,
                status_code="max_tokens",
                raw_message=f"the answer stopped at max_tokens={self.llm.max_tokens}",
                partial_text=step.text,
            )
        if reason in ("guardrail_intervened", "content_filtered"):
            raise errors.ContentBlockedError(
                node, reason, step.text or f"the answer was blocked ({reason})"
            )
        if reason == "model_context_window_exceeded":
            raise ContextLengthExceededError(
                node, status_code=reason, raw_message="the model's context window is full"
            )
        return step

    def append_step(
        self, messages: ConverseMessages, step: StepResult, results: Sequence[ToolCallResult]
    ) -> None:
        _append_turn(messages, "assistant", list(step.raw or []))
        by_id = {r.call_id: r for r in results}
        content: list[dict[str, Any]] = []
        for call in step.tool_calls:  # every toolUse needs its toolResult, in order
            result = by_id.get(call.call_id)
            output = result.output if result is not None else "Error: the tool call was cancelled"
            failed = result.is_error if result is not None else True
            content.append(
                {
                    "toolResult": {
                        "toolUseId": call.call_id,
                        # Bedrock rejects a blank text block
                        "content": [{"text": output or "(no output)"}],
                        "status": "error" if failed else "success",
                    }
                }
            )
        _append_turn(messages, "user", content)


def _append_turn(messages: ConverseMessages, role: str, content: list[dict[str, Any]]) -> None:
    """Append a turn; Converse wants roles to alternate, so a turn of the same role as the
    last one is merged into it, and an empty turn is left out."""
    if not content:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1] = {"role": role, "content": [*messages[-1]["content"], *content]}
    else:
        messages.append({"role": role, "content": content})


def _usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    return Usage(
        input_tokens=usage.get("inputTokens") or 0,
        output_tokens=usage.get("outputTokens") or 0,
        cache_read_tokens=usage.get("cacheReadInputTokens") or 0,
        cache_write_tokens=usage.get("cacheWriteInputTokens") or 0,
    )
