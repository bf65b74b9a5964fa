"""The retry policy and driver, with an injected clock and sleep (nothing really waits)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from chia_async import errors
from chia_async.events import Completed, Retrying, TextDelta
from chia_async.retry import RetryPolicy, parse_duration, retry_after_from_headers
from chia_async.testing import ScriptedLLM

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def scripted(script: list, *, retries: int = 3, rng: float = 0.5) -> tuple[ScriptedLLM, FakeSleep]:
    llm = ScriptedLLM(script, retries=retries)
    sleep = FakeSleep()
    llm.retry_policy = dataclasses.replace(
        llm.retry_policy, sleep=sleep, clock=lambda: NOW, random=lambda: rng
    )
    return llm, sleep


async def collect(llm: ScriptedLLM, message: str = "hi") -> tuple[list, BaseException | None]:
    events = []
    try:
        async with llm.stream(message) as stream:
            async for event in stream:
                events.append(event)
    except errors.ChiaError as exc:
        return events, exc
    return events, None


# -- header parsing ----------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert retry_after_from_headers({"Retry-After": "7"}, now=NOW) == 7.0
    assert retry_after_from_headers({"retry-after": "1.5"}, now=NOW) == 1.5


def test_retry_after_http_date() -> None:
    when = NOW + timedelta(seconds=90)
    header = format_datetime(when, usegmt=True)
    assert retry_after_from_headers({"retry-after": header}, now=NOW) == pytest.approx(90)
    past = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert retry_after_from_headers({"retry-after": past}, now=NOW) == 0.0


def test_retry_after_ms_wins_over_seconds() -> None:
    headers = {"retry-after": "1", "retry-after-ms": "1500"}
    assert retry_after_from_headers(headers, now=NOW) == 1.5


def test_openai_reset_headers_pick_the_exhausted_limit() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "20ms",
    }
    assert retry_after_from_headers(headers, now=NOW) == 360.0
    # without remaining info the earliest reset is used
    assert retry_after_from_headers({"x-ratelimit-reset-tokens": "1h2m3.5s"}, now=NOW) == 3723.5


def test_anthropic_reset_headers() -> None:
    reset = (NOW + timedelta(seconds=42)).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-remaining": "100",
        "anthropic-ratelimit-tokens-reset": (NOW + timedelta(seconds=5)).isoformat(),
    }
    assert retry_after_from_headers(headers, now=NOW) == pytest.approx(42)


def test_plain_reset_header_epoch_or_delta() -> None:
    epoch = str(int((NOW + timedelta(seconds=30)).timestamp()))
    assert retry_after_from_headers({"x-ratelimit-reset": epoch}, now=NOW) == pytest.approx(30)
    assert retry_after_from_headers({"x-ratelimit-reset": "12"}, now=NOW) == 12


def test_no_usable_headers() -> None:
    assert retry_after_from_headers({}, now=NOW) is None
    assert retry_after_from_headers({"retry-after": "soon"}, now=NOW) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3s", 3723.0), ("2.5", 2.5), ("x", None)],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


# -- policy ---------------------------------------------------------------------------------


def test_backoff_is_exponential_full_jitter_and_capped() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, random=lambda: 1.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    zero = RetryPolicy(random=lambda: 0.0)
    assert zero.backoff(3) == 0.0


def test_policy_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)
    with pytest.raises(TypeError):
        RetryPolicy(retries=1.5)  # type: ignore[arg-type]


def test_delay_waits_at_least_what_the_server_asked() -> None:
    policy = RetryPolicy(random=lambda: 0.0, clock=lambda: NOW)
    assert policy.delay(errors.ServerError("n", "x", retry_after=9), 1) == 9
    reset = errors.RateLimitError("n", NOW + timedelta(seconds=30))
    assert policy.delay(reset, 1) == 30
    assert policy.delay(errors.ServerError("n", "x"), 4) is None  # past retries=3
    assert policy.delay(errors.ServerError("n", "x"), 1, content_started=True) is None
    assert policy.delay(errors.ServerError("n", "x", retry_after=9), 1, remaining=5) is None


# -- the driver -----------------------------------------------------------------------------


async def test_transient_failure_is_retried_and_announced() -> None:
    error = errors.ServerError("n", "overloaded", retry_after=2)
    llm, sleep = scripted([error, "ok"])
    events, failure = await collect(llm)
    assert failure is None
    retrying = [e for e in events if isinstance(e, Retrying)]
    assert len(retrying) == 1
    assert retrying[0].attempt == 1
    assert retrying[0].delay >= 2  # at least the server's retry-after
    assert retrying[0].error == error
    assert sleep.calls == [retrying[0].delay]
    assert isinstance(events[-1], Completed) and events[-1].result.result == "ok"
    assert [c.attempt for c in llm.calls] == [1, 2]


async def test_rate_limit_reset_beyond_cap_raises_at_once() -> None:
    far = errors.RateLimitError("n", NOW + timedelta(hours=5), "You've hit your limit")
    llm, sleep = scripted([far, "never"])
    events, failure = await collect(llm)
    assert failure is far
    assert events == [] and sleep.calls == []
    assert len(llm.calls) == 1
    # aprompt raises it too (it is not a "retries exhausted" failure)
    llm2, _ = scripted([far])
    with pytest.raises(errors.RateLimitError):
        await llm2.aprompt("hi")


async def test_short_rate_limit_is_slept_on() -> None:
    near = errors.RateLimitError("n", NOW + timedelta(seconds=20))
    llm, sleep = scripted([near, "done"])
    result = await llm.aprompt("hi")
    assert result.success and result.result == "done"
    assert sleep.calls[0] >= 20


@pytest.mark.parametrize(
    "error",
    [
        errors.AuthenticationError("n", "bad key"),
        errors.BillingError("n", "no credit"),
        errors.InvalidRequestError("n", "bad"),
        errors.ContextLengthExceededError("n", "too long"),
        errors.ContentBlockedError("n", "SAFETY"),
        errors.MaxOutputTokensError("n", "cut", partial_text="half"),
        errors.UnknownError("n", "??"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_never_retried_classes_are_raised_by_all_three(error: errors.ChiaError) -> None:
    llm, sleep = scripted([error, "never"])
    events, failure = await collect(llm)
    assert failure is error and sleep.calls == [] and len(llm.calls) == 1
    llm, _ = scripted([error, "never"])
    with pytest.raises(type(error)):
        await llm.aprompt("hi")
    llm, _ = scripted([error, "never"])
    with pytest.raises(type(error)):
        llm.prompt("hi")


async def test_no_retry_after_the_first_content_event() -> None:
    error = errors.ServerError("n", "connection lost")
    llm, sleep = scripted([["partial ", error], "would have succeeded"])
    events, failure = await collect(llm)
    assert failure is error
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["partial "]
    assert not any(isinstance(e, Retrying) for e in events)
    assert len(llm.calls) == 1 and sleep.calls == []


async def test_exhausted_retries_stream_raises_aprompt_returns_failure() -> None:
    failures = [errors.ServerError("n", f"boom {i}") for i in range(4)]
    llm, sleep = scripted(list(failures))
    events, failure = await collect(llm)
    assert failure is failures[-1]
    assert [e.attempt for e in events if isinstance(e, Retrying)] == [1, 2, 3]
    assert len(sleep.calls) == 3

    llm, _ = scripted(list(failures))
    result = await llm.aprompt("hi")
    assert result.success is False
    assert result.result == ""
    assert result.returncode == -1
    assert result.error == failures[-1]

    llm, _ = scripted(list(failures))
    sync_result = llm.prompt("hi")
    assert sync_result.success is False and sync_result.error == failures[-1]


async def test_retries_zero_means_one_attempt() -> None:
    llm, sleep = scripted([errors.ServerError("n", "x"), "never"], retries=0)
    result = await llm.aprompt("hi")
    assert result.success is False
    assert len(llm.calls) == 1 and sleep.calls == []


async def test_retry_wait_never_passes_the_call_deadline() -> None:
    llm, sleep = scripted([errors.ServerError("n", "x", retry_after=50), "never"])
    llm.timeout_seconds = 10
    events, failure = await collect(llm)
    assert isinstance(failure, errors.ServerError)
    assert sleep.calls == [] and len(llm.calls) == 1
