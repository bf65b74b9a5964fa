"""Reset times from Claude/Codex/Gemini messages and Claude's rate_limit_event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chia_async.backends import antigravity, claude, codex
from chia_async.ratelimit import parse_rate_limit_event, parse_rate_limit_reset

# 2026-11-24 16:30 UTC = 08:30 in Los Angeles (PST, UTC-8)
NOW = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the canonical Claude message: later today in LA
        (
            "You've hit your limit · resets 4pm (America/Los_Angeles)",
            datetime(2026, 11, 25, 0, 0, tzinfo=UTC),
        ),
        # minutes, another zone (London is UTC+0 in November)
        ("resets 4:30pm (Europe/London)", datetime(2026, 11, 24, 16, 30, tzinfo=UTC)),
        # a time already past in that zone: the next day
        ("resets 8am (America/Los_Angeles)", datetime(2026, 11, 25, 16, 0, tzinfo=UTC)),
        # an explicit date
        (
            "You've hit your limit · resets Nov 25, 4pm (America/Los_Angeles)",
            datetime(2026, 11, 26, 0, 0, tzinfo=UTC),
        ),
        ("resets Dec 1 at 9:15am (Asia/Tokyo)", datetime(2026, 12, 1, 0, 15, tzinfo=UTC)),
        # 24-hour clock and no zone: UTC
        ("resets 18:00", datetime(2026, 11, 24, 18, 0, tzinfo=UTC)),
        # relative forms
        ("resets in 3h", NOW + timedelta(hours=3)),
        ("resets in 3h 20m", NOW + timedelta(hours=3, minutes=20)),
        ("try again in 1 hour 23 minutes", NOW + timedelta(hours=1, minutes=23)),
        ("Please retry in 51.2s.", NOW + timedelta(seconds=51.2)),
        ("try again in 2 days 3 hours", NOW + timedelta(days=2, hours=3)),
        # the epoch suffix of older Claude Code builds
        ("Claude AI usage limit reached|1749924000", datetime(2025, 6, 14, 18, 0, tzinfo=UTC)),
        ("usage limit reached|1749924000000", datetime(2025, 6, 14, 18, 0, tzinfo=UTC)),
    ],
)
def test_variants(text: str, expected: datetime) -> None:
    assert parse_rate_limit_reset(text, now=NOW) == expected


@pytest.mark.parametrize(
    "text", ["", "all good", "resets 5", "resets 25:00", "resets 4pm (Not/AZone)", "resets 13pm"]
)
def test_not_a_reset(text: str) -> None:
    assert parse_rate_limit_reset(text, now=NOW) is None


def test_result_is_aware_utc() -> None:
    value = parse_rate_limit_reset("resets 4pm (Asia/Kolkata)", now=NOW)
    assert value is not None and value.tzinfo is UTC


def test_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_rate_limit_reset("resets 18:00", now=naive) == datetime(
        2026, 11, 24, 18, 0, tzinfo=UTC
    )


def test_a_time_that_just_passed_is_not_tomorrow() -> None:
    # the message rounds to the hour and clocks drift: 4pm seen at 16:03 is today's 4pm
    now = datetime(2026, 11, 25, 0, 3, tzinfo=UTC)  # 16:03 in LA
    assert parse_rate_limit_reset("resets 4pm (America/Los_Angeles)", now=now) == datetime(
        2026, 11, 25, 0, 0, tzinfo=UTC
    )


def test_dst_spring_forward_gap() -> None:
    # 2026-03-08 in LA: clocks jump from 02:00 PST to 03:00 PDT; 2:30am does not exist
    now = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)  # midnight PST
    value = parse_rate_limit_reset("resets 2:30am (America/Los_Angeles)", now=now)
    assert value == datetime(2026, 3, 8, 10, 30, tzinfo=UTC)  # 03:30 PDT, just past the gap


def test_dst_fall_back_fold() -> None:
    # 2026-11-01 in LA: 01:00-02:00 happens twice (PDT, then PST)
    before = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)  # 00:00 PDT
    first = parse_rate_limit_reset("resets 1:30am (America/Los_Angeles)", now=before)
    assert first == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)  # the PDT 01:30
    between = datetime(2026, 11, 1, 8, 45, tzinfo=UTC)  # 01:45 PDT, first 01:30 is past
    second = parse_rate_limit_reset("resets 1:30am (America/Los_Angeles)", now=between)
    assert second == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)  # the PST 01:30


def test_dst_change_between_now_and_tomorrow_uses_wall_clock() -> None:
    # Saturday 2026-03-07 20:00 PST; "resets 7pm" is Sunday 7pm PDT (UTC-7), not +24h
    now = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)
    value = parse_rate_limit_reset("resets 7pm (America/Los_Angeles)", now=now)
    assert value == datetime(2026, 3, 9, 2, 0, tzinfo=UTC)


def test_date_in_january_seen_in_december_is_next_year() -> None:
    now = datetime(2026, 12, 30, 12, 0, tzinfo=UTC)
    value = parse_rate_limit_reset("resets Jan 2, 9am (UTC)", now=now)
    assert value == datetime(2027, 1, 2, 9, 0, tzinfo=UTC)


def test_backend_modules_export_the_parser() -> None:
    for module in (claude, codex, antigravity):
        assert module.parse_rate_limit_reset is parse_rate_limit_reset


# -- rate_limit_event --------------------------------------------------------------------


def event(status: str, **info: object) -> dict:
    return {"type": "rate_limit_event", "rate_limit_info": {"status": status, **info}}


def test_rejected_event_gives_the_reset_time() -> None:
    value = parse_rate_limit_event(
        event("rejected", resetsAt=1778565600, rateLimitType="five_hour")
    )
    assert value == datetime(2026, 5, 12, 6, 0, tzinfo=UTC)


def test_reset_in_milliseconds_or_iso() -> None:
    assert parse_rate_limit_event(event("rejected", resetsAt=1778565600000)) == datetime(
        2026, 5, 12, 6, 0, tzinfo=UTC
    )
    assert parse_rate_limit_event(event("rejected", resetsAt="2026-05-12T06:00:00Z")) == datetime(
        2026, 5, 12, 6, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("status", ["allowed", "allowed_warning", "throttled", ""])
def test_informational_statuses_are_not_limits(status: str) -> None:
    assert parse_rate_limit_event(event(status, resetsAt=1778565600)) is None


@pytest.mark.parametrize(
    "value", [{}, {"type": "rate_limit_event"}, {"rate_limit_info": "x"}, [], None, "text"]
)
def test_malformed_events(value: object) -> None:
    assert parse_rate_limit_event(value) is None  # type: ignore[arg-type]


def test_rejection_without_reset_time() -> None:
    assert parse_rate_limit_event(event("rejected")) is None
    assert claude.parse_rate_limit_event is parse_rate_limit_event
