"""The sync facade: prompt() and stream_sync() on the one background loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from chia_async import errors, sync
from chia_async.events import Completed, TextDelta
from chia_async.testing import Delay, Hang, ScriptedLLM


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_prompt_from_a_plain_script() -> None:
    proc = run_python(
        """
        from chia_async.testing import ScriptedLLM
        result = ScriptedLLM([["hello ", "world"]]).prompt("hi")
        print(result.result, result.success)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello world True"


async def test_prompt_from_inside_a_running_event_loop() -> None:
    # a legacy sync call made from async code (Jupyter, a FastAPI handler): no
    # "asyncio.run() cannot be called from a running event loop"
    result = ScriptedLLM(["inside"]).prompt("hi")
    assert result.result == "inside" and result.success


def test_prompt_from_16_threads_at_once() -> None:
    llm = ScriptedLLM([[Delay(0.3), "ok"]], repeat=True)
    results: list[str] = []
    failures: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results.append(llm.prompt(f"call {i}").result)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    assert not failures
    assert results == ["ok"] * 16
    assert elapsed < 0.3 * 16 / 2  # they overlapped on the one loop
    assert len(llm.calls) == 16


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_prompt_after_fork_in_the_child() -> None:
    proc = run_python(
        """
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        from chia_async.testing import ScriptedLLM
        print("parent", ScriptedLLM(["before"]).prompt("hi").result, flush=True)
        pid = os.fork()
        if pid == 0:
            try:
                result = ScriptedLLM(["in child"]).prompt("hi")
                print("child", result.result, flush=True)
                os._exit(0)
            except BaseException as exc:
                print("child failed", repr(exc), flush=True)
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status))
        print("parent", ScriptedLLM(["after"]).prompt("hi").result)
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == [
        "parent before",
        "child in child",
        "child status 0",
        "parent after",
    ]


def test_timeout_cancels_the_underlying_task() -> None:
    llm = ScriptedLLM([["started", Hang()]], timeout_seconds=0.3)
    started = time.monotonic()
    result = llm.prompt("hi")
    assert time.monotonic() - started < 3
    assert result.success is False
    assert isinstance(result.error, errors.TimeoutError)
    assert llm.cancelled == 1 and llm.active == 0


def test_sync_run_wait_timeout_cancels_the_task() -> None:
    llm = ScriptedLLM([Hang()])

    async def hang_forever() -> None:
        await llm.aprompt("hi")

    with pytest.raises(TimeoutError):
        sync.run(hang_forever(), timeout=0.2)
    assert llm.cancelled == 1 and llm.active == 0


def test_keyboard_interrupt_cancels_the_underlying_task(tmp_path: Path) -> None:
    marker = tmp_path / "cleanup-ran"
    code = f"""
        import sys
        from chia_async.testing import ScriptedLLM, Hang

        class Marked(ScriptedLLM):
            async def _run(self, attempt):
                try:
                    return await super()._run(attempt)
                finally:
                    open({str(marker)!r}, "w").write("cancelled" if self.cancelled else "?")

        llm = Marked([["x", Hang()]])
        print("calling", flush=True)
        try:
            llm.prompt("hi")
        except KeyboardInterrupt:
            print("interrupted", llm.active, llm.cancelled, flush=True)
            sys.exit(3)
        """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "calling"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert out.strip() == "interrupted 0 1"
    assert marker.read_text() == "cancelled"


def test_stream_sync_yields_the_same_events_as_stream() -> None:
    events = list(ScriptedLLM([["a", "b"]]).stream_sync("hi"))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["a", "b"]
    assert isinstance(events[-1], Completed) and events[-1].result.result == "ab"


def test_stream_sync_raises_the_typed_error_after_the_events() -> None:
    boom = errors.AuthenticationError("n", "bad key")
    seen = []
    with pytest.raises(errors.AuthenticationError):
        for event in ScriptedLLM([["partial", boom]]).stream_sync("hi"):
            seen.append(event)
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["partial"]


def test_stream_sync_break_closes_the_call() -> None:
    llm = ScriptedLLM([["a", "b", Hang()]])
    iterator = llm.stream_sync("hi")
    for event in iterator:
        if isinstance(event, TextDelta):
            break
    iterator.close()  # type: ignore[attr-defined]
    assert llm.active == 0 and llm.cancelled == 1


def test_stream_sync_is_paced_by_the_consumer() -> None:
    llm = ScriptedLLM([["a", "b", "c"]])
    with sync.SyncIterator(lambda: llm.stream("hi")) as iterator:
        first = next(iterator)
        time.sleep(0.1)
        assert isinstance(first, TextDelta)
        assert llm.finished == 0  # nothing was read ahead
        rest = list(iterator)
    assert isinstance(rest[-1], Completed)


async def test_calling_sync_api_from_the_background_loop_is_a_clear_error() -> None:
    import asyncio

    async def inner() -> str:
        try:
            ScriptedLLM(["x"]).prompt("hi")
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    future = asyncio.run_coroutine_threadsafe(inner(), sync.background_loop())
    message = await asyncio.wrap_future(future)
    assert "await the async API" in message


def test_parity_between_sync_and_async() -> None:
    """The same script gives the same outcome through prompt() and aprompt()."""
    import asyncio

    script = [errors.ServerError("n", "x"), ["a", "b"]]

    def fresh() -> ScriptedLLM:
        llm = ScriptedLLM(list(script))
        llm.retry_policy = llm.retry_policy.__class__(initial_backoff=0.0)
        return llm

    sync_result = fresh().prompt("hi")
    async_result = asyncio.run(fresh().aprompt("hi"))
    assert sync_result.result == async_result.result == "ab"
    assert sync_result.success == async_result.success
    assert sync_result.events == async_result.events
