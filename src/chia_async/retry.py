"""When to try a failed call again, and how long to wait first.

One retry layer for every backend, ours: provider SDK clients are built with their own
retries off, and CLI retry knobs are turned down where the CLI has one. The policy:

1. Only classes marked :attr:`~chia_async.errors.ChiaError.retryable` are retried
   (server errors, timeouts, rate limits, crashed processes). Authentication, billing,
   invalid requests, context length, content blocks and max-output truncation never are.
2. Never after a content event reached the caller: the caller has acted on part of an answer.
3. The wait is exponential backoff with full jitter, but at least what the server asked
   for (``retry-after``, ``retry-after-ms``, rate-limit reset headers, a reset time parsed
   from a CLI message). A server-directed wait longer than ``max_wait`` is not slept on:
   the error is raised at once so the caller can reschedule the work.
4. A wait that would pass the call's own deadline is not started either.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import anyio

from chia_async.errors import ChiaError

__all__ = [
    "RetryPolicy",
    "parse_duration",
    "retry_after_from_headers",
    "server_wait",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times to retry, and how long to wait in between.

    ``retries=0`` means a single attempt. ``clock``, ``sleep`` and ``random`` are injectable
    so tests (and simulations) can run the policy without waiting.
    """

    retries: int = 3
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    max_wait: float = 120.0
    clock: Callable[[], datetime] = field(default=_utcnow, compare=False, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(
        default=anyio.sleep, compare=False, repr=False
    )
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool):
            raise TypeError(f"retries must be an int, got {type(self.retries).__name__}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        for name in ("initial_backoff", "max_backoff", "max_wait"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * (2 ** (attempt - 1)))
        return float(ceiling * self.random())

    def delay(
        self,
        error: BaseException,
        attempt: int,
        *,
        content_started: bool = False,
        remaining: float | None = None,
    ) -> float | None:
        """Seconds to wait before the attempt after ``attempt``; None means raise ``error``.

        ``remaining`` is the time left before the call's deadline, when it has one.
        """
        if content_started or attempt > self.retries:
            return None
        if not isinstance(error, ChiaError) or not error.retryable:
            return None
        wanted = server_wait(error, now=self.clock())
        if wanted is not None and wanted > self.max_wait:
            return None
        delay = max(self.backoff(attempt), wanted or 0.0)
        if remaining is not None and delay >= remaining:
            return None
        return delay


def server_wait(error: ChiaError, *, now: datetime | None = None) -> float | None:
    """How long the service asked us to wait before retrying ``error``, if it said."""
    reset_time = error.reset_time
    if isinstance(reset_time, datetime):
        now = now or _utcnow()
        return max(0.0, (reset_time - now).total_seconds())
    retry_after = error.retry_after
    if isinstance(retry_after, int | float):
        return max(0.0, float(retry_after))
    return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Parse OpenAI-style reset durations (``"1s"``, ``"6m0s"``, ``"1h2m3.5s"``, ``"20ms"``)
    or a bare number of seconds; None if ``text`` is neither."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        value = float(match.group(1))
        unit = match.group(2)
        total += value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = match.end()
    return total if pos == len(text) else None


def retry_after_from_headers(
    headers: Mapping[str, str], *, now: datetime | None = None
) -> float | None:
    """Seconds to wait according to a response's headers, or None when they say nothing.

    Reads, in order of precedence: ``retry-after-ms``; ``retry-after`` (seconds or an
    HTTP-date); then the rate-limit reset headers — OpenAI's ``x-ratelimit-reset-requests``
    / ``-tokens`` (durations), Anthropic's ``anthropic-ratelimit-*-reset`` (RFC 3339), and a
    plain ``x-ratelimit-reset`` (epoch seconds or seconds). Among reset headers, the ones
    whose matching ``remaining`` header is 0 decide (the longest of them); without
    ``remaining`` information the earliest reset is used.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    now = now or _utcnow()

    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    if "retry-after" in lower:
        value = lower["retry-after"].strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return max(0.0, (when - now).total_seconds())

    exhausted: list[float] = []
    other: list[float] = []
    for name, value in lower.items():
        seconds: float | None = None
        remaining_name: str | None = None
        if name.startswith("x-ratelimit-reset-"):
            seconds = parse_duration(value)
            remaining_name = "x-ratelimit-remaining-" + name.removeprefix("x-ratelimit-reset-")
        elif name.startswith("anthropic-ratelimit-") and name.endswith("-reset"):
            try:
                when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                seconds = (when - now).total_seconds()
            remaining_name = name.removesuffix("-reset") + "-remaining"
        elif name == "x-ratelimit-reset":
            number = parse_duration(value)
            if number is not None:
                # a large number is an epoch timestamp, a small one a delay
                seconds = number - now.timestamp() if number > 1e9 else number
            remaining_name = "x-ratelimit-remaining"
        if seconds is None:
            continue
        seconds = max(0.0, seconds)
        remaining = lower.get(remaining_name or "")
        if remaining is not None and remaining.strip() in ("0", "0.0"):
            exhausted.append(seconds)
        else:
            other.append(seconds)
    if exhausted:
        return max(exhausted)
    if other:
        return min(other)
    return None
