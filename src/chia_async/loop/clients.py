"""SDK clients are bound to the event loop that created them: keep one per loop."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["LoopLocal"]

T = TypeVar("T")


class LoopLocal(Generic[T]):
    """One value per running event loop, built by ``factory`` on first use in that loop.

    An SDK client (its connection pool) must not be shared across loops, and building one
    per call throws its pool away: this keeps exactly one per loop, dropped with the loop.
    Pickling drops the values, so an object holding a ``LoopLocal`` crosses process
    boundaries (Ray) and builds fresh clients on the other side.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The value for the running loop."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._factory()
        return value

    def __getstate__(self) -> dict[str, Any]:
        return {"_factory": self._factory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._factory = state["_factory"]
        self._values = weakref.WeakKeyDictionary()
