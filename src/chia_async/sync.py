"""The sync facade: one long-lived event loop in a daemon thread behind ``prompt()`` and
``stream_sync()``.

Why not ``asyncio.run()`` per call: it cannot run inside an already running loop (Jupyter,
FastAPI handlers), it throws away every cached client and connection pool each call, and
it makes concurrent calls from many threads each spin their own loop. Here every sync call
is submitted to the same background loop, so it works from a plain script, from inside a
running loop, and from many threads at once. After ``os.fork()`` the child gets a fresh
loop (the parent's thread does not exist there).

Interrupting a blocked caller (KeyboardInterrupt, or the wait timing out) cancels the
underlying task and waits, for a bounded time, until its cleanup has run: no subprocess or
connection outlives the call that started it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["CLEANUP_TIMEOUT", "SyncIterator", "background_loop", "iterate", "run"]

T = TypeVar("T")

#: How long an interrupted sync call waits for the cancelled task's cleanup.
CLEANUP_TIMEOUT = 30.0


class _LoopThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="chia-async-loop", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()


_lock = threading.Lock()
_current: _LoopThread | None = None


def _after_fork_in_child() -> None:
    # The loop thread was not copied into the child; its loop object may be mid-iteration
    # in the parent's memory image. Drop it without touching it, and replace the lock in
    # case another thread held it at fork time.
    global _current, _lock
    _current = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _loop_thread() -> _LoopThread:
    global _current
    current = _current
    if current is not None and current.pid == os.getpid() and current.thread.is_alive():
        return current
    with _lock:
        current = _current
        if current is None or current.pid != os.getpid() or not current.thread.is_alive():
            current = _current = _LoopThread()
        return current


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared background event loop, started on first use."""
    return _loop_thread().loop


def _check_not_on_loop(worker: _LoopThread) -> None:
    if threading.current_thread() is worker.thread:
        raise RuntimeError(
            "a sync chia_async API was called from chia_async's own event loop; "
            "await the async API (aprompt / stream) instead"
        )


def run(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and block until it finishes.

    On KeyboardInterrupt (or when ``timeout`` passes, raising ``TimeoutError``) the task is
    cancelled and its cleanup awaited (up to :data:`CLEANUP_TIMEOUT`) before the exception
    propagates.
    """
    worker = _loop_thread()
    try:
        _check_not_on_loop(worker)
    except RuntimeError:
        coro.close()
        raise
    finished = threading.Event()

    async def supervised() -> T:
        try:
            return await coro
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(supervised(), worker.loop)
    try:
        return future.result(timeout)
    except BaseException as exc:
        if future.done():
            raise  # the task's own outcome (which may itself be a TimeoutError)
        # The wait was interrupted (KeyboardInterrupt) or timed out: stop the work we
        # started before giving up on it.
        future.cancel()
        finished.wait(CLEANUP_TIMEOUT)
        if isinstance(exc, concurrent.futures.TimeoutError):
            raise TimeoutError(f"the call did not finish within {timeout} s") from None
        raise


_END = object()


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class SyncIterator(Generic[T]):
    """A blocking iterator over an async iterator driven by one task on the background loop.

    The task pulls one item per ``next()`` (no read-ahead), so the async side sees the same
    pacing as a direct ``async for``. ``close()`` — also called on ``break`` via the
    generator protocol, on garbage collection, and on KeyboardInterrupt — cancels the task,
    which closes the async iterator inside the task that iterated it.
    """

    def __init__(self, factory: Callable[[], AsyncIterator[T]]) -> None:
        self._worker = _loop_thread()
        _check_not_on_loop(self._worker)
        self._items: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._finished = threading.Event()
        self._closed = False
        self._demand: asyncio.Semaphore | None = None
        self._demand_ready = threading.Event()
        self._future = asyncio.run_coroutine_threadsafe(self._pump(factory), self._worker.loop)

    async def _pump(self, factory: Callable[[], AsyncIterator[T]]) -> None:
        self._demand = asyncio.Semaphore(0)
        self._demand_ready.set()
        iterator: AsyncIterator[T] | None = None
        try:
            iterator = factory()
            while True:
                await self._demand.acquire()
                self._items.put(await iterator.__anext__())
        except StopAsyncIteration:
            self._items.put(_END)
        except Exception as exc:
            self._items.put(_Failure(exc))
        except BaseException:  # cancelled by close()
            self._items.put(_END)
            raise
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):  # must not mask the outcome
                    await asyncio.shield(aclose())
            self._finished.set()

    def __iter__(self) -> SyncIterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        self._demand_ready.wait()
        demand = self._demand
        assert demand is not None
        try:
            self._worker.loop.call_soon_threadsafe(demand.release)
            while True:
                try:
                    item = self._items.get(timeout=0.25)
                    break
                except queue.Empty:
                    if self._future.done() and self._items.empty():
                        self._closed = True
                        raise StopIteration from None
        except BaseException:
            self.close()
            raise
        if item is _END:
            self._closed = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._closed = True
            raise item.error
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the async side (if still running) and wait for its cleanup."""
        self._closed = True
        if not self._future.done():
            self._future.cancel()
        if threading.current_thread() is not self._worker.thread:
            self._finished.wait(CLEANUP_TIMEOUT)

    def __enter__(self) -> SyncIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._future.done():
                self._future.cancel()
        except Exception:  # interpreter shutdown
            pass


def iterate(factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Iterate ``factory()`` (an async iterator) from sync code through the background loop."""
    return SyncIterator(factory)
