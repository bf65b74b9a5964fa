"""What GeminiCLILLM sets up for a run — the per-run config home, argv, environment, the
carried chat — checked with ``fake_gemini.py``, which reports what it was given. The real
CLI runs in test_gemini_backend.py."""

from __future__ import annotations

import inspect
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

from chia_async.backends import gemini_cli
from chia_async.tools import ChiaTool

FAKE = Path(__file__).with_name("fake_gemini.py")


def fake_llm(tmp_path: Path, **kwargs: Any) -> gemini_cli.GeminiCLILLM:
    wrapper = tmp_path / "bin" / "gemini"
    if not wrapper.exists():
        wrapper.parent.mkdir()
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
        wrapper.chmod(0o755)
    for name in ("home", "work"):
        (tmp_path / name).mkdir(exist_ok=True)
    env = {
        "HOME": str(tmp_path / "home"),
        "FAKE_GEMINI_RECORD": str(tmp_path / "record.json"),
        **kwargs.pop("env", {}),
    }
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("work_dir", str(tmp_path / "work"))
    kwargs.setdefault("detect_truncation", False)
    return gemini_cli.GeminiCLILLM(gemini_bin=str(wrapper), env=env, **kwargs)


def recorded(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "record.json").read_text())


async def test_argv_env_and_settings_of_a_run(tmp_path: Path) -> None:
    llm = fake_llm(
        tmp_path,
        model="gemini-2.5-flash",
        add_dirs=["/data/a", "/data/b"],
        sandbox=True,
        approval_mode="auto_edit",
        api_key="AIza-test-key-0123456789abcdefghijklmnop",
        max_attempts=3,
        extra_cli_args=["--screen-reader"],
        settings={"model": {"maxSessionTurns": 7}, "general": {"maxAttempts": 4}},
    )
    result = await llm.aprompt("the prompt, on stdin")
    assert result.success and result.result == "turns so far: 1"
    seen = recorded(tmp_path)
    assert seen["prompt"] == "the prompt, on stdin"
    assert seen["argv"] == [
        "-m",
        "gemini-2.5-flash",
        "--output-format",
        "stream-json",
        "--approval-mode",
        "auto_edit",
        "--sandbox",
        "--include-directories",
        "/data/a",
        "--include-directories",
        "/data/b",
        "--screen-reader",
    ]
    env = seen["env"]
    home = Path(env["GEMINI_CLI_HOME"])
    assert home.name == "gemini-home" and not home.exists()  # per run, removed afterwards
    assert Path(env["TMPDIR"]).parent == home.parent  # error reports go away with the run
    assert env["GEMINI_API_KEY"].startswith("AIza-test-key")
    assert env["HOME"] == str(tmp_path / "home")
    settings = seen["settings"]
    assert settings["security"]["auth"] == {"selectedType": "gemini-api-key"}
    assert settings["security"]["folderTrust"] == {"enabled": False}
    assert settings["general"]["maxAttempts"] == 4  # explicit settings win
    assert settings["general"]["disableAutoUpdate"] is True
    assert settings["model"] == {"maxSessionTurns": 7}
    assert "telemetry" not in settings  # detect_truncation=False: the user's, untouched


async def test_the_users_config_is_seeded_and_never_written(tmp_path: Path) -> None:
    user = tmp_path / "home" / ".gemini"
    user.mkdir(parents=True)
    (user / "settings.json").write_text(
        '{\n  // comments are allowed\n  "security": {"auth": {"selectedType": "oauth-personal"}},'
        '\n  "ui": {"theme": "Dracula // not a comment"},\n  /* block */ "mcpServers": '
        '{"theirs": {"command": "their-server"}}\n}'
    )
    (user / "oauth_creds.json").write_text("{}")
    (user / "GEMINI.md").write_text("Always answer in haiku.")
    (user / "tmp").mkdir()  # their own chats: not linked, not touched
    before = sorted(p.name for p in user.iterdir())
    llm = fake_llm(tmp_path, system_message="You are terse.", detect_truncation=True)
    await llm.aprompt("hi", tools=[ChiaTool.http("http://127.0.0.1:9/mcp", name="mock")])
    seen = recorded(tmp_path)
    settings = seen["settings"]
    assert settings["security"]["auth"] == {"selectedType": "oauth-personal"}  # no api_key
    assert settings["ui"]["theme"] == "Dracula // not a comment"
    assert set(settings["mcpServers"]) == {"theirs", "mock"}
    assert settings["mcpServers"]["mock"] == {
        "httpUrl": "http://127.0.0.1:9/mcp",
        "timeout": 120000,
        "trust": True,
    }
    telemetry = settings["telemetry"]
    assert telemetry["target"] == "local" and telemetry["logPrompts"] is False
    assert Path(telemetry["outfile"]).parent == Path(seen["env"]["GEMINI_CLI_HOME"]).parent
    assert seen["entries"]["oauth_creds.json"] == str(user / "oauth_creds.json")  # linked
    assert seen["entries"]["settings.json"] is None and seen["entries"]["GEMINI.md"] is None
    assert "tmp" not in seen["entries"] or seen["entries"]["tmp"] is None
    assert seen["context"] == "Always answer in haiku.\n\nYou are terse.\n"
    assert sorted(p.name for p in user.iterdir()) == before
    assert not list((user / "tmp").iterdir())


