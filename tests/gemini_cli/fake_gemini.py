#!/usr/bin/env python3
"""A stand-in for ``gemini --output-format stream-json`` that reports what it was given.

For fast checks of what GeminiCLILLM sets up (the per-run config home, argv, environment,
the restored chat) without the real CLI's seconds of start-up; the real CLI is exercised in
test_gemini_backend.py. ``FAKE_GEMINI_RECORD=<file>`` receives, as JSON: argv, the stdin
prompt, selected environment, the settings.json and context file of ``$GEMINI_CLI_HOME``,
its ``.gemini`` entries (with symlink targets) and the chat files present. It then prints
init / message / result like the CLI and, like the CLI, writes the chat to
``$GEMINI_CLI_HOME/.gemini/tmp/<cwd base name>/chats/session-<time>-<id8>.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
import uuid


def main() -> int:
    argv = sys.argv[1:]
    prompt = sys.stdin.read()
    config = os.path.join(os.environ["GEMINI_CLI_HOME"], ".gemini")
    resume = argv[argv.index("--resume") + 1] if "--resume" in argv else None
    chats = []
    for root, _dirs, files in os.walk(os.path.join(config, "tmp")):
        for name in files:
            if name.endswith(".jsonl"):
                with open(os.path.join(root, name)) as file:
                    chats.append(
                        {
                            "path": os.path.relpath(os.path.join(root, name), config),
                            "text": file.read(),
                        }
                    )
    entries = {}
    for name in sorted(os.listdir(config)):
        path = os.path.join(config, name)
        entries[name] = os.readlink(path) if os.path.islink(path) else None
    with open(os.path.join(config, "settings.json")) as file:
        settings = json.load(file)
    context = None
    if os.path.exists(os.path.join(config, "GEMINI.md")):
        with open(os.path.join(config, "GEMINI.md")) as file:
            context = file.read()
    with open(os.environ["FAKE_GEMINI_RECORD"], "w") as file:
        json.dump(
            {
                "argv": argv,
                "prompt": prompt,
                "cwd": os.getcwd(),
                "env": {
                    k: v
                    for k, v in os.environ.items()
                    if k.startswith(("GEMINI", "CHIA_MCP", "TMPDIR", "HOME"))
                },
                "settings": settings,
                "context": context,
                "entries": entries,
                "chats": chats,
            },
            file,
        )

    session = resume or str(uuid.uuid4())
    history = ""
    for chat in chats:
        if chat["path"].endswith(f"-{session[:8]}.jsonl"):
            history = chat["text"]
    project = os.path.join(config, "tmp", os.path.basename(os.getcwd()).lower(), "chats")
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, f"session-2026-11-24T10-00-{session[:8]}.jsonl"), "w") as f:
        if not history:
            f.write(json.dumps({"sessionId": session, "kind": "main"}) + "\n")
        f.write(history + json.dumps({"type": "user", "content": prompt}) + "\n")

    def emit(record: dict) -> None:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    emit({"type": "init", "session_id": session, "model": "fake"})
    emit({"type": "message", "role": "user", "content": prompt})
    answer = f"turns so far: {history.count('user') + 1}"
    emit({"type": "message", "role": "assistant", "content": answer, "delta": True})
    emit({"type": "result", "status": "success", "stats": {"input_tokens": 3, "output_tokens": 4}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
