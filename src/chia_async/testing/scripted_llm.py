"""``ScriptedLLM``: an in-process backend that replays scripted attempts.

It exercises everything :class:`~chia_async.base.LLMCallBase` does (retries, deadlines,
event folding, logging, the sync facade) without a network or a process, and is meant for
users testing their own code against chia_async's interface::

    llm = ScriptedLLM([
        ServerError("demo", "overloaded"),            # attempt 1 fails (retryable)
        ["Hel", "lo", Usage(input_tokens=3, output_tokens=2)],   # attempt 2 streams "Hello"
    ])
    result = await llm.aprompt("hi")                  # result.result == "Hello"

Each script entry is one attempt, consumed in order across calls:

* a ``str`` — the attempt streams it as one ``TextDelta`` and succeeds;
* a :class:`~chia_async.errors.ChiaError` — the attempt raises it;
* a single step (below), e.g. ``Hang()`` — as a list of that one step;
* a list of steps, played in order: ``str`` (a ``TextDelta``), any ``TurnEvent``,
  :class:`Delay` (sleep), :class:`Hang` (sleep until cancelled), a ``ChiaError`` (raise it
  there, after the steps before it were emitted);
* a callable ``(ScriptedCall) -> entry`` computing the attempt from the call.

A call past the end of the script raises ``UnknownError`` naming the script length (or
loops with ``repeat=True``). ``calls`` records every attempt; ``active``, ``cancelled`` and
``finished`` count attempts so tests can check that cancellation reached the work.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio

from chia_async._event_base import TurnEvent
from chia_async.base import Attempt, LLMCallBase
from chia_async.errors import ChiaError, UnknownError
from chia_async.events import TextDelta
from chia_async.results import QueryResult
from chia_async.tools import ChiaTool

__all__ = ["Delay", "Hang", "ScriptedCall", "ScriptedLLM"]


@dataclass(frozen=True, slots=True)
class Delay:
    """A pause of ``seconds`` within a scripted attempt."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Hang:
    """The attempt stops responding until it is cancelled (a stalled backend)."""


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One attempt as ScriptedLLM saw it."""

    message: str
    tools: tuple[ChiaTool, ...]
    attempt: int
    system_message: str


Step = str | TurnEvent | Delay | Hang | ChiaError
Entry = Step | Sequence[Step] | Callable[[ScriptedCall], Any]


class ScriptedLLM(LLMCallBase):
    """A backend that replays ``script`` (see the module docstring)."""

    backend_name: ClassVar[str] = "scripted"

    def __init__(
        self,
        script: Sequence[Entry],
        *,
        repeat: bool = False,
        model: str = "scripted",
        system_message: str = "",
        timeout_seconds: float = 600,
        retries: int = 3,
        logging_name: str = "scripted",
        logging_level: int = logging.DEBUG,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            model=model,
            system_message=system_message,
            timeout_seconds=timeout_seconds,
            retries=retries,
            logging_name=logging_name,
            logging_level=logging_level,
            log_dir=log_dir,
        )
        if isinstance(script, str | bytes) or not isinstance(script, Sequence):
            raise TypeError("script must be a list of attempts")
        self.script = list(script)
        self.repeat = repeat
        self.calls: list[ScriptedCall] = []
        self.active = 0
        self.cancelled = 0
        self.finished = 0
        self._lock = threading.Lock()
        self._next = 0

    def _take(self) -> Entry:
        with self._lock:
            index = self._next
            self._next += 1
        if index < len(self.script):
            return self.script[index]
        if self.repeat and self.script:
            return self.script[index % len(self.script)]
        raise UnknownError(
            self.logging_name,
            f"ScriptedLLM script exhausted: it has {len(self.script)} attempt(s), "
            f"this is attempt {index + 1}",
        )

    async def _run(self, attempt: Attempt) -> QueryResult:
        call = ScriptedCall(attempt.message, attempt.tools, attempt.number, self.system_message)
        self.calls.append(call)
        entry = self._take()
        if callable(entry) and not isinstance(entry, ChiaError):
            entry = entry(call)
        self.active += 1
        try:
            await self._play(entry, attempt)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
            self.finished += 1
        return attempt.result()

    async def _play(self, entry: Any, attempt: Attempt) -> None:
        if isinstance(entry, str):
            await attempt.emit(TextDelta(text=entry))
            return
        if isinstance(entry, ChiaError):
            raise entry
        steps = entry if isinstance(entry, Sequence) else [entry]
        for step in steps:
            if isinstance(step, str):
                await attempt.emit(TextDelta(text=step))
            elif isinstance(step, TurnEvent):
                await attempt.emit(step)
            elif isinstance(step, Delay):
                await anyio.sleep(step.seconds)
            elif isinstance(step, Hang):
                await anyio.sleep_forever()
            elif isinstance(step, ChiaError):
                raise step
            else:
                raise TypeError(f"not a script step: {step!r}")
