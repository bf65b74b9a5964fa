"""``chia-async run``: the live view, ``--json``, tools, exit codes, ``--resume``.

Every run is real: the openai SDK against the scripted model server, real MCP servers (the
streamable-HTTP test server and the third-party ``mcp_server_time`` over stdio), the real
claude CLI for sessions.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chia_async.cli import EXIT_CODES, main, parse_tools
from chia_async.events import (
    Completed,
    SessionStarted,
    TextDelta,
    ToolCallFinished,
    ToolResult,
    TurnEvent,
)
from tests.cli_support import _cmdline, session_members

SECRET = "sk-cli-test-9f8e7d6c5b4a39281706"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def openai_args(server: Any, script: str, *more: str) -> list[str]:
    return ["--backend", "openai", "--base-url", server.base_url(script) + "/v1", *more]


# -- the live view ------------------------------------------------------------------------------


def test_live_view_shows_text_tool_call_result_and_usage(
    scripted: Any, mcp_server: Any, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, *openai_args(scripted, "tool", "--tool", mcp_server.url), "add two and three"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "backend openai · model gpt-5-mini · tools tools"
    assert "→ tools__add(a=2, b=3)" in lines
    assert "← 5" in lines
    assert "The tool returned: 5" in lines
    assert lines[-1].startswith("✓ done (stop) · tokens 20 in / 10 out · cost n/a · ")
    assert mcp_server.calls_to("add") == [type(mcp_server.calls[0])("add", {"a": 2, "b": 3})]
    assert err == ""
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_retries_are_shown_with_their_wait(
    scripted: Any, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *openai_args(scripted, "flaky"), "hi")
    assert code == 0, err
    retry = next(line for line in out.splitlines() if line.startswith("↻"))
    assert retry.startswith("↻ attempt 1 failed (server: ")
    assert retry.endswith("retrying in 1.0s")  # the server's retry-after
    assert "Answered on the second try." in out


def test_a_stdio_mcp_server_from_a_command_line(
    scripted: Any, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = f"{sys.executable} -m mcp_server_time"
    code, out, err = run(
        capsys, *openai_args(scripted, "tool", "--tool", command, "--json"), "what time is it?"
    )
    assert code == 0, err
    events = [TurnEvent.from_dict(json.loads(line)) for line in out.splitlines()]
    call = next(e for e in events if isinstance(e, ToolCallFinished))
    assert call.name == "mcp_server_time__get_current_time"
    assert call.arguments == {"timezone": "UTC"}
    result = next(e for e in events if isinstance(e, ToolResult))
    assert not result.is_error and '"timezone": "UTC"' in result.output


# -- --json ---------------------------------------------------------------------------------------


def test_json_lines_round_trip_through_turn_event(
    scripted: Any, mcp_server: Any, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, *openai_args(scripted, "tool", "--tool", mcp_server.url, "--json"), "add"
    )
    assert code == 0
    lines = out.splitlines()
    events = [TurnEvent.from_dict(json.loads(line)) for line in lines]
    for line, event in zip(lines, events, strict=True):
        assert event.to_dict() == json.loads(line)  # nothing lost either way
    kinds = [type(e) for e in events]
    assert TextDelta in kinds and ToolCallFinished in kinds and ToolResult in kinds
    final = events[-1]
    assert isinstance(final, Completed)
    assert final.result.success
    assert final.result.result.endswith("The tool returned: 5")


def test_json_failure_is_a_json_line_on_stderr(
    scripted: Any, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *openai_args(scripted, "rate-limit", "--json"), "hi")
    assert code == 6
    assert out == ""  # stdout holds events only
    (line,) = err.splitlines()
    data = json.loads(line)
    assert data["exit_code"] == 6
    assert data["error"]["kind"] == "rate_limit"
    assert data["error"]["type"] == "chia_async.backends.openai_compat.RateLimitError"
    assert data["error"]["fields"]["reset_time"]  # the field a caller would read


# -- exit codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "kind", "code", "extra"),
    [
        ("rate-limit", "rate_limit", 6, []),
        ("auth", "authentication", 4, []),
        ("billing", "billing", 5, []),
        ("invalid", "invalid_request", 7, []),
        ("context-length", "context_length", 8, []),
        ("server-error", "server", 9, ["--retries", "0"]),
        ("max-tokens", "max_output_tokens", 11, []),
        ("blocked", "content_blocked", 12, []),
        ("stall", "timeout", 10, ["--timeout", "1"]),
    ],
)
def test_typed_errors_have_their_exit_code_and_one_line(
    scripted: Any,
    state_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    script: str,
    kind: str,
    code: int,
    extra: list[str],
) -> None:
    monkeypatch.setenv("CHIA_TEST_KEY", SECRET)
    argv = openai_args(scripted, script, "--api-key-env", "CHIA_TEST_KEY", *extra)
    got, out, err = run(capsys, *argv, "hi")
    assert got == code == EXIT_CODES[kind]
    (line,) = err.splitlines()
    assert line.startswith(f"chia-async: error: {kind}: [openai_llm] ")
    assert SECRET not in out + err
    # the key did reach the server: it came from the variable, not from argv
    request = scripted.requests(script)[0]
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_a_missing_cli_is_exit_3_with_the_install_command(
    state_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "-b", "claude", "--cli-path", str(tmp_path / "no-claude"), "hi")
    assert code == 3
    assert err.startswith("chia-async: error: cli_not_found: ")
    assert "npm install -g @anthropic-ai/claude-code" in err


def test_a_backend_missing_from_this_version_is_exit_3(
    state_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chia_async.backends import registry

    future = registry.BackendEntry(
        name="future", target="chia_async.backends.future:FutureLLM", summary="x", protocol="none"
    )
    monkeypatch.setitem(registry.BACKENDS, "future", future)  # type: ignore[index]
    code, _, err = run(capsys, "-b", "future", "hi")
    assert code == 3
    assert "not available in this version of chia-async" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-b", "opnai", "hi"], "unknown backend 'opnai' (did you mean openai"),
        (["-b", "openai-compat", "--base-url", "http://127.0.0.1:9/v1", "hi"], "needs a model"),
        (["-b", "openai", "--resume", "hi"], "backend 'openai' cannot resume a session"),
        (["-b", "claude", "--resume", "hi"], "no saved session for backend 'claude'"),
        (["-b", "openai", "--api-key-env", "CHIA_UNSET_VAR", "hi"], "CHIA_UNSET_VAR is not set"),
        (["-b", "openai", "--tool", "   ", "hi"], "give a URL or a command"),
        (["-b", "openai", "  "], "the prompt is empty"),
        (["-b", "bedrock", "--cli-path", "/bin/true", "-m", "m", "hi"], "does not take a CLI"),
    ],
)
def test_usage_errors_are_exit_2(
    state_home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("chia-async: error: usage: ")
    assert message in err


def test_bad_arguments_are_exit_2() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "hi"])  # no --backend
    assert exited.value.code == 2


# -- --tool -------------------------------------------------------------------------------------


def test_tool_options_become_chia_tools() -> None:
    url, time, named, again, script, package = parse_tools(
        [
            "http://127.0.0.1:8000/mcp",
            "python -m mcp_server_time --local-timezone 'Europe/Paris'",
            "fs=npx -y server-filesystem /tmp",
            "http://127.0.0.1:8001/mcp",
            "/usr/bin/python3 examples/calculator_server.py",
            "npx -y @modelcontextprotocol/server-memory",
        ]
    )
    assert (url.transport, url.url, url.name) == ("http", "http://127.0.0.1:8000/mcp", "tools")
    assert time.transport == "stdio" and time.name == "mcp_server_time"
    assert time.command == ("python", "-m", "mcp_server_time", "--local-timezone", "Europe/Paris")
    assert named.name == "fs" and named.command == ("npx", "-y", "server-filesystem", "/tmp")
    assert again.name == "tools2"
    assert script.name == "calculator_server"
    assert package.name == "server-memory"


# -- --resume ------------------------------------------------------------------------------------


def test_resume_continues_the_last_claude_session(
    claude_bin: Any,
    scripted: Any,
    state_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    base = ["-b", "claude", "--cli-path", claude_bin.path, "--base-url", scripted.base_url("hello")]
    code, out, err = run(capsys, *base, "--json", "remember avocado")
    assert code == 0, err
    first = [TurnEvent.from_dict(json.loads(line)) for line in out.splitlines()]
    session = next(e for e in first if isinstance(e, SessionStarted)).session_id

    saved = state_home / "chia-async" / "sessions" / "claude.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    assert json.loads(saved.read_text())["result"]["session_transcript"]

    # another working directory: the transcript travels in the saved result
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run(capsys, *base, "--resume", "which word?")
    assert code == 0, err
    assert out.splitlines()[0].endswith("· resuming the last session")
    assert f"session {session}" in out.splitlines()
    last = [r for r in scripted.requests("hello") if r.parsed][-1]
    assert "remember avocado" in json.dumps(last.body["messages"])


# -- the plain-text view and the import budget ---------------------------------------------


def test_plain_text_view_without_rich(scripted: Any, mcp_server: Any, tmp_path: Path) -> None:
    program = (
        "import sys; sys.modules['rich'] = None\n"  # as if rich were not installed
        "from chia_async.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    command = [
        sys.executable,
        "-c",
        program,
        "run",
        "--backend",
        "openai",
        "--base-url",
        f"{scripted.base_url('tool')}/v1",
        "--tool",
        mcp_server.url,
        "add",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=_env(tmp_path), check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "→ tools__add(a=2, b=3)" in lines and "← 5" in lines
    assert lines[-1].startswith("✓ done (stop)")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    return env


def test_importing_chia_async_or_its_command_loads_no_rich() -> None:
    code = "import sys, chia_async, chia_async.cli; print('rich' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


# -- interrupting a turn ---------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_turn_and_its_tool_servers(
    scripted: Any, tmp_path: Path, signum: int, code: int
) -> None:
    command = [
        sys.executable,
        "-m",
        "chia_async",
        "run",
        *openai_args(scripted, "stall", "--tool", f"{sys.executable} -m mcp_server_time"),
        "hi",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        # wait until the model request is out (the stall script then never answers)
        while not scripted.requests("stall") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scripted.requests("stall"), "the turn never reached the model"
        assert any("mcp_server_time" in _cmdline(p) for p in session_members(process.pid))
        process.send_signal(signum)  # to the command only, as a terminal's Ctrl-C would not be
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, err
    assert err.strip().splitlines()[-1] in ("chia-async: interrupted", "chia-async: terminated")
    time.sleep(0.5)
    assert session_members(process.pid) == [], "the stdio MCP server outlived the command"


def test_resume_a_backend_whose_result_class_lives_in_its_module(
    gemini_bin: Any, scripted: Any, tmp_path: Path
) -> None:
    """A fresh process must import the backend before it can read GeminiCLIQueryResult."""
    # so must this one, to read the events back (QueryResult.from_dict finds subclasses
    # among the imported ones)
    importlib.import_module("chia_async.backends.gemini_cli")
    base = [sys.executable, "-m", "chia_async", "run", "-b", "gemini-cli", "--json"]
    base += ["--cli-path", gemini_bin.path, "-m", "gemini-2.5-flash"]
    base += ["--base-url", scripted.base_url("hello")]
    sessions = []
    for extra in ([], ["--resume"]):
        done = subprocess.run(
            [*base, *extra, "hi"],
            capture_output=True,
            text=True,
            timeout=90,
            env=_env(tmp_path),
            check=False,
        )
        assert done.returncode == 0, done.stderr
        events = [TurnEvent.from_dict(json.loads(line)) for line in done.stdout.splitlines()]
        sessions.append(next(e for e in events if isinstance(e, SessionStarted)).session_id)
    assert sessions[0] == sessions[1]
