"""What runs inside a Ray worker for a ``chia_remote`` call.

Ray cannot run an ``async def`` as a task, and its cancellation of a running task is a
KeyboardInterrupt raised in the task's thread between two bytecodes — which never arrives
while that thread sits in one long blocking wait (``future.result()``, an event loop idling
in ``epoll_wait``). So a coroutine runs on chia_async's background loop
(:mod:`chia_async.sync`, one per worker process, so SDK clients and MCP sessions are reused
across calls) while the task's thread waits for it in short slices. When the interrupt
lands, the coroutine is cancelled and the thread waits, bounded, for its teardown (the CLI's
process group killed and reaped, connections closed) before the task ends.

Each call brings a freshly unpickled copy of its LLM object, whose SDK client would be built
anew (an httpx client costs an SSL context: 30-100 ms). A worker therefore keeps the last few
LLM objects it ran and reuses one when the incoming object's pickled state is byte for byte
the state that object has now: same configuration and same session, so the call behaves as
it would on the fresh copy, only with a warm client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import io
import pickle
import random
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from chia_async import sync
from chia_async.extras import require

__all__ = ["execute", "execute_stream"]

#: How often the waiting task thread lets a pending cancellation (KeyboardInterrupt) in.
POLL_INTERVAL = 0.1
#: How long a cancelled call may take to tear down before the task gives up on it.
TEARDOWN_TIMEOUT = 30.0


def execute(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``target(*args, **kwargs)`` to its value: awaited when it is awaitable, drained
    (to its last item) when it is an async iterator."""
    args = _KEPT.reuse(args)
    try:
        value = target(*args, **kwargs)
        if inspect.isawaitable(value):
            value = _wait(_awaited(value))
        if isinstance(value, AsyncIterable):
            last = None
            for item in _iterate(value):
                last = item
            value = last
        return value
    finally:
        _KEPT.keep(args)


def execute_stream(
    target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Iterator[Any]:
    """Yield what ``target(*args, **kwargs)`` produces as it produces it: the items of an
    async or sync iterator, or the one value of anything else."""
    args = _KEPT.reuse(args)
    try:
        yield from _iterate(_items(target, args, kwargs))
    finally:
        _KEPT.keep(args)


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


def _wait(coro: Any) -> Any:
    """Run ``coro`` on the background loop; wait in slices so a cancellation gets in."""
    finished = threading.Event()

    async def supervised() -> Any:
        try:
            return await coro
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(supervised(), sync.background_loop())
    try:
        while not finished.wait(POLL_INTERVAL):
            pass
    except BaseException:  # KeyboardInterrupt: Ray cancelled the task
        future.cancel()
        deadline = time.monotonic() + TEARDOWN_TIMEOUT
        while not finished.wait(POLL_INTERVAL) and time.monotonic() < deadline:
            pass
        raise
    return future.result()


def _iterate(source: AsyncIterable[Any]) -> Iterator[Any]:
    # SyncIterator pulls one item per next() on the background loop and waits for it in
    # 0.25 s slices; on KeyboardInterrupt or close() it cancels the async side and waits
    # for its cleanup.
    items = sync.SyncIterator(source.__aiter__)
    try:
        # not `yield from`: Ray drives the generator with send(), which SyncIterator lacks
        for item in items:  # noqa: UP028
            yield item
    finally:
        items.close()


async def _items(
    target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    value = target(*args, **kwargs)  # built on the loop that iterates it
    if inspect.isawaitable(value):
        value = await value
    if isinstance(value, AsyncIterable):
        iterator = value.__aiter__()
        try:
            async for item in iterator:
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
    elif isinstance(value, Iterator):
        for item in value:
            yield item
    else:
        yield value


class _KeptObjects:
    """The LLM objects this worker ran last, by the digest of their current pickled state."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._objects: OrderedDict[bytes, Any] = OrderedDict()

    def reuse(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``args`` with its first item replaced by a kept object in the same state, if any."""
        if not args or not _is_llm(args[0]):
            return args
        key = _digest(args[0])
        with self._lock:
            kept = self._objects.pop(key, None) if key is not None else None
        return args if kept is None else (kept, *args[1:])

    def keep(self, args: tuple[Any, ...]) -> None:
        """Remember the first item of ``args`` under its state after the call."""
        if not args or not _is_llm(args[0]):
            return
        key = _digest(args[0])  # the call may have changed it (a session to resume)
        if key is None:
            return
        with self._lock:
            self._objects[key] = args[0]
            self._objects.move_to_end(key)
            while len(self._objects) > self._size:
                self._objects.popitem(last=False)


def _is_llm(value: object) -> bool:
    from chia_async.base import LLMCallBase

    return isinstance(value, LLMCallBase)


@functools.cache
def _state_pickler() -> Any:
    # Ray's cloudpickle, as Ray used to send the object (a class defined in a driver's
    # __main__ travels by value, which plain pickle refuses)
    cloudpickle: Any = require("ray.cloudpickle", "ray", feature="chia_remote")

    class StatePickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            # a Random (the retry policy's jitter source) is not configuration, and its
            # state moves with every draw: leave it out of the comparison
            if isinstance(obj, random.Random):
                return random.Random, ()
            return super().reducer_override(obj)

    return StatePickler


def _digest(value: object) -> bytes | None:
    buffer = io.BytesIO()
    try:
        _state_pickler()(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception:  # not picklable after the call: not kept
        return None
    return hashlib.blake2b(buffer.getvalue(), digest_size=16).digest()


_KEPT = _KeptObjects(size=8)
