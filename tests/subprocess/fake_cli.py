"""A fake coding-agent CLI: a real process whose misbehaviour is chosen by its arguments.

    python fake_cli.py MODE [ARGS...]

Stdlib only, so it runs under any interpreter. Every mode writes raw bytes to the real
file descriptors, flushing as it goes, so the supervisor sees what a real CLI would send.
When ``FAKE_CLI_PIDFILE`` is set, the pids of the processes a mode starts are appended to
that file (one per line) before anything else happens, for leak checks in tests that
cannot read the output (a probe that times out).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

OUT = sys.stdout.buffer
ERR = sys.stderr.buffer


def emit(obj: object) -> None:
    OUT.write(json.dumps(obj).encode() + b"\n")
    OUT.flush()


def note_pids(*pids: int) -> None:
    path = os.environ.get("FAKE_CLI_PIDFILE")
    if path:
        with open(path, "a") as file:
            file.writelines(f"{pid}\n" for pid in pids)


def hang() -> None:
    while True:
        time.sleep(3600)


def spawn_sleeper() -> subprocess.Popen[bytes]:
    # inherits stdout/stderr, like a tool server or a `cmd &` started by a CLI
    return subprocess.Popen(["sleep", "300"])


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "records"
    args = argv[1:]
    note_pids(os.getpid())

    if mode == "--version":
        OUT.write(b"fake-cli 1.2.3 (test build)\n")
    elif mode == "version-stderr":
        ERR.write(b"fake-cli version v2.0.1-beta.3\n")
    elif mode == "records":  # records N [PAD]
        count = int(args[0]) if args else 3
        pad = "x" * (int(args[1]) if len(args) > 1 else 0)
        for i in range(count):
            emit({"type": "event", "i": i, "pad": pad})
        emit({"type": "result", "count": count})
    elif mode == "slow":  # slow N DELAY: records spread over time
        count, delay = int(args[0]), float(args[1])
        for i in range(count):
            emit({"type": "event", "i": i})
            time.sleep(delay)
        emit({"type": "result"})
    elif mode == "big":  # big SIZE: a record, a line of SIZE bytes (in 1 MiB pieces), a record
        size = int(args[0])
        emit({"type": "before"})
        head, tail = b'{"type": "big", "data": "', b'"}\n'
        OUT.write(head)
        remaining = size - len(head) - len(tail) + 1  # the newline is not part of the line
        piece = b"y" * (1 << 20)
        while remaining > 0:
            OUT.write(piece[: min(remaining, len(piece))])
            remaining -= len(piece)
        OUT.write(tail)
        emit({"type": "after"})
    elif mode == "noise":
        OUT.write(b"Starting fake-cli...\n")
        emit({"type": "event", "i": 0})
        OUT.write(b"[1, 2, 3]\n")
        OUT.write(b"\n")
        OUT.write(b"warning: \xff not utf-8 \n")
        emit({"type": "event", "i": 1})
        OUT.write(b"{truncated json\n")
        emit({"type": "result"})
    elif mode == "invalid-utf8":
        OUT.write(b'{"type": "text", "text": "caf\xc3\xa9 \xff\xfe ok"}\n')
        emit({"type": "result"})
    elif mode == "crlf-bom":
        OUT.write(b'\xef\xbb\xbf{"i": 0}\r\n{"i": 1}\r\n\r\n{"i": "\xc3\xa9"}\r\n')
    elif mode == "partial":  # the last line has no newline
        emit({"type": "event"})
        OUT.write(b'{"type": "last"}')
    elif mode == "stderr-flood":  # stderr-flood BYTES: stderr first, then stdout
        size = int(args[0])
        line = b"E" * 1023 + b"\n"
        for _ in range(size // len(line)):
            ERR.write(line)
        ERR.write(b"the last stderr line\n")
        ERR.flush()
        emit({"type": "result"})
    elif mode == "crash":  # crash N CODE
        for i in range(int(args[0])):
            emit({"type": "event", "i": i})
        ERR.write(b"fatal: something broke (key sk-ant-api03-abcdefghijklmnop)\n")
        return int(args[1])
    elif mode == "hang":
        hang()
    elif mode == "stderr-then-hang":
        ERR.write(b"API Error: 429 rate limited, retrying\n")
        ERR.flush()
        hang()
    elif mode == "linger":  # the terminal record, then the process does not exit
        emit({"type": "result"})
        time.sleep(60)
    elif mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        emit({"type": "ready", "pid": os.getpid()})
        if args and args[0] == "linger":
            emit({"type": "result"})
        hang()
    elif mode == "grandchild":  # a sleeper in our group, then hang
        child = spawn_sleeper()
        note_pids(child.pid)
        emit({"type": "spawned", "pid": child.pid})
        hang()
    elif mode == "orphan":  # a sleeper holding our pipes, then exit at once
        child = spawn_sleeper()
        note_pids(child.pid)
        emit({"type": "spawned", "pid": child.pid})
        emit({"type": "result"})
    elif mode == "echo-stdin":
        data = sys.stdin.buffer.read()
        emit(
            {
                "type": "stdin",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "head": data[:64].decode("utf-8", "replace"),
            }
        )
    elif mode == "close-stdin":  # exit without reading stdin
        os.close(0)
        emit({"type": "result"})
    elif mode == "env":
        emit({"type": "env", "env": dict(os.environ)})
    else:
        ERR.write(f"unknown mode {mode!r}\n".encode())
        return 2
    OUT.flush()
    ERR.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
