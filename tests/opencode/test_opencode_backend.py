"""OpenCodeLLM driving the real opencode CLI (pinned, from npm) against the scripted server.

opencode needs ~4 s to start, so the real runs are few and each test checks much: one MCP
tool turn, one text turn resumed on a "fresh worker" (another HOME, another directory), and
every failure class plus an idle-deadline hang and a cancellation, run concurrently. After
every test no child process, process group or file descriptor may be left.

opencode retries 429/5xx silently inside a run (up to 5 times, honouring ``retry-after-ms``);
the error turns here carry ``retry_after`` of 10 ms so those retries take milliseconds.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from chia_async import errors
from chia_async.backends import opencode
from chia_async.events import (
    ReasoningDelta,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolResult,
)
from chia_async.results import SessionRef, Usage
from chia_async.testing import Fault, ToolCall, Turn
from chia_async.tools import ChiaTool
from tests.cli_support import recording_wrapper

pytestmark = pytest.mark.conformance

API_KEY = "sk-opencode-test-key-0123456789"
QUICK = 0.01  # retry-after for error turns: opencode's own retries then take milliseconds


@pytest.fixture(autouse=True)
def no_leaks(no_process_leaks: None) -> None:
    """Every test: no child process, process group or descriptor left (tests/cli_support)."""


def opencode_env(home: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """A private HOME (opencode keeps its database under $XDG_DATA_HOME) and no network."""
    return {
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        **extra,
    }


def make_llm(
    bin_: Any, root: Path, server: Any, script: str, name: str = "", **kwargs: Any
) -> opencode.OpenCodeLLM:
    """An OpenCodeLLM with its own HOME and work directory under ``root/name``."""
    home, tmp, work = (root / name / d for d in ("home", "tmp", "work"))
    for directory in (home, tmp, work):
        directory.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("work_dir", str(work))
    kwargs.setdefault("api_key", API_KEY)
    return opencode.OpenCodeLLM(
        "mock-model",
        opencode_bin=bin_.path,
        env=opencode_env(home, tmp, **kwargs.pop("env", {})),
        base_url=server.base_url(script) + "/v1",
        **kwargs,
    )


async def collect(llm: opencode.OpenCodeLLM, message: str, tools: Any = None) -> list[Any]:
    async with llm.stream(message, tools) as events:
        return [e async for e in events]


def requests_of(server: Any, script: str) -> list[Any]:
    return [r for r in server.requests(script) if r.parsed is not None]


# -- turns ----------------------------------------------------------------------------------


async def test_mcp_tool_turn_through_a_real_mcp_server(
    opencode_bin, sandbox, model_server, mcp_server, tmp_path
) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=f"The sum is {request.tool_results[0].output}")
        return Turn(
            text="Let me add.",
            reasoning="adding is easy",
            tool_calls=[ToolCall(id="call_1", name="mock_add", arguments={"a": 2, "b": 3})],
        )

    model_server.script("tool", turn)
    # a wrapper that records what the CLI was given, then runs it
    wrapper = recording_wrapper(
        tmp_path,
        str(opencode_bin.path),
        f'stat -c %a "$OPENCODE_CONFIG" > {tmp_path}/config-mode.txt',
        f'cp "$OPENCODE_CONFIG" {tmp_path}/config.json',
    )
    llm = make_llm(opencode_bin, tmp_path, model_server, "tool", system_message="SYSTEM-XYZ")
    llm.cli_path = str(wrapper)
    tool = ChiaTool.http(
        mcp_server.url,
        name="mock",
        allowed_tools=["add"],
        headers={"x-token": "hdr-secret-0123456789"},
    )
    prompt = "the launch code is 0000-swordfish; add 2 and 3"
    events = await collect(llm, prompt, [tool])

    assert isinstance(events[0], SessionStarted) and events[0].backend == "opencode"
    assert events[0].cwd == os.path.realpath(llm.work_dir)
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["adding is easy"]
    calls = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_1", "mock_add", {"a": 2, "b": 3})
    ]
    assert results[0].call_id == "call_1" and results[0].output == "5"
    assert not results[0].is_error and results[0].executed_by == "backend"
    assert [c.arguments for c in mcp_server.calls_to("add")] == [{"a": 2, "b": 3}]
    steps = [e.finish_reason for e in events if isinstance(e, StepFinished)]
    assert steps == ["tool-calls", "stop"]

    result = events[-1].result
    assert isinstance(result, opencode.OpenCodeQueryResult)
    assert result.success and result.returncode == 0
    assert result.result == "The sum is 5"  # the last message, from the export
    assert result.stop_reason == "stop"
    assert result.usage == Usage(input_tokens=20, output_tokens=10, cost_usd=0.0)
    assert result.session_id == events[0].session_id
    assert result.session_export is None  # carried only with resume_session=True

    first, second = requests_of(model_server, "tool")  # no title request: the run sets one
    assert first.parsed.last_user_text == prompt  # from stdin, unquoted
    assert first.parsed.system.startswith("SYSTEM-XYZ")  # the agent's prompt
    assert "mock_add" in first.parsed.tool_names and "mock_echo" not in first.parsed.tool_names
    assert first.headers.get("authorization") == f"Bearer {API_KEY}"
    assert second.parsed.tool_results[0].output == "5"

    # what reached the CLI: no prompt, system message or secret in argv or environment
    argv, env = (tmp_path / "argv.txt").read_text(), (tmp_path / "env.txt").read_text()
    for secret in ("0000-swordfish", "SYSTEM-XYZ", API_KEY, "hdr-secret-0123456789"):
        assert secret not in argv and secret not in env
    assert f"PWD={os.path.realpath(llm.work_dir)}\n" in env
    assert (tmp_path / "config-mode.txt").read_text().strip() == "600"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["mcp"]["mock"]["headers"] == {"x-token": "hdr-secret-0123456789"}
    assert config["agent"]["chia"]["prompt"] == "SYSTEM-XYZ"
    assert API_KEY not in repr(llm) and "***" in repr(llm)


async def test_text_turn_resumed_in_a_fresh_home_and_directory(
    opencode_bin, model_server, tmp_path
) -> None:
    model_server.script("chat", [Turn(text="first answer"), Turn(text="second answer")])
    first = make_llm(opencode_bin, tmp_path, model_server, "chat", "a", resume_session=True)
    events = await collect(first, "remember the word avocado")
    assert isinstance(events[0], SessionStarted)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["first answer"]
    assert [type(e).__name__ for e in events] == [
        "SessionStarted",
        "TextDelta",
        "Usage",
        "StepFinished",
        "Completed",
    ]
    result1 = events[-1].result
    assert result1.success and result1.result == "first answer"
    assert result1.usage == Usage(input_tokens=10, output_tokens=5, cost_usd=0.0)
    assert result1.session_export and result1.session_id == events[0].session_id
    export = json.loads(result1.session_export)
    assert export["info"]["id"] == result1.session_id
    assert export["info"]["directory"] == os.path.realpath(first.work_dir)

    # "another worker": the result crosses a process boundary; new HOME, new directory
    travelled = pickle.loads(pickle.dumps(result1))
    second = make_llm(opencode_bin, tmp_path, model_server, "chat", "b")
    second.restore_session(travelled)
    result2 = await second.aprompt("which word?")
    assert result2.success and result2.result == "second answer", result2.error
    assert result2.session_id == result1.session_id
    assert result2.session.cwd == os.path.realpath(second.work_dir)
    resumed = json.loads(result2.session_export)  # the session now lives in the new directory
    assert resumed["info"]["directory"] == os.path.realpath(second.work_dir)
    assert [m["info"]["role"] for m in resumed["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    history = json.dumps(requests_of(model_server, "chat")[-1].body["messages"])
    assert "avocado" in history and "first answer" in history
    assert not (tmp_path / "a" / "home" / ".local" / "share" / "opencode").samefile(
        tmp_path / "b" / "home" / ".local" / "share" / "opencode"
    )


# -- failures and teardown -------------------------------------------------------------------


async def test_every_error_class_an_idle_hang_and_a_cancellation(
    opencode_bin, model_server, tmp_path
) -> None:
    scripts = {
        "e401": [Turn(fault=Fault.http(401))],
        "e429": [Turn(fault=Fault.http(429, retry_after=QUICK))],
        "ctx": [Turn(fault=Fault.http(400, "context_length"))],
        "cut": [Turn(text="half an answer", stop="max_tokens")],
        "e500": [Turn(fault=Fault.http(500, retry_after=QUICK))],
        "stall": [Turn(fault=Fault(kind="stall"))],
        "slow": [Turn(text="never", latency=60)],
        "seed": [Turn(text="seeded")],
    }
    for name, turns in scripts.items():
        model_server.script(name, turns, repeat=True)
    # opencode prints nothing before its first part, so the idle deadline also covers its
    # start-up and must be longer than that; the hangs run apart from the crowd below
    idle = 20.0
    started = time.time()
    outcomes: dict[str, Any] = {}

    async def failing(name: str, **kwargs: Any) -> None:
        llm = make_llm(opencode_bin, tmp_path, model_server, name, name, **kwargs)
        t0 = time.monotonic()
        try:
            outcomes[name] = await collect(llm, "hi")
        except errors.ChiaError as exc:
            outcomes[name] = exc
        outcomes[name + ".s"] = time.monotonic() - t0

    async def rate_limited() -> None:
        # retryable: aprompt reports it as a failed result instead of raising
        llm = make_llm(opencode_bin, tmp_path, model_server, "e429", "e429")
        outcomes["e429"] = await llm.aprompt("hi")

    async def cancelled() -> None:
        llm = make_llm(opencode_bin, tmp_path, model_server, "slow", "slow")
        with anyio.move_on_after(8) as scope:
            await collect(llm, "hi")
        outcomes["slow"] = scope.cancelled_caught

    async def seed() -> None:
        # a session recorded in seed/work, to be resumed from another directory below
        llm = make_llm(opencode_bin, tmp_path, model_server, "seed", "seed")
        outcomes["seed"] = await llm.aprompt("hi")

    async def resumed_elsewhere() -> None:
        # The captured pitfall: `run --session` from another directory than the session's
        # never exits. With an export the backend would import it (rebinding the session);
        # told only the id, it cannot know, and the idle deadline is the guard.
        other = tmp_path / "seed" / "other"
        other.mkdir()
        llm = make_llm(
            opencode_bin,
            tmp_path,
            model_server,
            "seed",
            "seed",
            work_dir=str(other),
            idle_timeout_seconds=idle,
            resume_session=True,
        )
        llm.session_id = outcomes["seed"].session_id
        t0 = time.monotonic()
        with pytest.raises(errors.StallError):
            await collect(llm, "hi again")
        outcomes["mismatch.s"] = time.monotonic() - t0

    async with anyio.create_task_group() as tg:
        for name in ("e401", "ctx", "cut", "e500"):
            tg.start_soon(failing, name)
        tg.start_soon(rate_limited)
        tg.start_soon(cancelled)
        tg.start_soon(seed)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: failing("stall", idle_timeout_seconds=idle))
        tg.start_soon(resumed_elsewhere)

    for name, cls in [
        ("e401", opencode.AuthenticationError),
        ("ctx", opencode.ContextLengthExceededError),
        ("cut", opencode.MaxOutputTokensError),
        ("e500", opencode.ServerError),
    ]:
        error = outcomes[name]
        assert type(error) is cls, (name, error)
        assert API_KEY not in str(error) and API_KEY not in repr(error)
    assert outcomes["e401"].exit_code == 1 and outcomes["ctx"].exit_code == 1
    assert outcomes["cut"].exit_code == 0  # opencode exits 0 on the output limit
    assert outcomes["cut"].partial_text == "half an answer"
    # opencode's 5 silent retries honoured the 10 ms retry-after: no 80 s wait
    assert len(requests_of(model_server, "e500")) == 6
    assert outcomes["e500.s"] < 45 and outcomes["e500"].retry_after is not None

    result = outcomes["e429"]
    assert result.success is False and result.returncode == -1
    assert isinstance(result.error, opencode.RateLimitError)
    assert started <= result.error.reset_time.timestamp() <= time.time() + 60

    # the stalled model request: only the idle deadline ended it
    assert isinstance(outcomes["stall"], errors.StallError)
    assert len(requests_of(model_server, "stall")) == 1
    assert outcomes["stall.s"] >= idle
    assert outcomes["seed"].success and outcomes["mismatch.s"] >= idle
    assert len(requests_of(model_server, "seed")) == 2  # it answered, then never exited
    assert outcomes["slow"] is True  # cancelled mid-run; the no_leaks fixture checks the rest


async def test_a_resume_that_would_hang_is_refused(opencode_bin, model_server, tmp_path) -> None:
    """A session recorded elsewhere with no export to import: opencode would never exit."""
    llm = make_llm(opencode_bin, tmp_path, model_server, "unused", "b")
    elsewhere = opencode.OpenCodeQueryResult(
        "x",
        0,
        "",
        "",
        True,
        session=SessionRef(backend="opencode", session_id="ses_abc", cwd=str(tmp_path / "a")),
        session_id="ses_abc",
    )
    llm.restore_session(elsewhere)
    with pytest.raises(opencode.InvalidRequestError, match="hangs"):
        await llm.aprompt("hi")
    assert requests_of(model_server, "unused") == []


async def test_missing_cli_names_the_install_command(tmp_path) -> None:
    llm = opencode.OpenCodeLLM(opencode_bin=str(tmp_path / "no-such-opencode"), retries=0)
    with pytest.raises(errors.CLINotFoundError, match="npm install -g opencode-ai"):
        await llm.aprompt("hi")


# -- construction ------------------------------------------------------------------------------


def test_reference_signature_and_defaults() -> None:
    llm = opencode.OpenCodeLLM()
    assert (llm.model, llm.agent_name, llm.opencode_bin, llm.logging_name) == (
        "",
        "chia",
        "opencode",
        "opencode",
    )
    assert llm.timeout_seconds == 600 and llm.retries == 3
    assert llm.ray_resource == "opencode" and opencode.OpenCodeLLM.backend_name == "opencode"
    assert llm.result_class is opencode.OpenCodeQueryResult
    copy = pickle.loads(pickle.dumps(opencode.OpenCodeLLM("anthropic/x", api_key="sk-abcdefgh1")))
    assert copy.model == "anthropic/x" and "sk-abcdefgh1" not in repr(copy)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"model": "claude-sonnet"}, ValueError, "provider/model"),
        ({"base_url": "http://h/v1"}, ValueError, "needs model"),
        ({"model": "m", "base_url": "ftp://h"}, ValueError, "http"),
        ({"agent_name": "a b"}, ValueError, "agent_name"),
        ({"env": {"OPENCODE_CONFIG": "/x"}}, ValueError, "config="),
        ({"config": "x"}, TypeError, "config"),
        ({"opencode_bin": ""}, TypeError, "opencode_bin"),
        ({"api_key": "sk-1234567"}, ValueError, "provider/model"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        opencode.OpenCodeLLM(**kwargs)
