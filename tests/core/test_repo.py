"""Repository contracts: README's two set-up commands and .ci/run running the test one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set up.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no Set up bash block"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    run, test = commands
    assert "chia_async demo" in run
    assert "pytest" in test


def test_ci_runs_both_readme_commands_in_order() -> None:
    run_command, test_command = readme_commands()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    runs = [line for line in ci if line.startswith(run_command)]
    assert runs, "CI must run README's main-job command as written"
    assert test_command in ci
    assert ci.index(runs[0]) < ci.index(test_command)
    assert "set -euo pipefail" in ci[3:5] or any("set -euo pipefail" in line for line in ci)


def test_the_demo_runs_offline_with_a_real_mcp_tool() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "chia_async", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "[retrying in" in out
    assert "[tool result: 5]" in out
    assert "2 + 3 = 5" in out
    assert "success=True" in out
    assert "DEBUG" not in proc.stderr + out
