"""ClaudeCodeLLM's process handling, with a fake claude that lingers, crashes, prints a
5 MB line among noise, or never prints its result record."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from chia_async.backends import claude
from chia_async.events import Raw, TextDelta
from chia_async.subprocess import live_process_groups

FAKE = Path(__file__).parent / "fake_claude.py"


def fake_llm(tmp_path: Path, mode: str, **kwargs) -> claude.ClaudeCodeLLM:
    wrapper = tmp_path / "claude"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
    wrapper.chmod(0o755)
    return claude.ClaudeCodeLLM(
        cli_path=str(wrapper),
        env={"FAKE_CLAUDE_MODE": mode, "HOME": str(tmp_path)},
        work_dir=str(tmp_path),
        retries=0,
        **kwargs,
    )


async def test_a_cli_lingering_after_its_result_is_stopped_and_succeeds(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "linger")
    started = time.monotonic()
    result = await llm.aprompt("ping")
    assert time.monotonic() - started < 15  # linger grace, not the CLI's 60 s sleep
    assert result.success and result.result == "echo: ping" and result.returncode == 0
    assert not live_process_groups()


async def test_a_crash_mid_stream_is_a_typed_error_with_the_stderr_tail(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "crash")
    events = []
    with pytest.raises(claude.UnknownClaudeError) as info:
        async for event in llm.stream("ping"):
            events.append(event)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["partial"]
    assert info.value.exit_code == 3
    assert "something broke" in info.value.stderr


async def test_a_5_mb_line_among_noise_and_invalid_utf8(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "big")
    events = [e async for e in llm.stream("ping")]
    raw_lines = [e.data for e in events if isinstance(e, Raw) and e.source == "claude:stdout"]
    assert raw_lines[0] == "a plain-text warning line"
    assert "not utf-8" in raw_lines[1]
    result = events[-1].result
    assert result.success and len(result.result) == 5 * 2**20


async def test_no_result_record_is_a_failure(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path, "no_result")
    with pytest.raises(claude.UnknownClaudeError, match="without a result record"):
        await llm.aprompt("ping")


async def test_the_prompt_reaches_the_cli_on_stdin(tmp_path: Path) -> None:
    result = await fake_llm(tmp_path, "linger").aprompt("multi\nline prompt ✓")
    assert result.result == "echo: multi\nline prompt ✓"


def test_reference_constructor_signature() -> None:
    import inspect

    params = list(inspect.signature(claude.ClaudeCodeLLM).parameters.values())
    names = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert names == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
        "resume_session",
        "projects_cwd",
        "extra_cli_args",
        "log_stream",
        "log_all",
        "backend",
        "api_key",
        "max_tokens",
        "thinking",
        "max_tool_iterations",
    ]
    defaults = {p.name: p.default for p in params}
    assert defaults["model"] == "claude-sonnet-4-6" and defaults["timeout_seconds"] == 600
    assert defaults["backend"] == "cli" and defaults["max_tokens"] == 16000
    assert defaults["thinking"] == "adaptive" and defaults["max_tool_iterations"] == 100


def test_api_key_never_in_repr_and_objects_pickle(tmp_path: Path) -> None:
    import pickle

    llm = claude.ClaudeCodeLLM(api_key="sk-ant-very-secret-123456")
    assert "very-secret" not in repr(llm)
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.model == llm.model and copy.api_key == llm.api_key


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="backend"):
        claude.ClaudeCodeLLM(backend="grpc")
    with pytest.raises(TypeError, match="env"):
        claude.ClaudeCodeLLM(env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="extra_cli_args"):
        claude.ClaudeCodeLLM(extra_cli_args="--verbose")  # type: ignore[arg-type]
