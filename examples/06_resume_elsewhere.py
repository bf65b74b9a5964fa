"""Continue a conversation somewhere else: the result carries the CLI's session transcript,
so a second ClaudeCodeLLM — another HOME, another working directory, as on another worker —
restores it and resumes the same session.

    python examples/06_resume_elsewhere.py

Needs the ``claude`` CLI (on PATH, or in .ci-cache/npm/bin). Uses Anthropic when
``ANTHROPIC_API_KEY`` is set, else a scripted model on loopback.
"""

import os
import pickle
import shutil
import tempfile
from pathlib import Path

from chia_async.backends.claude import ClaudeCodeLLM
from chia_async.testing import ParsedRequest, ScriptedModelServer, Turn


def find_claude() -> str | None:
    local = Path(__file__).parent.parent / ".ci-cache" / "npm" / "bin" / "claude"
    return shutil.which("claude") or (str(local) if local.exists() else None)


def converse(claude: str, root: Path, env: dict[str, str], api_key: str) -> None:
    machines = []
    for name in ("worker-a", "worker-b"):
        home, work = root / name / "home", root / name / "work"
        work.mkdir(parents=True)
        home.mkdir()
        machines.append((home, work))
    (home_a, work_a), (home_b, work_b) = machines

    first = ClaudeCodeLLM(
        cli_path=claude,
        api_key=api_key,
        resume_session=True,  # keep the transcript in the result
        env={**env, "HOME": str(home_a)},
        work_dir=str(work_a),
    )
    result = first.prompt("Remember the word 'avocado'. Reply with OK.")
    print(f"worker-a: {result.result} (session {result.session.session_id})")

    travelled = pickle.loads(pickle.dumps(result))  # what Ray or a queue would carry
    print(f"the result carries {len(travelled.session_transcript)} bytes of transcript")

    second = ClaudeCodeLLM(
        cli_path=claude, api_key=api_key, env={**env, "HOME": str(home_b)}, work_dir=str(work_b)
    )
    second.restore_session(travelled)
    again = second.prompt("Which word did I ask you to remember?")
    print(f"worker-b: {again.result} (session {again.session.session_id})")
    print(f"same session: {again.session.session_id == result.session.session_id}")


def scripted_model(request: ParsedRequest) -> Turn:
    if request.message_count == 1:
        return Turn(text="OK")
    # a real model reads the word from the history; this one only checks that it arrived
    return Turn(text=f"avocado (I see {request.message_count} messages of our conversation)")


def main() -> None:
    claude = find_claude()
    if claude is None:
        print("skipped: the claude CLI is not installed (npm install -g @anthropic-ai/claude-code)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        if os.environ.get("ANTHROPIC_API_KEY"):
            converse(claude, Path(scratch), {}, os.environ["ANTHROPIC_API_KEY"])
            return
        with ScriptedModelServer() as server:
            server.script("default", scripted_model)
            converse(claude, Path(scratch), {"ANTHROPIC_BASE_URL": server.url}, "offline")
            last = [r for r in server.requests() if r.parsed][-1]
            history = last.body["messages"]
            print(f"worker-b sent the first prompt again: {'avocado' in str(history)}")


if __name__ == "__main__":
    main()
