"""Supervised CLI processes: spawn, stream JSONL records, tear down, leave nothing behind.

::

    spec = ProcessSpec(argv=[cli, "--print"], env=build_child_env(), stdin=prompt,
                       total_timeout=600, idle_timeout=300)
    async with SupervisedProcess(spec, node_id="claude") as process:
        async for record in process.records():     # dict | Diagnostic, in order
            handle(record)
            if is_result(record):
                process.mark_terminal()            # a lingering CLI is stopped after a grace
        outcome = await process.wait()             # exit code, signal, stderr tail

What the supervisor guarantees, whatever the child does:

* **Its own process group.** The child starts in a new session (``setsid``), so it and
  everything it spawns share one process group that is signalled as a whole; without a
  controlling terminal it also cannot stop to prompt on ``/dev/tty``.
* **No deadlock on pipes.** stdout, stderr and stdin are served by separate tasks: a child
  that writes megabytes to stderr before any stdout, or that reads its stdin only after
  writing, makes progress. stdin is ``/dev/null`` unless :attr:`ProcessSpec.stdin` is given;
  then it is written and closed, so no CLI ever waits on an open stdin.
* **No line limit but the one you set.** stdout is read in 256 KiB chunks into a
  :class:`~chia_async.subprocess.framing.JsonlFramer` (never ``readline``, whose 64 KiB
  limit is the classic failure); stderr keeps only its last :attr:`ProcessSpec.stderr_tail`
  bytes. A CLI that prints plain text instead (``stdout_format="text"``) gets no framing:
  each read becomes a :class:`~chia_async.subprocess.framing.TextChunk`, decoded
  incrementally.
* **Deadlines.** ``total_timeout`` bounds the whole ``async with`` block
  (:class:`~chia_async.errors.TimeoutError`); ``idle_timeout`` bounds each wait for stdout
  (:class:`~chia_async.errors.StallError`); after :meth:`SupervisedProcess.mark_terminal`,
  a process still running after ``linger_grace`` is stopped, which is not an error.
* **Teardown on every exit path** — normal end, exception, cancellation, ``break`` — in
  :meth:`SupervisedProcess.__aexit__`: SIGTERM to the group, up to ``terminate_grace`` for
  it to go, SIGKILL, reap. It runs shielded from cancellation and is bounded:
  ``terminate_grace + KILL_WAIT (5 s) + 1 s`` at most — ``KILL_WAIT`` covers a process stuck
  in the kernel after SIGKILL (one that outlives even that is logged and left to the exit
  hook), the second lets the pipes drain what the group wrote before it died.
* **An exit hook.** Every live group is in a module registry; if the interpreter exits
  while a call runs (a daemon thread's loop, ``sys.exit`` from another thread), an
  ``atexit`` hook SIGKILLs whatever is still registered.

POSIX only: process groups and signals are what make the guarantees possible.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import logging
import math
import os
import signal
import subprocess
import threading
import types
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Self

import anyio
import anyio.lowlevel
from anyio.abc import Process, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from chia_async.errors import (
    CLINotFoundError,
    OutputLineTooLongError,
    ProcessError,
    StallError,
)
from chia_async.errors import TimeoutError as CallTimeoutError
from chia_async.redaction import redact
from chia_async.subprocess.framing import (
    DEFAULT_LINE_LIMIT,
    JsonlFramer,
    Record,
    TextChunk,
    decode_line,
    parse_records,
)

__all__ = [
    "ProcessOutcome",
    "ProcessSpec",
    "RecordStream",
    "SupervisedProcess",
    "live_process_groups",
]

logger = logging.getLogger("chia_async.subprocess")

#: bytes asked for per read of stdout/stderr
CHUNK_SIZE = 256 * 1024
#: after SIGKILL, how long to wait for the kernel to finish the group off
KILL_WAIT = 5.0
#: after the group is gone, how long the drains may take to read what it left in the pipes
_DRAIN_GRACE = 1.0
#: parsed batches buffered between the stdout reader and the consumer (one batch per chunk)
_BATCH_BUFFER = 4


# -- the exit hook ---------------------------------------------------------------------------


class _GroupRegistry:
    """Process groups started by this process and not yet known to be gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._hooked = False

    def add(self, pgid: int) -> None:
        with self._lock:
            if not self._hooked:
                atexit.register(self.kill_all)
                self._hooked = True
            self._groups.add(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)

    def snapshot(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._groups)

    def kill_all(self) -> None:
        """SIGKILL every registered group (the ``atexit`` hook). Never raises."""
        with self._lock:
            groups, self._groups = self._groups, set()
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)

    def forget_after_fork(self) -> None:
        # A forked child must not kill its parent's CLIs when it exits.
        self._lock = threading.Lock()
        self._groups = set()


