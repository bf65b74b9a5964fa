"""CodexLLM driving the real codex CLI (pinned, from npm) against the scripted server.

Every test checks afterwards that no child process of this test process survived, that no
process group is still registered and that no file descriptor leaked. The CLI's own
retries are off (``cli_retries=0``) unless a test is about them, and so are ours.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from chia_async import errors
from chia_async.backends import codex
from chia_async.events import (
    ReasoningDelta,
    Retrying,
    SessionStarted,
    TextDelta,
    ToolCallFinished,
    ToolResult,
)
from chia_async.results import Usage
from chia_async.subprocess import live_process_groups
from chia_async.testing import Fault, ToolCall, Turn
from chia_async.tools import ChiaTool
from tests.cli_support import new_children, recording_wrapper, wait_until_clean

pytestmark = pytest.mark.conformance

API_KEY = "sk-codex-test-key-0123456789"
MCP_SERVER_SCRIPT = str(Path(__file__).parent.parent / "loop" / "mcp_test_server.py")


def processes_with(needle: str) -> list[int]:
    """Live processes whose command line contains ``needle`` (wherever they were reparented)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_leaks(no_process_leaks: None) -> None:
    """Every test: no child process, process group or descriptor left (tests/cli_support)."""


def make_llm(codex_bin: Any, box: Any, server: Any, script: str, **kwargs: Any):
    env = {
        "HOME": str(box.home),
        "TMPDIR": str(box.tmp),
        "OPENAI_API_KEY": API_KEY,
        **kwargs.pop("env", {}),
    }
    kwargs.setdefault("model", "gpt-5.5")
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("cli_retries", 0)
    kwargs.setdefault("work_dir", str(box.work))
    return codex.CodexLLM(
        codex_bin=codex_bin.path,
        env=env,
        base_url=server.base_url(script) + "/v1",
        **kwargs,
    )


async def collect(llm: codex.CodexLLM, message: str, tools=None) -> list:
    async with llm.stream(message, tools) as events:
        return [e async for e in events]


def requests_of(server: Any, script: str) -> list:
    return [r for r in server.requests(script) if r.parsed is not None]


# -- turns ----------------------------------------------------------------------------------


async def test_text_turn(codex_bin, sandbox, model_server) -> None:
    model_server.script("text", [Turn(text="pong from the scripted server", reasoning="hm")])
    llm = make_llm(codex_bin, sandbox, model_server, "text", system_message="Be terse.")
    events = await collect(llm, "say ping")
    assert isinstance(events[0], SessionStarted) and events[0].backend == "codex"
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["hm"]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong from the scripted server"]
    result = events[-1].result
    assert isinstance(result, codex.CodexQueryResult)
    assert result.success and result.returncode == 0
    assert result.result == "pong from the scripted server"
    assert result.usage == Usage(input_tokens=10, output_tokens=5)
    assert result.stop_reason == "completed"
    assert result.session_id == events[0].session_id == result.session.session_id
    assert codex.parse_session_id(result.stream_result) == result.session_id
    assert result.session.cwd == os.path.realpath(sandbox.work)
    [request] = requests_of(model_server, "text")
    assert request.path == "/v1/responses" and request.body["model"] == "gpt-5.5"
    assert request.headers.get("authorization") == f"Bearer {API_KEY}"
    # exec has no system-prompt flag: the system message leads the user message
    assert request.parsed.last_user_text == "Be terse.\n\nsay ping"
    assert result.session_state is None  # captured only with resume_session=True


