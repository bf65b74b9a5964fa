"""SDK clients are bound to the event loop that created them: keep one per loop, and close
it with the loop or with its owner, whichever goes first."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["LoopLocal"]

T = TypeVar("T")

_Keepers = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]]


async def _keep(
    values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any],
    loop: asyncio.AbstractEventLoop,
    value: Any,
    closer: Callable[[Any], Awaitable[Any]],
) -> AsyncGenerator[None, None]:
    # Parked on `loop` until closed: by the loop's shutdown (asyncio.run and asyncio.Runner
    # close every live async generator before closing the loop), or by the owner's finalizer.
    # It must not reference the LoopLocal, or dropping the owner could not collect it.
    try:
        yield
    finally:
        values.pop(loop, None)
        with contextlib.suppress(Exception):  # closing must never fail a shutdown
            await closer(value)


def _close_keepers(keepers: _Keepers) -> None:
    """The owner was dropped: close its values on their loops, without blocking."""
    for loop, keeper in list(keepers.items()):
        if loop.is_closed():
            continue
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_schedule_close, loop, keeper)


def _schedule_close(loop: asyncio.AbstractEventLoop, keeper: AsyncGenerator[None, None]) -> None:
    loop.create_task(keeper.aclose())


class LoopLocal(Generic[T]):
    """One value per running event loop, built by ``factory`` on first use in that loop.

    An SDK client (its connection pool) must not be shared across loops, and building one
    per call throws its pool away: this keeps exactly one per loop. With ``closer``, a value
    is closed when its loop shuts down, or when this object is garbage collected (an LLM
    object dropped in a long-running process must not leave its connections open on the
    shared background loop). Pickling drops the values, so an object holding a
    ``LoopLocal`` crosses process boundaries (Ray) and builds fresh clients on the other side.
    """

    def __init__(
        self, factory: Callable[[], T], closer: Callable[[T], Awaitable[Any]] | None = None
    ) -> None:
        self._factory = factory
        self._closer = closer
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._keepers: _Keepers = weakref.WeakKeyDictionary()
        weakref.finalize(self, _close_keepers, self._keepers)

    async def get(self) -> T:
        """The value for the running loop."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._factory()
            if self._closer is not None:
                keeper = _keep(self._values, loop, value, self._closer)
                await keeper.asend(None)
                self._keepers[loop] = keeper
        return value

    def peek(self) -> T | None:
        """The value for the running loop, if one was built (never builds one)."""
        return self._values.get(asyncio.get_running_loop())

    async def aclose_current(self) -> None:
        """Close the running loop's value now (the next :meth:`get` builds a new one)."""
        loop = asyncio.get_running_loop()
        keeper = self._keepers.pop(loop, None)
        if keeper is not None:
            await keeper.aclose()  # runs the closer and forgets the value
        else:
            self._values.pop(loop, None)

    def __getstate__(self) -> dict[str, Any]:
        return {"_factory": self._factory, "_closer": self._closer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_factory"], state["_closer"])  # type: ignore[misc]
