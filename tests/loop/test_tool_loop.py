"""The tool loop end to end: a real SDK client (OpenAICompatLLM) against the scripted model
server, real MCP servers (in-process, streamable HTTP, stdio, and the third-party
``mcp-server-time`` from PyPI), and the MCP connections held across calls by the LLM object."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from chia_async.backends.openai_compat import OpenAICompatLLM
from chia_async.testing import ParsedRequest, ToolCall, Turn
from chia_async.tools import ChiaTool
from tests.loop.test_mcp import _alive, _children, no_leaks, serve, stdio_tool

__all__ = ["no_leaks"]  # the autouse leak check (threads, fds, child processes)


def make(model_server: Any, script: str, **kwargs: Any) -> OpenAICompatLLM:
    kwargs.setdefault("retries", 0)
    return OpenAICompatLLM(
        "gpt-test", base_url=model_server.base_url(script) + "/v1", api_key="sk-test", **kwargs
    )


def tool_name(request: ParsedRequest, suffix: str) -> str:
    return next(n for n in request.tool_names if n.endswith(suffix))


def calls_then_answers(*calls: tuple[str, dict[str, Any]]) -> Any:
    """A script: the first step calls ``calls`` (all in one step), the next one answers with
    the tool results joined by '|'."""

    def turn(request: ParsedRequest) -> Turn:
        if request.tool_results:
            return Turn(text="|".join(r.output for r in request.tool_results))
        return Turn(
            tool_calls=[ToolCall(name=tool_name(request, n), arguments=a) for n, a in calls]
        )

    return turn


@pytest.fixture
def in_process() -> Iterator[Any]:
    with serve("in_process") as served:
        yield served


async def test_steady_state_calls_neither_reconnect_nor_relist(model_server, in_process) -> None:
    model_server.script("s", calls_then_answers(("add", {"a": 2, "b": 3})), repeat=True)
    async with make(model_server, "s") as llm:
        first = await llm.aprompt("add", [in_process.tool])
        opened = dict(in_process.state.methods)
        for _ in range(3):
            again = await llm.aprompt("add", [in_process.tool])
            assert again.result == "5"
        assert first.result == "5"
        methods = in_process.state.methods
        assert methods["tools/list"] == opened["tools/list"] == 1
        assert methods.get("server/discover") == opened.get("server/discover")
        assert methods["tools/call"] == 4


async def test_each_transport_through_the_loop(model_server) -> None:
    model_server.script("s", calls_then_answers(("echo", {"text": "hi"})), repeat=True)
    for kind in ("http", "http_legacy", "stdio"):
        with serve(kind) as served:
            async with make(model_server, "s") as llm:
                result = await llm.aprompt("echo", [served.tool])
                assert (result.result, result.success) == ("hi", True), kind


async def test_third_party_server_from_pypi(model_server) -> None:
    pytest.importorskip("mcp_server_time")
    tool = ChiaTool.stdio(
        sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC", name="time"
    )

    def turn(request: ParsedRequest) -> Turn:
        if request.tool_results:
            return Turn(text=request.tool_results[0].output)
        if "what time" in request.last_user_text:
            name = tool_name(request, "get_current_time")
            return Turn(tool_calls=[ToolCall(name=name, arguments={"timezone": "UTC"})])
        return Turn(tool_calls=[ToolCall(name=tool_name(request, "convert_time"), arguments={})])

    model_server.script("t", turn, repeat=True)
    async with make(model_server, "t") as llm:
        async with llm.stream("what time is it", [tool]) as stream:
            events = [e async for e in stream]
        results = [e for e in events if e.kind == "tool_result"]
        assert len(results) == 1 and not results[0].is_error
        assert '"timezone"' in results[0].output and "UTC" in results[0].output
        # missing required arguments: the server's validation error goes back to the model
        bad = await llm.aprompt("convert", [tool])
        assert bad.success and bad.result  # the model saw an error result and answered
        seen = model_server.requests("t")[-1].parsed.tool_results[0]
        assert "validation error" in seen.output  # (chat messages carry no error flag)


async def test_tool_calls_of_one_step_overlap(model_server, in_process) -> None:
    model_server.script("s", calls_then_answers(*[("slow", {"seconds": 0.6})] * 3), repeat=True)
    async with make(model_server, "s") as llm:
        await llm.aprompt("warm up", [in_process.tool])
        started = time.monotonic()
        result = await llm.aprompt("slow", [in_process.tool])
        elapsed = time.monotonic() - started
    assert result.result == "slept 0.6|slept 0.6|slept 0.6"
    assert in_process.state.started["slow"] == 6
    assert elapsed < 1.5, f"three 0.6 s calls took {elapsed:.2f} s: they did not overlap"


async def test_concurrent_runs_share_one_session(model_server, in_process) -> None:
    model_server.script("s", calls_then_answers(("add", {"a": 1, "b": 1})), repeat=True)
    async with make(model_server, "s") as llm:
        results: list[str] = []

        async def one() -> None:
            results.append((await llm.aprompt("add", [in_process.tool])).result)

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
    assert results == ["2"] * 8
    assert in_process.state.methods["tools/list"] == 1


async def test_a_tool_added_during_a_run_is_offered_at_the_next_step(
    model_server, in_process
) -> None:
    def turn(request: ParsedRequest) -> Turn:
        if not request.tool_results:
            return Turn(tool_calls=[ToolCall(name=tool_name(request, "grow"), arguments={})])
        if len(request.tool_results) == 1:
            name = tool_name(request, "extra")  # StopIteration (a 500) if not offered
            return Turn(tool_calls=[ToolCall(name=name, arguments={"x": "ab"})])
        return Turn(text=request.tool_results[-1].output)

    model_server.script("g", turn, repeat=True)
    async with make(model_server, "g") as llm:
        result = await llm.aprompt("grow", [in_process.tool])
    assert result.result == "abab"
    assert in_process.state.methods["tools/list"] == 2  # the first listing and one re-listing


async def test_keepalive_closes_an_idle_stdio_server(model_server) -> None:
    model_server.script("s", calls_then_answers(("add", {"a": 2, "b": 2})), repeat=True)
    before = _children()
    llm = make(model_server, "s")
    llm.mcp_keepalive = 0.3
    assert (await llm.aprompt("add", [stdio_tool()])).result == "4"
    server_pids = _children() - before
    assert len(server_pids) == 1, "the stdio server is held for the next call"
    await anyio.sleep(1.0)
    assert not any(_alive(pid) for pid in server_pids), "idle server was not stopped"


async def test_aclose_stops_held_servers_and_the_object_stays_usable(model_server) -> None:
    model_server.script("s", calls_then_answers(("add", {"a": 2, "b": 2})), repeat=True)
    before = _children()
    llm = make(model_server, "s")
    assert (await llm.aprompt("add", [stdio_tool()])).result == "4"
    first = _children() - before
    await llm.aclose()
    assert not any(_alive(pid) for pid in first)
    assert (await llm.aprompt("add", [stdio_tool()])).result == "4"
    await llm.aclose()
    assert not any(_alive(pid) for pid in _children() - before)


async def test_keepalive_zero_opens_the_tools_per_call(model_server, in_process) -> None:
    model_server.script("s", calls_then_answers(("add", {"a": 2, "b": 2})), repeat=True)
    before = _children()
    llm = make(model_server, "s")
    llm.mcp_keepalive = 0
    assert (await llm.aprompt("add", [in_process.tool])).result == "4"
    assert (await llm.aprompt("add", [stdio_tool()])).result == "4"
    assert not any(_alive(pid) for pid in _children() - before)
    assert in_process.state.methods["tools/list"] == 1
    assert (await llm.aprompt("add", [in_process.tool])).result == "4"
    assert in_process.state.methods["tools/list"] == 2


async def test_a_cancelled_run_cancels_its_tool_call_not_the_shared_session(
    model_server, in_process
) -> None:
    def turn(request: ParsedRequest) -> Turn:
        if request.tool_results:
            return Turn(text=request.tool_results[0].output)
        wanted = "slow" if "slow" in request.last_user_text else "add"
        arguments = {"seconds": 30} if wanted == "slow" else {"a": 1, "b": 2}
        return Turn(tool_calls=[ToolCall(name=tool_name(request, wanted), arguments=arguments)])

    model_server.script("c", turn, repeat=True)
    async with make(model_server, "c") as llm:
        with anyio.move_on_after(10):
            async with llm.stream("slow", [in_process.tool]) as stream:
                async for event in stream:
                    if event.kind == "tool_call_finished":
                        break  # leaves the tool call running: closing the stream cancels it
        with anyio.fail_after(5):
            while in_process.state.cancelled < 1:
                await anyio.sleep(0.02)
        assert (await llm.aprompt("add", [in_process.tool])).result == "3"
        assert in_process.state.methods["tools/list"] == 1


async def test_a_lost_stdio_server_is_replaced_on_the_next_call(model_server) -> None:
    def turn(request: ParsedRequest) -> Turn:
        if request.tool_results:
            return Turn(text=request.tool_results[0].output)
        wanted = "exit_now" if "die" in request.last_user_text else "add"
        arguments = {} if wanted == "exit_now" else {"a": 20, "b": 22}
        return Turn(tool_calls=[ToolCall(name=tool_name(request, wanted), arguments=arguments)])

    model_server.script("d", turn, repeat=True)
    tool = stdio_tool()
    async with make(model_server, "d") as llm:
        died = await llm.aprompt("die", [tool])
        assert died.success  # the lost connection went back to the model as an error result
        assert "Error" in model_server.requests("d")[-1].parsed.tool_results[0].output
        assert (await llm.aprompt("add", [tool])).result == "42"
