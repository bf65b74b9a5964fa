"""Read rate-limit reset times out of what CLIs and providers print.

Claude Code says ``You've hit your limit · resets 4pm (America/Los_Angeles)``; older builds
appended an epoch (``Claude AI usage limit reached|1749924000``); Codex says ``try again in
2 hours 5 minutes`` or ``try again at 4:15 PM``; Gemini says ``Please retry in 51.2s``. The
stream-json ``rate_limit_event`` carries ``rate_limit_info.resetsAt`` as an epoch.

Every function returns an aware UTC datetime (or None), so a reset time compares and
serialises the same on every worker whatever its local timezone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "parse_rate_limit_event",
    "parse_rate_limit_reset",
    "parse_reset_value",
]

# A reset time that lies this little in the past is the one that just passed (the message
# rounds to the hour, clocks drift), not tomorrow's.
_JUST_PASSED = timedelta(minutes=10)

_EPOCH_SUFFIX = re.compile(r"\|\s*(\d{10}(?:\d{3})?)\b")

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_DURATION_ITEM = r"\d+(?:\.\d+)?\s*(?:ms|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)\b"
_RELATIVE = re.compile(
    r"(?:resets?|try again|retry|retrying)\s+(?:after|in)\s+"
    rf"((?:{_DURATION_ITEM}(?:\s*,?\s*(?:and\s+)?)?)+)",
    re.IGNORECASE,
)
_DURATION_PARTS = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)", re.IGNORECASE)

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for m in names
}
_ABSOLUTE = re.compile(
    r"(?:resets?|try again)\s+(?:at\s+|on\s+)?"
    r"(?:(?P<month>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s*(?P<year>\d{4})?,?\s*"
    r"(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?"
    r"(?:\s*\((?P<tz>[A-Za-z_+\-/0-9]+)\))?",
    re.IGNORECASE,
)


def parse_rate_limit_reset(
    text: str, now: datetime | None = None, *, default_zone: tzinfo | None = None
) -> datetime | None:
    """Return the UTC time at which the limit described in ``text`` resets, or None.

    Understands ``resets 4pm (America/Los_Angeles)``, ``resets 4:30pm (Europe/London)``,
    ``resets Nov 25, 4pm (Asia/Tokyo)``, ``resets 16:00``, ``resets in 3h``,
    ``try again in 1 hour 23 minutes``, ``retry in 51.2s``, ``try again at 4:15 PM`` and an
    epoch suffix ``...|1749924000``. A clock time without a date means its next occurrence
    after ``now`` in that zone (UTC when no zone is named), computed on the wall clock so a
    DST change in between is honoured; a time that does not exist (spring forward) moves
    past the gap, an ambiguous one (fall back) takes its first occurrence still ahead.
    ``default_zone`` replaces UTC for a clock time that names no zone (Codex prints its
    reset times in the local zone of the machine it runs on).
    """
    if not text:
        return None
    now = _aware(now or datetime.now(UTC))

    epoch = _EPOCH_SUFFIX.search(text)
    if epoch:
        return _from_epoch(int(epoch.group(1)))

    relative = _RELATIVE.search(text)
    if relative:
        seconds = 0.0
        for number, unit in _DURATION_PARTS.findall(relative.group(1)):
            seconds += float(number) * _UNIT_SECONDS.get(unit.lower(), 0)
        return (now + timedelta(seconds=seconds)).astimezone(UTC)

    for match in _ABSOLUTE.finditer(text):
        parsed = _absolute(match, now, default_zone or UTC)
        if parsed is not None:
            return parsed
    return None


def _absolute(match: re.Match[str], now: datetime, default_zone: tzinfo) -> datetime | None:
    hour = int(match.group("hour"))
    minute = int(match.group("minute") or 0)
    ampm = (match.group("ampm") or "").lower().replace(".", "")
    if not ampm and match.group("minute") is None:
        return None  # a bare number ("resets 5") is not a time
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    zone = _zone(match.group("tz")) if match.group("tz") else default_zone
    if zone is None:
        return None
    local_now = now.astimezone(zone)
    month_name = match.group("month")
    if month_name:
        month = _MONTHS.get(month_name.lower())
        if month is None:
            return None
        day = int(match.group("day"))
        year = int(match.group("year") or local_now.year)
        try:
            candidate = _resolve(date(year, month, day), time(hour, minute), zone, now)
        except ValueError:
            return None
        if not match.group("year") and candidate < now - timedelta(days=1):
            # "resets Jan 2" seen on Dec 30: next year
            try:
                candidate = _resolve(date(year + 1, month, day), time(hour, minute), zone, now)
            except ValueError:
                return None
        return candidate
    day_ = local_now.date()
    candidate = _resolve(day_, time(hour, minute), zone, now)
    if candidate < now - _JUST_PASSED:
        candidate = _resolve(day_ + timedelta(days=1), time(hour, minute), zone, now)
    return candidate


def _resolve(day: date, at: time, zone: tzinfo, now: datetime) -> datetime:
    """The UTC instant of wall time ``day at`` in ``zone``, handling DST gaps and folds."""
    first = datetime.combine(day, at, tzinfo=zone)
    second = first.replace(fold=1)
    first_utc, second_utc = first.astimezone(UTC), second.astimezone(UTC)
    if first_utc == second_utc:
        # unambiguous; or in a gap, where fold=0 reads the wall time with the offset from
        # before the transition: i.e. the same span of time after the clocks jumped
        return first_utc
    earlier, later = sorted((first_utc, second_utc))
    if first.utcoffset() == second.utcoffset():
        return first_utc
    # In a gap the two folds land on either side of the jump; in a fold (ambiguous time) they
    # are two real instants. Either way take the first one that is not already past.
    roundtrip = earlier.astimezone(zone)
    if roundtrip.replace(tzinfo=None) != first.replace(tzinfo=None):
        return later  # gap: the earlier reading is not a real wall time there
    return earlier if earlier >= now - _JUST_PASSED else later


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return UTC
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _from_epoch(value: float) -> datetime:
    if value > 1e12:  # milliseconds
        value /= 1000.0
    return datetime.fromtimestamp(value, UTC)


def parse_reset_value(value: Any) -> datetime | None:
    """An epoch (seconds or milliseconds) or ISO 8601 string as an aware UTC datetime."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _from_epoch(float(value)) if value > 0 else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _from_epoch(float(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return _aware(parsed).astimezone(UTC)
    return None


def parse_rate_limit_event(event: Any) -> datetime | None:
    """Return the UTC reset time of a Claude Code ``rate_limit_event`` that rejected the call.

    Only ``rate_limit_info.status == "rejected"`` counts: the CLI also emits the event with
    ``allowed`` and ``allowed_warning`` as information, and those are not rate limits.
    Returns None for any other status, for a malformed event, and for a rejection that
    carries no reset time.
    """
    if not isinstance(event, Mapping):
        return None
    info = event.get("rate_limit_info")
    if not isinstance(info, Mapping) or info.get("status") != "rejected":
        return None
    for key in ("resetsAt", "resets_at", "reset", "resetAt"):
        if key in info:
            return parse_reset_value(info[key])
    return None
