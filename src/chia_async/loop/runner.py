"""The provider tool loop, shared by every provider backend.

    messages + tool declarations -> stream one model step -> tool calls? -> run them through
    MCP (concurrently) -> append results -> repeat, until the model stops or
    ``max_tool_iterations`` is reached.

A provider plugs in through :class:`ProviderAdapter`: build the initial messages, stream
one step (emitting deltas as they arrive and returning the assembled step), append the
assistant turn and the tool results in its own shapes, and translate its SDK's exceptions.
The MCP side (:class:`~chia_async.loop.mcp.McpToolbox`) is opened once per call and reused
across iterations: tools are listed once, and every tool call has a deadline. A tool that
fails, times out, is unknown or gets bad arguments goes back to the model as an error
result — never an exception.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import orjson

from chia_async.base import Attempt
from chia_async.events import StepFinished, ToolCallFinished, ToolResult
from chia_async.loop.pool import open_toolbox
from chia_async.loop.schema import CompiledTools
from chia_async.results import QueryResult, Usage

if TYPE_CHECKING:  # mcp is imported only when a call has tools
    from chia_async.loop.mcp import McpToolbox

__all__ = [
    "check_loop_options",
    "ProviderAdapter",
    "StepResult",
    "ToolCallRequest",
    "ToolCallResult",
    "run_tool_loop",
]

Messages = TypeVar("Messages")


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A tool call the model made in one step (names as the provider saw them)."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str
    #: set when the arguments were not a JSON object: the call fails back to the model
    argument_error: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallResult:
    """What a tool call produced, in the loop's neutral form."""

    call_id: str
    name: str
    output: str
    is_error: bool


@dataclass(slots=True)
class StepResult:
    """One model call, assembled from its stream."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    #: the provider's own assistant message, to append verbatim when it needs to
    raw: Any = None


class ProviderAdapter(ABC, Generic[Messages]):
    """One provider's wire shapes for the tool loop.

    ``step`` must emit ``TextDelta``/``ReasoningDelta``/``ToolCallStarted`` events through
    ``attempt.emit`` as the stream delivers them, bound every wait by an idle deadline,
    treat a stream that ends without its end marker as an
    :class:`~chia_async.errors.IncompleteResponseError`, and raise typed
    :class:`~chia_async.errors.ChiaError`\\ s only (no SDK exception escapes).
    """

    #: which schema dialect `compile_tools` produces for this provider
    schema_dialect: str

    @abstractmethod
    def initial_messages(self, attempt: Attempt) -> Messages:
        """The conversation to send first (system message, history, the user message)."""

    @abstractmethod
    async def step(
        self, messages: Messages, tools: CompiledTools, attempt: Attempt, number: int
    ) -> StepResult:
        """Stream one model call; return the assembled step."""

    @abstractmethod
    def append_step(
        self, messages: Messages, step: StepResult, results: Sequence[ToolCallResult]
    ) -> None:
        """Append the assistant's turn and the tool results, keeping call/result pairs valid."""

    def final_text(self, steps: Sequence[StepResult]) -> str:
        """The answer: the text of the last step."""
        return steps[-1].text if steps else ""


def check_loop_options(
    *,
    max_tokens: object,
    max_tool_iterations: object,
    idle_timeout_seconds: object = 1.0,
    client_kwargs: object = None,
) -> None:
    """The provider backends' shared constructor checks, with the same messages everywhere."""
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if (
        not isinstance(max_tool_iterations, int)
        or isinstance(max_tool_iterations, bool)
        or max_tool_iterations <= 0
    ):
        raise ValueError(f"max_tool_iterations must be a positive int, got {max_tool_iterations!r}")
    if idle_timeout_seconds is not None and not (
        isinstance(idle_timeout_seconds, int | float) and idle_timeout_seconds > 0
    ):
        raise ValueError(f"idle_timeout_seconds must be > 0, got {idle_timeout_seconds!r}")
    if client_kwargs is not None and not isinstance(client_kwargs, dict):
        raise TypeError(f"client_kwargs must be a dict, got {type(client_kwargs).__name__}")


def parse_arguments(raw: str | dict[str, Any] | None) -> tuple[dict[str, Any], str, str | None]:
    """Tool arguments as (object, raw text, error). Arguments may arrive as a JSON string or
    as an object (some servers send a dict); anything but an object is an error."""
    if isinstance(raw, dict):
        return raw, orjson.dumps(raw).decode(), None
    text = raw or ""
    if not text.strip():
        return {}, text, None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return {}, text, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, text, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, text, None


async def run_tool_loop(
    adapter: ProviderAdapter[Any],
    attempt: Attempt,
    *,
    max_tool_iterations: int,
    result_fields: dict[str, Any] | None = None,
) -> QueryResult:
    """Drive ``adapter`` until the model stops; return the call's result.

    The MCP connections come from the LLM object's pool (:mod:`chia_async.loop.pool`): held
    across calls, listed once, re-listed (and the declarations recompiled) only after a server
    reports a change, which is checked before every step.
    """
    async with open_toolbox(attempt.llm, attempt.tools) as catalog:
        messages = adapter.initial_messages(attempt)
        steps: list[StepResult] = []
        stop_reason: str | None = None
        for number in range(max(1, max_tool_iterations)):
            compiled = await catalog.compiled(adapter.schema_dialect)
            step = await adapter.step(messages, compiled, attempt, number)
            steps.append(step)
            await attempt.emit(
                StepFinished(finish_reason=step.finish_reason, usage=step.usage, step=number)
            )
            attempt.usage = attempt.usage + step.usage
            if not step.tool_calls:
                stop_reason = step.finish_reason
                break
            for call in step.tool_calls:
                await attempt.emit(
                    ToolCallFinished(
                        call_id=call.call_id,
                        name=call.name,
                        arguments=call.arguments,
                        raw_arguments=call.raw_arguments,
                    )
                )
            results = await _run_calls(catalog.box, compiled, step.tool_calls)
            for result in results:
                await attempt.emit(
                    ToolResult(
                        call_id=result.call_id,
                        name=result.name,
                        output=result.output,
                        is_error=result.is_error,
                        executed_by="host",
                    )
                )
            adapter.append_step(messages, step, results)
        else:
            stop_reason = "max_tool_iterations"
        attempt.stop_reason = stop_reason
        return attempt.result(
            result=adapter.final_text(steps),
            returncode=0,
            success=True,
            **(result_fields or {}),
        )


async def _run_calls(
    toolbox: McpToolbox | None, compiled: CompiledTools, calls: Sequence[ToolCallRequest]
) -> list[ToolCallResult]:
    """Run one step's tool calls concurrently; results keep the calls' order."""
    results: list[ToolCallResult | None] = [None] * len(calls)

    async def run(index: int, call: ToolCallRequest) -> None:
        target = compiled.names.resolve(call.name)
        if call.argument_error is not None:
            output, is_error = f"Error: {call.argument_error}", True
        elif target is None or toolbox is None:
            output, is_error = f"Error: there is no tool named {call.name!r}", True
        else:
            server, tool = target
            outcome = await toolbox.call(server, tool, call.arguments)
            output, is_error = outcome.text, outcome.is_error
        results[index] = ToolCallResult(call.call_id, call.name, output, is_error)

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(run, index, call)
    return [r for r in results if r is not None]