async def test_prompt_and_secrets_stay_out_of_argv_and_keys_are_explicit_only(
    codex_bin, sandbox, model_server, mcp_server, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret-should-not-leak-1")
    monkeypatch.setenv("CODEX_API_KEY", "sk-parent-secret-should-not-leak-2")
    wrapper = recording_wrapper(tmp_path, str(codex_bin.path))
    model_server.script("text", [Turn(text="ok")])
    header_secret = "Bearer mcp-header-secret-0123456789"
    llm = make_llm(
        codex_bin,
        sandbox,
        model_server,
        "text",
        system_message="SYSTEM-XYZ",
        dangerously_bypass_approvals_and_sandbox=False,
        sandbox="read-only",
        ignore_rules=True,
        profile="chia-test-profile",
        reasoning_effort="high",
        ephemeral=True,
        config_overrides={"model_verbosity": "low"},
        extra_cli_args=["--color", "never"],
    )
    llm.cli_path = str(wrapper)
    secret_prompt = "the launch code is 0000-swordfish"
    tool = ChiaTool.http(mcp_server.url, name="mock", headers={"Authorization": header_secret})
    result = await llm.aprompt(secret_prompt, [tool])
    assert result.success and result.result == "ok"
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    env = (tmp_path / "env.txt").read_text()
    joined = "\n".join(argv)
    for secret in (secret_prompt, "SYSTEM-XYZ", header_secret, API_KEY):
        assert secret not in joined
    assert "sk-parent-secret-should-not-leak" not in env
    assert f"OPENAI_API_KEY={API_KEY}" in env  # explicit env= is how a key gets there
    assert f"CHIA_MCP_0_HEADER_0={header_secret}" in env
    assert argv[:2] == ["exec", "--json"] and argv[-1] == "-"
    for flag in ("--skip-git-repo-check", "--ephemeral", "--ignore-rules"):
        assert flag in argv
    assert "--dangerously-bypass-approvals-and-sandbox" not in argv
    assert argv[argv.index("--sandbox") + 1] == "read-only"
    assert argv[argv.index("--profile") + 1] == "chia-test-profile"
    config = {argv[i + 1] for i, a in enumerate(argv) if a == "-c"}
    assert {
        'approval_policy="never"',
        'model_reasoning_effort="high"',
        "model_auto_compact_token_limit=200000",
        'model_verbosity="low"',
        'model_provider="chia"',
        'model_providers.chia.env_key="OPENAI_API_KEY"',
        "model_providers.chia.request_max_retries=0",
        f'mcp_servers.mock.url="{mcp_server.url}"',
        'mcp_servers.mock.env_http_headers={Authorization = "CHIA_MCP_0_HEADER_0"}',
        'mcp_servers.mock.default_tools_approval_mode="approve"',
    } <= config
    assert argv[-3:-1] == ["--color", "never"]


async def test_mcp_tool_call_through_a_real_mcp_server(
    codex_bin, sandbox, model_server, mcp_server
) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=f"The sum is {request.tool_results[0].output}")
        return Turn(
            text="Let me add.",
            tool_calls=[ToolCall(namespace="mcp__mock", name="add", arguments={"a": 2, "b": 3})],
        )

    model_server.script("tool", turn)
    # an unknown slug: Codex sends MCP tools inline (a known one defers them behind tool_search)
    llm = make_llm(codex_bin, sandbox, model_server, "tool", model="mock-model")
    tool = ChiaTool.http(mcp_server.url, name="mock", allowed_tools=["add"])
    events = await collect(llm, "add 2 and 3", [tool])
    [call] = [e for e in events if isinstance(e, ToolCallFinished)]
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert (call.name, call.arguments) == ("mcp__mock__add", {"a": 2, "b": 3})
    assert result.call_id == call.call_id and not result.is_error and result.output == "5"
    assert [c.arguments for c in mcp_server.calls_to("add")] == [{"a": 2, "b": 3}]
    first = requests_of(model_server, "tool")[0]
    assert "mcp__mock__add" in first.parsed.tool_names
    assert "mcp__mock__echo" not in first.parsed.tool_names  # allowed_tools -> enabled_tools
    final = events[-1].result
    assert final.success and final.result.startswith("The sum is")
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.startswith("Let me add.\n\nThe sum is")


async def test_stdio_mcp_server_gets_its_env_and_is_torn_down(
    codex_bin, sandbox, model_server
) -> None:
    marker = f"--marker={uuid.uuid4().hex}"

    def turn(request):
        if request.tool_results:
            return Turn(text=f"env: {request.tool_results[0].output}")
        return Turn(
            tool_calls=[
                ToolCall(
                    namespace="mcp__local", name="getenv", arguments={"name": "CHIA_TOOL_SECRET"}
                )
            ]
        )

    model_server.script("stdio", turn)
    llm = make_llm(codex_bin, sandbox, model_server, "stdio", model="mock-model")
    tool = ChiaTool.stdio(
        sys.executable,
        MCP_SERVER_SCRIPT,
        marker,
        name="local",
        env={"CHIA_TOOL_SECRET": "stdio-tool-secret-value"},
    )
    events = await collect(llm, "read the env", [tool])
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert "stdio-tool-secret-value" in result.output and not result.is_error
    assert events[-1].result.success
    await wait_until_clean()
    assert processes_with(marker) == [], "the stdio MCP server outlived the call"


