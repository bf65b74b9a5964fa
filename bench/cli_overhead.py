"""Time to first event through a CLI backend against the bare CLI, in one run.

    python bench/cli_overhead.py [--runs 15]

Both sides run the same pinned `claude` binary (from .ci-cache/npm, see .ci/install-clis)
with the same environment and the same prompt on stdin, against the scripted model server
on loopback. "Bare" spawns the CLI with asyncio and reads stdout until the first complete
line; "chia_async" is the time from `llm.stream()` to its first event. Runs alternate so
both see the same machine state; the medians and their difference are printed (goal: the
backend adds at most 5 ms).
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

from chia_async.backends.claude import ClaudeCodeLLM
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


async def chia_first_event(llm: ClaudeCodeLLM, prompt: str) -> float:
    started = time.perf_counter()
    async with llm.stream(prompt) as events:
        await events.__anext__()
        elapsed = time.perf_counter() - started
        async for _ in events:
            pass
    return elapsed


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
            # the exact argv and environment the backend uses, minus its temp files
            env = {
                "PATH": os.environ.get("PATH", ""),
                "CLAUDE_CODE_MAX_RETRIES": "2",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "ANTHROPIC_API_KEY": "sk-bench",
                **child_env,
            }
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
    b, c = statistics.median(bare) * 1000, statistics.median(chia) * 1000
    print(f"bare claude CLI, first stdout line   median {b:8.1f} ms  ({args.runs} runs)")
    print(f"ClaudeCodeLLM.stream, first event     median {c:8.1f} ms")
    verdict = "OK" if c - b <= GOAL_MS else "OVER GOAL"
    print(f"overhead {c - b:+.1f} ms (ratio {c / b:.3f}x; goal <= +{GOAL_MS:.0f} ms): {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
