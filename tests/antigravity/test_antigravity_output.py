"""AntigravityOutputParser: plain-text print-mode output to events and typed errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chia_async.backends import antigravity
from chia_async.events import TextDelta

NOW = datetime(2026, 11, 24, 18, 30, tzinfo=UTC)  # 10:30 in Los Angeles


def run(chunks: list[str], exit_code: int = 0, stderr: str = "") -> tuple[list[str], object]:
    parser = antigravity.AntigravityOutputParser("agy", now=lambda: NOW)
    texts: list[str] = []
    for chunk in chunks:
        texts += [e.text for e in parser.feed_text(chunk) if isinstance(e, TextDelta)]
    texts += [e.text for e in parser.flush() if isinstance(e, TextDelta)]
    try:
        return texts, parser.outcome(exit_code, stderr)
    except antigravity.AntigravityError as error:
        return texts, error


def test_text_is_released_once_the_first_line_is_complete() -> None:
    parser = antigravity.AntigravityOutputParser("agy")
    assert parser.feed_text("Hello") == []  # the first line may still be a failure line
    assert [e.text for e in parser.feed_text(" world\nmore")] == ["Hello world\nmore"]
    assert [e.text for e in parser.feed_text(" text")] == [" text"]
    assert parser.flush() == []
    assert parser.outcome(0) == "Hello world\nmore text"


def test_a_long_first_line_is_not_held_forever() -> None:
    parser = antigravity.AntigravityOutputParser("agy")
    assert [e.text for e in parser.feed_text("x" * 2000)] == ["x" * 2000]


def test_an_answer_that_talks_about_rate_limits_is_an_answer() -> None:
    texts, outcome = run(["Sure.\nRate limit exceeded errors mean the API said 429.\n"])
    assert outcome == "Sure.\nRate limit exceeded errors mean the API said 429."
    assert "".join(texts).startswith("Sure.")


def test_usage_limit_line_is_a_rate_limit_with_the_los_angeles_reset() -> None:
    texts, error = run(["You've hit your limit · resets 4pm (America/Los_Angeles)\n"])
    assert texts == []
    assert isinstance(error, antigravity.RateLimitError)
    # 4pm PST on Nov 24 is 00:00 UTC on Nov 25
    assert error.reset_time == datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
    assert error.exit_code == 0


def test_reset_that_already_passed_today_is_tomorrow() -> None:
    late = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 17:00 in Los Angeles
    parser = antigravity.AntigravityOutputParser("agy", now=lambda: late)
    error = parser.classify("You're out of extra usage · resets 4pm (America/Los_Angeles)", 1)
    assert isinstance(error, antigravity.RateLimitError)
    assert error.reset_time == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("Authentication required. Please visit the URL to log in:", "AuthenticationError"),
        ("Error: 401 UNAUTHENTICATED", "AuthenticationError"),
        ("Error: billing account disabled", "BillingError"),
        ('Error: invalid model "nope"', "InvalidRequestError"),
        ('Error: empty prompt. Usage: agy --print "your prompt here"', "InvalidRequestError"),
        ("flag provided but not defined: -x", "InvalidRequestError"),
        ("The input token count (1200000) exceeds the maximum", "ContextLengthExceededError"),
        ("the response exceeded the maximum output tokens", "MaxOutputTokensError"),
        ("Error: 503 UNAVAILABLE: The model is overloaded.", "ServerError"),
        ("Error: print timeout (5m0s) exceeded, timed out", "ServerError"),
        ("Error: 429 Too Many Requests", "RateLimitError"),
        ("panic: nil pointer dereference", "UnknownAntigravityError"),
    ],
)
def test_failed_runs_are_classified(text: str, cls: str) -> None:
    _, error = run([], exit_code=1, stderr=text)
    assert type(error) is getattr(antigravity, cls)
    assert error.exit_code == 1
    assert text.strip() in error.raw_message


def test_exit_0_with_no_answer_is_a_failure() -> None:
    _, error = run(["\n  \n"], exit_code=0)
    assert isinstance(error, antigravity.UnknownAntigravityError)
    assert "without printing an answer" in error.raw_message


def test_exit_0_with_an_answer_and_a_warning_on_stderr_succeeds() -> None:
    _, outcome = run(["pong\n"], exit_code=0, stderr="warning: rate limit close (90%)")
    assert outcome == "pong"