async def test_in_process_tool_is_served_to_the_cli_with_its_token(
    codex_bin, sandbox, model_server
) -> None:
    from mcp.server import MCPServer

    server = MCPServer("memory")
    seen: list[str] = []

    @server.tool(description="Remember a word.")
    async def remember(word: str) -> str:
        seen.append(word)
        return f"remembered {word}"

    def turn(request):
        if request.tool_results:
            return Turn(text=request.tool_results[0].output)
        return Turn(
            tool_calls=[
                ToolCall(namespace="mcp__mem", name="remember", arguments={"word": "avocado"})
            ]
        )

    model_server.script("inproc", turn)
    llm = make_llm(codex_bin, sandbox, model_server, "inproc", model="mock-model")
    # reached over loopback with a per-run bearer token, which travels in the CLI's
    # environment (env_http_headers), never in its argv
    result = await llm.aprompt("remember avocado", [ChiaTool.in_process(server, name="mem")])
    assert result.success and "remembered avocado" in result.result
    assert seen == ["avocado"]


# -- errors ---------------------------------------------------------------------------------

USAGE_LIMIT_RESET = int(time.time()) + 7200
USAGE_LIMIT = Fault.http(
    429,
    body={
        "error": {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "pro",
            "resets_at": USAGE_LIMIT_RESET,
        }
    },
)


@pytest.mark.parametrize(
    ("turn", "cls", "text"),
    [
        (Turn(fault=Fault.http(401)), codex.AuthenticationError, "401 Unauthorized"),
        (Turn(fault=Fault.http(429, "billing")), codex.BillingError, "Quota exceeded"),
        (
            Turn(fault=Fault.http(400, "context_length")),
            codex.ContextLengthExceededError,
            "context window",
        ),
        (
            Turn(fault=Fault(kind="midstream", error="context_length")),
            codex.ContextLengthExceededError,
            "context window",
        ),
        (Turn(fault=Fault.http(500)), codex.ServerError, "high demand"),
        (Turn(fault=Fault.http(503)), codex.ServerError, "503 Service Unavailable"),
        (
            Turn(fault=Fault(kind="midstream", error="server")),
            codex.ServerError,
            "stream disconnected",
        ),
        (
            Turn(text="half an answer", stop="max_tokens"),
            codex.MaxOutputTokensError,
            "max_output_tokens",
        ),
    ],
    ids=["401", "quota", "context", "context-midstream", "500", "503", "midstream-5xx", "max"],
)
async def test_api_errors_are_typed(codex_bin, sandbox, model_server, turn, cls, text) -> None:
    model_server.script("err", [turn], repeat=True)
    llm = make_llm(codex_bin, sandbox, model_server, "err")
    with pytest.raises(cls) as info:
        await collect(llm, "hi")
    error = info.value
    assert type(error) is cls and text in error.raw_message
    assert error.exit_code == 1
    assert API_KEY not in str(error) and API_KEY not in repr(error)
    assert pickle.loads(pickle.dumps(error)) == error
    if cls is codex.MaxOutputTokensError:
        assert error.partial_text == "half an answer"
    assert len(requests_of(model_server, "err")) == 1  # cli_retries=0: one request


async def test_rate_limit_without_reset(codex_bin, sandbox, model_server) -> None:
    model_server.script("e429", [Turn(fault=Fault.http(429, retry_after=1))], repeat=True)
    llm = make_llm(codex_bin, sandbox, model_server, "e429")
    with pytest.raises(codex.RateLimitError) as info:
        await collect(llm, "hi")
    assert info.value.reset_time is None and "429 Too Many Requests" in info.value.raw_message
    # retryable, with no reset to wait for: aprompt reports it as a failed result
    result = await llm.aprompt("hi")
    assert result.success is False and isinstance(result.error, codex.RateLimitError)
    assert result.returncode == -1 and result.result == ""


