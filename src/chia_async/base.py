"""``LLMCallBase``: what every backend shares — ``stream()`` → ``aprompt()`` → ``prompt()``.

A backend implements one coroutine, :meth:`LLMCallBase._run`, which performs a single
attempt: it reports events with ``await attempt.emit(event)`` and returns the
:class:`~chia_async.results.QueryResult`, or raises a typed
:class:`~chia_async.errors.ChiaError`. Everything else lives here, once:

* argument checks before anything starts;
* the call's total deadline (``timeout_seconds``), which also bounds retry waits;
* retries (:mod:`chia_async.retry`), each announced by a ``Retrying`` event, never after a
  content event reached the caller;
* folding events into the result (text, usage, stop reason, session);
* one JSONL log file per call under ``log_dir``, secrets redacted;
* the sync facade (:mod:`chia_async.sync`).

Why ``_run`` reports through ``emit`` instead of being an async generator: a backend needs
task groups and cancel scopes (a subprocess's stderr drain, concurrent tool calls, MCP
sessions) that stay open while events flow. Those must not be suspended across a ``yield``
to an unknown consumer, so each call runs as its own producer task that hands events to
the consumer one at a time (no read-ahead). The consumer can stop at any point — ``break``,
cancellation, an exception — and the producer is cancelled and torn down within its own
task, where its cancel scopes belong.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from chia_async import sync
from chia_async._event_base import TurnEvent
from chia_async.distributed.function import llm_call
from chia_async.errors import (
    ChiaError,
    RateLimitError,
    UnknownError,
)
from chia_async.errors import TimeoutError as CallTimeoutError
from chia_async.events import (
    CONTENT_EVENTS,
    Completed,
    Retrying,
    SessionStarted,
    StepFinished,
    TextDelta,
)
from chia_async.extras import MissingExtraError
from chia_async.redaction import is_secret_name, redact, register_secret
from chia_async.results import QueryResult, SessionRef, Usage
from chia_async.retry import RetryPolicy, server_wait
from chia_async.tools import ChiaTool

__all__ = ["Attempt", "EventStream", "LLMCallBase"]

# A library does not print: callers configure logging if they want it.
logging.getLogger("chia_async").addHandler(logging.NullHandler())

#: Upper bound on tearing down a cancelled call (processes, connections, MCP sessions).
TEARDOWN_TIMEOUT = 30.0

Emit = Callable[[TurnEvent], Awaitable[None]]


class Attempt:
    """One attempt of a call, as a backend's :meth:`LLMCallBase._run` sees it.

    Backends report events with :meth:`emit`; the attempt folds them (answer text, usage,
    stop reason, session) so :meth:`result` can build the ``QueryResult`` at the end.
    ``deadline`` is the call's deadline on ``anyio.current_time()``'s clock: backends with
    their own waits (a process's idle timer) should not run past it.
    """

    def __init__(
        self,
        *,
        llm: LLMCallBase,
        message: str,
        tools: tuple[ChiaTool, ...],
        number: int,
        deadline: float,
        send: Emit,
        log: _CallLog | None = None,
    ) -> None:
        self.llm = llm
        self._log = log
        self.message = message
        self.tools = tools
        self.number = number
        self.deadline = deadline
        self._send = send
        self.text_parts: list[str] = []
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.session: SessionRef | None = None
        self.events = 0
        self.content_started = False

    @property
    def text(self) -> str:
        """The answer text streamed so far."""
        return "".join(self.text_parts)

    def log_raw(self, source: str, data: Any) -> None:
        """Record a raw backend record in the call's log file (when ``log_dir`` is set)."""
        if self._log is not None:
            self._log.write({"raw": {"source": source, "data": data}})

    def remaining(self) -> float:
        """Seconds left before the call's deadline."""
        return max(0.0, self.deadline - anyio.current_time())

    async def emit(self, event: TurnEvent) -> None:
        """Fold ``event`` into the attempt and hand it to the caller (waits for it)."""
        if isinstance(event, TextDelta):
            self.text_parts.append(event.text)
        elif isinstance(event, Usage):
            self.usage = self.usage + event
        elif isinstance(event, StepFinished):
            if event.finish_reason is not None:
                self.stop_reason = event.finish_reason
        elif isinstance(event, SessionStarted):
            self.session = SessionRef(
                backend=event.backend or self.llm.backend_name,
                session_id=event.session_id,
                cwd=event.cwd,
                model=event.model,
            )
        self.events += 1
        await self._send(event)
        if isinstance(event, CONTENT_EVENTS):
            self.content_started = True

    def result(
        self,
        *,
        result: str | None = None,
        returncode: int = 0,
        stderr: str = "",
        stream_result: str = "",
        success: bool = True,
        cls: type[QueryResult] | None = None,
        **extra: Any,
    ) -> QueryResult:
        """Build the attempt's ``QueryResult`` from what was emitted plus ``extra`` fields.

        ``result`` defaults to the streamed text; ``cls`` to the backend's result class.
        """
        result_cls = cls or self.llm.result_class
        return result_cls(
            self.text if result is None else result,
            returncode,
            stderr,
            stream_result,
            success,
            usage=self.usage,
            session=self.session,
            events=self.events,
            stop_reason=self.stop_reason,
            **extra,
        )


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class EventStream(AsyncIterator[TurnEvent]):
    """The events of one call, as returned by :meth:`LLMCallBase.stream`.

    Iterate it with ``async for``. The call starts on the first ``__anext__`` and runs in its
    own task; each event is handed over only when asked for. A failed call raises its typed
    error after the events it produced. Use ``async with llm.stream(...) as events:`` (or call
    :meth:`aclose`) to have the call torn down deterministically when you stop early; a
    stream dropped without closing is cancelled when it is garbage collected.
    """

    def __init__(self, producer: Callable[[Emit], Awaitable[None]]) -> None:
        self._producer = producer
        self._task: asyncio.Task[None] | None = None
        self._receive: MemoryObjectReceiveStream[object] | None = None
        self._done = False

    def _start(self) -> None:
        send, receive = anyio.create_memory_object_stream[object](0)
        self._receive = receive
        # The task must not reference this object: a stream dropped by its consumer (a
        # `break`) has to become garbage so __del__ can cancel the call.
        self._task = asyncio.get_running_loop().create_task(_produce(self._producer, send, receive))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TurnEvent:
        if self._done:
            raise StopAsyncIteration
        if self._task is None:
            self._start()
        assert self._receive is not None
        try:
            item = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._done = True
            raise StopAsyncIteration from None
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        assert isinstance(item, TurnEvent)
        return item

    async def aclose(self) -> None:
        """Stop the call if it is still running and wait (bounded) for its teardown."""
        self._done = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(TEARDOWN_TIMEOUT):
                await asyncio.wait({task})
        if self._receive is not None:
            await self._receive.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped mid-call (e.g. `break` out of `async for`): cancel the producer; its own
        # task then tears the call down and closes both ends of the channel. Never blocks.
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                task.get_loop().call_soon_threadsafe(task.cancel)


async def _produce(
    producer: Callable[[Emit], Awaitable[None]],
    send: MemoryObjectSendStream[object],
    receive: MemoryObjectReceiveStream[object],
) -> None:
    """Run a call, handing its events (then its error, if any) to the consumer."""
    try:
        async with send:
            try:
                await producer(send.send)
            except Exception as exc:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await send.send(_Failure(exc))
    finally:
        receive.close()


class _CallLog:
    """One JSONL file per call: a header line, then every event with its time offset."""

    def __init__(self, directory: Path, name: str, header: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.path = directory / f"{name}-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        self._file: IO[bytes] = open(self.path, "xb")  # noqa: SIM115 - closed in close()
        self._start = time.monotonic()
        self.write({"call": header})

    def write(self, record: dict[str, Any]) -> None:
        record = {"t": round(time.monotonic() - self._start, 6), **record}
        line = redact(orjson.dumps(record, default=str).decode())
        self._file.write(line.encode() + b"\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class LLMCallBase(ABC):
    """The common base of every backend.

    Parameters (the reference's common set): ``model``; ``system_message``;
    ``timeout_seconds``, the deadline of a whole call including retries; ``retries``, how
    many times a retryable failure is tried again (0 = one attempt); ``logging_name`` and
    ``logging_level`` for the ``chia_async.<logging_name>`` logger; ``log_dir``, where one
    JSONL file per call records every event (secrets redacted).
    """

    #: short name of the backend, used in session refs, logs and Ray resources
    backend_name: ClassVar[str] = "base"
    #: the QueryResult subclass the backend returns
    result_class: ClassVar[type[QueryResult]] = QueryResult
    #: provider backends: seconds an unused MCP connection stays open for the next call
    #: (tools are then neither reconnected nor re-listed); 0 opens them per call
    mcp_keepalive: float = 60.0

    def __init__(
        self,
        model: str = "",
        system_message: str = "",
        timeout_seconds: float = 600,
        retries: int = 3,
        logging_name: str = "llm",
        logging_level: int = logging.DEBUG,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_type("model", model, str, allow_none=True)
        _check_type("system_message", system_message, str)
        _check_type("logging_name", logging_name, str)
        if not logging_name:
            raise ValueError("logging_name must not be empty")
        if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int | float):
            raise TypeError(
                f"timeout_seconds must be a number, got {type(timeout_seconds).__name__}"
            )
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
        if isinstance(logging_level, bool) or not isinstance(logging_level, int):
            raise TypeError(f"logging_level must be an int, got {type(logging_level).__name__}")
        if log_dir is not None and not isinstance(log_dir, str | os.PathLike):
            raise TypeError(f"log_dir must be a path or None, got {type(log_dir).__name__}")
        self.model = model or ""
        self.system_message = system_message
        self.timeout_seconds = float(timeout_seconds)
        self.retry_policy = RetryPolicy(retries=retries)
        self.logging_name = logging_name
        self.logging_level = logging_level
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.logger = logging.getLogger(f"chia_async.{logging_name}")
        self.logger.setLevel(logging_level)
        #: whether the per-call log under ``log_dir`` records every event
        self.log_events = True

    @property
    def retries(self) -> int:
        """How many times a retryable failure is tried again."""
        return self.retry_policy.retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, logging_name={self.logging_name!r})"

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Redaction knows the credentials given in *this* process; an object unpickled here
        # (a Ray worker, a multiprocessing child) brings its own, to be masked here too.
        self.__dict__.update(state)
        register_secret(getattr(self, "api_key", None))
        env = getattr(self, "env", None)
        if isinstance(env, Mapping):
            for name, value in env.items():
                if isinstance(name, str) and isinstance(value, str) and is_secret_name(name):
                    register_secret(value)

    async def aclose(self) -> None:
        """Close what this object holds on the running event loop — SDK clients, pooled MCP
        connections (stdio servers stopped) — now rather than when the loop shuts down or the
        object is garbage-collected. The object stays usable: the next call opens new ones."""
        from chia_async.loop.clients import LoopLocal

        for value in list(vars(self).values()):
            if isinstance(value, LoopLocal):
                await value.aclose_current()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the three ways to call --------------------------------------------------------

    @llm_call  # .chia_remote / .chia_remote_stream: run on a Ray worker
    def stream(self, user_message: str, tools: Sequence[ChiaTool] | None = None) -> EventStream:
        """Run one call and yield its events as they happen.

        Raises ``TypeError``/``ValueError`` at once for a bad message or tool list. The
        stream ends with ``Completed``, or raises the call's typed error.
        """
        message, checked = self._check_call(user_message, tools)

        async def producer(send: Emit) -> None:
            await self._drive(message, checked, send)

        return EventStream(producer)

    @llm_call
    async def aprompt(
        self, user_message: str, tools: Sequence[ChiaTool] | None = None
    ) -> QueryResult:
        """Run one call and return its :class:`~chia_async.results.QueryResult`.

        When a retryable failure persists, returns a result with ``success=False``,
        ``result=""``, ``returncode=-1`` and the error in ``error``. Raises errors that
        retrying cannot fix, and rate limits that reset later than the retry cap.
        """
        message, checked = self._check_call(user_message, tools)
        started = time.monotonic()
        completed: list[QueryResult] = []

        async def keep_result(event: TurnEvent) -> None:
            if isinstance(event, Completed):
                completed.append(event.result)

        # No consumer between events here, so the call runs in the caller's own task: no
        # producer task and no hand-over per event (stream() needs both; this does not).
        try:
            await self._drive(message, checked, keep_result)
        except ChiaError as error:
            if not self._returns_failure(error):
                raise
            return self.result_class(
                "",
                -1,
                error.stderr,
                "",
                False,
                duration_s=time.monotonic() - started,
                error=error,
            )
        if not completed:
            raise UnknownError(self.logging_name, "the call ended without a result")
        return completed[-1]

    @llm_call
    def prompt(self, user_message: str, tools: Sequence[ChiaTool] | None = None) -> QueryResult:
        """Blocking form of :meth:`aprompt`, for sync callers (works inside a running loop
        and from many threads; see :mod:`chia_async.sync`)."""
        self._check_call(user_message, tools)
        return sync.run(
            self.aprompt(user_message, tools),
            timeout=self.timeout_seconds + TEARDOWN_TIMEOUT,
        )

    def stream_sync(
        self, user_message: str, tools: Sequence[ChiaTool] | None = None
    ) -> Iterator[TurnEvent]:
        """Blocking form of :meth:`stream`: a plain iterator of events."""
        self._check_call(user_message, tools)
        return sync.iterate(lambda: self.stream(user_message, tools))

    # -- what a backend implements -----------------------------------------------------

    @abstractmethod
    async def _run(self, attempt: Attempt) -> QueryResult:
        """Perform one attempt of the call.

        Report events with ``await attempt.emit(event)`` as they happen; return
        ``attempt.result(...)`` on success; raise a :class:`~chia_async.errors.ChiaError`
        subclass on failure (the base decides whether to retry). Must release everything it
        started (processes, connections, tasks) on every exit, including cancellation,
        within a bounded time. Must not emit ``Completed`` or ``Retrying``: the base does.
        """

    # -- internals ---------------------------------------------------------------------

    def _check_call(self, user_message: object, tools: object) -> tuple[str, tuple[ChiaTool, ...]]:
        if not isinstance(user_message, str):
            raise TypeError(f"user_message must be a str, got {type(user_message).__name__}")
        if not user_message.strip():
            raise ValueError("user_message must not be empty")
        if tools is None:
            return user_message, ()
        if isinstance(tools, ChiaTool):
            raise TypeError("tools must be a list of ChiaTool, got a single ChiaTool")
        if isinstance(tools, str | bytes) or not isinstance(tools, Sequence | set | frozenset):
            raise TypeError(f"tools must be a list of ChiaTool, got {type(tools).__name__}")
        checked = tuple(tools)
        for index, tool in enumerate(checked):
            if not isinstance(tool, ChiaTool):
                raise TypeError(
                    f"tools[{index}] must be a ChiaTool, got {type(tool).__name__}: {tool!r:.80}"
                )
        names = [t.name for t in checked]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two tools share the name {duplicates[0]!r}; names must be unique")
        return user_message, checked

    def _returns_failure(self, error: ChiaError) -> bool:
        """Whether ``aprompt`` reports ``error`` as a failed result rather than raising it."""
        if not error.retryable:
            return False
        if isinstance(error, RateLimitError):
            wait = server_wait(error, now=self.retry_policy.clock())
            if wait is not None and wait > self.retry_policy.max_wait:
                return False
        return True

    async def _drive(self, message: str, tools: tuple[ChiaTool, ...], send: Emit) -> None:
        """The producer: attempts, retries and the deadline around :meth:`_run`."""
        policy = self.retry_policy
        log = self._open_log(message, tools)
        started = anyio.current_time()
        deadline = started + self.timeout_seconds
        content_started = False

        async def deliver(event: TurnEvent) -> None:
            if log is not None and self.log_events:
                log.write({"event": event.to_dict()})
            await send(event)

        try:
            try:
                with anyio.fail_after(self.timeout_seconds):
                    number = 0
                    while True:
                        number += 1
                        attempt = Attempt(
                            llm=self,
                            message=message,
                            tools=tools,
                            number=number,
                            deadline=deadline,
                            send=deliver,
                            log=log,
                        )
                        self.logger.debug("%s: attempt %d starts", self.logging_name, number)
                        try:
                            result = await self._run(attempt)
                        except ChiaError as exc:
                            error = exc
                        except builtins.TimeoutError as exc:
                            if anyio.current_time() >= deadline:
                                raise  # our own deadline: handled below
                            error = _unexpected(self.logging_name, exc)
                        except MissingExtraError:
                            raise  # an ImportError naming the extra to install: not a call error
                        except Exception as exc:
                            error = _unexpected(self.logging_name, exc)
                        else:
                            result = dataclasses.replace(
                                result, duration_s=anyio.current_time() - started
                            )
                            completed = Completed(result=result)
                            if log is not None:  # before handing over: the caller may stop us
                                if self.log_events:
                                    log.write({"event": completed.to_dict()})
                                log.write({"outcome": "completed", "success": result.success})
                            await send(completed)
                            return
                        content_started = content_started or attempt.content_started
                        delay = policy.delay(
                            error,
                            number,
                            content_started=content_started,
                            remaining=deadline - anyio.current_time(),
                        )
                        if delay is None:
                            raise error
                        self.logger.info(
                            "%s: attempt %d failed (%s); retrying in %.2f s",
                            self.logging_name,
                            number,
                            redact(str(error)),
                            delay,
                        )
                        await deliver(Retrying(attempt=number, delay=delay, error=error))
                        await policy.sleep(delay)
            except ChiaError:
                raise
            except builtins.TimeoutError:
                raise CallTimeoutError(
                    self.logging_name,
                    f"the call did not finish within timeout_seconds={self.timeout_seconds:g}",
                    timeout=self.timeout_seconds,
                ) from None
        except ChiaError as error:
            self.logger.info("%s: call failed: %s", self.logging_name, redact(str(error)))
            if log is not None:
                log.write({"outcome": "error", "error": error.to_dict()})
            raise
        finally:
            if log is not None:
                log.close()

    def _open_log(self, message: str, tools: tuple[ChiaTool, ...]) -> _CallLog | None:
        if self.log_dir is None:
            return None
        header = {
            "backend": self.backend_name,
            "class": type(self).__name__,
            "model": self.model,
            "logging_name": self.logging_name,
            "message": message,
            "system_message": self.system_message,
            "tools": [t.name for t in tools],
            "pid": os.getpid(),
        }
        return _CallLog(self.log_dir, self.logging_name, header)


def _unexpected(node_id: str, exc: BaseException) -> UnknownError:
    """A non-ChiaError from a backend is a bug or an unmapped failure: keep it typed."""
    error = UnknownError(node_id, f"unexpected {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def check_flags(**flags: object) -> None:
    """Raise ``TypeError`` naming the first of ``flags`` that is not a bool (backends' boolean
    constructor options: ``1`` or ``"yes"`` is a mistake, not a truthy value)."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")


def _check_type(name: str, value: object, kind: type, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
