"""ClaudeCodeLLM(backend="api"): the real anthropic SDK against the scripted server, tools
through a real MCP server."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from chia_async import errors
from chia_async.backends import claude
from chia_async.events import ReasoningDelta, Retrying, TextDelta, ToolCallFinished, ToolResult
from chia_async.testing import Fault, ToolCall, Turn
from chia_async.tools import ChiaTool


def make(server, script: str, **kwargs) -> claude.ClaudeCodeLLM:
    kwargs.setdefault("retries", 0)
    return claude.ClaudeCodeLLM(
        model="claude-test",
        backend="api",
        api_key="sk-ant-test-key-0000",
        base_url=server.base_url(script),
        **kwargs,
    )


async def events_of(llm, message="hi", tools=None) -> list:
    async with llm.stream(message, tools) as stream:
        return [e async for e in stream]


async def test_text_turn_with_adaptive_thinking(model_server) -> None:
    model_server.script("t", [Turn(text="hello there", reasoning="let me think", chunks=2)])
    llm = make(model_server, "t", system_message="be brief", max_tokens=1234)
    events = await events_of(llm)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello there"
    assert any(isinstance(e, ReasoningDelta) for e in events)
    result = events[-1].result
    assert result.success and result.result == "hello there" and result.stop_reason == "end_turn"
    body = next(r for r in model_server.requests("t") if r.parsed).body
    assert body["thinking"] == {"type": "adaptive"}
    assert body["max_tokens"] == 1234 and body["system"] == "be brief"


async def test_tool_loop_keeps_tool_use_and_result_paired(model_server, mcp_server) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=f"sum={request.tool_results[0].output}")
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(
            reasoning="need a tool", tool_calls=[ToolCall(name=add, arguments={"a": 2, "b": 3})]
        )

    model_server.script("tools", turn)
    llm = make(model_server, "tools")
    events = await events_of(llm, "add", [ChiaTool.http(mcp_server.url, name="mock")])
    assert [e.arguments for e in events if isinstance(e, ToolCallFinished)] == [{"a": 2, "b": 3}]
    assert [e.output for e in events if isinstance(e, ToolResult)] == ["5"]
    assert events[-1].result.result == "sum=5"
    second = [r for r in model_server.requests("tools") if r.parsed][-1].body["messages"]
    assistant, user = second[1], second[2]
    kinds = [b["type"] for b in assistant["content"]]
    assert "thinking" in kinds and "tool_use" in kinds  # thinking sent back with its signature
    tool_use = next(b for b in assistant["content"] if b["type"] == "tool_use")
    assert user["content"][0]["tool_use_id"] == tool_use["id"]


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.http(401), claude.AuthenticationError),
        (Fault.http(400, "billing"), claude.BillingError),
        (Fault.http(400, "context_length"), claude.ContextLengthExceededError),
        (Fault.http(404), claude.InvalidRequestError),
    ],
    ids=["401", "billing", "context", "404"],
)
async def test_permanent_errors(model_server, fault, cls) -> None:
    model_server.script("e", [Turn(fault=fault)], repeat=True)
    with pytest.raises(cls):
        await make(model_server, "e", retries=2).aprompt("hi")
    assert len([r for r in model_server.requests("e") if r.parsed]) == 1


async def test_529_is_a_retried_server_error(model_server) -> None:
    model_server.script("o", [Turn(fault=Fault.http(529, "overloaded")), Turn(text="ok")])
    llm = make(model_server, "o", retries=1)
    llm.retry_policy = dataclasses.replace(llm.retry_policy, initial_backoff=0.0)
    events = await events_of(llm)
    retrying = [e for e in events if isinstance(e, Retrying)]
    assert isinstance(retrying[0].error, claude.ServerError)
    assert events[-1].result.result == "ok"


async def test_midstream_overload_before_any_delta_is_retried(model_server) -> None:
    model_server.script(
        "m", [Turn(text="x", fault=Fault(kind="midstream", error="overloaded")), Turn(text="fine")]
    )
    llm = make(model_server, "m", retries=1)
    llm.retry_policy = dataclasses.replace(llm.retry_policy, initial_backoff=0.0)
    assert (await llm.aprompt("hi")).result == "fine"


async def test_midstream_overload_after_a_delta_is_raised(model_server) -> None:
    model_server.script(
        "m2",
        [
            Turn(
                text="abcdef",
                chunks=3,
                fault=Fault(kind="midstream", error="overloaded", after_chunks=6),
            ),
            Turn(text="never"),
        ],
    )
    llm = make(model_server, "m2", retries=1)
    with pytest.raises(claude.ServerError):
        await events_of(llm)


async def test_rate_limit_reset_from_anthropic_headers(model_server) -> None:
    model_server.script("rl", [Turn(fault=Fault.http(429, retry_after=20))])
    with pytest.raises(claude.RateLimitError) as info:
        await events_of(make(model_server, "rl"))
    wait = (info.value.reset_time - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= 21


async def test_max_tokens_stop(model_server) -> None:
    model_server.script("mt", [Turn(text="cut", stop="max_tokens")])
    with pytest.raises(claude.MaxOutputTokensError) as info:
        await make(model_server, "mt").aprompt("hi")
    assert info.value.partial_text == "cut"


async def test_truncated_stream_is_incomplete(model_server) -> None:
    model_server.script("tr", [Turn(text="a b", fault=Fault(kind="truncate"))])
    with pytest.raises(errors.IncompleteResponseError):
        await events_of(make(model_server, "tr"))


async def test_resume_session_keeps_the_history(model_server) -> None:
    model_server.script("chat", [Turn(text="first"), Turn(text="second")])
    llm = make(model_server, "chat", resume_session=True)
    await llm.aprompt("remember avocado")
    await llm.aprompt("which word?")
    second = [r for r in model_server.requests("chat") if r.parsed][-1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert "avocado" in str(second[0]["content"])


async def test_the_history_travels_in_the_result_to_another_object(model_server) -> None:
    import pickle

    model_server.script("chat", [Turn(text="first"), Turn(text="second")])
    worker_a = make(model_server, "chat", resume_session=True)
    first = await worker_a.aprompt("remember avocado")
    assert first.session is not None and first.session_transcript
    shipped = pickle.loads(pickle.dumps(first))  # e.g. back from a Ray worker
    worker_b = make(model_server, "chat")
    worker_b.restore_session(shipped)
    second = await worker_b.aprompt("which word?")
    sent = [r for r in model_server.requests("chat") if r.parsed][-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert "avocado" in str(sent[0]["content"]) and "first" in str(sent[1]["content"])
    assert second.session.session_id == first.session.session_id