async def test_tool_secrets_are_env_references_not_text(tmp_path: Path) -> None:
    token = "Bearer tok-0123456789abcdefghij"
    http = ChiaTool.http("http://127.0.0.1:9/mcp", name="web", headers={"Authorization": token})
    stdio = ChiaTool.stdio(
        "my-server",
        "--flag",
        name="local",
        env={"SERVICE_TOKEN": "s3cret-value-0123456789"},
        allowed_tools=["read"],
        tool_timeout=5,
    )
    await fake_llm(tmp_path).aprompt("hi", tools=[http, stdio])
    seen = recorded(tmp_path)
    servers = seen["settings"]["mcpServers"]
    assert servers["web"]["headers"] == {"Authorization": "${CHIA_MCP_0_HEADER_0}"}
    assert servers["local"] == {
        "command": "my-server",
        "args": ["--flag"],
        "env": {"SERVICE_TOKEN": "${CHIA_MCP_1_ENV_0}"},
        "timeout": 5000,
        "includeTools": ["read"],
        "trust": True,
    }
    assert seen["env"]["CHIA_MCP_0_HEADER_0"] == token
    assert seen["env"]["CHIA_MCP_1_ENV_0"] == "s3cret-value-0123456789"
    assert "tok-0123456789" not in json.dumps(seen["settings"])


async def test_the_chat_travels_and_is_restored_in_a_fresh_home(tmp_path: Path) -> None:
    first = fake_llm(tmp_path, resume_session=True)
    result1 = await first.aprompt("one")
    assert isinstance(result1, gemini_cli.GeminiCLIQueryResult)
    session_id = result1.session.session_id
    assert result1.session_transcript_path == (
        f".gemini/tmp/work/chats/session-2026-11-24T10-00-{session_id[:8]}.jsonl"
    )
    result2 = await first.aprompt("two")  # the same object continues the conversation
    assert result2.result == "turns so far: 2"
    assert recorded(tmp_path)["argv"][-2:] == ["--resume", session_id]

    other = tmp_path / "other"
    other.mkdir()
    (other / "My Project").mkdir()
    second = fake_llm(other, work_dir=str(other / "My Project"))
    second.restore_session(pickle.loads(pickle.dumps(result2)))
    result3 = await second.aprompt("three")
    assert result3.result == "turns so far: 3"
    seen = recorded(other)
    [chat] = seen["chats"]
    assert chat["path"] == f"tmp/my-project/chats/session-2026-11-24T10-00-{session_id[:8]}.jsonl"
    assert result3.session.session_id == session_id


def test_signature_defaults_and_resource() -> None:
    params = inspect.signature(gemini_cli.GeminiCLILLM).parameters
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional[:7] == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
    ]
    assert params["model"].default is None and params["approval_mode"].default == "yolo"
    assert params["max_attempts"].default == 2 and params["logging_name"].default == "gemini_cli"
    assert gemini_cli.GeminiCLILLM.ray_resource == "gemini_cli"


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="approval_mode"):
        gemini_cli.GeminiCLILLM(approval_mode="always")
    with pytest.raises(ValueError, match="max_attempts"):
        gemini_cli.GeminiCLILLM(max_attempts=11)
    with pytest.raises(TypeError, match="add_dirs"):
        gemini_cli.GeminiCLILLM(add_dirs="/tmp")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="settings"):
        gemini_cli.GeminiCLILLM(settings=["x"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no session"):
        gemini_cli.GeminiCLILLM().restore_session(gemini_cli.GeminiCLIQueryResult("", 0, "", ""))


async def test_a_prompt_the_cli_would_truncate_is_refused(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path)
    with pytest.raises(gemini_cli.InvalidRequestError, match="silently drop"):
        await llm.aprompt("x" * (8 * 1024 * 1024 + 1))


def test_the_backend_pickles_without_its_key_in_repr() -> None:
    llm = gemini_cli.GeminiCLILLM(api_key="AIza-very-secret-0123456789", settings={"a": {"b": 1}})
    assert "very-secret" not in repr(llm)
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.api_key == llm.api_key and copy.settings == {"a": {"b": 1}}
