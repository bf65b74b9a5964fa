"""Every example runs offline, as a user runs it: ``python examples/NAME.py`` in a fresh
process with no provider credentials, against the scripted model server it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def run_example(name: str, tmp_path: Path, *, timeout: float = 90, path: str = "") -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.endswith("_API_KEY") or k in ("RAY_ADDRESS", "CLAUDECODE"))
    }
    env["HOME"] = str(tmp_path)
    if path:
        env["PATH"] = f"{path}:{env.get('PATH', '')}"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


def test_examples_are_all_tested() -> None:
    tested = {
        "01_prompt.py", "02_stream.py", "03_mcp_tools.py", "04_cli_agent.py",
        "05_ray_fanout.py", "06_resume_elsewhere.py", "07_errors.py", "calculator_server.py",
    }  # fmt: skip
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_prompt(tmp_path: Path) -> None:
    assert run_example("01_prompt.py", tmp_path) == [
        "The capital of France is Paris.",
        "success=True tokens=15",
    ]


def test_stream(tmp_path: Path) -> None:
    lines = run_example("02_stream.py", tmp_path)
    assert lines[0].startswith("[attempt 1 failed: server; retrying in ")
    assert lines[1:4] == [
        "One loop, many tasks",
        "await yields the turn to you",
        "callbacks bloom, then rest",
    ]
    assert lines[4] == "[done: 10 in / 5 out]"


def test_mcp_tools(tmp_path: Path) -> None:
    assert run_example("03_mcp_tools.py", tmp_path) == [
        "tool call: calculator__add({'a': 1234, 'b': 4321})",
        "tool result: 5555",
        "1234 + 4321 = 5555",
    ]


def test_cli_agent(claude_bin: Any, tmp_path: Path) -> None:
    lines = run_example("04_cli_agent.py", tmp_path, path=str(Path(claude_bin.path).parent))
    assert lines[0].startswith("session: ")
    assert "tool call: mcp__calculator__add({'a': 1234, 'b': 4321})" in lines
    assert any(line.startswith("tool result: ") and "5555" in line for line in lines)
    assert lines[-1].startswith("The calculator says: ") and "5555" in lines[-1]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_fanout(tmp_path: Path) -> None:
    lines = run_example("05_ray_fanout.py", tmp_path, timeout=280)
    try:
        import ray  # noqa: F401
    except ImportError:
        assert lines == ["skipped: Ray is not installed (pip install 'chia-async[ray]')"]
        return
    assert lines[:4] == [f"What is {n} squared? Just the number. -> {n * n}" for n in range(1, 5)]
    assert lines[4].startswith("4 calls on 2 nodes in ")


def test_resume_elsewhere(claude_bin: Any, tmp_path: Path) -> None:
    lines = run_example("06_resume_elsewhere.py", tmp_path, path=str(Path(claude_bin.path).parent))
    first_session = lines[0].rsplit("session ", 1)[1]
    assert lines[0].startswith("worker-a: OK (session ")
    assert lines[1].startswith("the result carries ") and lines[1].endswith(" bytes of transcript")
    assert lines[2].startswith("worker-b: avocado (I see 3 messages of our conversation)")
    assert lines[2].endswith(f"(session {first_session}")
    assert lines[3:] == ["same session: True", "worker-b sent the first prompt again: True"]


def test_errors(tmp_path: Path) -> None:
    lines = run_example("07_errors.py", tmp_path)
    got = {line[:26].strip(): line[27:] for line in lines}
    assert got["rate limit, resets in 1 h"].startswith("raised   RateLimitError: wait until ")
    assert got["bad API key"] == "raised   AuthenticationError: check the key (HTTP 401)"
    assert got["quota exhausted"] == "raised   BillingError: top up the account (HTTP 429)"
    assert got["prompt too long"] == "raised   ContextLengthExceededError: shorten the prompt"
    assert got["malformed request"].startswith("raised   InvalidRequestError: fix the request")
    assert got["server down"] == ("returned ServerError: the service failed (HTTP 500); try later")
    assert got["cut at max tokens"] == (
        "raised   MaxOutputTokensError: partial_text='The answer is cut'"
    )
    assert got["content filtered"] == (
        "raised   ContentBlockedError: block_reason='content_filter'"
    )
    assert got["model goes silent"].startswith("returned StallError: ")
    assert got["CLI not installed"] == (
        "raised   CLINotFoundError: install it with 'npm install -g @anthropic-ai/claude-code'"
    )
