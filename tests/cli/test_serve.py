"""``chia-async serve`` in one process, ``chia-async run`` against it from another: the
installed ``chia-async`` entry point, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chia_async.events import Completed, ToolResult, TurnEvent

COMMAND = Path(sys.executable).with_name("chia-async")


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), COLUMNS="200")
    return env


class Served:
    def __init__(self, process: subprocess.Popen[str], banner: list[str]) -> None:
        self.process = process
        self.banner = banner
        self.url = banner[0].removeprefix("serving on ")


def start_serve(tmp_path: Path, *args: str) -> Served:
    process = subprocess.Popen(
        [str(COMMAND), "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    assert process.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner.append(line.rstrip("\n"))
        if "Ctrl-C stops the server" in line:
            return Served(process, banner)
    process.kill()
    process.wait()
    pytest.fail(
        f"serve printed no banner: {banner} {process.stderr.read() if process.stderr else ''}"
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    if not COMMAND.exists():
        pytest.skip(f"{COMMAND} not installed (pip install -e .)")
    server = start_serve(tmp_path)
    try:
        yield server
    finally:
        stop(server)


def stop(server: Served) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
            pytest.fail("serve did not stop on SIGINT")
    for stream in (server.process.stdout, server.process.stderr):
        if stream is not None:
            stream.close()


def run_command(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), "run", *argv],
        capture_output=True,
        text=True,
        timeout=90,
        env=env_for(tmp_path),
        check=False,
    )


def printed_base_url(served: Served, label: str) -> str:
    line = next(line for line in served.banner if f" {label}: " in line)
    return line.split()[0]


def test_serve_prints_the_base_url_each_backend_needs(served: Served, tmp_path: Path) -> None:
    url = served.url
    assert url.startswith("http://127.0.0.1:")
    assert printed_base_url(served, "OpenAI-compatible") == f"{url}/s/NAME/v1"
    assert printed_base_url(served, "Anthropic") == f"{url}/s/NAME"
    openai_line = next(line for line in served.banner if " OpenAI-compatible: " in line)
    assert "openai, openai-compat" in openai_line and "codex" in openai_line
    scripts = {line.split()[0] for line in served.banner if line.startswith("  ") and "  " in line}
    assert {"hello", "tool", "flaky", "rate-limit", "auth", "stall"} <= scripts

    # the exact command the banner suggests, in another process
    suggested = next(line for line in served.banner if "/s/hello/v1" in line).split()
    assert suggested[:6] == [
        "chia-async",
        "run",
        "--backend",
        "openai",
        "--base-url",
        f"{url}/s/hello/v1",
    ]
    done = run_command(tmp_path, "--backend", "openai", "--base-url", f"{url}/s/hello/v1", "hi")
    assert done.returncode == 0, done.stderr
    assert "Hello from the scripted model! You said: hi" in done.stdout.splitlines()


def test_run_json_with_a_real_mcp_tool_against_serve(
    served: Served, mcp_server: object, tmp_path: Path
) -> None:
    base_url = f"{served.url}/s/tool/v1"
    tool_url = mcp_server.url  # type: ignore[attr-defined]
    done = run_command(
        tmp_path, "-b", "openai", "--base-url", base_url, "--tool", tool_url, "--json", "add"
    )
    assert done.returncode == 0, done.stderr
    events = [TurnEvent.from_dict(json.loads(line)) for line in done.stdout.splitlines()]
    assert [e.output for e in events if isinstance(e, ToolResult)] == ["5"]
    assert isinstance(events[-1], Completed) and events[-1].result.success


def test_run_exit_code_against_serve(served: Served, tmp_path: Path) -> None:
    done = run_command(tmp_path, "-b", "openai", "--base-url", f"{served.url}/s/auth/v1", "hi")
    assert done.returncode == 4
    assert done.stderr.startswith("chia-async: error: authentication: ")
    assert len(done.stderr.splitlines()) == 1


def test_script_files_and_a_busy_port(tmp_path: Path) -> None:
    if not COMMAND.exists():
        pytest.skip(f"{COMMAND} not installed (pip install -e .)")
    script = tmp_path / "scripts.json"
    script.write_text(json.dumps({"scripts": {"custom": [{"text": "from my file"}]}}))
    server = start_serve(tmp_path, "--script", str(script))
    try:
        assert any(line.split()[:3] == ["custom", "from", str(script)] for line in
                   (b.strip() for b in server.banner))  # fmt: skip
        done = run_command(
            tmp_path, "-b", "openai", "--base-url", f"{server.url}/s/custom/v1", "hi"
        )
        assert done.returncode == 0, done.stderr
        assert "from my file" in done.stdout.splitlines()

        port = int(server.url.rsplit(":", 1)[1])
        busy = subprocess.run(
            [str(COMMAND), "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env_for(tmp_path),
            check=False,
        )
        assert busy.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    finally:
        stop(server)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scripts": {"x": [{"txet": "typo"}]}}))
    done = subprocess.run(
        [str(COMMAND), "serve", "--port", "0", "--script", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(tmp_path),
        check=False,
    )
    assert done.returncode == 2
    assert "unknown key 'txet'" in done.stderr
    with socket.socket() as probe:  # nothing left listening on the old port
        assert probe.connect_ex(("127.0.0.1", port)) != 0
