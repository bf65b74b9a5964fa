"""AntigravityLLM end to end against ``fake_agy.py``, a stand-in for ``agy`` in print mode
(no public agy build can be installed here; the fake implements its documented behaviour).

Every test runs under the ``no_leaks`` fixture: no child process, process group or file
descriptor may survive it.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from chia_async import errors
from chia_async.backends import antigravity
from chia_async.events import Raw, TextDelta
from chia_async.retry import RetryPolicy
from chia_async.tools import ChiaTool

FAKE = Path(__file__).with_name("fake_agy.py")


def fake_llm(tmp_path: Path, mode: str = "answer", **kwargs: Any) -> antigravity.AntigravityLLM:
    wrapper = tmp_path / "bin" / "agy"
    if not wrapper.exists():
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
        wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {
        "FAKE_AGY_MODE": mode,
        "FAKE_AGY_RECORD": str(tmp_path / "record.json"),
        "FAKE_AGY_PIDFILE": str(tmp_path / "pids"),
        "HOME": str(home),
        **kwargs.pop("env", {}),
    }
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("work_dir", str(work))
    return antigravity.AntigravityLLM(agy_bin=str(wrapper), env=env, **kwargs)


def recorded(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "record.json").read_text())


def assert_all_gone(tmp_path: Path) -> None:
    """Every process the fake started (its pidfile), grandchildren included, is gone."""
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert pids
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert stat[stat.rfind(")") + 2] in "ZX", f"process {pid} is still running"


# -- answers --------------------------------------------------------------------------------


async def test_plain_text_streams_as_deltas_and_is_the_result(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path)
    events = [e async for e in llm.stream("say hello")]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 2  # as the CLI wrote it, not one block at the end
    text = "".join(deltas)
    assert text == (
        "Here is the answer.\n\n  indented line\nYou asked 9 characters; last line has no newline ✓"
    )
    result = events[-1].result
    assert result.success and result.returncode == 0
    assert result.result == text  # print mode's text, as streamed (edges stripped)
    assert result.stream_result == text


async def test_a_short_answer_without_newline_is_held_then_released(tmp_path: Path) -> None:
    events = [e async for e in fake_llm(tmp_path, "short").stream("ping")]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong"]
    assert events[-1].result.result == "pong"


async def test_prompt_on_stdin_with_the_system_prompt_folded_in(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, system_message="Answer in French.")
    await llm.aprompt("what is 2+2?")
    seen = recorded(tmp_path)
    assert seen["prompt_from_stdin"]
    assert seen["prompt"] == (
        "[System Instructions]\nAnswer in French.\n\n[User Request]\nwhat is 2+2?"
    )
    assert "what is 2+2?" not in " ".join(seen["argv"])
    assert "Answer in French." not in " ".join(seen["argv"])


async def test_flags_are_passed(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    llm = fake_llm(
        tmp_path,
        model="gemini-3.1-pro-high",
        add_dirs=[str(extra), "/opt/data"],
        sandbox=True,
        extra_cli_args=["--print-timeout=90s"],
        timeout_seconds=120,
    )
    await llm.aprompt("hi")
    seen = recorded(tmp_path)
    flags = seen["flags"]
    assert flags["--dangerously-skip-permissions"] == ["true"]
    assert flags["--sandbox"] == ["true"]
    assert flags["--model"] == ["gemini-3.1-pro-high"]
    assert flags["--add-dir"] == [str(extra), "/opt/data"]
    # ours first (the call's time left, less a margin), then extra_cli_args as given
    ours = int(flags["--print-timeout"][0].removesuffix("s"))
    assert 100 <= ours <= 115
    assert flags["--print-timeout"][1] == "90s"
    assert seen["cwd"] == os.path.realpath(tmp_path / "work")

    quiet = fake_llm(tmp_path, dangerously_skip_permissions=False)
    await quiet.aprompt("hi")
    flags = recorded(tmp_path)["flags"]
    assert "--dangerously-skip-permissions" not in flags and "--sandbox" not in flags
    assert "--model" not in flags  # model=None: agy's own default


async def test_prompt_in_argv_uses_the_print_flag(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, prompt_in_argv=True)
    result = await llm.aprompt("hello there")
    seen = recorded(tmp_path)
    assert not seen["prompt_from_stdin"]
    assert seen["argv"][-2:] == ["--print", "hello there"]
    assert result.success
    with pytest.raises(antigravity.InvalidRequestError, match="at most"):
        await llm.aprompt("x" * (200 * 1024))


async def test_tools_are_in_the_mcp_config_for_the_run_only(tmp_path: Path) -> None:
    config = tmp_path / "home" / ".gemini" / "config" / "mcp_config.json"
    config.parent.mkdir(parents=True)
    theirs = {"httpUrl": "http://x/mcp"}
    config.write_text(json.dumps({"mcpServers": {"theirs": theirs, "mock": {"httpUrl": "old"}}}))
    llm = fake_llm(tmp_path)
    tool = ChiaTool.http("http://127.0.0.1:9/mcp", name="mock", allowed_tools=["add"])
    await llm.aprompt("add", tools=[tool])
    servers = recorded(tmp_path)["mcp_config"]["mcpServers"]  # what agy saw
    assert servers["theirs"] == theirs
    assert servers["mock"]["httpUrl"] == "http://127.0.0.1:9/mcp"
    assert servers["mock"]["includeTools"] == ["add"]
    # afterwards: the file as it was, nothing of the run left
    after = json.loads(config.read_text())["mcpServers"]
    assert after == {"theirs": theirs, "mock": {"httpUrl": "old"}}
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in config.parent.iterdir()) == [
        ".mcp_config.json.lock",
        "mcp_config.json",
    ]


async def test_an_in_process_tool_reaches_agy_over_loopback_and_is_removed(
    tmp_path: Path,
) -> None:
    from mcp.server import MCPServer

    llm = fake_llm(tmp_path)
    await llm.aprompt("x", tools=[ChiaTool.in_process(MCPServer("local"), name="local")])
    server = recorded(tmp_path)["mcp_config"]["mcpServers"]["local"]
    assert server["httpUrl"].startswith("http://127.0.0.1:")
    assert server["headers"]["Authorization"].startswith("Bearer ")  # a per-run token
    config = tmp_path / "home" / ".gemini" / "config" / "mcp_config.json"
    assert json.loads(config.read_text())["mcpServers"] == {}


def test_concurrent_runs_share_an_entry_until_the_last_one_ends(tmp_path: Path) -> None:
    config = antigravity.McpConfigFile(tmp_path / "config" / "mcp_config.json")
    first = config.add({"mock": {"httpUrl": "http://a"}})
    second = config.add({"mock": {"httpUrl": "http://a"}, "other": {"httpUrl": "http://b"}})
    config.remove(first)
    assert set(json.loads(config.path.read_text())["mcpServers"]) == {"mock", "other"}
    config.remove(second)
    assert json.loads(config.path.read_text())["mcpServers"] == {}
    assert not (config.path.parent / ".chia-mcp-holders.json").exists()


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "cls", "exit_code"),
    [
        ("auth", antigravity.AuthenticationError, 0),
        ("billing", antigravity.BillingError, 1),
        ("invalid", antigravity.InvalidRequestError, 1),
        ("context", antigravity.ContextLengthExceededError, 1),
        ("max_output", antigravity.MaxOutputTokensError, 1),
        ("server", antigravity.ServerError, 1),
        ("crash", antigravity.UnknownAntigravityError, 2),
        ("empty", antigravity.UnknownAntigravityError, 0),
    ],
)
async def test_failures_are_typed(tmp_path: Path, mode: str, cls: type, exit_code: int) -> None:
    llm = fake_llm(tmp_path, mode)
    events: list[Any] = []
    with pytest.raises(cls) as info:
        async for event in llm.stream("hi"):
            events.append(event)
    assert type(info.value) is cls
    assert info.value.exit_code == exit_code
    assert isinstance(info.value, errors.ChiaError)
    # a failure line is never handed over as an answer
    if mode in ("auth", "empty"):
        assert not [e for e in events if isinstance(e, TextDelta)]


async def test_usage_limit_with_exit_0_is_a_rate_limit_resetting_4pm_los_angeles(
    tmp_path: Path,
) -> None:
    llm = fake_llm(tmp_path, "rate_limit")
    before = datetime.now(UTC)
    events: list[Any] = []
    with pytest.raises(antigravity.RateLimitError) as info:
        async for event in llm.stream("hi"):
            events.append(event)
    assert not [e for e in events if isinstance(e, TextDelta)]
    reset = info.value.reset_time
    assert reset is not None and reset.tzinfo is not None
    local = reset.astimezone(ZoneInfo("America/Los_Angeles"))
    assert (local.hour, local.minute) == (16, 0)
    assert before - timedelta(minutes=10) <= reset <= before + timedelta(days=1)
    assert "resets 4pm" in info.value.raw_message
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy == info.value and copy.reset_time == reset
    # hours away, beyond the retry cap: raised by aprompt too, not reported as a result
    if (reset - datetime.now(UTC)).total_seconds() > llm.retry_policy.max_wait:
        with pytest.raises(antigravity.RateLimitError):
            await llm.aprompt("hi")


async def test_a_server_error_is_retried(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "server", retries=1)
    llm.retry_policy = RetryPolicy(retries=1, initial_backoff=0.01, max_backoff=0.02)
    events = []
    with pytest.raises(antigravity.ServerError):
        async for event in llm.stream("hi"):
            events.append(event)
    assert [e.kind for e in events].count("retrying") == 1
    result = await llm.aprompt("hi")
    assert not result.success and isinstance(result.error, antigravity.ServerError)


async def test_missing_cli_names_the_install_command(tmp_path: Path) -> None:
    llm = antigravity.AntigravityLLM(agy_bin=str(tmp_path / "no-agy"), retries=0)
    with pytest.raises(errors.CLINotFoundError, match=r"antigravity\.google/cli/install\.sh"):
        await llm.aprompt("hi")


# -- teardown -------------------------------------------------------------------------------------


async def test_a_silent_cli_is_ended_by_the_idle_deadline(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "hang_with_child", idle_timeout_seconds=1.5)
    started = time.monotonic()
    result = await llm.aprompt("hi")  # retryable, so reported rather than raised
    assert time.monotonic() - started < 15
    assert not result.success and isinstance(result.error, errors.StallError)
    assert_all_gone(tmp_path)


async def test_a_stall_after_text_is_raised_after_the_text(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "hang_after_text", idle_timeout_seconds=1.5)
    events: list[Any] = []
    with pytest.raises(errors.StallError):
        async for event in llm.stream("hi"):
            events.append(event)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "thinking about it...\n"
    assert_all_gone(tmp_path)


async def test_cancelling_the_consumer_kills_the_cli(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "hang_with_child")
    with anyio.move_on_after(1.5):
        await llm.aprompt("hi")
    assert_all_gone(tmp_path)


async def test_break_out_of_the_stream_kills_the_cli(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "hang_after_text")
    async for event in llm.stream("hi"):
        if isinstance(event, TextDelta):
            break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert_all_gone(tmp_path)
            break
        except AssertionError:
            await anyio.sleep(0.05)
    assert_all_gone(tmp_path)


def test_total_timeout_through_the_sync_facade(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "hang_with_child", timeout_seconds=2)
    started = time.monotonic()
    result = llm.prompt("hi")
    assert time.monotonic() - started < 15
    assert not result.success and isinstance(result.error, errors.TimeoutError)
    assert_all_gone(tmp_path)


# -- the object ---------------------------------------------------------------------------------


def test_reference_constructor_signature() -> None:
    import inspect

    params = list(inspect.signature(antigravity.AntigravityLLM).parameters.values())
    names = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert names == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
        "agy_bin",
        "work_dir",
        "add_dirs",
        "gemini_dir",
        "dangerously_skip_permissions",
        "sandbox",
        "extra_cli_args",
    ]
    defaults = {p.name: p.default for p in params}
    assert defaults["model"] is None and defaults["agy_bin"] == "agy"
    assert defaults["dangerously_skip_permissions"] is True and defaults["sandbox"] is False
    assert defaults["logging_name"] == "antigravity" and defaults["logging_level"] == 10
    assert antigravity.AntigravityLLM.ray_resource == "antigravity"


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(TypeError, match="add_dirs"):
        antigravity.AntigravityLLM(add_dirs="/tmp")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sandbox"):
        antigravity.AntigravityLLM(sandbox="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agy_bin"):
        antigravity.AntigravityLLM(agy_bin="")


def test_the_backend_pickles(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, add_dirs=["/a"])
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.add_dirs == ["/a"] and copy.agy_bin == llm.agy_bin


async def test_raw_events_never_carry_a_failure_as_text(tmp_path: Path) -> None:
    events: list[Any] = []
    with pytest.raises(antigravity.AuthenticationError) as info:
        async for event in fake_llm(tmp_path, "auth").stream("hi"):
            events.append(event)
    assert not [e for e in events if isinstance(e, TextDelta | Raw)]
    assert "visit the URL to log in" in info.value.raw_message
