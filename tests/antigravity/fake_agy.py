#!/usr/bin/env python3
"""A stand-in for Google's Antigravity CLI (``agy``) in print mode, as documented.

No public ``agy`` build can be installed here, so this script implements the behaviour the
backend relies on, from ``agy --help`` and the 1.1.x changelog as quoted in public reports:

* Go-style flags: ``--print``/``-p``/``--prompt <text>``, ``--print-timeout <duration>``,
  ``--model <id>``, ``--add-dir <dir>`` (repeatable), ``--sandbox``,
  ``--dangerously-skip-permissions``; ``--flag=value`` works too; an unknown flag prints
  ``flag provided but not defined: -x`` and the usage, exit 2.
* The prompt is the ``--print`` value; without a prompt flag and with stdin not a terminal,
  it is read from stdin (1.1.1+). ``--print ""`` fails: ``Error: empty prompt``.
* The answer is plain text on stdout, written as it is produced; no JSON.
* Failures, by ``FAKE_AGY_MODE``: the texts agy prints (see ``MODES``), some of them on
  stdout with exit code 0 (a usage limit, the sign-in prompt), as the reference notes.

Stdlib only. ``FAKE_AGY_RECORD=<file>`` writes what the CLI received (argv, prompt, cwd,
selected environment, the MCP config it would read) as JSON before anything else;
``FAKE_AGY_PIDFILE=<file>`` gets the pids of every process a mode starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

OUT = sys.stdout.buffer
ERR = sys.stderr.buffer

STRING_FLAGS = {"--print", "-p", "--prompt", "--print-timeout", "--model", "-m", "--add-dir"}
BOOL_FLAGS = {"--sandbox", "--dangerously-skip-permissions"}


def write(stream, text: str, pause: float = 0.0) -> None:
    stream.write(text.encode())
    stream.flush()
    if pause:
        time.sleep(pause)


def usage_error(message: str, code: int) -> int:
    write(ERR, f'{message}\nUsage: agy [flags] [--print "your prompt here"]\n')
    return code


def parse(argv: list[str]) -> tuple[dict[str, list[str]], bool] | int:
    flags: dict[str, list[str]] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, eq, value = arg.partition("=")
        if name in BOOL_FLAGS:
            flags.setdefault(name, []).append("true")
        elif name in STRING_FLAGS:
            if not eq:
                index += 1
                if index >= len(argv):
                    return usage_error(f"flag needs an argument: {name}", 2)
                value = argv[index]
            canonical = {"-p": "--print", "--prompt": "--print", "-m": "--model"}.get(name, name)
            flags.setdefault(canonical, []).append(value)
        else:
            return usage_error(f"flag provided but not defined: {arg}", 2)
        index += 1
    return flags, "--print" in flags


def main() -> int:
    parsed = parse(sys.argv[1:])
    if isinstance(parsed, int):
        return parsed
    flags, prompt_flag = parsed
    if prompt_flag:
        prompt = flags["--print"][-1]
        if not prompt:
            return usage_error('Error: empty prompt. Usage: agy --print "your prompt here"', 1)
    elif not sys.stdin.isatty():
        prompt = sys.stdin.read()
    else:
        return usage_error("interactive mode needs a terminal", 1)

    pidfile = os.environ.get("FAKE_AGY_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as file:
            file.write(f"{os.getpid()}\n")
    record = os.environ.get("FAKE_AGY_RECORD")
    if record:
        config = os.path.join(os.environ.get("HOME", ""), ".gemini", "config", "mcp_config.json")
        mcp = None
        if os.path.exists(config):
            with open(config) as file:
                mcp = json.load(file)
        with open(record, "w") as file:
            json.dump(
                {
                    "argv": sys.argv[1:],
                    "flags": flags,
                    "prompt": prompt,
                    "prompt_from_stdin": not prompt_flag,
                    "cwd": os.getcwd(),
                    "env": {k: v for k, v in os.environ.items() if not k.startswith("FAKE_")},
                    "mcp_config": mcp,
                },
                file,
            )

    mode = os.environ.get("FAKE_AGY_MODE", "answer")
    if mode == "answer":
        # an answer in pieces, as print mode writes it; blank lines and spacing are content
        write(OUT, "Here is the answer.\n", 0.05)
        write(OUT, "\n  indented line\n", 0.05)
        write(OUT, f"You asked {len(prompt)} characters; last line has no newline ✓")
        return 0
    if mode == "short":
        write(OUT, "pong")
        return 0
    if mode == "rate_limit":  # stdout, exit 0: the run "succeeds" with the limit as its text
        write(OUT, "You've hit your limit · resets 4pm (America/Los_Angeles)\n")
        return 0
    if mode == "auth":  # stdout, exit 0 (noted in the reference for agy 1.0.x)
        write(OUT, "Authentication required. Please visit the URL to log in:\n")
        write(OUT, "https://accounts.google.com/o/oauth2/auth?client_id=fake\n")
        return 0
    if mode == "billing":
        write(ERR, "Error: your account is out of credits. Upgrade your plan to continue.\n")
        return 1
    if mode == "invalid":
        write(ERR, f'Error: invalid model "{(flags.get("--model") or ["?"])[-1]}"\n')
        return 1
    if mode == "context":
        write(
            ERR,
            "Error: 400 INVALID_ARGUMENT: The input token count (1200000) exceeds the maximum "
            "number of tokens allowed (1048576).\n",
        )
        return 1
    if mode == "max_output":
        write(OUT, "The beginning of a long answer", 0.02)
        write(ERR, "\nError: the response exceeded the maximum output tokens and was truncated\n")
        return 1
    if mode == "server":
        write(ERR, "Error: 503 UNAVAILABLE: The model is overloaded. Please try again later.\n")
        return 1
    if mode == "crash":
        write(ERR, "panic: runtime error: invalid memory address or nil pointer dereference\n")
        return 2
    if mode == "empty":  # print mode's known non-TTY failure: exit 0, nothing written
        return 0
    if mode in ("hang", "hang_after_text", "hang_with_child"):
        if mode == "hang_after_text":
            write(OUT, "thinking about it...\n")
        if mode == "hang_with_child":
            child = subprocess.Popen(["sleep", "300"])  # inherits stdout, like a tool server
            if pidfile:
                with open(pidfile, "a") as file:
                    file.write(f"{child.pid}\n")
        while True:
            time.sleep(3600)
    return usage_error(f"fake agy: unknown FAKE_AGY_MODE {mode!r}", 3)


if __name__ == "__main__":
    sys.exit(main())