async def test_usage_limit_with_reset_time(codex_bin, sandbox, model_server) -> None:
    model_server.script("limit", [Turn(fault=USAGE_LIMIT)], repeat=True)
    llm = make_llm(codex_bin, sandbox, model_server, "limit", retries=3)
    started = time.monotonic()
    with pytest.raises(codex.RateLimitError) as info:
        await llm.aprompt("hi")  # resets in 2 h, beyond any retry wait: raised at once
    assert time.monotonic() - started < 10
    assert "usage limit" in info.value.raw_message
    reset = info.value.reset_time
    assert reset is not None
    assert abs(reset.timestamp() - USAGE_LIMIT_RESET) <= 60  # printed to the minute
    assert len(requests_of(model_server, "limit")) == 1  # not retried


async def test_the_cli_retries_once_by_default_and_our_policy_does_the_rest(
    codex_bin, sandbox, model_server
) -> None:
    model_server.script("e500", [Turn(fault=Fault.http(500))], repeat=True)
    llm = codex.CodexLLM(  # the default cli_retries, not the tests' 0
        model="gpt-5.5",
        codex_bin=codex_bin.path,
        work_dir=str(sandbox.work),
        env={"HOME": str(sandbox.home), "TMPDIR": str(sandbox.tmp), "OPENAI_API_KEY": API_KEY},
        base_url=model_server.base_url("e500") + "/v1",
        retries=0,
    )
    started = time.monotonic()
    with pytest.raises(codex.ServerError):
        await collect(llm, "hi")
    # (1 + request retries) x (1 + stream retries) requests, in about a second
    assert len(requests_of(model_server, "e500")) == 4
    assert time.monotonic() - started < 15

    model_server.script("blip", [Turn(fault=Fault.http(503)), Turn(text="recovered")])
    ours = make_llm(codex_bin, sandbox, model_server, "blip", retries=1)
    events = await collect(ours, "hi")
    assert [type(e.error) for e in events if isinstance(e, Retrying)] == [codex.ServerError]
    assert events[-1].result.success and events[-1].result.result == "recovered"


async def test_a_tool_server_that_cannot_start_fails_the_run(
    codex_bin, sandbox, model_server
) -> None:
    model_server.script("dead", [Turn(text="never")])
    llm = make_llm(codex_bin, sandbox, model_server, "dead")
    tool = ChiaTool.stdio(str(sandbox.root / "no-such-mcp-server"), name="dead")
    with pytest.raises(codex.InvalidRequestError, match="failed to initialize"):
        await llm.aprompt("hi", [tool])
    assert requests_of(model_server, "dead") == []


async def test_missing_cli_names_the_install_command(sandbox) -> None:
    llm = codex.CodexLLM(codex_bin=str(sandbox.root / "no-such-codex"), retries=0)
    with pytest.raises(errors.CLINotFoundError, match="npm install -g @openai/codex"):
        await llm.aprompt("hi")


# -- sessions -------------------------------------------------------------------------------


