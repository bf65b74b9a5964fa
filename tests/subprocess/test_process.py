"""SupervisedProcess against a real misbehaving CLI: every exit path leaves nothing behind.

Each test runs under ``no_leaks`` (no registered process group, no open descriptor left)
and checks the process group itself with ``assert_group_gone``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import textwrap
import time

import anyio
import pytest

from chia_async import errors
from chia_async.subprocess import (
    Diagnostic,
    ProcessSpec,
    SupervisedProcess,
    build_child_env,
    live_process_groups,
)

from .conftest import FAKE_CLI, assert_group_gone, fake_spec, process_state

pytestmark = pytest.mark.usefixtures("no_leaks")

MiB = 2**20


async def run(spec: ProcessSpec) -> tuple[list[object], SupervisedProcess]:
    async with SupervisedProcess(spec, node_id="fake") as process:
        records = [record async for record in process.records()]
        await process.wait()
    await assert_group_gone(process.pgid)
    return records, process


# -- output -----------------------------------------------------------------------------------


async def test_records_arrive_in_order_and_the_outcome_is_clean() -> None:
    records, process = await run(fake_spec("records", "500", "100"))
    assert [r["i"] for r in records[:-1]] == list(range(500))  # type: ignore[index]
    assert records[-1] == {"type": "result", "count": 500}
    outcome = process.outcome
    assert outcome is not None
    assert outcome.exit_code == 0
    assert outcome.signal is None
    assert outcome.success
    assert not (outcome.killed or outcome.timed_out or outcome.stalled)
    assert outcome.pid == process.pid == process.pgid


async def test_noise_lines_become_diagnostics() -> None:
    records, _ = await run(fake_spec("noise"))
    assert records == [
        Diagnostic("Starting fake-cli..."),
        {"type": "event", "i": 0},
        Diagnostic("[1, 2, 3]"),
        Diagnostic("warning: \ufffd not utf-8 "),
        {"type": "event", "i": 1},
        Diagnostic("{truncated json"),
        {"type": "result"},
    ]


async def test_invalid_utf8_inside_a_json_string() -> None:
    records, _ = await run(fake_spec("invalid-utf8"))
    assert records[0] == {"type": "text", "text": "caf\u00e9 \ufffd\ufffd ok"}


async def test_crlf_line_endings_and_a_leading_bom() -> None:
    records, _ = await run(fake_spec("crlf-bom"))
    assert records == [{"i": 0}, {"i": 1}, {"i": "\u00e9"}]


async def test_an_unterminated_last_line_is_delivered() -> None:
    records, _ = await run(fake_spec("partial"))
    assert records == [{"type": "event"}, {"type": "last"}]


async def test_stderr_flood_before_stdout_does_not_deadlock() -> None:
    spec = fake_spec("stderr-flood", str(2 * MiB), stderr_tail=8192, total_timeout=20)
    records, process = await run(spec)
    assert records == [{"type": "result"}]
    outcome = process.outcome
    assert outcome is not None
    assert outcome.stderr_bytes > 2 * MiB - 2048
    assert outcome.stderr_tail.endswith("the last stderr line\n")
    assert len(outcome.stderr_tail) <= 8192


async def test_crash_mid_stream_reports_exit_code_and_redacted_stderr() -> None:
    records, process = await run(fake_spec("crash", "2", "3"))
    assert records == [{"type": "event", "i": 0}, {"type": "event", "i": 1}]
    outcome = process.outcome
    assert outcome is not None
    assert outcome.exit_code == 3
    assert not outcome.success
    assert "fatal: something broke" in outcome.stderr_tail
    assert "sk-ant-api03" not in outcome.stderr_tail


async def test_wait_without_reading_records_drains_them() -> None:
    # ~1 MB of output that nobody iterates: the child must not block on a full pipe
    spec = fake_spec("records", "5000", "200", total_timeout=20)
    async with SupervisedProcess(spec) as process:
        outcome = await process.wait()
    assert outcome.exit_code == 0
    await assert_group_gone(process.pgid)


async def test_a_line_over_the_cap_is_a_typed_error() -> None:
    spec = fake_spec("records", "3", "5000", line_limit=1000)
    records: list[object] = []
    with pytest.raises(errors.OutputLineTooLongError) as info:
        async with SupervisedProcess(spec, node_id="fake") as process:
            async for record in process.records():
                records.append(record)
    assert records == []
    assert info.value.node_id == "fake"
    assert not info.value.retryable
    await assert_group_gone(process.pgid)


@pytest.mark.slow
async def test_a_100_mb_line_over_the_default_cap_fails_without_holding_it() -> None:
    spec = fake_spec("big", str(100 * MiB))
    assert spec.line_limit == 64 * MiB
    records: list[object] = []
    with pytest.raises(errors.OutputLineTooLongError):
        async with SupervisedProcess(spec) as process:
            async for record in process.records():
                records.append(record)
    assert records == [{"type": "before"}]  # what came before the long line, then the error
    await assert_group_gone(process.pgid)


@pytest.mark.slow
async def test_a_100_mb_line_under_a_raised_cap_is_read_whole() -> None:
    size = 100 * MiB
    spec = fake_spec("big", str(size), line_limit=128 * MiB)
    sizes = []
    async with SupervisedProcess(spec) as process:
        async for record in process.records():
            assert isinstance(record, dict)
            sizes.append((record["type"], len(record.get("data", ""))))
            del record  # keep one 100 MB string alive at a time
        outcome = await process.wait()
    assert sizes == [
        ("before", 0),
        ("big", size - len('{"type": "big", "data": ""}')),
        ("after", 0),
    ]
    assert outcome.exit_code == 0
    await assert_group_gone(process.pgid)


# -- stdin ------------------------------------------------------------------------------------


async def test_stdin_is_written_then_closed() -> None:
    payload = os.urandom(3 * MiB)  # bigger than any pipe buffer
    records, _ = await run(fake_spec("echo-stdin", stdin=payload))
    assert records == [
        {
            "type": "stdin",
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "head": payload[:64].decode("utf-8", "replace"),
        }
    ]


async def test_without_stdin_the_child_sees_eof_at_once() -> None:
    started = time.monotonic()
    records, _ = await run(fake_spec("echo-stdin", total_timeout=10))
    assert records[0]["bytes"] == 0  # type: ignore[index]
    assert time.monotonic() - started < 5


async def test_a_child_that_never_reads_stdin_is_not_an_error() -> None:
    records, process = await run(fake_spec("close-stdin", stdin=b"x" * (2 * MiB)))
    assert records == [{"type": "result"}]
    assert process.outcome is not None
    assert process.outcome.exit_code == 0


# -- deadlines --------------------------------------------------------------------------------


async def test_idle_deadline_raises_stall_error_with_the_stderr_tail() -> None:
    started = time.monotonic()
    with pytest.raises(errors.StallError) as info:
        async with SupervisedProcess(fake_spec("stderr-then-hang", idle_timeout=0.5)) as process:
            async for _ in process.records():
                pass
    assert 0.5 <= time.monotonic() - started < 3
    assert isinstance(info.value, errors.TimeoutError)
    assert "429 rate limited" in str(info.value)
    outcome = process.outcome
    assert outcome is not None
    assert outcome.stalled
    assert outcome.killed
    await assert_group_gone(process.pgid)


async def test_idle_timer_does_not_count_a_slow_consumer() -> None:
    # ~5 MB, more than every buffer on the way holds: while the consumer dawdles far past
    # the idle deadline, the reader waits on the consumer and the child on its full pipe
    spec = fake_spec("records", "20000", "200", idle_timeout=0.5)
    count = 0
    async with SupervisedProcess(spec) as process:
        async for _ in process.records():
            count += 1
            if count == 1000:
                await anyio.sleep(1.2)
                # still mid-output (blocked on its pipe), so more reads were pending
                assert process_state(process.pid) == "S"
        outcome = await process.wait()
    assert count == 20001
    assert not outcome.stalled
    await assert_group_gone(process.pgid)


async def test_total_deadline_raises_timeout_error() -> None:
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError) as info:
        async with SupervisedProcess(fake_spec("hang", total_timeout=0.5)) as process:
            await process.wait()
    assert 0.5 <= time.monotonic() - started < 3
    assert not isinstance(info.value, errors.StallError)
    assert isinstance(info.value, TimeoutError)  # also the builtin
    assert process.outcome is not None
    assert process.outcome.timed_out
    await assert_group_gone(process.pgid)


async def test_total_deadline_bounds_a_consumer_blocked_elsewhere() -> None:
    with pytest.raises(errors.TimeoutError):
        async with SupervisedProcess(fake_spec("hang", total_timeout=0.3)) as process:
            await anyio.sleep(30)
    await assert_group_gone(process.pgid)


async def test_the_callers_own_deadline_bounds_the_run() -> None:
    with anyio.move_on_after(0.3) as scope:
        async with SupervisedProcess(fake_spec("hang", total_timeout=None)) as process:
            await process.wait()
    assert scope.cancelled_caught
    await assert_group_gone(process.pgid)


async def test_lingering_after_the_terminal_record_is_killed_not_an_error() -> None:
    started = time.monotonic()
    async with SupervisedProcess(fake_spec("linger", linger_grace=0.3)) as process:
        async for record in process.records():
            if isinstance(record, dict) and record["type"] == "result":
                process.mark_terminal()
        outcome = await process.wait()
    assert time.monotonic() - started < 5  # the child meant to sleep 60 s
    assert outcome.killed_after_terminal
    assert outcome.signal == signal.SIGTERM
    await assert_group_gone(process.pgid)


async def test_a_silent_linger_is_not_a_stall() -> None:
    # the idle deadline is shorter than the linger grace: after the terminal record, the
    # silence is the linger timer's to end, and it is not an error
    spec = fake_spec("linger", idle_timeout=0.2, linger_grace=0.6)
    async with SupervisedProcess(spec) as process:
        async for record in process.records():
            if isinstance(record, dict) and record["type"] == "result":
                process.mark_terminal()
        outcome = await process.wait()
    assert outcome.killed_after_terminal
    assert not outcome.stalled
    await assert_group_gone(process.pgid)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace() -> None:
    spec = fake_spec("ignore-term", "linger", linger_grace=0.1, terminate_grace=0.4)
    async with SupervisedProcess(spec) as process:
        async for record in process.records():
            if isinstance(record, dict) and record["type"] == "result":
                process.mark_terminal()
        outcome = await process.wait()
    assert outcome.killed_after_terminal
    assert outcome.signal == signal.SIGKILL
    assert outcome.exit_code == -signal.SIGKILL
    await assert_group_gone(process.pgid)


# -- every exit path tears the group down -----------------------------------------------------


async def test_breaking_out_of_records_early() -> None:
    spec = fake_spec("slow", "1000", "0.01")
    started = time.monotonic()
    async with SupervisedProcess(spec) as process:
        async for _ in process.records():
            break
    assert time.monotonic() - started < 3
    assert process.outcome is not None
    assert process.outcome.killed
    await assert_group_gone(process.pgid)


async def test_an_exception_in_the_block_propagates_unchanged() -> None:
    with pytest.raises(ValueError, match="consumer bug"):
        async with SupervisedProcess(fake_spec("slow", "1000", "0.01")) as process:
            async for _ in process.records():
                raise ValueError("consumer bug")
    await assert_group_gone(process.pgid)


async def test_cancelling_the_consuming_task_mid_run() -> None:
    seen: list[object] = []
    pgids: list[int] = []

    async def consume() -> None:
        async with SupervisedProcess(fake_spec("slow", "1000", "0.01")) as process:
            pgids.append(process.pgid)
            async for record in process.records():
                seen.append(record)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        while len(seen) < 3:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert time.monotonic() - started < 5
    await assert_group_gone(pgids[0])


async def test_teardown_is_shielded_and_bounded_for_a_child_ignoring_sigterm() -> None:
    spec = fake_spec("ignore-term", terminate_grace=0.5)
    started = time.monotonic()
    with anyio.CancelScope() as outer:
        async with SupervisedProcess(spec) as process:
            async for _ in process.records():
                outer.cancel()  # the caller gives up; teardown must still finish
                await anyio.sleep(10)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    outcome = process.outcome
    assert outcome is not None
    assert outcome.signal == signal.SIGKILL
    await assert_group_gone(process.pgid)


async def test_grandchildren_in_the_group_die_too() -> None:
    async with SupervisedProcess(fake_spec("grandchild")) as process:
        async for record in process.records():
            assert isinstance(record, dict)
            grandchild = record["pid"]
            break
    await assert_group_gone(process.pgid, grandchild)


async def test_descendants_holding_the_pipes_after_the_leader_exits() -> None:
    # the leader exits at once; a sleeper it left behind keeps stdout open for 300 s
    started = time.monotonic()
    async with SupervisedProcess(fake_spec("orphan", linger_grace=0.3)) as process:
        records = [record async for record in process.records()]
        outcome = await process.wait()
    assert time.monotonic() - started < 5
    assert records[-1] == {"type": "result"}
    assert outcome.exit_code == 0
    assert not outcome.killed
    grandchild = records[0]["pid"]  # type: ignore[index]
    await assert_group_gone(process.pgid, grandchild)


# -- spawning ---------------------------------------------------------------------------------


async def test_a_missing_executable_is_cli_not_found() -> None:
    spec = ProcessSpec(argv=["/nonexistent/claude", "-p"], env=build_child_env())
    with pytest.raises(errors.CLINotFoundError) as info:
        async with SupervisedProcess(spec, node_id="n"):
            pass
    assert "/nonexistent/claude" in str(info.value)
    assert live_process_groups() == frozenset()


async def test_a_missing_working_directory_is_a_process_error() -> None:
    spec = fake_spec("records", cwd="/nonexistent-dir")
    with pytest.raises(errors.ProcessError) as info:
        async with SupervisedProcess(spec):
            pass
    assert not isinstance(info.value, errors.CLINotFoundError)


async def test_a_process_runs_once() -> None:
    process = SupervisedProcess(fake_spec("records", "1"))
    with pytest.raises(RuntimeError):
        process.records()
    async with process:
        await process.wait()
    with pytest.raises(RuntimeError):
        async with process:
            pass


def test_spec_validation() -> None:
    env = build_child_env()
    with pytest.raises(TypeError):
        ProcessSpec(argv="claude -p", env=env)
    with pytest.raises(TypeError):
        ProcessSpec(argv=[], env=env)
    with pytest.raises(TypeError):
        ProcessSpec(argv=["x"], env=env, stdin="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ProcessSpec(argv=["x"], env=env, idle_timeout=0)
    with pytest.raises(ValueError):
        ProcessSpec(argv=["x"], env=env, terminate_grace=-1)
    spec = ProcessSpec(argv=["x", "y"], env={"A": "1"})
    assert spec.argv == ("x", "y")
    with pytest.raises(TypeError):
        spec.env["B"] = "2"  # type: ignore[index]


# -- the exit hook ----------------------------------------------------------------------------

_EXITS_MID_CALL = textwrap.dedent(
    """
    import sys, threading
    import anyio
    from chia_async.subprocess import ProcessSpec, SupervisedProcess, build_child_env

    started = threading.Event()

    async def call():
        spec = ProcessSpec(argv=[sys.executable, {fake!r}, "grandchild"], env=build_child_env())
        async with SupervisedProcess(spec) as process:
            async for record in process.records():
                print(process.pgid, record["pid"], flush=True)
                started.set()
                await anyio.sleep(3600)

    # a call running on a daemon thread's loop, as behind the sync facade
    threading.Thread(target=anyio.run, args=(call,), daemon=True).start()
    started.wait(30)
    # returning here ends the interpreter with the call still running
    """
)


async def test_the_exit_hook_kills_groups_of_calls_still_running() -> None:
    script = _EXITS_MID_CALL.format(fake=str(FAKE_CLI))
    result = await anyio.run_process([sys.executable, "-c", script], check=True)
    pgid, grandchild = map(int, result.stdout.split())
    await assert_group_gone(pgid, grandchild)
