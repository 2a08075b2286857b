"""Time ranges for ``report``: parsing ``--since``/``--start``/``--end`` and windowing (pure).

Times are handled as integer Unix microseconds, the unit of Jaeger's legacy API,
so splitting a range never loses precision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

__all__ = [
    "RangeError",
    "TimeRange",
    "format_rfc3339",
    "from_us",
    "parse_duration",
    "parse_time",
    "resolve_range",
    "to_us",
]

_UNITS_US = {
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[smhdw])+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RangeError(ValueError):
    """The requested time range is unusable; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The half-open interval ``[start_us, end_us)`` in Unix microseconds."""

    start_us: int
    end_us: int

    @property
    def length_us(self) -> int:
        """The length of the range in microseconds."""
        return self.end_us - self.start_us

    def contains(self, t_us: int) -> bool:
        """True when ``t_us`` falls inside the range (start included, end excluded)."""
        return self.start_us <= t_us < self.end_us

    def split(self, window_us: int) -> list[TimeRange]:
        """Consecutive windows of at most ``window_us`` covering the range, oldest first."""
        if window_us <= 0:
            raise ValueError("window must be positive")
        bounds = [*range(self.start_us, self.end_us, window_us), self.end_us]
        return [TimeRange(a, b) for a, b in pairwise(bounds)]

    def halves(self) -> tuple[TimeRange, TimeRange]:
        """The range cut in two at its middle."""
        middle = self.start_us + self.length_us // 2
        return TimeRange(self.start_us, middle), TimeRange(middle, self.end_us)


def to_us(moment: datetime) -> int:
    """Unix microseconds of an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(t_us: int) -> datetime:
    """The UTC datetime of Unix microseconds ``t_us``."""
    return _EPOCH + timedelta(microseconds=t_us)


def format_rfc3339(t_us: int) -> str:
    """``t_us`` as RFC 3339 in UTC with microseconds and a ``Z`` (no ``+`` to escape in URLs)."""
    return from_us(t_us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_duration(text: str) -> int:
    """Microseconds in a duration such as ``30m``, ``24h``, ``7d`` or ``1h30m``."""
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise RangeError(f"cannot parse duration {text!r} (use e.g. 30m, 24h, 7d)")
    total = sum(
        round(float(number) * _UNITS_US[unit]) for number, unit in _DURATION_PART.findall(cleaned)
    )
    if total <= 0:
        raise RangeError(f"duration {text!r} must be longer than zero")
    return total


def parse_time(text: str, option: str) -> int:
    """Unix microseconds of an RFC 3339 time or a date (midnight UTC); naive times are UTC."""
    cleaned = text.strip()
    try:
        if len(cleaned) == 10:
            moment = datetime.combine(date.fromisoformat(cleaned), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(cleaned.replace("z", "Z"))
    except ValueError:
        raise RangeError(
            f"cannot parse {option} {text!r} (use RFC 3339, e.g. 2026-03-01T09:30:00Z, "
            "or a date, e.g. 2026-03-01)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_us(moment)


def resolve_range(
    *, since: str | None, start: str | None, end: str | None, now_us: int
) -> TimeRange:
    """The range the options ask for; ``--since`` (default 24h) counts back from now."""
    if since is not None and (start is not None or end is not None):
        raise RangeError("--since cannot be combined with --start or --end")
    if start is None and end is None:
        return TimeRange(now_us - parse_duration(since or "24h"), now_us)
    end_us = parse_time(end, "--end") if end is not None else now_us
    start_us = parse_time(start, "--start") if start is not None else end_us - _UNITS_US["d"]
    if end_us <= start_us:
        raise RangeError("--end must be after --start")
    return TimeRange(start_us, end_us)
