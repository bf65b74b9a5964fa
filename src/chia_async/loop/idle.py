"""The idle deadline of a provider stream: the longest silence allowed between two chunks."""

from __future__ import annotations

import math
from types import TracebackType

import anyio

__all__ = ["IdleDeadline"]


class IdleDeadline:
    """One cancel scope around a whole stream whose deadline moves with it.

    :meth:`arm` before waiting for the next chunk, :meth:`disarm` while handling it, so the
    caller's own pace (an event consumer applying backpressure) never counts as silence.
    Moving one scope's deadline costs a timer handle; a ``fail_after`` per chunk costs a new
    scope each time, which shows at a few microseconds per chunk. After the ``with`` block,
    :attr:`expired` says whether the deadline ended it (the scope swallows its own
    cancellation; anything else propagates).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._scope = anyio.CancelScope()

    def __enter__(self) -> IdleDeadline:
        self._scope.__enter__()
        self.arm()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return bool(self._scope.__exit__(exc_type, exc, tb))

    def arm(self) -> None:
        """Start counting: the next chunk must arrive within ``seconds``."""
        self._scope.deadline = anyio.current_time() + self.seconds

    def disarm(self) -> None:
        """Stop counting while a chunk is handled."""
        self._scope.deadline = math.inf

    @property
    def expired(self) -> bool:
        """Whether the deadline passed and ended the block."""
        return self._scope.cancelled_caught
