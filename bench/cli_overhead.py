"""Time to first event through a CLI backend against the bare CLI, in one run.

    python bench/cli_overhead.py [--runs 15]

Both sides run the same pinned `claude` binary (from .ci-cache/npm, see .ci/install-clis)
with the same environment and the same prompt on stdin, against the scripted model server
on loopback. "Bare" spawns the CLI with asyncio and reads stdout until the first complete
line; "chia_async" is the time from `llm.stream()` to its first event. Runs alternate so
both see the same machine state; the medians and their difference are printed. The CLIs'
own start-up (0.05-4 s) varies by tens to hundreds of ms between runs, far more than the
goal, so each row also prints what the backend itself adds to the first event, stamped in
the same run: its work from `stream()` to the spawn plus from the first stdout record to the
event (goal: at most 5 ms).
A second row does the same for `codex exec --json` and CodexLLM, a third for
`gemini --output-format stream-json` and GeminiCLILLM, a fourth for AntigravityLLM on the
fake `agy` of the tests (a Python stand-in: it measures the backend's own cost in plain-text
mode, not agy's start-up), a fifth for `opencode run --format json` and OpenCodeLLM (first
event = the first part opencode prints; the export that follows each run is not timed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson

from chia_async.backends.antigravity import AntigravityLLM
from chia_async.backends.claude import ClaudeCodeLLM
from chia_async.backends.codex import CodexLLM
from chia_async.backends.gemini_cli import GeminiCLILLM
from chia_async.backends.opencode import OpenCodeLLM
from chia_async.subprocess import backend as cli_backend
from chia_async.subprocess.environment import build_child_env
from chia_async.subprocess.process import SupervisedProcess
from chia_async.testing import ScriptedModelServer, Turn

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 5.0


async def bare_first_line(argv: list[str], env: dict[str, str], cwd: str, prompt: bytes) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
        limit=2**26,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(prompt)
    proc.stdin.close()
    await proc.stdout.readline()
    elapsed = time.perf_counter() - started
    await proc.stdout.read()
    await proc.wait()
    return elapsed


#: per run of the backend: its own work before the spawn and after the first record (ms)
ADDED: list[float] = []


class _Stamped(SupervisedProcess):
    """SupervisedProcess stamping the spawn and the first stdout record it hands over."""

    stamps: ClassVar[dict[str, float]] = {}

    async def _spawn(self) -> Any:
        self.stamps["spawn"] = time.perf_counter()
        return await super()._spawn()

    def records(self) -> Any:
        inner = super().records()
        stamps = self.stamps

        class Stamping:
            def __aiter__(self) -> Stamping:
                return self

            async def __anext__(self) -> Any:
                record = await inner.__anext__()
                stamps.setdefault("record", time.perf_counter())
                return record

        return Stamping()


async def chia_first_event(
    llm: ClaudeCodeLLM | CodexLLM | GeminiCLILLM | AntigravityLLM | OpenCodeLLM, prompt: str
) -> float:
    """Time to the first event; also records in ADDED what the backend itself added: its
    work from ``stream()`` to the spawn, and from the first stdout record to the event (the
    CLI's own start-up, which dominates and varies by hundreds of ms, is not in it)."""
    _Stamped.stamps.clear()
    cli_backend.SupervisedProcess = _Stamped  # type: ignore[misc]
    try:
        started = time.perf_counter()
        async with llm.stream(prompt) as events:
            await events.__anext__()
            first = time.perf_counter()
            async for _ in events:
                pass
    finally:
        cli_backend.SupervisedProcess = SupervisedProcess  # type: ignore[misc]
    stamps = _Stamped.stamps
    ADDED.append((stamps["spawn"] - started + first - stamps["record"]) * 1000)
    return first - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cli = os.environ.get("CHIA_CLAUDE_BIN") or str(ROOT / ".ci-cache" / "npm" / "bin" / "claude")
    if not os.path.exists(cli):
        sys.exit(f"claude not found at {cli}: run .ci/install-clis")
    with tempfile.TemporaryDirectory() as scratch:
        home, work = Path(scratch) / "home", Path(scratch) / "work"
        home.mkdir()
        work.mkdir()
        async with ScriptedModelServer() as server:
            server.script("bench", [Turn(text="pong")], repeat=True)
            child_env = {
                "HOME": str(home),
                "ANTHROPIC_BASE_URL": server.base_url("bench"),
                "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1",
            }
            llm = ClaudeCodeLLM(
                model="claude-opus-4-8",
                cli_path=cli,
                api_key="sk-bench",
                env=child_env,
                work_dir=str(work),
                retries=0,
            )
            # the exact argv and environment the backend uses, minus its temp files (the
            # allowlist's certificate variables, e.g. NODE_EXTRA_CA_CERTS, cost the CLI
            # tens of ms of start-up: both sides get them)
            env = build_child_env(
                allow=ClaudeCodeLLM.env_allowlist,
                explicit={
                    "CLAUDE_CODE_MAX_RETRIES": "2",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                    "ANTHROPIC_API_KEY": "sk-bench",
                    **child_env,
                },
            )
            argv = [
                cli,
                "--print",
                "--output-format",
                "stream-json",
                "--verbose",
                "--include-partial-messages",
                "--model",
                "claude-opus-4-8",
            ]
            await bare_first_line(argv, env, str(work), b"ping")  # warm caches
            await chia_first_event(llm, "ping")
            bare, chia = [], []
            for _ in range(args.runs):
                bare.append(await bare_first_line(argv, env, str(work), b"ping"))
                chia.append(await chia_first_event(llm, "ping"))
    report("claude CLI", "ClaudeCodeLLM", bare, chia)
    await codex_row(args.runs)
    await gemini_row(args.runs)
    await agy_row(args.runs)
    await opencode_row(args.runs)


async def codex_row(runs: int) -> None:
    """The same measurement for `codex exec --json` (CodexLLM with a per-run provider)."""
    cli = os.environ.get("CHIA_CODEX_BIN") or str(ROOT / ".ci-cache" / "npm" / "bin" / "codex")
    if not os.path.exists(cli):
        print(f"codex not found at {cli}: run .ci/install-clis (codex row skipped)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        home, work = Path(scratch) / "home", Path(scratch) / "work"
        home.mkdir()
        work.mkdir()
        async with ScriptedModelServer() as server:
            server.script("bench", [Turn(text="pong")], repeat=True)
            base_url = server.base_url("bench") + "/v1"
            child_env = {"HOME": str(home), "OPENAI_API_KEY": "sk-bench"}
            llm = CodexLLM(
                model="gpt-5.5",
                codex_bin=cli,
                env=child_env,
                work_dir=str(work),
                base_url=base_url,
                retries=0,
            )
            # the exact argv and environment the backend uses. The environment matters more
            # than for claude: every CA-bundle variable the allowlist passes on
            # (SSL_CERT_FILE, CURL_CA_BUNDLE, ...) costs codex ~100 ms of start-up
            env = build_child_env(
                allow=CodexLLM.env_allowlist,
                explicit={"CODEX_HOME": str(home / ".codex"), **child_env},
            )
            config = [
                "model_auto_compact_token_limit=200000",
                'model_provider="chia"',
                'model_providers.chia.name="chia"',
                f'model_providers.chia.base_url="{base_url}"',
                'model_providers.chia.wire_api="responses"',
                "model_providers.chia.request_max_retries=1",
                "model_providers.chia.stream_max_retries=1",
                'model_providers.chia.env_key="OPENAI_API_KEY"',
            ]
            argv = [
                cli,
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "--model",
                "gpt-5.5",
            ]
            for item in config:
                argv += ["-c", item]
            argv.append("-")  # the prompt on stdin
            await chia_first_event(llm, "ping")  # warm caches (and create CODEX_HOME)
            await bare_first_line(argv, env, str(work), b"ping")
            bare, chia = [], []
            for _ in range(runs):
                bare.append(await bare_first_line(argv, env, str(work), b"ping"))
                chia.append(await chia_first_event(llm, "ping"))
    report("codex CLI", "CodexLLM", bare, chia)


def report(name: str, backend: str, bare: list[float], chia: list[float]) -> None:
    b, c = statistics.median(bare) * 1000, statistics.median(chia) * 1000
    added = statistics.median(ADDED[-len(chia) :])
    print(
        f"bare {name}, first stdout line{'':<{max(1, 9 - len(name))}}median {b:8.1f} ms  "
        f"({len(bare)} runs)"
    )
    print(f"{backend}.stream, first event{'':<{max(1, 16 - len(backend))}}median {c:8.1f} ms")
    print(f"  end to end {c - b:+.1f} ms (ratio {c / b:.3f}x; the CLI's start-up noise included)")
    verdict = "OK" if added <= GOAL_MS else "OVER GOAL"
    print(
        f"  added by the backend itself (before the spawn + after the first record): "
        f"median {added:.2f} ms (goal <= +{GOAL_MS:.0f} ms): {verdict}"
    )


async def gemini_row(runs: int) -> None:
    """`gemini --output-format stream-json` against GeminiCLILLM, first event = `init`.

    The bare CLI gets the same per-run config home the backend writes (settings with
    telemetry to a file, maxAttempts...), built once: the difference is what the backend
    adds per call (its scratch directory and config home, the spawn, the parse).
    """
    cli = os.environ.get("CHIA_GEMINI_BIN") or str(ROOT / ".ci-cache" / "npm" / "bin" / "gemini")
    if not os.path.exists(cli):
        print(f"gemini not found at {cli}: run .ci/install-clis (gemini row skipped)")
        return
    model = "gemini-2.5-pro"  # a fixed model: no router request before the answer
    with tempfile.TemporaryDirectory() as scratch:
        home, work, bare_dir = (Path(scratch) / d for d in ("home", "work", "bare"))
        for directory in (home, work, bare_dir):
            directory.mkdir()
        async with ScriptedModelServer() as server:
            server.script("bench", [Turn(text="pong")], repeat=True)
            child_env = {"HOME": str(home), "GOOGLE_GEMINI_BASE_URL": server.base_url("bench")}
            llm = GeminiCLILLM(
                model=model,
                gemini_bin=cli,
                api_key="sk-bench",
                env=child_env,
                work_dir=str(work),
                retries=0,
            )
            config_home, _ = llm._prepare_home(bare_dir, (), {})
            (bare_dir / "tmp").mkdir()
            env = build_child_env(
                allow=GeminiCLILLM.env_allowlist,
                explicit={
                    "GEMINI_CLI_HOME": str(config_home),
                    "TMPDIR": str(bare_dir / "tmp"),
                    "GEMINI_API_KEY": "sk-bench",
                    **child_env,
                },
            )
            argv = [cli, "-m", model, "--output-format", "stream-json", "--approval-mode", "yolo"]
            await chia_first_event(llm, "ping")  # warm caches
            await bare_first_line(argv, env, str(work), b"ping")
            bare, chia = [], []
            for _ in range(runs):
                bare.append(await bare_first_line(argv, env, str(work), b"ping"))
                chia.append(await chia_first_event(llm, "ping"))
    report("gemini CLI", "GeminiCLILLM", bare, chia)


async def agy_row(runs: int) -> None:
    """AntigravityLLM against the bare fake `agy` (tests/antigravity/fake_agy.py)."""
    fake = ROOT / "tests" / "antigravity" / "fake_agy.py"
    with tempfile.TemporaryDirectory() as scratch:
        home, work = Path(scratch) / "home", Path(scratch) / "work"
        home.mkdir()
        work.mkdir()
        agy = Path(scratch) / "agy"
        agy.write_text(f'#!/bin/sh\nexec {sys.executable} {fake} "$@"\n')
        agy.chmod(0o755)
        child_env = {"HOME": str(home), "FAKE_AGY_MODE": "answer"}
        llm = AntigravityLLM(agy_bin=str(agy), env=child_env, work_dir=str(work), retries=0)
        env = build_child_env(allow=AntigravityLLM.env_allowlist, explicit=child_env)
        argv = [str(agy), "--dangerously-skip-permissions", "--print-timeout", "595s"]
        await chia_first_event(llm, "ping")
        await bare_first_line(argv, env, str(work), b"ping")
        bare, chia = [], []
        for _ in range(runs):
            bare.append(await bare_first_line(argv, env, str(work), b"ping"))
            chia.append(await chia_first_event(llm, "ping"))
    report("fake agy", "AntigravityLLM", bare, chia)


async def opencode_row(runs: int) -> None:
    """`opencode run --format json` against OpenCodeLLM, first event = the first part.

    The bare CLI gets the run config the backend writes (built once, 0600) and the same
    argv, environment and stdin prompt: the difference is what the backend adds per call
    (its scratch directory and config file, the spawn, the parse).
    """
    cli = os.environ.get("CHIA_OPENCODE_BIN") or str(
        ROOT / ".ci-cache" / "npm" / "bin" / "opencode"
    )
    if not os.path.exists(cli):
        print(f"opencode not found at {cli}: run .ci/install-clis (opencode row skipped)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        home, work = Path(scratch) / "home", Path(scratch) / "work"
        home.mkdir()
        work.mkdir()
        async with ScriptedModelServer() as server:
            server.script("bench", [Turn(text="pong")], repeat=True)
            child_env = {
                "HOME": str(home),
                "XDG_DATA_HOME": str(home / ".local" / "share"),
                "OPENCODE_DISABLE_MODELS_FETCH": "1",
                "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            }
            llm = OpenCodeLLM(
                "mock-model",
                opencode_bin=cli,
                env=child_env,
                work_dir=str(work),
                base_url=server.base_url("bench") + "/v1",
                api_key="sk-bench",
                retries=0,
            )
            config = Path(scratch) / "opencode.json"
            config.write_bytes(orjson.dumps(llm._run_config(())))
            config.chmod(0o600)
            env = build_child_env(
                allow=OpenCodeLLM.env_allowlist,
                explicit={
                    "PWD": os.path.realpath(work),
                    "OPENCODE_CONFIG": str(config),
                    "OPENCODE_DISABLE_AUTOUPDATE": "1",
                    **child_env,
                },
            )
            argv = [cli, "run", "--format", "json", "--thinking", "--title", "chia"]
            argv += ["--print-logs", "--log-level", "ERROR", "--agent", "chia"]
            argv += ["-m", "chia/mock-model"]
            await chia_first_event(llm, "ping")  # warm caches (and migrate the database)
            await bare_first_line(argv, env, os.path.realpath(work), b"ping")
            bare, chia = [], []
            for _ in range(runs):
                bare.append(await bare_first_line(argv, env, os.path.realpath(work), b"ping"))
                chia.append(await chia_first_event(llm, "ping"))
    report("opencode", "OpenCodeLLM", bare, chia)


if __name__ == "__main__":
    asyncio.run(main())
