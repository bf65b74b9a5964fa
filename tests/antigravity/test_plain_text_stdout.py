"""``ProcessSpec(stdout_format="text")``, the plain-text stdout mode AntigravityLLM runs on:
reads arrive as TextChunks, unframed, decoded incrementally."""

from __future__ import annotations

import sys

import pytest

from chia_async.subprocess import ProcessSpec, SupervisedProcess, build_child_env
from chia_async.subprocess.framing import Diagnostic, TextChunk

# writes "é" as its two bytes in separate, flushed writes, then blank lines, CRLF, no final
# newline, invalid UTF-8, and a line that looks like JSON
CHILD = r"""
import sys, time
out = sys.stdout.buffer
for part in (b"caf\xc3", b"\xa9\n\n", b"  two\r\n", b'{"type": "result"}\n', b"\xff end"):
    out.write(part); out.flush(); time.sleep(0.05)
"""


async def test_text_mode_passes_stdout_through_unframed() -> None:
    spec = ProcessSpec(
        argv=[sys.executable, "-c", CHILD],
        env=build_child_env(),
        stdout_format="text",
        total_timeout=30,
    )
    async with SupervisedProcess(spec) as process:
        chunks = [record async for record in process.records()]
        outcome = await process.wait()
    assert outcome.exit_code == 0
    assert all(type(chunk) is TextChunk for chunk in chunks)
    assert all(isinstance(chunk, Diagnostic) for chunk in chunks)  # old consumers cope
    assert len(chunks) >= 4  # one per read, not one at the end
    assert "".join(c.text for c in chunks) == 'café\n\n  two\r\n{"type": "result"}\n\ufffd end'
    assert "caf" in chunks[0].text and "\ufffd" not in chunks[0].text  # é waited for its byte


def test_unknown_stdout_format_is_refused() -> None:
    with pytest.raises(ValueError, match="stdout_format"):
        ProcessSpec(argv=["true"], env={}, stdout_format="xml")  # type: ignore[arg-type]