async def test_resume_in_a_fresh_codex_home_and_another_working_directory(
    codex_bin, sandbox, model_server, tmp_path
) -> None:
    model_server.script(
        "chat",
        [
            Turn(text="first answer", input_tokens=10, output_tokens=5),
            Turn(text="second answer", input_tokens=12, output_tokens=6),
            Turn(text="third answer", input_tokens=14, output_tokens=7),
        ],
    )
    first = make_llm(codex_bin, sandbox, model_server, "chat", resume_session=True)
    result1 = await first.aprompt("remember the word avocado")
    assert result1.success and result1.session_id
    [(relative, rollout)] = result1.session_state.items()
    assert relative.startswith("sessions/") and relative.endswith(f"-{result1.session_id}.jsonl")
    assert rollout.startswith(b'{"') and result1.session_state_paths[0].endswith(relative)

    # "another machine": new HOME (so a new CODEX_HOME), new working directory; only the
    # result travels
    home_b, work_b = tmp_path / "home-b", tmp_path / "work-b"
    home_b.mkdir()
    work_b.mkdir()
    second = make_llm(
        codex_bin, sandbox, model_server, "chat", env={"HOME": str(home_b)}, work_dir=str(work_b)
    )
    second.restore_session(result1)
    result2 = await second.aprompt("which word?")
    assert result2.success and result2.result == "second answer"
    assert result2.session_id == result1.session_id
    restored = home_b / ".codex" / relative
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    # turn.completed says 22/11 (cumulative over the thread); this turn used 12/6
    assert result2.usage == Usage(input_tokens=12, output_tokens=6)
    request2 = requests_of(model_server, "chat")[-1]
    history = json.dumps(request2.body["input"])
    assert "avocado" in history and "first answer" in history
    assert os.path.realpath(work_b) in history  # the resumed turn works in the new directory
    assert request2.parsed.last_user_text == "which word?"

    # and once more, the way Ray ships it: the pickled backend carries the thread
    third = pickle.loads(pickle.dumps(second))
    home_c = tmp_path / "home-c"
    third.env["HOME"] = str(home_c)  # a CODEX_HOME that does not exist yet
    result3 = await third.aprompt("and now?")
    assert result3.success and result3.result == "third answer"
    assert result3.session_id == result1.session_id
    assert result3.usage == Usage(input_tokens=14, output_tokens=7)
    assert "second answer" in json.dumps(requests_of(model_server, "chat")[-1].body["input"])


async def test_resuming_an_unknown_thread_is_an_invalid_request(
    codex_bin, sandbox, model_server
) -> None:
    model_server.script("none", [Turn(text="never")])
    llm = make_llm(codex_bin, sandbox, model_server, "none", resume_session=True)
    llm.session_id = "01a20f00-0000-7000-8000-000000000000"
    with pytest.raises(codex.InvalidRequestError, match="no rollout found"):
        await llm.aprompt("hi")
    assert requests_of(model_server, "none") == []


# -- teardown -------------------------------------------------------------------------------


async def test_a_hang_is_ended_by_the_idle_deadline(codex_bin, sandbox, model_server) -> None:
    model_server.script("stall", [Turn(fault=Fault(kind="stall"))])
    llm = make_llm(codex_bin, sandbox, model_server, "stall", idle_timeout_seconds=2)
    started = time.monotonic()
    with pytest.raises(errors.StallError):
        await collect(llm, "hi")
    assert time.monotonic() - started < 15
    assert not new_children()


async def test_break_out_of_async_for_kills_the_cli(codex_bin, sandbox, model_server) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)])
    llm = make_llm(codex_bin, sandbox, model_server, "slow")
    async for event in llm.stream("hi"):
        if isinstance(event, SessionStarted):
            break
    await wait_until_clean()
    assert not new_children()
    assert not live_process_groups()


async def test_cancelling_the_consumer_kills_the_cli(codex_bin, sandbox, model_server) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)])
    llm = make_llm(codex_bin, sandbox, model_server, "slow")
    seen = []
    with anyio.move_on_after(2):
        async with llm.stream("hi") as events:
            async for event in events:
                seen.append(event)
    assert any(isinstance(e, SessionStarted) for e in seen)  # cancelled mid-run
    assert not new_children()


def test_prompt_timeout_kills_the_cli(codex_bin, sandbox, model_server) -> None:
    model_server.script("slow", [Turn(text="never", latency=60)])
    llm = make_llm(codex_bin, sandbox, model_server, "slow", timeout_seconds=3)
    started = time.monotonic()
    result = llm.prompt("hi")
    assert time.monotonic() - started < 15
    assert result.success is False and isinstance(result.error, errors.TimeoutError)
    assert not new_children()


async def test_log_all_writes_raw_records_with_secrets_redacted(
    codex_bin, sandbox, model_server, tmp_path
) -> None:
    model_server.script("text", [Turn(text="logged")])
    llm = make_llm(
        codex_bin, sandbox, model_server, "text", log_dir=str(tmp_path / "logs"), log_all=True
    )
    await llm.aprompt("hi")
    [log] = list((tmp_path / "logs").glob("codex-*.jsonl"))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(
        "raw" in line and line["raw"]["data"].get("type") == "turn.completed" for line in lines
    )
    assert any(line.get("event", {}).get("kind") == "text_delta" for line in lines)
    assert API_KEY not in log.read_text()
