"""ClaudeCodeLLM driving the real claude CLI (pinned, from npm) against the scripted server.

Every test checks afterwards that no child process of this test process survived and that
no file descriptor leaked.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from chia_async import errors
from chia_async.backends import claude
from chia_async.events import (
    SessionStarted,
    TextDelta,
    ToolCallFinished,
    ToolResult,
)
from chia_async.subprocess import live_process_groups
from chia_async.testing import Fault, ToolCall, Turn
from chia_async.tools import ChiaTool
from tests.cli_support import new_children, recording_wrapper, wait_until_clean

pytestmark = pytest.mark.conformance

API_KEY = "sk-ant-test-key-0123456789"


@pytest.fixture(autouse=True)
def no_leaks(no_process_leaks: None) -> None:
    """Every test: no child process, process group or descriptor left (tests/cli_support)."""


def make_llm(claude_bin: Any, sandbox: Any, server: Any, script: str, **kwargs: Any):
    env = {
        "HOME": str(sandbox.home),
        "TMPDIR": str(sandbox.tmp),
        "ANTHROPIC_BASE_URL": server.base_url(script),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        **kwargs.pop("env", {}),
    }
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("work_dir", str(sandbox.work))
    return claude.ClaudeCodeLLM(
        model="claude-opus-4-8",
        cli_path=claude_bin.path,
        api_key=API_KEY,
        env=env,
        **kwargs,
    )


async def collect(llm: claude.ClaudeCodeLLM, message: str, tools=None) -> list:
    async with llm.stream(message, tools) as events:
        return [e async for e in events]


# -- turns ----------------------------------------------------------------------------------


async def test_text_turn_streams_deltas(claude_bin, sandbox, model_server) -> None:
    model_server.script("text", [Turn(text="pong from the scripted server", chunks=4)])
    llm = make_llm(claude_bin, sandbox, model_server, "text", system_message="Be terse.")
    events = await collect(llm, "say ping")
    assert isinstance(events[0], SessionStarted)
    assert len([e for e in events if isinstance(e, TextDelta)]) == 4  # live, not one block
    result = events[-1].result
    assert isinstance(result, claude.ClaudeCodeQueryResult)
    assert result.success and result.returncode == 0
    assert result.result == "pong from the scripted server"
    assert result.stop_reason == "end_turn"
    assert result.usage.output_tokens > 0
    assert result.session is not None and result.session.session_id == events[0].session_id
    request = next(r for r in model_server.requests("text") if r.parsed)
    assert request.parsed.last_user_text.endswith("say ping")
    assert "Be terse." in request.parsed.system  # appended to Claude Code's own prompt
    assert request.headers.get("x-api-key") == API_KEY or "authorization" in request.headers


async def test_prompt_and_secrets_never_in_argv_and_no_inherited_keys(
    claude_bin, sandbox, model_server, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-parent-secret-should-not-leak")
    monkeypatch.setenv("CLAUDECODE", "1")
    wrapper = recording_wrapper(tmp_path, str(claude_bin.path))
    model_server.script("text", [Turn(text="ok")])
    secret_prompt = "the launch code is 0000-swordfish"
    llm = make_llm(claude_bin, sandbox, model_server, "text", system_message="SYSTEM-XYZ")
    llm.cli_path = str(wrapper)
    llm.api_key = None
    llm.env["ANTHROPIC_API_KEY"] = "sk-ant-explicit-env-key-999"
    result = await llm.aprompt(secret_prompt)
    assert result.success
    argv = (tmp_path / "argv.txt").read_text()
    env = (tmp_path / "env.txt").read_text()
    assert secret_prompt not in argv and "SYSTEM-XYZ" not in argv
    assert "CLAUDECODE" not in env
    assert "sk-ant-parent-secret-should-not-leak" not in env
    assert "ANTHROPIC_API_KEY=sk-ant-explicit-env-key-999" in env  # explicit env= wins


async def test_mcp_tool_call_through_a_real_mcp_server(
    claude_bin, sandbox, model_server, mcp_server
) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=f"The sum is {request.tool_results[0].output}")
        return Turn(tool_calls=[ToolCall(name="mcp__mock__add", arguments={"a": 2, "b": 3})])

    model_server.script("tool", turn)
    llm = make_llm(claude_bin, sandbox, model_server, "tool")
    events = await collect(llm, "add 2 and 3", [ChiaTool.http(mcp_server.url, name="mock")])
    calls = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(c.name, c.arguments) for c in calls] == [("mcp__mock__add", {"a": 2, "b": 3})]
    assert results[0].call_id == calls[0].call_id and not results[0].is_error
    assert "5" in results[0].output
    assert [c.arguments for c in mcp_server.calls_to("add")] == [{"a": 2, "b": 3}]
    result = events[-1].result
    assert result.success and result.result.startswith("The sum is")


async def test_an_in_process_mcp_server_is_served_on_loopback_for_the_cli(
    claude_bin, sandbox, model_server
) -> None:
    from mcp.server import MCPServer

    server = MCPServer("calc", log_level="WARNING")
    seen: list[tuple[int, int]] = []

    @server.tool(description="Multiply two integers.")
    async def mul(a: int, b: int) -> int:
        seen.append((a, b))
        return a * b

    def turn(request):
        if request.tool_results:
            return Turn(text=f"The product is {request.tool_results[0].output}")
        return Turn(tool_calls=[ToolCall(name="mcp__calc__mul", arguments={"a": 6, "b": 7})])

    model_server.script("tool", turn)
    llm = make_llm(claude_bin, sandbox, model_server, "tool")
    events = await collect(llm, "multiply", [ChiaTool.in_process(server, name="calc")])
    results = [e for e in events if isinstance(e, ToolResult)]
    assert seen == [(6, 7)]  # ran in this process, on this loop
    assert results and "42" in results[0].output and not results[0].is_error
    assert (
        events[-1].result.result.startswith("The product is") and "42" in events[-1].result.result
    )


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.http(401), claude.AuthenticationError),
        (Fault.http(529, "overloaded"), claude.ServerError),
        (Fault.http(500), claude.ServerError),
        (Fault.http(400, "context_length"), claude.ContextLengthExceededError),
    ],
    ids=["401", "529", "500", "context"],
)
async def test_api_errors_are_typed(claude_bin, sandbox, model_server, fault, cls) -> None:
    model_server.script("err", [Turn(fault=fault)], repeat=True)
    llm = make_llm(claude_bin, sandbox, model_server, "err")
    with pytest.raises(cls) as info:
        await collect(llm, "hi")
    assert info.value.exit_code == 1
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)


async def test_rate_limit_with_reset(claude_bin, sandbox, model_server) -> None:
    model_server.script("e429", [Turn(fault=Fault.http(429, retry_after=1))], repeat=True)
    llm = make_llm(claude_bin, sandbox, model_server, "e429", env={"CLAUDE_CODE_MAX_RETRIES": "1"})
    started = time.time()
    with pytest.raises(claude.RateLimitError) as info:
        await collect(llm, "hi")
    reset = info.value.reset_time
    assert reset is not None and reset.timestamp() >= started
    # a retryable failure: aprompt reports it as a failed result instead of raising
    result = await llm.aprompt("hi")
    assert result.success is False and isinstance(result.error, claude.RateLimitError)


async def test_max_tokens_keeps_partial_text(claude_bin, sandbox, model_server) -> None:
    model_server.script("cut", [Turn(text="half an answer", stop="max_tokens")], repeat=True)
    llm = make_llm(claude_bin, sandbox, model_server, "cut")
    with pytest.raises(claude.MaxOutputTokensError) as info:
        await llm.aprompt("write a lot")
    assert "half an answer" in info.value.partial_text


async def test_missing_cli_names_the_install_command(sandbox, model_server) -> None:
    llm = claude.ClaudeCodeLLM(cli_path=str(sandbox.root / "no-such-claude"), retries=0)
    with pytest.raises(errors.CLINotFoundError, match="npm install -g @anthropic-ai/claude-code"):
        await llm.aprompt("hi")


# -- sessions -------------------------------------------------------------------------------


async def test_resume_on_a_fresh_home_and_another_working_directory(
    claude_bin, sandbox, model_server, tmp_path
) -> None:
    model_server.script("chat", [Turn(text="first answer"), Turn(text="second answer")])
    first = make_llm(claude_bin, sandbox, model_server, "chat", resume_session=True)
    result1 = await first.aprompt("remember the word avocado")
    assert isinstance(result1, claude.ClaudeCodeQueryResult)
    assert result1.session_transcript and result1.session_transcript_path
    assert Path(result1.session_transcript_path).parent.name == claude.project_slug(
        os.path.realpath(sandbox.work)
    )

    # "another machine": new HOME, new working directory, only the result travels
    other_home, other_work = tmp_path / "home-b", tmp_path / "work-b"
    other_home.mkdir()
    other_work.mkdir()
    second = make_llm(
        claude_bin,
        sandbox,
        model_server,
        "chat",
        env={"HOME": str(other_home)},
        work_dir=str(other_work),
    )
    second.restore_session(result1)
    result2 = await second.aprompt("which word?")
    assert result2.success and result2.result == "second answer"
    assert result2.session.session_id == result1.session.session_id
    restored = next((other_home / ".claude" / "projects").glob("*/*.jsonl"))
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    second_request = [r for r in model_server.requests("chat") if r.parsed][-1]
    history = json.dumps(second_request.body["messages"])
    assert "avocado" in history and "first answer" in history


# -- teardown -------------------------------------------------------------------------------


async def test_cancelling_the_consumer_kills_the_cli(claude_bin, sandbox, model_server) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)])
    llm = make_llm(claude_bin, sandbox, model_server, "slow")
    seen = []
    with anyio.move_on_after(5):
        async with llm.stream("hi") as events:
            async for event in events:
                seen.append(event)
    assert any(isinstance(e, SessionStarted) for e in seen)  # cancelled mid-run
    assert not new_children()


async def test_break_out_of_async_for_kills_the_cli(claude_bin, sandbox, model_server) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)])
    llm = make_llm(claude_bin, sandbox, model_server, "slow")
    async for event in llm.stream("hi"):
        if isinstance(event, SessionStarted):
            break
    await wait_until_clean()
    assert not new_children()
    assert not live_process_groups()


def test_prompt_timeout_kills_the_cli(claude_bin, sandbox, model_server) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)])
    llm = make_llm(claude_bin, sandbox, model_server, "slow", timeout_seconds=4)
    started = time.monotonic()
    result = llm.prompt("hi")
    assert time.monotonic() - started < 15
    assert result.success is False and isinstance(result.error, errors.TimeoutError)
    assert not new_children()


async def test_idle_deadline_ends_a_silent_cli(claude_bin, sandbox, model_server) -> None:
    model_server.script("stall", [Turn(fault=Fault(kind="stall"))])
    llm = make_llm(claude_bin, sandbox, model_server, "stall", idle_timeout_seconds=3)
    with pytest.raises(errors.StallError):
        await collect(llm, "hi")


# -- logs -------------------------------------------------------------------------------------


async def test_log_all_writes_raw_records_with_secrets_redacted(
    claude_bin, sandbox, model_server, tmp_path
) -> None:
    model_server.script("text", [Turn(text="logged")])
    llm = make_llm(
        claude_bin, sandbox, model_server, "text", log_dir=str(tmp_path / "logs"), log_all=True
    )
    await llm.aprompt("hi")
    [log] = list((tmp_path / "logs").glob("claude_code-*.jsonl"))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("raw" in line and line["raw"]["data"].get("type") == "result" for line in lines)
    assert any(line.get("event", {}).get("kind") == "text_delta" for line in lines)
    assert API_KEY not in log.read_text()


async def test_a_slow_stdio_server_is_connected_before_the_first_request(
    claude_bin, sandbox, model_server, tmp_path
) -> None:
    import sys

    script = tmp_path / "slow_server.py"
    script.write_text(
        "import time\n"
        "time.sleep(2)\n"
        "from mcp.server import MCPServer\n"
        "s = MCPServer('slow', log_level='WARNING')\n"
        "@s.tool(description='Add')\n"
        "async def add(a: int, b: int) -> int:\n"
        "    return a + b\n"
        "s.run('stdio')\n"
    )
    model_server.script("names", lambda r: Turn(text=",".join(sorted(r.tool_names))))
    llm = make_llm(claude_bin, sandbox, model_server, "names")
    events = await collect(llm, "hi", [ChiaTool.stdio(sys.executable, str(script), name="slow")])
    offered = events[-1].result.result.split(",")
    assert "mcp__slow__add" in offered and "WaitForMcpServers" not in offered
