#!/usr/bin/env python3
"""A stand-in for `claude --print --output-format stream-json`, for behaviour the real CLI
will not show on demand. FAKE_CLAUDE_MODE picks it: linger, crash, big, no_result."""

import json
import os
import sys
import time

mode = os.environ.get("FAKE_CLAUDE_MODE", "linger")
prompt = sys.stdin.read()
out = sys.stdout.buffer


def emit(record: dict) -> None:
    out.write(json.dumps(record).encode() + b"\n")
    out.flush()


emit(
    {
        "type": "system",
        "subtype": "init",
        "session_id": "fake-session",
        "model": "fake",
        "cwd": os.getcwd(),
        "tools": [],
    }
)
result = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "api_error_status": None,
    "result": f"echo: {prompt}",
    "stop_reason": "end_turn",
    "session_id": "fake-session",
    "usage": {"input_tokens": 1, "output_tokens": 1},
    "total_cost_usd": 0,
}
if mode == "linger":
    emit({"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}})
    emit(result)
    time.sleep(60)  # the real CLI sometimes keeps running after its result record
elif mode == "crash":
    emit({"type": "assistant", "message": {"content": [{"type": "text", "text": "partial"}]}})
    sys.stderr.write("FATAL: something broke in the CLI\n")
    sys.stderr.flush()
    os._exit(3)
elif mode == "big":
    out.write(b"a plain-text warning line\r\n")
    out.write(b"\xff\xfe not utf-8 at all\n")
    text = "x" * (5 * 2**20)
    emit({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})
    result["result"] = text
    emit(result)
elif mode == "no_result":
    emit({"type": "assistant", "message": {"content": [{"type": "text", "text": "cut"}]}})