_registry = _GroupRegistry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_registry.forget_after_fork)


def live_process_groups() -> frozenset[int]:
    """Process group ids of supervised processes that have not been torn down yet.

    Empty whenever no :class:`SupervisedProcess` is open; a diagnostic for leak checks.
    """
    return _registry.snapshot()


def _group_running(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Every member left changed its credentials (setuid): we cannot signal it anyway.
        return False
    # The group exists, but possibly only as zombies: descendants whose parent died with
    # them are reparented to init and wait for it to reap them, which is not ours to do
    # and may take a while. Only a running member counts.
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no procfs: trust killpg
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- spec and outcome ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessSpec:
    """What to run and under which limits.

    ``env`` is the child's whole environment (build it with
    :func:`~chia_async.subprocess.environment.build_child_env`); nothing is inherited.
    ``stdin`` is written by its own task and then closed; ``None`` gives ``/dev/null``.
    Times are in seconds; ``None`` disables a deadline.
    """

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None = None
    stdin: bytes | None = None
    #: cap on one stdout line, in bytes; a longer line fails the run
    line_limit: int = DEFAULT_LINE_LIMIT
    #: ``"jsonl"``: stdout is cut into lines, each a JSON record or a Diagnostic;
    #: ``"text"``: stdout is plain text, passed on as it arrives, one TextChunk per read
    #: (no line framing, so no line limit)
    stdout_format: Literal["jsonl", "text"] = "jsonl"
    #: how many bytes of stderr to keep: the last ones
    stderr_tail: int = 64 * 1024
    #: bound on the whole ``async with`` block
    total_timeout: float | None = None
    #: longest wait for stdout bytes — any bytes, not whole lines: a huge line arriving
    #: slowly is progress. The timer runs only while the reader waits on the child, never
    #: while a slow consumer holds it up, and stops after ``mark_terminal()``.
    idle_timeout: float | None = None
    #: SIGTERM -> this long -> SIGKILL
    terminate_grace: float = 5.0
    #: how long the process may run on after ``mark_terminal()``, or its output pipes stay
    #: open after it exited (held by leftover descendants), before the group is stopped
    linger_grace: float = 2.0

    def __post_init__(self) -> None:
        argv = tuple(self.argv) if not isinstance(self.argv, str) else None
        if not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a non-empty sequence of str")
        object.__setattr__(self, "argv", argv)
        if not isinstance(self.env, Mapping):
            raise TypeError("env must be a mapping of str to str")
        object.__setattr__(self, "env", types.MappingProxyType(dict(self.env)))
        if self.stdin is not None and not isinstance(self.stdin, bytes):
            raise TypeError("stdin must be bytes or None")
        if isinstance(self.line_limit, bool) or self.line_limit < 1:
            raise ValueError("line_limit must be a positive int")
        if self.stdout_format not in ("jsonl", "text"):
            raise ValueError(f"stdout_format must be 'jsonl' or 'text', got {self.stdout_format!r}")
        if self.stderr_tail < 0:
            raise ValueError("stderr_tail must be >= 0")
        for name in ("total_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        for name in ("terminate_grace", "linger_grace"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessOutcome:
    """How a supervised process ended."""

    pid: int
    #: the return code as :mod:`subprocess` reports it: the exit status, or ``-N`` when
    #: signal ``N`` ended the process; ``None`` only if it could not be reaped at all
    exit_code: int | None
    #: the signal that ended the process, if one did
    signal: int | None
    #: the last ``stderr_tail`` bytes of stderr, decoded and redacted
    stderr_tail: str
    #: stderr bytes received in total (more than the tail when it was cut)
    stderr_bytes: int = 0
    #: seconds from spawn to exit (to teardown, if it never exited)
    duration: float = 0.0
    #: the supervisor signalled the process while it was running (any reason)
    killed: bool = False
    #: ...because it was still running ``linger_grace`` after ``mark_terminal()``
    killed_after_terminal: bool = False
    #: the total deadline passed
    timed_out: bool = False
    #: the idle deadline passed
    stalled: bool = False

    @property
    def success(self) -> bool:
        """Exited by itself with status 0."""
        return self.exit_code == 0 and not self.killed


# -- records ---------------------------------------------------------------------------------


class RecordStream(AsyncIterator[Record]):
    """The stdout records of one process, in order: JSON objects and
    :class:`~chia_async.subprocess.framing.Diagnostic` lines (in text mode:
    :class:`~chia_async.subprocess.framing.TextChunk` reads).

    Ends when stdout ends. If the output failed — a line over the cap
    (:class:`~chia_async.errors.OutputLineTooLongError`), the idle deadline
    (:class:`~chia_async.errors.StallError`) — that error is raised after the records that
    came before it. One consumer at a time.
    """

    __slots__ = ("_batch", "_index", "_owner", "_receive")

    def __init__(
        self, receive: MemoryObjectReceiveStream[list[Record]], owner: SupervisedProcess
    ) -> None:
        self._receive = receive
        self._owner = owner
        self._batch: list[Record] = []
        self._index = 0

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Record:
        if self._index < len(self._batch):
            record = self._batch[self._index]
            self._index += 1
            return record
        while True:
            try:
                batch = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                failure = self._owner._failure
                if failure is not None:
                    raise failure from None
                raise StopAsyncIteration from None
            if batch:
                self._batch = batch
                self._index = 1
                return batch[0]


# -- the supervisor --------------------------------------------------------------------------


class SupervisedProcess:
    """One run of a CLI as an async context manager (see the module docstring).

    ``__aenter__`` spawns the process and its helper tasks; the block consumes
    :meth:`records` and usually ends with :meth:`wait`; ``__aexit__`` tears the process
    group down, whatever happened. Runs once. After the block, :attr:`outcome` tells how the
    process ended, also when the block raised (a stall, a timeout).
    """

    def __init__(self, spec: ProcessSpec, *, node_id: str = "") -> None:
        self.spec = spec
        self.node_id = node_id
        self._process: Process | None = None
        self._pgid: int | None = None
        self._tg: TaskGroup | None = None
        self._deadline_scope: anyio.CancelScope | None = None
        self._send: MemoryObjectSendStream[list[Record]] | None = None
        self._records: RecordStream | None = None
        self._failure: StallError | OutputLineTooLongError | None = None
        self._outcome: ProcessOutcome | None = None
        self._entered = False
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._stderr = bytearray()
        self._stderr_total = 0
        self._killed = False
        self._killed_after_terminal = False
        self._timed_out = False
        self._stalled = False

    # -- public ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self._running().pid

    @property
    def pgid(self) -> int:
        """The process group of the child and everything it spawned."""
        self._running()
        assert self._pgid is not None
        return self._pgid

    @property
    def outcome(self) -> ProcessOutcome | None:
        """How the process ended; set by :meth:`wait` and by the end of the block."""
        return self._outcome

    def records(self) -> RecordStream:
        """The stdout records, as they arrive (see :class:`RecordStream`)."""
        self._running()
        assert self._records is not None
        return self._records

    def mark_terminal(self) -> None:
        """Say the CLI has printed its last word (its result record).

        A CLI often lingers after that (flushing telemetry, waiting on a child). If the
        process is still running ``linger_grace`` seconds later, its group is stopped
        (TERM, grace, KILL); the outcome then has ``killed_after_terminal=True``, which is
        not a failure. Calling it again does nothing.
        """
        self._running()
        self._terminal.set()

    async def wait(self) -> ProcessOutcome:
        """Wait until the process has exited and its output has ended; return the outcome.

        Records not taken from :meth:`records` yet are read and dropped (a process must
        never block on a full pipe nobody reads). Raises the output's failure
        (:class:`~chia_async.errors.StallError`,
        :class:`~chia_async.errors.OutputLineTooLongError`) if it ended with one. Bounded
        by the block's deadlines, not by its own.
        """
        process = self._running()
        assert self._records is not None
        async for _ in self._records:
            pass
        await process.wait()
        await self._stderr_done.wait()
        self._outcome = self._build_outcome()
        return self._outcome

    # -- context manager -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a SupervisedProcess runs once; create a new one")
        self._entered = True
        spec = self.spec
        # created here, not in __init__: anyio primitives need the running event loop
        self._stdout_done = anyio.Event()
        self._stderr_done = anyio.Event()
        self._terminal = anyio.Event()
        self._teardown_lock = anyio.Lock()
        self._started_at = anyio.current_time()
        process = await self._spawn()
        self._process = process
        self._pgid = process.pid  # setsid made the child the leader of a new group
        _registry.add(process.pid)
        logger.debug("%s: started %s (pid %d)", self.node_id, spec.argv[0], process.pid)
        send, receive = anyio.create_memory_object_stream[list[Record]](_BATCH_BUFFER)
        self._send = send
        self._records = RecordStream(receive, self)
        try:
            tg = anyio.create_task_group()
            await tg.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._terminate()
                await self._shutdown()
            raise
        self._tg = tg
        tg.start_soon(self._read_stdout, send, name=f"{self.node_id} stdout")
        tg.start_soon(self._drain_stderr, name=f"{self.node_id} stderr")
        if spec.stdin is not None:
            tg.start_soon(self._write_stdin, spec.stdin, name=f"{self.node_id} stdin")
        tg.start_soon(self._watch_exit, name=f"{self.node_id} exit")
        tg.start_soon(self._watch_terminal, name=f"{self.node_id} linger")
        deadline = math.inf
        if spec.total_timeout is not None:
            deadline = self._started_at + spec.total_timeout
        # Entered here and exited first in __aexit__: it bounds the caller's block, while
        # the helper tasks (in the task group around it) keep running until teardown.
        self._deadline_scope = anyio.CancelScope(deadline=deadline)
        self._deadline_scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        """Tear the process group down; always, and within a bounded time.

        Order: leave the deadline scope (noting whether it expired); then, shielded from
        cancellation, TERM the group, wait up to ``terminate_grace``, KILL, wait up to
        ``KILL_WAIT``, and give the drains ``_DRAIN_GRACE`` to read what the group left in
        the pipes; then stop the helper tasks and close the pipes. The caller's exception
        (or cancellation) propagates unchanged; an expired ``total_timeout`` becomes
        :class:`~chia_async.errors.TimeoutError`.
        """
        scope, self._deadline_scope = self._deadline_scope, None
        # Only its deadline ever cancels this scope: if it swallowed the cancellation, the
        # block timed out (and must end in TimeoutError, not silently).
        if scope is not None and scope.__exit__(exc_type, exc, tb):
            self._timed_out = True
        tg, self._tg = self._tg, None
        try:
            with anyio.CancelScope(shield=True):
                await self._terminate()
                with anyio.move_on_after(_DRAIN_GRACE):
                    await self._stderr_done.wait()
        finally:
            if tg is not None:
                tg.cancel_scope.cancel()
                try:
                    await tg.__aexit__(None, None, None)
                except BaseExceptionGroup as group:
                    # Helpers catch what they expect; anything else is a bug worth seeing
                    # as itself, not wrapped.
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
        if self._timed_out:
            raise CallTimeoutError(
                self.node_id,
                f"the process did not finish within total_timeout={self.spec.total_timeout:g} s"
                + self._stderr_hint(),
                timeout=self.spec.total_timeout,
            ) from None

    # -- helpers: spawn and shutdown -------------------------------------------------------

    def _running(self) -> Process:
        if self._process is None:
            raise RuntimeError("use the SupervisedProcess inside `async with` first")
        return self._process

    async def _spawn(self) -> Process:
        spec = self.spec
        try:
            return await anyio.open_process(
                list(spec.argv),
                stdin=subprocess.PIPE if spec.stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=spec.cwd,
                env=dict(spec.env),
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            if exc.filename is not None and os.fsdecode(exc.filename) == spec.argv[0]:
                raise CLINotFoundError(self.node_id, cli=spec.argv[0]) from exc
            raise ProcessError(
                self.node_id, raw_message=f"could not start {spec.argv[0]!r}: {exc}"
            ) from exc
        except OSError as exc:
            raise ProcessError(
                self.node_id, raw_message=f"could not start {spec.argv[0]!r}: {exc}"
            ) from exc

    async def _terminate(self) -> None:
        """TERM the group, wait, KILL, wait. Call shielded. Idempotent and serialised."""
        process, pgid = self._process, self._pgid
        if process is None or pgid is None:
            return
        async with self._teardown_lock:
            if process.returncode is not None and not _group_running(pgid):
                _registry.discard(pgid)
                return
            if process.returncode is None:
                self._killed = True
            logger.debug("%s: terminating process group %d", self.node_id, pgid)
            _signal_group(pgid, signal.SIGTERM)
            if await self._wait_gone(self.spec.terminate_grace):
                _registry.discard(pgid)
                return
            logger.debug(
                "%s: process group %d outlived SIGTERM by %g s; killing it",
                self.node_id,
                pgid,
                self.spec.terminate_grace,
            )
            _signal_group(pgid, signal.SIGKILL)
            if await self._wait_gone(KILL_WAIT):
                _registry.discard(pgid)
                return
            # Stuck in the kernel (uninterruptible I/O). Leave it registered for the exit hook.
            logger.warning(
                "%s: process group %d survived SIGKILL for %g s", self.node_id, pgid, KILL_WAIT
            )

    async def _wait_gone(self, seconds: float) -> bool:
        process, pgid = self._process, self._pgid
        assert process is not None
        assert pgid is not None
        with anyio.move_on_after(seconds):
            await process.wait()
            # Descendants are not our children: poll, quickly first (most die at once).
            delay = 0.002
            while _group_running(pgid):
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.1)
            return True
        return False

    async def _shutdown(self) -> None:
        """Close the channel and the pipes. Call shielded, after the helpers stopped."""
        if self._send is not None:
            self._send.close()
        if self._records is not None:
            self._records._receive.close()
        process = self._process
        if process is None:
            return
        if process.returncode is not None:
            await process.aclose()  # closes the pipe transports; returns at once: it exited
        else:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()
        # Pipe transports close their fds on the next loop iteration: let it run, so that
        # no descriptor outlives the block.
        await anyio.lowlevel.checkpoint()
        if self._ended_at is None and process.returncode is not None:
            self._ended_at = anyio.current_time()
        self._outcome = self._build_outcome()

    # -- helper tasks ----------------------------------------------------------------------

    async def _read_stdout(self, send: MemoryObjectSendStream[list[Record]]) -> None:
        process = self._running()
        stream = process.stdout
        assert stream is not None
        framer = JsonlFramer(self.spec.line_limit, node_id=self.node_id)
        # text mode: bytes -> str as they come; a character cut between reads waits here
        text = (
            codecs.getincrementaldecoder("utf-8")("replace")
            if self.spec.stdout_format == "text"
            else None
        )
        idle = self.spec.idle_timeout
        try:
            async with send:
                try:
                    while True:
                        if idle is None or self._terminal.is_set():
                            # After the terminal record the run is complete: a silent
                            # linger is the linger timer's business, not a stall.
                            chunk = await stream.receive(CHUNK_SIZE)
                        else:
                            # Only the wait for the child is timed: a slow consumer (the
                            # send below) or a long parse never counts as the CLI stalling.
                            received: bytes | None = None
                            with anyio.move_on_after(idle):
                                received = await stream.receive(CHUNK_SIZE)
                            if received is None:
                                if self._terminal.is_set():
                                    continue
                                self._stall(idle)
                                return
                            chunk = received
                        if text is not None:
                            decoded = text.decode(chunk)
                            if decoded:
                                await send.send([TextChunk(decoded)])
                            continue
                        lines = framer.feed(chunk)
                        if lines:
                            await send.send(parse_records(lines))
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    if text is not None:
                        rest = text.decode(b"", final=True)
                        if rest:
                            await send.send([TextChunk(rest)])
                    last = framer.flush()
                    if last:
                        await send.send(parse_records(last))
                except OutputLineTooLongError as exc:
                    self._failure = OutputLineTooLongError(
                        self.node_id,
                        exit_code=-1,
                        stderr=self._stderr_text(),
                        raw_message=exc.raw_message,
                    )
        except anyio.BrokenResourceError:
            pass  # the consumer side was closed: teardown is under way
        finally:
            self._stdout_done.set()

    def _stall(self, idle: float) -> None:
        self._stalled = True
        self._failure = StallError(
            self.node_id,
            f"no output for {idle:g} s (idle_timeout)" + self._stderr_hint(),
            timeout=idle,
        )
        logger.debug("%s: stalled: no stdout for %g s", self.node_id, idle)

    async def _drain_stderr(self) -> None:
        stream = self._running().stderr
        assert stream is not None
        keep = self.spec.stderr_tail
        tail = self._stderr
        try:
            while True:
                chunk = await stream.receive(CHUNK_SIZE)
                self._stderr_total += len(chunk)
                tail += chunk
                # trim in steps, not per chunk: amortised O(1) per byte
                if len(tail) >= 2 * keep + CHUNK_SIZE:
                    del tail[: len(tail) - keep]
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self._stderr_done.set()

    async def _write_stdin(self, data: bytes) -> None:
        stream = self._running().stdin
        assert stream is not None
        try:
            if data:
                await stream.send(data)
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            BrokenPipeError,
            ConnectionResetError,
        ):
            # The child exited or closed stdin without reading all of it: its exit code
            # and output say what happened; a broken pipe here adds nothing.
            logger.debug("%s: the child closed stdin early", self.node_id)
        finally:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.aclose()

    async def _watch_exit(self) -> None:
        process = self._running()
        code = await process.wait()
        self._ended_at = anyio.current_time()
        logger.debug("%s: pid %d exited with %d", self.node_id, process.pid, code)
        # The leader is gone; whatever is left of its group (a server it started, a
        # `cmd &` of a shell tool) may hold stdout/stderr open forever. Give the pipes a
        # grace to close, then clear the group so the output ends.
        with anyio.move_on_after(self.spec.linger_grace):
            await self._stdout_done.wait()
            await self._stderr_done.wait()
            return
        logger.debug("%s: descendants hold the output open; stopping them", self.node_id)
        with anyio.CancelScope(shield=True):
            await self._terminate()

    async def _watch_terminal(self) -> None:
        process = self._running()
        await self._terminal.wait()
        with anyio.move_on_after(self.spec.linger_grace):
            await process.wait()
            return
        logger.debug(
            "%s: still running %g s after its terminal record; stopping it",
            self.node_id,
            self.spec.linger_grace,
        )
        self._killed_after_terminal = True
        with anyio.CancelScope(shield=True):
            await self._terminate()

    # -- outcome ---------------------------------------------------------------------------

    def _stderr_text(self) -> str:
        keep = self.spec.stderr_tail
        if keep == 0:
            return ""
        tail = bytes(self._stderr[-keep:])
        if self._stderr_total > len(tail):
            # cut mid-stream: drop a partial UTF-8 character at the cut
            start = 0
            while start < min(3, len(tail)) and 0x80 <= tail[start] <= 0xBF:
                start += 1
            tail = tail[start:]
        return redact(decode_line(tail))

    def _stderr_hint(self) -> str:
        text = self._stderr_text().strip()
        if not text:
            return ""
        return f"; stderr ends with: {text[-1000:]}"

    def _build_outcome(self) -> ProcessOutcome:
        process = self._running()
        code = process.returncode
        end = self._ended_at if self._ended_at is not None else anyio.current_time()
        return ProcessOutcome(
            pid=process.pid,
            exit_code=code,
            signal=-code if code is not None and code < 0 else None,
            stderr_tail=self._stderr_text(),
            stderr_bytes=self._stderr_total,
            duration=end - self._started_at,
            killed=self._killed,
            killed_after_terminal=self._killed_after_terminal,
            timed_out=self._timed_out,
            stalled=self._stalled,
        )
