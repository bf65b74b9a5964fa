"""GeminiCLILLM driving the real gemini CLI (pinned, from npm) against the scripted server.

The CLI's own retries are bounded with ``max_attempts=1`` (one request per run): with its
default of 10 a persistent 5xx keeps it backing off, silently, for about 3.5 minutes.
Every test checks afterwards that no child process, process group or file descriptor
survived it (``no_leaks`` in conftest.py).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from chia_async import errors
from chia_async.backends import gemini_cli
from chia_async.events import (
    SessionStarted,
    TextDelta,
    ToolCallFinished,
    ToolResult,
)
from chia_async.subprocess import live_process_groups
from chia_async.testing import Fault, ToolCall, Turn
from chia_async.tools import ChiaTool
from tests.cli_support import recording_wrapper

pytestmark = pytest.mark.conformance

API_KEY = "sk-gemini-test-key-0123456789"
MODEL = "gemini-2.5-pro"  # a fixed model skips the "auto" router's classifier request


def make_llm(gemini_bin: Any, sandbox: Any, server: Any, script: str, **kwargs: Any):
    env = {
        "HOME": str(sandbox.home),
        "GOOGLE_GEMINI_BASE_URL": server.base_url(script),
        **kwargs.pop("env", {}),
    }
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("max_attempts", 1)
    kwargs.setdefault("work_dir", str(sandbox.work))
    return gemini_cli.GeminiCLILLM(
        model=MODEL, gemini_bin=gemini_bin.path, api_key=API_KEY, env=env, **kwargs
    )


def model_requests(server: Any, script: str) -> list[Any]:
    return [r for r in server.requests(script) if r.parsed is not None]


async def collect(llm: gemini_cli.GeminiCLILLM, message: str, tools: Any = None) -> list[Any]:
    async with llm.stream(message, tools) as events:
        return [e async for e in events]


# -- turns ----------------------------------------------------------------------------------------


async def test_text_turn_with_the_users_config_seeded_and_left_alone(
    gemini_bin, sandbox, model_server, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "parent-key-that-must-not-leak-0000")
    user_dir = sandbox.home / ".gemini"
    user_dir.mkdir()
    (user_dir / "settings.json").write_text(
        '{\n  // the user\'s own settings (JSON with comments)\n  "general": {"vimMode": true}\n}'
    )
    (user_dir / "GEMINI.md").write_text("USER-MEMORY-1234")
    (user_dir / "installation_id").write_text("user-installation")
    before = {p.name: p.read_bytes() for p in user_dir.iterdir()}
    wrapper = recording_wrapper(tmp_path, str(gemini_bin.path))
    model_server.script("text", [Turn(text="pong from the scripted server", chunks=3)])
    llm = make_llm(gemini_bin, sandbox, model_server, "text", system_message="SYSTEM-XYZ terse")
    llm.gemini_bin = llm.cli_path = str(wrapper)
    secret_prompt = "the launch code is 0000-swordfish"
    events = await collect(llm, secret_prompt)

    assert isinstance(events[0], SessionStarted) and events[0].model == MODEL
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == "pong from the scripted server"  # live
    result = events[-1].result
    assert isinstance(result, gemini_cli.GeminiCLIQueryResult)
    assert result.success and result.returncode == 0
    assert result.result == "pong from the scripted server"
    assert result.stop_reason == "stop"  # from the CLI's telemetry
    assert result.usage.output_tokens > 0
    assert result.session is not None and result.session.session_id == events[0].session_id

    [request] = model_requests(model_server, "text")  # -m: no router request
    assert secret_prompt in request.parsed.last_user_text
    assert "SYSTEM-XYZ terse" in request.parsed.system  # appended to the CLI's own prompt
    assert "USER-MEMORY-1234" in request.parsed.system  # the user's memory kept
    argv = (tmp_path / "argv.txt").read_text()
    env = (tmp_path / "env.txt").read_text()
    assert secret_prompt not in argv and "SYSTEM-XYZ" not in argv
    assert API_KEY not in argv and f"GEMINI_API_KEY={API_KEY}" in env
    assert "parent-key-that-must-not-leak" not in env
    assert API_KEY not in repr(llm)
    # the user's ~/.gemini is exactly as it was: no chats, settings or telemetry written
    assert {p.name: p.read_bytes() for p in user_dir.iterdir()} == before


async def test_mcp_tool_call_through_a_real_mcp_server(
    gemini_bin, sandbox, model_server, mcp_server
) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=f"The sum is {request.tool_results[0].output}")
        return Turn(tool_calls=[ToolCall(name="mcp_mock_add", arguments={"a": 2, "b": 3})])

    model_server.script("tool", turn)
    llm = make_llm(gemini_bin, sandbox, model_server, "tool")
    tool = ChiaTool.http(mcp_server.url, name="mock", headers={"X-Token": "tok-0123456789abcdef"})
    events = await collect(llm, "add 2 and 3", [tool])
    calls = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(c.name, c.arguments) for c in calls] == [("mcp_mock_add", {"a": 2, "b": 3})]
    assert results[0].call_id == calls[0].call_id and not results[0].is_error
    assert results[0].output == "5" and results[0].executed_by == "backend"
    assert [c.arguments for c in mcp_server.calls_to("add")] == [{"a": 2, "b": 3}]
    result = events[-1].result
    assert result.success
    assert result.result.startswith("The sum is") and "5" in result.result
    first = model_requests(model_server, "tool")[0]
    assert "mcp_mock_add" in first.parsed.tool_names


# -- errors ---------------------------------------------------------------------------------------


async def test_each_api_error_is_typed(gemini_bin, sandbox, model_server) -> None:
    """401, 429 with a reset, context length, max tokens, 5xx: the CLI runs concurrently
    (each takes seconds to start), one script each."""
    cases: dict[str, tuple[Turn, type, int]] = {
        "e401": (Turn(fault=Fault.http(401)), gemini_cli.AuthenticationError, 145),
        "e429": (Turn(fault=Fault.http(429, retry_after=30)), gemini_cli.RateLimitError, 173),
        "ctx": (
            Turn(fault=Fault.http(400, "context_length")),
            gemini_cli.ContextLengthExceededError,
            144,
        ),
        "e500": (Turn(fault=Fault.http(500)), gemini_cli.ServerError, 244),
        "e503": (Turn(fault=Fault.http(503)), gemini_cli.ServerError, 247),
        "cut": (
            Turn(text="half an answer", stop="max_tokens"),
            gemini_cli.MaxOutputTokensError,
            0,
        ),
    }
    raised: dict[str, BaseException] = {}
    texts: dict[str, str] = {}

    async def run(name: str) -> None:
        model_server.script(name, [cases[name][0]], repeat=True)
        llm = make_llm(gemini_bin, sandbox, model_server, name)
        texts[name] = ""
        try:
            async for event in llm.stream("hi"):
                if isinstance(event, TextDelta):
                    texts[name] += event.text
        except errors.ChiaError as error:
            raised[name] = error

    started = datetime.now(UTC)
    async with anyio.create_task_group() as tg:
        for name in cases:
            tg.start_soon(run, name)

    for name, (_, cls, exit_code) in cases.items():
        error = raised.get(name)
        assert type(error) is cls, (name, error)
        assert error.exit_code == exit_code, name  # an API error's HTTP status modulo 256
        assert API_KEY not in str(error) and API_KEY not in repr(error)
        assert len(model_requests(model_server, name)) == 1, name  # max_attempts=1
    reset = raised["e429"].reset_time  # RetryInfo's 30 s, through "Suggested retry after"
    assert reset is not None
    assert started + timedelta(seconds=25) <= reset <= datetime.now(UTC) + timedelta(seconds=31)
    # truncation: the CLI says "success"; its telemetry says finish reason "length"
    assert raised["cut"].partial_text == "half an answer" == texts["cut"]


async def test_missing_cli_names_the_install_command(sandbox) -> None:
    llm = gemini_cli.GeminiCLILLM(gemini_bin=str(sandbox.root / "no-gemini"), retries=0)
    with pytest.raises(errors.CLINotFoundError, match="npm install -g @google/gemini-cli"):
        await llm.aprompt("hi")


# -- sessions -------------------------------------------------------------------------------------


async def test_resume_in_a_fresh_home_and_another_working_directory(
    gemini_bin, sandbox, model_server, tmp_path
) -> None:
    model_server.script("chat", [Turn(text="first answer"), Turn(text="second answer")])
    first = make_llm(gemini_bin, sandbox, model_server, "chat", resume_session=True)
    result1 = await first.aprompt("remember the word avocado")
    assert isinstance(result1, gemini_cli.GeminiCLIQueryResult)
    assert result1.session_transcript and result1.session_transcript_path
    assert result1.session_transcript_path.startswith(".gemini/tmp/work/chats/session-")
    session_id = result1.session.session_id
    assert result1.session_transcript_path.endswith(f"-{session_id[:8]}.jsonl")

    # "another machine": new HOME, a working directory with another name; only the result
    # travels (through pickle, as it would to a Ray worker)
    import pickle

    carried = pickle.loads(pickle.dumps(result1))
    other_home, other_work = tmp_path / "home-b", tmp_path / "elsewhere"
    other_home.mkdir()
    other_work.mkdir()
    second = make_llm(
        gemini_bin,
        sandbox,
        model_server,
        "chat",
        env={"HOME": str(other_home)},
        work_dir=str(other_work),
    )
    second.restore_session(carried)
    result2 = await second.aprompt("which word?")
    assert result2.success and result2.result == "second answer"
    assert result2.session.session_id == session_id
    assert result2.session_transcript and b"second answer" in result2.session_transcript
    history = json.dumps(model_requests(model_server, "chat")[-1].body["contents"])
    assert "avocado" in history and "first answer" in history
    assert not list(other_home.iterdir())  # nothing written into the new HOME


# -- teardown -------------------------------------------------------------------------------------


async def test_a_silent_model_is_ended_by_the_idle_deadline(
    gemini_bin, sandbox, model_server
) -> None:
    model_server.script("stall", [Turn(fault=Fault(kind="stall"))])
    llm = make_llm(gemini_bin, sandbox, model_server, "stall", idle_timeout_seconds=6)
    started = time.monotonic()
    with pytest.raises(errors.StallError):
        await collect(llm, "hi")
    assert time.monotonic() - started < 40


async def test_break_out_of_the_stream_kills_the_cli(gemini_bin, sandbox, model_server) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)])
    llm = make_llm(gemini_bin, sandbox, model_server, "slow")
    async for event in llm.stream("hi"):
        if isinstance(event, SessionStarted):
            break
    # the producer tears the group down in its own task (no_leaks then checks the rest)
    with anyio.fail_after(15):
        while live_process_groups():
            await anyio.sleep(0.05)
